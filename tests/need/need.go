// Package need is how a test says which outside part it runs against
// (swtpm, SoftHSM2, openssl, a C compiler for cgo). Without the part the
// test skips and says why, so `go test` on a bare machine still runs what
// it can. With CUSTODIAN_REQUIRE_TOOLS set — `make test` and CI set it —
// a missing part fails the test instead: an invariant that was never
// tried must not pass as green.
//
// Skips that are a choice, not a missing part (no hardware TPM named, a
// load test not asked for), call tb.Skip directly and stay skips.
package need

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// RequireEnv is the environment variable that turns a missing part into a
// failure.
const RequireEnv = "CUSTODIAN_REQUIRE_TOOLS"

// Missing ends the test because a part it needs is missing: a skip with
// the reason, or a failure when RequireEnv is set.
func Missing(tb testing.TB, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv(RequireEnv) != "" {
		tb.Fatalf("%s, and %s is set: this test must run here", reason, RequireEnv)
		return
	}
	tb.Skip(reason)
}

// Command ends the test through Missing unless the command name is on
// PATH. pkg names the Debian package that provides it.
func Command(tb testing.TB, name, pkg string) {
	tb.Helper()
	if _, err := exec.LookPath(name); err != nil {
		Missing(tb, "%s not installed (Debian package %s; make test installs it)", name, pkg)
	}
}
