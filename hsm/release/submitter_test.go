package release

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/appliance"
)

// TestInvariantSubmitterReadsNoPathOutsideItsDirectory: an ID the API
// hands on as it came (a path wildcard, unescaped: "../x") names no
// request, even where a record of that ID lies outside the requests'
// directory; a record inside it is read.
func TestInvariantSubmitterReadsNoPathOutsideItsDirectory(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, Dir), 0o700); err != nil {
		t.Fatal(err)
	}
	d := &Daemon{requests: map[string]*request{}, cfg: Config{Appliance: &appliance.Appliance{Dir: dir}}}
	const good = "0123456789abcdef0123456789abcdef"
	for _, id := range []string{good, "../outside"} {
		if err := d.writeRecordFile(&record{ID: id, Officer: "fp-" + id}); err != nil {
			t.Fatal(err)
		}
	}
	if got := d.Submitter(good); got != "fp-"+good {
		t.Fatalf("Submitter(%s) = %q", good, got)
	}
	for _, id := range []string{"../outside", "../" + Dir + "/" + good, "..", ""} {
		if got := d.Submitter(id); got != "" {
			t.Fatalf("Submitter(%q) = %q, want none", id, got)
		}
	}
}

// TestResumeOfAnUnknownIDSpeaksOfNoCertificate: without officers'
// certificates, no certificate is involved in a resume refused for its
// ID, and the refusal does not speak of one.
func TestResumeOfAnUnknownIDSpeaksOfNoCertificate(t *testing.T) {
	d := &Daemon{requests: map[string]*request{}}
	_, err := d.Resume("0123456789abcdef0123456789abcdef")
	var ref *Refusal
	if !errors.As(err, &ref) || ref.Code != CodeNotFound || strings.Contains(err.Error(), "certificate") {
		t.Fatalf("resume of an unknown ID: %v", err)
	}
}
