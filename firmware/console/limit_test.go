package console

import (
	"context"
	"strings"
	"testing"
	"time"
)

// Every console command has a time limit, longer for update apply. The
// operator cannot interrupt a command (the console is not a controlling
// terminal): without one, "trust add-root /dev/tty1 --court x" (the
// display is bound into every sandbox's /dev) stops the daemon, then
// blocks on a terminal nobody types on, and the daemon stays stopped
// until the device is power-cycled.
func TestConsoleCommandsHaveATimeLimit(t *testing.T) {
	f := newFixture(t)
	r := &deadlineRunner{fakeRunner: f.runner}
	f.console.Runner = r
	f.session(t, "trust add-root /dev/tty1 --court x\nupdate apply --image new.img\n")
	if len(r.ran) != 2 || r.daemonOn[0] {
		t.Fatalf("ran %d, daemon during the command %v", len(r.ran), r.daemonOn)
	}
	for i, want := range []time.Duration{DefaultTimeout, DefaultApplyTimeout} {
		if r.limits[i] <= 0 || r.limits[i] > want || r.limits[i] < want-time.Minute {
			t.Errorf("%q ran with time limit %s, want %s", strings.Join(r.ran[i].Args, " "), r.limits[i], want)
		}
	}
}

// A command past its limit ends with a message that says so, and the
// daemon it stopped runs again.
func TestConsoleSaysWhenACommandRanOutOfTime(t *testing.T) {
	f := newFixture(t)
	f.console.Runner = hangingRunner{}
	f.console.Timeout = time.Millisecond
	out := f.session(t, "trust add-root /dev/tty1 --court x\n")
	if !strings.Contains(out, "custodian: error: trust did not finish within 1ms and was stopped") || !strings.Contains(out, "[exit 1]") {
		t.Errorf("output %q", out)
	}
	if !f.daemon.running {
		t.Error("the daemon stays stopped after a command ran out of time")
	}
}

type deadlineRunner struct {
	*fakeRunner
	limits []time.Duration
}

func (r *deadlineRunner) Run(ctx context.Context, c Command) (int, error) {
	d, ok := ctx.Deadline()
	if ok {
		r.limits = append(r.limits, time.Until(d))
	} else {
		r.limits = append(r.limits, 0)
	}
	return r.fakeRunner.Run(ctx, c)
}

// hangingRunner is a command that never ends by itself.
type hangingRunner struct{}

func (hangingRunner) Run(ctx context.Context, _ Command) (int, error) {
	<-ctx.Done()
	return 137, ctx.Err()
}
