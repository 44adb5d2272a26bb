//go:build !appliance

package button

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

// Sim is a simulated button for the demo and tests (not in the appliance
// build, -tags appliance): a software GPIO line
// driven by "custodian button press" through a unix socket that only the
// daemon's user can reach (mode 0600). It runs the same Await logic as the
// real button, so a simulated hold is refused like a real one.
type Sim struct {
	*GPIO
	pin *gpiotest.Pin
	ln  net.Listener
}

// ListenSim creates the socket at path and starts serving presses.
func ListenSim(path string) (*Sim, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	pin := &gpiotest.Pin{N: "SIM", L: gpio.High, EdgesChan: make(chan gpio.Level, 16)}
	s := &Sim{GPIO: &GPIO{Pin: pin}, pin: pin, ln: ln}
	go s.serve()
	return s, nil
}

// Close stops the socket.
func (s *Sim) Close() error { return s.ln.Close() }

func (s *Sim) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.handle(c)
	}
}

// handle reads one line, "press <milliseconds held>", and drives the line
// low for that long.
func (s *Sim) handle(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Hour))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	ms, ok := strings.CutPrefix(strings.TrimSpace(line), "press ")
	held, err := strconv.Atoi(ms)
	if !ok || err != nil || held < 0 || held > 3_600_000 {
		fmt.Fprintln(c, "error: expected \"press <ms>\"")
		return
	}
	s.pin.EdgesChan <- gpio.Low
	time.Sleep(time.Duration(held) * time.Millisecond)
	s.pin.EdgesChan <- gpio.High
	fmt.Fprintln(c, "ok")
}

// Press presses the simulated button behind the socket at path for hold.
func Press(ctx context.Context, path string, hold time.Duration) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		if op, ok := err.(*net.OpError); ok {
			err = op.Err // the cause, without Go's "dial unix PATH"
		}
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("the simulated button at %s does not take presses from this user: %w", path, err)
		}
		return fmt.Errorf("no simulated button at %s (is custodian serve --button sim running with this --data-dir?): %w", path, err)
	}
	defer c.Close()
	if _, err := fmt.Fprintf(c, "press %d\n", hold.Milliseconds()); err != nil {
		return err
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("the simulated button did not answer: %w", err)
	}
	if strings.TrimSpace(reply) != "ok" {
		return errors.New(strings.TrimSpace(reply))
	}
	return nil
}

// Simulated reports whether this build has the simulated button.
const Simulated = true
