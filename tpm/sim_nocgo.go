//go:build !cgo

package tpm

import "github.com/google/go-tpm/tpm2/transport"

func openSimulator() (transport.TPMCloser, error) { return nil, ErrSimulatorUnavailable }
