package console

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// The console gives a command no time limit, and reads nothing while it
// runs. "trust add-root /dev/tty1 --court x" (the display is bound into
// every sandbox's /dev) stops the daemon, then blocks in os.ReadFile on a
// terminal nobody types on: the daemon stays stopped and the console dead
// until the device is power-cycled, and the operator cannot interrupt it
// (the console is not a controlling terminal). "--in /dev/zero" instead
// reads until memory runs out, beside the running daemon for warrant show.
func TestBreakConsoleCommandHasNoTimeLimitWhileDaemonIsStopped(t *testing.T) {
	f := newFixture(t)
	r := &deadlineRunner{fakeRunner: f.runner}
	f.console.Runner = r
	f.session(t, "trust add-root /dev/tty1 --court x\n")
	if len(r.ran) != 1 || r.daemonOn[0] {
		t.Fatalf("ran %d, daemon during the command %v", len(r.ran), r.daemonOn)
	}
	if !slices.Contains(r.deadlines, true) {
		t.Errorf("%q ran with the daemon stopped and no deadline on its context", strings.Join(r.ran[0].Args, " "))
	}
}

type deadlineRunner struct {
	*fakeRunner
	deadlines []bool
}

func (r *deadlineRunner) Run(ctx context.Context, c Command) (int, error) {
	_, ok := ctx.Deadline()
	r.deadlines = append(r.deadlines, ok)
	return r.fakeRunner.Run(ctx, c)
}
