package release

import (
	"testing"

	"github.com/custodian-project/custodian/hsm/escrow"
)

// TestRememberedRequestsKeepOnlyTheirStatus: a finished request stays in
// memory (up to maxRemembered) for its status only; the warrant, its list
// and the bundles checked for it are dropped, so that remembered requests
// do not hold every key ID's sealed share blob and envelope data.
func TestRememberedRequestsKeepOnlyTheirStatus(t *testing.T) {
	d := &Daemon{}
	r := &request{p7s: []byte("warrant"), bundles: map[string]*escrow.Bundle{"2026-11": {Blob: make([]byte, 4096)}}}
	d.finish(r, func(*Status) {})
	if r.p7s != nil {
		t.Fatal("the warrant is kept after the request finished")
	}
	if r.bundles != nil {
		t.Errorf("the checked bundles (%d) are kept after the request finished", len(r.bundles))
	}
}
