//go:build cgo

package tpm

import (
	"bytes"

	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2/transport"
)

// openSimulator starts the Microsoft reference TPM in this process with
// fresh random seeds. Only one can be open at a time in a process.
func openSimulator() (transport.TPMCloser, error) {
	sim, err := simulator.Get()
	if err != nil {
		return nil, err
	}
	return &simConn{sim}, nil
}

type simConn struct{ sim *simulator.Simulator }

func (s *simConn) Send(cmd []byte) ([]byte, error) {
	// The simulator decrypts parameters in the buffer it is given: give
	// it its own, as a TPM on a bus would have.
	if _, err := s.sim.Write(bytes.Clone(cmd)); err != nil {
		return nil, err
	}
	return readResponse(s.sim)
}

func (s *simConn) Close() error { return s.sim.Close() }

// Simulator gives tests the simulator itself (for a reset).
func (s *simConn) Simulator() *simulator.Simulator { return s.sim }
