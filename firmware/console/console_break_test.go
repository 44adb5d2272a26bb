package console

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// Every line whose first word is update runs as root, outside the sandbox,
// with whatever flags follow. update sign and update keygen are the escrow
// authority's offline steps and write their --out (durable.WriteFile:
// temporary file and rename, or O_EXCL create) wherever root can: the data
// directory, /run, /dev. "update sign ... --out ../.lock" replaces the data
// directory's lock with a root-owned 0644 file, which the daemon's user
// cannot open for writing: from then on the daemon and every TPM command
// fail ("opening the data directory's lock: permission denied"), and no
// console command can remove the file. "--out /run/custodian/boot.cel"
// replaces the boot event log every attestation sends.
func TestBreakConsoleUpdateSignRunsAsRootWithAnyOutputPath(t *testing.T) {
	f := newFixture(t)
	f.session(t, "update sign --key update.key --policy policy.json --out ../.lock\n"+
		"update keygen --out /run/custodian/k --pub /dev/p\n")
	for _, c := range f.runner.ran {
		sub := c.Args[5]
		if c.Root && sub != "apply" && sub != "commit" {
			t.Errorf("update %s ran as root, outside the sandbox: %q", sub, c.Args)
		}
	}
	if len(f.runner.ran) != 2 {
		t.Fatalf("ran %d commands", len(f.runner.ran))
	}
}

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
