// Package button is the court officer's physical approval: a push button on a
// GPIO line (pull-up, pressed = low), read through periph.io, and an LED that
// blinks while a release awaits approval.
//
// Contract of Await: it returns nil only for a press that
//
//   - begins after Await was called (the caller calls it right after the
//     summary is on the display): the line must be seen released (high) after
//     the call before a falling edge counts, so a button held down, stuck, or
//     wedged since before the summary approves nothing;
//   - stays pressed for the debounce time (default 30 ms): shorter low pulses
//     are contact bounce or noise and are ignored;
//   - completes within the approval window.
//
// Otherwise it returns ErrTimeout (no press), ErrHeld (the line was low for
// the whole window: held or stuck), or the context's error. Edges are waited
// for with positive timeouts in a loop (periph's WaitForEdge(0) waits forever
// on the host driver), and the level is sampled after every wake-up, so a lost
// edge delays a press by at most one poll interval.
package button

import (
	"context"
	"errors"
	"time"

	"periph.io/x/conn/v3/gpio"
)

// Errors Await returns instead of an approval.
var (
	ErrTimeout = errors.New("no button press within the approval window")
	ErrHeld    = errors.New("the button was held down (or is stuck) for the whole approval window")
)

// Defaults.
const (
	DefaultDebounce = 30 * time.Millisecond
	DefaultPoll     = 20 * time.Millisecond
)

// Button is an approval source.
type Button interface {
	// Await blocks until a press that begins after the call completes, or the
	// window ends. It calls ready (if not nil) once it watches the line:
	// from then on a press is seen.
	Await(ctx context.Context, window time.Duration, ready func()) error
}

// GPIO is a push button between a GPIO line and ground, with the line's
// pull-up enabled.
type GPIO struct {
	Pin      gpio.PinIn
	Debounce time.Duration // 0 means DefaultDebounce
	Poll     time.Duration // 0 means DefaultPoll
}

// NewGPIO configures pin as an input with pull-up and edge detection.
func NewGPIO(pin gpio.PinIn) (*GPIO, error) {
	if err := pin.In(gpio.PullUp, gpio.BothEdges); err != nil {
		return nil, err
	}
	return &GPIO{Pin: pin}, nil
}

// Await implements Button.
func (b *GPIO) Await(ctx context.Context, window time.Duration, ready func()) error {
	start := time.Now()
	deadline := start.Add(window)
	b.drainEdges()
	debounce, poll := b.Debounce, b.Poll
	if debounce <= 0 {
		debounce = DefaultDebounce
	}
	if poll <= 0 {
		poll = DefaultPoll
	}

	// armed: the line was seen released since the call, so the next low
	// level is a press that began after the summary.
	armed := b.Pin.Read() == gpio.High
	everReleased := armed
	if ready != nil {
		ready()
	}
	var pressedAt time.Time
	for {
		now := time.Now()
		if !pressedAt.IsZero() && now.Sub(pressedAt) >= debounce {
			return nil
		}
		if !now.Before(deadline) {
			if !everReleased {
				return ErrHeld
			}
			return ErrTimeout
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		wait := min(deadline.Sub(now), poll)
		if !pressedAt.IsZero() {
			wait = min(wait, pressedAt.Add(debounce).Sub(now))
		}
		b.Pin.WaitForEdge(max(wait, time.Millisecond))
		switch b.Pin.Read() {
		case gpio.High:
			// Released, or a bounce ended the press early: re-arm.
			armed, everReleased, pressedAt = true, true, time.Time{}
		case gpio.Low:
			if armed && pressedAt.IsZero() {
				pressedAt, armed = time.Now(), false
			}
		}
	}
}

// drainEdges forgets edges that happened before the call: they belong to
// presses that began before the summary was shown. Await decides on the
// line's level, never on an edge alone, so an edge left over here can wake
// it but not approve anything.
func (b *GPIO) drainEdges() {
	for range 64 {
		if !b.Pin.WaitForEdge(time.Millisecond) {
			return
		}
	}
}

// Blink toggles led every period until ctx ends, then turns it off.
func Blink(ctx context.Context, led gpio.PinOut, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	level := gpio.High
	for {
		_ = led.Out(level)
		select {
		case <-ctx.Done():
			_ = led.Out(gpio.Low)
			return
		case <-t.C:
			level = !level
		}
	}
}
