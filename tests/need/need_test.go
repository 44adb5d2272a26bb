package need

import (
	"strings"
	"testing"
)

// recorder is a testing.TB that records how the test ended instead of
// ending it.
type recorder struct {
	testing.TB
	skipped, failed bool
	msg             string
}

func (r *recorder) Helper()                   {}
func (r *recorder) Skip(args ...any)          { r.skipped = true; r.msg = args[0].(string) }
func (r *recorder) Fatalf(f string, a ...any) { r.failed = true; r.msg = f }

// TestMissingPartFailsWhenRequired: under make test and CI a missing part
// is a failure, elsewhere a skip that says why.
func TestMissingPartFailsWhenRequired(t *testing.T) {
	t.Setenv(RequireEnv, "")
	r := &recorder{TB: t}
	Command(r, "custodian-no-such-tool", "nothing")
	if !r.skipped || r.failed || !strings.Contains(r.msg, "custodian-no-such-tool not installed") {
		t.Fatalf("without %s: skipped=%v failed=%v msg=%q, want a skip naming the tool", RequireEnv, r.skipped, r.failed, r.msg)
	}

	t.Setenv(RequireEnv, "1")
	r = &recorder{TB: t}
	Command(r, "custodian-no-such-tool", "nothing")
	if r.skipped || !r.failed {
		t.Fatalf("with %s: skipped=%v failed=%v, want a failure", RequireEnv, r.skipped, r.failed)
	}

	r = &recorder{TB: t}
	Command(r, "sh", "dash")
	if r.skipped || r.failed {
		t.Fatalf("a present tool ended the test: %q", r.msg)
	}
}
