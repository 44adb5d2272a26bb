package rootinit

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/custodian-project/custodian/firmware/console"
)

// launcher starts custodian commands: as the daemon's user inside the
// sandbox, or (update) as root.
type launcher struct {
	reaper  *Reaper
	devices []string // device nodes the sandboxed commands see besides the basic ones
}

// start runs a command in a session and process group of its own (so
// Signal reaches all of it), its standard input /dev/null (nothing waits
// on a terminal), its output out.
func (l *launcher) start(args []string, dir string, out *os.File, root bool) (*child, error) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		return nil, err
	}
	defer null.Close()
	attr := &syscall.ProcAttr{
		Dir:   dir,
		Env:   []string{"HOME=" + DataDir, "TZ=UTC", "LANG=C.UTF-8"},
		Files: []uintptr{null.Fd(), out.Fd(), out.Fd()},
		Sys:   &syscall.SysProcAttr{Setsid: true},
	}
	if root {
		return l.reaper.Start(Binary, append([]string{"custodian"}, args...), attr)
	}
	// The sandbox step runs in a mount namespace of its own: Go makes its
	// mounts private there before the step sets up the read-only view.
	attr.Sys.Unshareflags = syscall.CLONE_NEWNS
	argv := []string{SandboxName}
	for _, d := range l.devices {
		argv = append(argv, "--dev", d)
	}
	argv = append(append(argv, "--"), args...)
	return l.reaper.Start(Binary, argv, attr)
}

// Run implements console.Runner.
func (l *launcher) Run(ctx context.Context, c console.Command) (int, error) {
	out, copied, err := fileFor(c.Out)
	if err != nil {
		return 0, err
	}
	p, err := l.start(c.Args, c.Dir, out, c.Root)
	if out != c.Out {
		out.Close() // the child holds its own copy
	}
	if err != nil {
		return 0, err
	}
	// Whatever the command left running in its group ends with it.
	defer p.Signal(syscall.SIGKILL)
	select {
	case status := <-p.Done():
		<-copied
		return status, nil
	case <-ctx.Done():
		_ = p.Signal(syscall.SIGKILL)
		return <-p.Done(), ctx.Err()
	}
}

// fileFor gives a child a file to write to w: w itself when it is one, or
// a pipe copied into w (done closes when the copy ends).
func fileFor(w io.Writer) (*os.File, <-chan struct{}, error) {
	done := make(chan struct{})
	if f, ok := w.(*os.File); ok {
		close(done)
		return f, done, nil
	}
	r, pw, err := os.Pipe()
	if err != nil {
		return nil, nil, err
	}
	go func() { io.Copy(w, r); r.Close(); close(done) }()
	return pw, done, nil
}

// gpioChips are the GPIO character devices, for the button and LED.
func gpioChips() []string {
	chips, _ := filepath.Glob("/dev/gpiochip*")
	return chips
}
