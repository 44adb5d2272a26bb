package rootinit

import (
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// Reaper is PID 1's child handling: it reaps every child that exits (the
// daemon's, the console's commands', and orphans the kernel hands to PID
// 1, so none stays a zombie) and hands the exit status to whoever started
// that child. Children must be started through it, never through os/exec,
// whose Wait would race with the reaping.
type Reaper struct {
	mu    sync.Mutex
	procs map[int]chan int
}

// NewReaper starts reaping.
func NewReaper() *Reaper {
	r := &Reaper{procs: map[int]chan int{}}
	sig := make(chan os.Signal, 16)
	signal.Notify(sig, syscall.SIGCHLD)
	go func() {
		for {
			r.reap()
			<-sig
		}
	}()
	return r
}

func (r *Reaper) reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
		status := ws.ExitStatus()
		if ws.Signaled() {
			status = 128 + int(ws.Signal())
		}
		r.mu.Lock() // Start holds it from fork to registration
		ch := r.procs[pid]
		delete(r.procs, pid)
		r.mu.Unlock()
		if ch != nil {
			ch <- status
		}
	}
}

// child is a process started through the Reaper.
type child struct {
	pid  int
	done chan int
}

// Signal signals the child's whole process group: every child is started
// in a session of its own (Setsid), so the group holds the child and
// whatever it started, which must not outlive it.
func (c *child) Signal(sig syscall.Signal) error { return syscall.Kill(-c.pid, sig) }
func (c *child) Done() <-chan int                { return c.done }

// Start forks and executes argv0 with argv and attr.
func (r *Reaper) Start(argv0 string, argv []string, attr *syscall.ProcAttr) (*child, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pid, err := syscall.ForkExec(argv0, argv, attr)
	if err != nil {
		return nil, err
	}
	c := &child{pid: pid, done: make(chan int, 1)}
	r.procs[pid] = c.done
	return c, nil
}
