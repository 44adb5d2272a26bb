//go:build appliance

package button

import (
	"context"
	"errors"
	"time"
)

// ErrNoSim is returned by the appliance build for the simulated button:
// the device's binary can be approved only by its physical button.
var ErrNoSim = errors.New("this appliance binary has no simulated button: only the physical button approves a release")

// Sim is absent from the appliance build.
type Sim struct{ *GPIO }

// ListenSim refuses in the appliance build.
func ListenSim(string) (*Sim, error) { return nil, ErrNoSim }

// Close does nothing.
func (s *Sim) Close() error { return nil }

// Press refuses in the appliance build.
func Press(context.Context, string, time.Duration) error { return ErrNoSim }

// Simulated reports whether this build has the simulated button.
const Simulated = false
