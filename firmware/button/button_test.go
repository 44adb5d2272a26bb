package button

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpiotest"
)

func newPin(t *testing.T) (*GPIO, *gpiotest.Pin) {
	t.Helper()
	p := &gpiotest.Pin{N: "GPIO17", Num: 17, EdgesChan: make(chan gpio.Level, 64)}
	b, err := NewGPIO(p)
	if err != nil {
		t.Fatal(err)
	}
	return b, p
}

func await(b *GPIO, window time.Duration) <-chan error {
	done := make(chan error, 1)
	go func() { done <- b.Await(context.Background(), window, nil) }()
	return done
}

func TestInvariantButtonPressAfterSummaryApproves(t *testing.T) {
	b, p := newPin(t)
	done := await(b, 2*time.Second)
	time.Sleep(50 * time.Millisecond)
	p.EdgesChan <- gpio.Low
	if err := <-done; err != nil {
		t.Fatalf("a press after the summary: %v", err)
	}
}

func TestButtonBounceIsIgnored(t *testing.T) {
	b, p := newPin(t)
	b.Debounce = 40 * time.Millisecond
	done := await(b, 400*time.Millisecond)
	// Ten bounces of 2 ms each: never low for the debounce time.
	for range 10 {
		time.Sleep(5 * time.Millisecond)
		p.EdgesChan <- gpio.Low
		time.Sleep(2 * time.Millisecond)
		p.EdgesChan <- gpio.High
	}
	if err := <-done; !errors.Is(err, ErrTimeout) {
		t.Fatalf("bounces approved: %v", err)
	}
}

func TestButtonBounceThenFirmPressApproves(t *testing.T) {
	b, p := newPin(t)
	done := await(b, 2*time.Second)
	for range 5 {
		p.EdgesChan <- gpio.Low
		time.Sleep(time.Millisecond)
		p.EdgesChan <- gpio.High
	}
	p.EdgesChan <- gpio.Low
	if err := <-done; err != nil {
		t.Fatalf("a firm press after bounces: %v", err)
	}
}

func TestInvariantHeldButtonApprovesNothing(t *testing.T) {
	b, p := newPin(t)
	p.Out(gpio.Low) // held since before the summary
	done := await(b, 300*time.Millisecond)
	if err := <-done; !errors.Is(err, ErrHeld) {
		t.Fatalf("a held button: %v", err)
	}
}

func TestButtonPressedBeforeDisplayThenReleasedAndPressedApproves(t *testing.T) {
	b, p := newPin(t)
	p.EdgesChan <- gpio.Low // a press that began before the summary
	p.Out(gpio.Low)
	done := await(b, 2*time.Second)
	time.Sleep(100 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the early press counted: %v", err)
	default:
	}
	p.EdgesChan <- gpio.High
	time.Sleep(20 * time.Millisecond)
	p.EdgesChan <- gpio.Low
	if err := <-done; err != nil {
		t.Fatalf("a fresh press after release: %v", err)
	}
}

func TestButtonReleasedBeforeDisplayIsForgotten(t *testing.T) {
	b, p := newPin(t)
	// A whole press (down and up) before the summary: stale edges.
	p.EdgesChan <- gpio.Low
	p.EdgesChan <- gpio.High
	if err := b.Await(context.Background(), 150*time.Millisecond, nil); !errors.Is(err, ErrTimeout) {
		t.Fatalf("a press before the summary counted: %v", err)
	}
}

func TestButtonTimeout(t *testing.T) {
	b, _ := newPin(t)
	start := time.Now()
	err := b.Await(context.Background(), 200*time.Millisecond, nil)
	if !errors.Is(err, ErrTimeout) || time.Since(start) < 200*time.Millisecond || time.Since(start) > time.Second {
		t.Fatalf("timeout: %v after %v", err, time.Since(start))
	}
}

func TestButtonContextCancel(t *testing.T) {
	b, _ := newPin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := b.Await(ctx, time.Minute, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancel: %v", err)
	}
}

func TestSimButtonOverSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), SimSocket)
	s, err := ListenSim(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() { done <- s.Await(context.Background(), 2*time.Second, nil) }()
	time.Sleep(30 * time.Millisecond)
	if err := Press(context.Background(), path, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("simulated press: %v", err)
	}
}

func TestParseSpec(t *testing.T) {
	if sim, _, err := ParseSpec("sim"); !sim || err != nil {
		t.Fatal("sim")
	}
	if _, n, err := ParseSpec("gpio:GPIO17"); n != "GPIO17" || err != nil {
		t.Fatal("gpio")
	}
	for _, bad := range []string{"", "gpio:", "GPIO17", "simulated"} {
		if _, _, err := ParseSpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLEDBlinksUntilDoneThenOff(t *testing.T) {
	led := &gpiotest.Pin{N: "GPIO27", Num: 27}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Blink(ctx, led, 5*time.Millisecond); close(done) }()
	seen := map[gpio.Level]bool{}
	for deadline := time.Now().Add(time.Second); time.Now().Before(deadline) && len(seen) < 2; time.Sleep(time.Millisecond) {
		seen[led.Read()] = true
	}
	cancel()
	<-done
	if len(seen) != 2 {
		t.Fatalf("the LED did not blink: %v", seen)
	}
	if led.Read() != gpio.Low {
		t.Fatal("the LED stayed on")
	}
}

// TestInvariantApplianceBuildHasNoSimulatedButton: the device's binary
// (-tags appliance) cannot be approved by software.
func TestInvariantApplianceBuildHasNoSimulatedButton(t *testing.T) {
	out, err := exec.Command("go", "list", "-tags", "appliance", "-deps", "github.com/custodian-project/custodian/cmd/custodian").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "periph.io/x/conn/v3/gpio/gpiotest") {
		t.Fatal("the appliance build contains the simulated button's software pin")
	}
	if !strings.Contains(string(out), "periph.io/x/host/v3/gpioioctl") {
		t.Fatal("the appliance build lacks the GPIO driver")
	}
}
