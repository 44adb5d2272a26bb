package tpmtest

import (
	"errors"
	"flag"
	"testing"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/tests/need"
	"github.com/custodian-project/custodian/tpm"
)

var device = flag.String("tpm-device", "", "also run TPM tests against this hardware TPM (e.g. /dev/tpmrm0); it must be dedicated to testing")

// Target is one TPM a suite runs against.
type Target struct {
	Name string
	// Open connects to the TPM. Every call in one test reaches the same TPM.
	Open func(t testing.TB) transport.TPM
	// Swtpm is set when the target is a swtpm process (for power cycles
	// and tpm2-tools cross-checks).
	Swtpm *Swtpm
}

// Targets lists the TPMs every suite runs against: the in-process
// simulator (cgo builds), a fresh swtpm per test, and the hardware TPM
// named by -tpm-device. A target that is not available here is skipped
// with the reason.
func Targets() []Target {
	return []Target{
		{Name: "sim", Open: openSim},
		{Name: "swtpm", Open: nil},
		{Name: "device", Open: openDevice},
	}
}

// Run runs f as a subtest on every target, then checks that f left no
// transient object or session loaded.
func Run(t *testing.T, f func(t *testing.T, target Target)) {
	for _, target := range Targets() {
		t.Run(target.Name, func(t *testing.T) {
			open := target.Open
			if target.Name == "swtpm" {
				s := StartSwtpm(t)
				target.Swtpm = s
				open = func(t testing.TB) transport.TPM { return s.Open(t) }
			}
			// One connection per test: the simulator is a process-wide
			// singleton, and a swtpm serves one client at a time.
			var conn transport.TPM
			target.Open = func(t testing.TB) transport.TPM {
				if conn == nil {
					conn = open(t)
				}
				return conn
			}
			target.Open(t)
			f(t, target)
			AssertNoLeaks(t, conn)
		})
	}
}

func openSim(t testing.TB) transport.TPM {
	t.Helper()
	conn, err := tpm.Open("sim")
	if errors.Is(err, tpm.ErrSimulatorUnavailable) {
		need.Missing(t, "the in-process simulator needs a cgo build (a C compiler: Debian gcc)")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func openDevice(t testing.TB) transport.TPM {
	t.Helper()
	if *device == "" {
		t.Skip("no hardware TPM named (run with -tpm-device /dev/tpmrm0 to include one)")
	}
	conn, err := tpm.Open(*device)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// AssertNoLeaks fails the test if the TPM holds any transient object or
// any loaded or saved session.
func AssertNoLeaks(t testing.TB, conn transport.TPM) {
	t.Helper()
	handles, err := tpm.LoadedHandles(conn)
	if err != nil {
		t.Errorf("listing handles: %v", err)
		return
	}
	if len(handles) > 0 {
		t.Errorf("TPM holds %d handle(s): %v", len(handles), handles)
	}
}

// RunSwtpm runs f against a fresh swtpm only, for tests that power-cycle
// the TPM or cross-check with tpm2-tools.
func RunSwtpm(t *testing.T, f func(t *testing.T, target Target)) {
	s := StartSwtpm(t)
	conn := s.Open(t)
	target := Target{Name: "swtpm", Swtpm: s, Open: func(testing.TB) transport.TPM { return conn }}
	f(t, target)
	AssertNoLeaks(t, conn)
}

// Floor defines the TPM's security version floor if it has none and
// returns its value: the version a test seals at, so that its secrets
// open on a simulator whose earlier tests deleted counters (a new counter
// starts above every deleted one).
func Floor(t testing.TB, conn transport.TPM) uint64 {
	t.Helper()
	v, err := tpm.DefineFloor(conn)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// FlushAll flushes every transient object and session, as the kernel's
// resource manager (/dev/tpmrm0) does when a process dies: swtpm has none,
// so a test that kills a process mid-command calls this instead.
func FlushAll(t testing.TB, conn transport.TPM) {
	t.Helper()
	if _, err := tpm.FlushStale(conn); err != nil {
		t.Fatal(err)
	}
}
