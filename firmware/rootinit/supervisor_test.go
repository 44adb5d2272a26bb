package rootinit

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware"
	"github.com/custodian-project/custodian/firmware/config"
)

// fakeProc is a daemon that ends when signalled (or when told to exit).
type fakeProc struct {
	done    chan int
	signals chan syscall.Signal
	ignore  bool // ignores SIGTERM
	once    sync.Once
}

func (p *fakeProc) Signal(s syscall.Signal) error {
	p.signals <- s
	if s == syscall.SIGKILL || !p.ignore {
		p.exit(128 + int(s))
	}
	return nil
}
func (p *fakeProc) Done() <-chan int { return p.done }
func (p *fakeProc) exit(status int) {
	p.once.Do(func() { p.done <- status; close(p.done) })
}

type harness struct {
	sup     *Supervisor
	spawned chan *fakeProc
	mu      sync.Mutex
	missing []string
	logs    chan string
	ignore  bool
}

func newHarness(t *testing.T, missing ...string) *harness {
	h := &harness{spawned: make(chan *fakeProc, 10), logs: make(chan string, 1000), missing: missing}
	h.sup = &Supervisor{
		Spawn: func() (Process, error) {
			p := &fakeProc{done: make(chan int, 1), signals: make(chan syscall.Signal, 4), ignore: h.ignore}
			h.spawned <- p
			return p, nil
		},
		Missing:     func() []string { h.mu.Lock(); defer h.mu.Unlock(); return slices.Clone(h.missing) },
		Log:         func(f string, a ...any) { h.logs <- fmt.Sprintf(f, a...) },
		StopTimeout: 50 * time.Millisecond, MinBackoff: time.Millisecond, MaxBackoff: 4 * time.Millisecond,
		Recheck: time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.sup.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

func (h *harness) next(t *testing.T) *fakeProc {
	t.Helper()
	select {
	case p := <-h.spawned:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no daemon started")
		return nil
	}
}

func (h *harness) noSpawn(t *testing.T) {
	t.Helper()
	select {
	case <-h.spawned:
		t.Fatal("a daemon started")
	case <-time.After(50 * time.Millisecond):
	}
}

func TestSupervisorRestartsAfterExit(t *testing.T) {
	h := newHarness(t)
	p := h.next(t)
	p.exit(1)
	h.next(t).exit(2)
	h.next(t) // started a third time
}

// Stop returns only when the daemon is gone, and nothing starts until Start.
func TestSupervisorStopStart(t *testing.T) {
	h := newHarness(t)
	p := h.next(t)
	h.sup.Stop()
	select {
	case s := <-p.signals:
		if s != syscall.SIGTERM {
			t.Errorf("stopped with %v, want SIGTERM", s)
		}
	default:
		t.Fatal("Stop returned without signalling the daemon")
	}
	if _, open := <-p.Done(); open {
		t.Fatal("Stop returned before the daemon ended")
	}
	h.noSpawn(t)
	if st := h.sup.Status(); !strings.Contains(st, "stopped") {
		t.Errorf("status %q", st)
	}
	h.sup.Start()
	h.next(t)
}

func TestSupervisorKillsAStubbornDaemon(t *testing.T) {
	h := newHarness(t)
	p := h.next(t)
	p.ignore = true
	h.sup.Stop()
	var got []syscall.Signal
	for len(p.signals) > 0 {
		got = append(got, <-p.signals)
	}
	if !slices.Equal(got, []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL}) {
		t.Errorf("signals %v, want SIGTERM then SIGKILL", got)
	}
}

func TestSupervisorWaitsForSetup(t *testing.T) {
	h := newHarness(t, "enrollment.json", "tls/server.key")
	h.noSpawn(t)
	if st := h.sup.Status(); !strings.Contains(st, "missing enrollment.json, tls/server.key") {
		t.Errorf("status %q", st)
	}
	h.mu.Lock()
	h.missing = nil
	h.mu.Unlock()
	h.next(t)
}

func TestMissing(t *testing.T) {
	dir := t.TempDir()
	if got := Missing(dir); !slices.Equal(got, setupFiles) {
		t.Errorf("empty data dir: missing %v", got)
	}
	for _, f := range []string{"enrollment.json", "ledger-key.blob", TLSCert, TLSKey} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o700)
		os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600)
	}
	os.Mkdir(filepath.Join(dir, TLSClientCA), 0o700) // a directory is not the file
	if got := Missing(dir); !slices.Equal(got, []string{TLSClientCA}) {
		t.Errorf("missing %v, want only %s", got, TLSClientCA)
	}
}

func TestServeArgs(t *testing.T) {
	c := &config.Config{Serve: config.Serve{Listen: "0.0.0.0:8443", Button: "gpio:GPIO17", LED: "gpio:GPIO27", Display: "/dev/tty1"}}
	got := strings.Join(ServeArgs(c, "/var/lib/custodian", "/dev/tpmrm0"), " ")
	want := "--data-dir /var/lib/custodian --tpm /dev/tpmrm0 serve --listen 0.0.0.0:8443 --button gpio:GPIO17 --display /dev/tty1" +
		" --tls-cert /var/lib/custodian/tls/server.pem --tls-key /var/lib/custodian/tls/server.key --client-ca /var/lib/custodian/tls/officer-ca.pem --led gpio:GPIO27"
	if got != want {
		t.Errorf("args\n%s\nwant\n%s", got, want)
	}
	c.Serve.LED = ""
	if strings.Contains(strings.Join(ServeArgs(c, "/d", "/dev/tpmrm0"), " "), "--led") {
		t.Error("--led without an LED")
	}
}

// The root init serves with the TLS files the systemd unit and the
// operator's runbook name.
func TestServeArgsMatchTheServiceUnit(t *testing.T) {
	var exec string
	for _, l := range strings.Split(string(firmware.ServiceUnit), "\n") {
		if e, ok := strings.CutPrefix(l, "ExecStart="); ok {
			exec = e
		}
	}
	unit := flagValues(strings.Fields(exec))
	c := &config.Config{Serve: config.Serve{Listen: "0.0.0.0:8443", Button: "gpio:GPIO17", Display: "/dev/tty1"}}
	ours := flagValues(ServeArgs(c, DataDir, TPMDevice))
	for _, f := range []string{"--data-dir", "--tpm", "--tls-cert", "--tls-key", "--client-ca"} {
		if unit[f] == "" || ours[f] != unit[f] {
			t.Errorf("%s: root init %q, unit %q", f, ours[f], unit[f])
		}
	}
}

func flagValues(args []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(args); i++ {
		if strings.HasPrefix(args[i], "--") {
			m[args[i]] = args[i+1]
		}
	}
	return m
}
