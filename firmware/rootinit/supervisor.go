package rootinit

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a started daemon.
type Process interface {
	Signal(syscall.Signal) error
	// Done yields the exit status once, when the process has ended.
	Done() <-chan int
}

// Supervisor keeps the release daemon running: it starts it once the
// device is set up, restarts it with backoff when it exits, and stops it
// for the console while a command uses the TPM or the ledger. It
// implements console.Daemon.
type Supervisor struct {
	Spawn   func() (Process, error)
	Missing func() []string // what the device lacks before the daemon can start
	Log     func(format string, args ...any)

	StopTimeout time.Duration // SIGTERM, then SIGKILL after this
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
	Recheck     time.Duration // how often a device that is not set up is looked at again

	once  sync.Once
	stop  chan chan struct{}
	start chan struct{}
	mu    sync.Mutex
	state string
}

func (s *Supervisor) init() {
	s.once.Do(func() {
		s.stop = make(chan chan struct{})
		s.start = make(chan struct{}, 1)
		s.state = "starting"
	})
}

// Stop returns once the daemon is not running; it stays stopped until Start.
func (s *Supervisor) Stop() error {
	s.init()
	select { // a Start nobody consumed must not undo this Stop
	case <-s.start:
	default:
	}
	ack := make(chan struct{})
	s.stop <- ack
	<-ack
	return nil
}

// Start lets the daemon run again after Stop.
func (s *Supervisor) Start() {
	s.init()
	select {
	case s.start <- struct{}{}:
	default:
	}
}

// Status says what the daemon is doing.
func (s *Supervisor) Status() string {
	s.init()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *Supervisor) setState(format string, args ...any) {
	s.mu.Lock()
	s.state = fmt.Sprintf(format, args...)
	s.mu.Unlock()
}

// Run supervises until ctx ends, then stops the daemon.
func (s *Supervisor) Run(ctx context.Context) {
	s.init()
	backoff := s.MinBackoff
	paused := false
	lastMissing := ""
	for ctx.Err() == nil {
		if paused {
			s.setState("stopped while a console command runs")
			if paused = s.waitStart(ctx); !paused {
				backoff = s.MinBackoff
			}
			continue
		}
		if missing := strings.Join(s.Missing(), ", "); missing != "" {
			s.setState("not started: the device is not set up (missing %s)", missing)
			if missing != lastMissing {
				s.Log("daemon not started: missing %s (enroll and ledger init on the console; the TLS files go on the data partition)", missing)
				lastMissing = missing
			}
			paused = s.sleep(ctx, s.Recheck)
			continue
		}
		lastMissing = ""
		p, err := s.Spawn()
		if err != nil {
			s.Log("daemon did not start: %v; retrying in %s", err, backoff)
			paused = s.sleep(ctx, backoff)
			backoff = min(2*backoff, s.MaxBackoff)
			continue
		}
		s.setState("running")
		s.Log("daemon started")
		started := time.Now()
		select {
		case status := <-p.Done():
			if time.Since(started) > s.MaxBackoff {
				backoff = s.MinBackoff // it ran well for a while: a fresh fault
			}
			s.setState("exited with status %d; restarting in %s", status, backoff)
			s.Log("daemon exited with status %d; restarting in %s", status, backoff)
			paused = s.sleep(ctx, backoff)
			backoff = min(2*backoff, s.MaxBackoff)
		case ack := <-s.stop:
			s.terminate(p)
			paused = true
			close(ack)
		case <-ctx.Done():
			s.terminate(p)
		}
	}
}

// waitStart waits for Start while paused; it reports whether still paused.
func (s *Supervisor) waitStart(ctx context.Context) bool {
	select {
	case <-s.start:
		return false
	case ack := <-s.stop:
		close(ack)
		return true
	case <-ctx.Done():
		return true
	}
}

// sleep waits d, or less when a Stop comes (then it reports paused).
func (s *Supervisor) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return false
	case ack := <-s.stop:
		close(ack)
		return true
	case <-ctx.Done():
		return false
	}
}

// terminate asks the daemon to stop (a running release finishes storing
// its package), and kills it after StopTimeout.
func (s *Supervisor) terminate(p Process) {
	_ = p.Signal(syscall.SIGTERM)
	t := time.NewTimer(s.StopTimeout)
	defer t.Stop()
	select {
	case <-p.Done():
		s.Log("daemon stopped")
	case <-t.C:
		s.Log("daemon did not stop within %s; killing it", s.StopTimeout)
		_ = p.Signal(syscall.SIGKILL)
		<-p.Done()
	}
}
