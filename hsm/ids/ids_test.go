package ids

import (
	"strings"
	"testing"
)

func TestIDs(t *testing.T) {
	for _, good := range []string{"court-a", "c1", "a.b-c"} {
		if err := CheckCustodian(good); err != nil {
			t.Errorf("custodian %q: %v", good, err)
		}
	}
	for _, bad := range []string{"", "Court-A", "-a", "a b", "a/b", "a:b", strings.Repeat("a", 64), "a\n"} {
		if CheckCustodian(bad) == nil {
			t.Errorf("custodian %q accepted", bad)
		}
	}
	for _, good := range []string{"2026-11", "epoch:7", "K_1.x"} {
		if err := CheckKeyID(good); err != nil {
			t.Errorf("key ID %q: %v", good, err)
		}
	}
	for _, bad := range []string{"", "-1", "a b", "a/b", strings.Repeat("k", 65), "é"} {
		if CheckKeyID(bad) == nil {
			t.Errorf("key ID %q accepted", bad)
		}
	}
}
