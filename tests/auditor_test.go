package tests

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

// TestAuditorListsLedgerOverTLS: an auditor with the server CA and the
// pinned verifier key reads a running appliance's entries with one
// command, each the same as ledger prove gives for its index; the range
// route is open to anyone, bounded, and refuses bad ranges specifically.
func TestAuditorListsLedgerOverTLS(t *testing.T) {
	d, _ := networkDevice(t, "W-list")
	dm := startDaemon(t, d)
	remote := append([]string{"--server", dm.client.base, "--verifier-key", filepath.Join(d.data, "ledger-key.pub")}, dm.auditorArgs()...)

	var listing struct {
		Size    uint64 `json:"size"`
		Entries []struct {
			Index int64       `json:"index"`
			Kind  ledger.Kind `json:"kind"`
			Entry string      `json:"entry"`
		} `json:"entries"`
	}
	if err := json.Unmarshal([]byte(mustCLI(t, append([]string{"--json", "ledger", "list"}, remote...)...)), &listing); err != nil {
		t.Fatal(err)
	}
	if listing.Size < 3 || uint64(len(listing.Entries)) != listing.Size || listing.Entries[0].Kind != ledger.KindInit {
		t.Fatalf("listing of %d entries: %+v", listing.Size, listing.Entries)
	}
	for _, e := range listing.Entries {
		var inc ledger.Inclusion
		json.Unmarshal([]byte(mustCLI(t, append([]string{"ledger", "prove", "--index", fmt.Sprint(e.Index)}, remote...)...)), &inc)
		if inc.Entry != e.Entry {
			t.Errorf("entry %d: list says %q, prove %q", e.Index, e.Entry, inc.Entry)
		}
	}
	out := mustCLI(t, append([]string{"ledger", "list", "--from", "1", "--to", "2"}, remote...)...)
	if !strings.Contains(out, "2 entries (1 to 2) of custodian/court-a, each proven") {
		t.Errorf("list --from 1 --to 2: %q", out)
	}
	code, _, errOut := cli(t, append([]string{"ledger", "list", "--to", "1000"}, remote...)...)
	if code == 0 || !strings.Contains(errOut, "entry 1000 does not exist yet") {
		t.Errorf("past the end: exit %d, %q", code, errOut)
	}
	_, otherKey, err := note.GenerateKey(rand.Reader, "custodian/court-a")
	if err != nil {
		t.Fatal(err)
	}
	code, _, errOut = cli(t, append([]string{"ledger", "list", "--server", dm.client.base, "--verifier-key", otherKey}, dm.auditorArgs()...)...)
	if code == 0 || !strings.Contains(errOut, "not signed by the pinned verifier key") {
		t.Errorf("another verifier key: exit %d, %q", code, errOut)
	}

	anyone := &client{base: dm.client.base, http: dm.site.httpClient(false)}
	for path, want := range map[string]release.Code{
		"/v1/entries?from=0&to=1":                                "",
		fmt.Sprintf("/v1/entries?from=0&to=%d", ledger.MaxRange): release.CodeBadRequest,
		"/v1/entries?from=2&to=1":                                release.CodeBadRequest,
		"/v1/entries?from=x&to=1":                                release.CodeBadRequest,
		"/v1/entries?from=1000&to=1001":                          release.CodeNotFound,
	} {
		code, body := anyone.get(t, path)
		var eb release.ErrorBody
		json.Unmarshal(body, &eb)
		if (want == "" && code != http.StatusOK) || eb.Error.Code != want {
			t.Errorf("GET %s: %d %s; want %q", path, code, body, want)
		}
		if want == "" && bytes.Contains(body, []byte("\n  ")) {
			t.Errorf("GET %s: an indented answer (a page is up to 128 entries with proofs)", path)
		}
	}
}
