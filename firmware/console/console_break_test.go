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

// docs/operator.md, step 12.4, sends the new image through the console
// ("put custodian-2.img, about two hours for 64 MiB") for update apply
// --image. put refuses anything over MaxTransfer (8 MiB), and the
// smallest image custodian image build makes (docs/image.md: autoboot 8,
// two boot slots of at least 24, two roots of at least 16, data 64) is
// over 150 MiB: the documented update cannot be done. A file just over
// the cap stands for it here (a real image would cost the machine too
// much memory in a test).
func TestBreakConsolePutRefusesTheImageTheUpdateRunbookSends(t *testing.T) {
	f := newFixture(t)
	img := make([]byte, MaxTransfer+3) // the smallest image is ~19 times this
	out := f.session(t, "put custodian-2.img\n"+base64Lines(img)+".\n")
	if strings.Contains(out, "larger than") {
		t.Errorf("put of a disk image, as the update runbook does it, is refused: %q", lastLines(out, 3))
	}
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// put caps the base64 text, not the bytes it decodes to: EncodedLen
// rounds up, so a file of MaxTransfer+1 bytes is stored, and get, which
// caps the bytes, then refuses to send the file back.
func TestBreakConsolePutStoresWhatGetRefuses(t *testing.T) {
	f := newFixture(t)
	img := make([]byte, MaxTransfer+1)
	out := f.session(t, "put big\n"+base64Lines(img)+".\n")
	if !strings.Contains(out, "stored transfer/big") {
		t.Fatalf("put refused it: %q", lastLines(out, 3))
	}
	if _, err := f.console.Files.Get("big"); err != nil {
		t.Errorf("put stored a file that get refuses: %v", err)
	}
}
