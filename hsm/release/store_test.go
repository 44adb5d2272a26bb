package release

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
)

// TestInvariantRequestRecordMatchesFieldNamesExactly: the record a restart
// reads back is a strict format too; a key in another letter case is not
// the field it folds to.
func TestInvariantRequestRecordMatchesFieldNamesExactly(t *testing.T) {
	d := &Daemon{cfg: Config{Appliance: &appliance.Appliance{Dir: t.TempDir()}}}
	rec := &record{ID: "0a", Warrant: []byte{1}, WarrantDigest: "00", KeyIDs: []string{"2026-11"}, Approved: time.Unix(1, 0).UTC(), Done: true}
	if err := os.MkdirAll(d.requestDir(rec.ID), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.writeRecordFile(rec); err != nil {
		t.Fatal(err)
	}
	if got, err := d.readRecord(rec.ID); err != nil || !got.Done {
		t.Fatalf("read back %+v, %v", got, err)
	}
	path := filepath.Join(d.requestDir(rec.ID), "request.json")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(data), `"done": true`, `"done": true, "Done": false`, 1)
	if edited == string(data) {
		t.Fatal("the record has no done field to edit")
	}
	if err := os.WriteFile(path, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := d.readRecord(rec.ID); !errors.Is(err, strictjson.ErrUnknownField) {
		t.Fatalf("got %v, want an unknown field", err)
	}
}
