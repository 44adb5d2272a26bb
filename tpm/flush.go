package tpm

import (
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// staleHandleRanges are the first handles of transient objects, loaded
// sessions and saved sessions.
var staleHandleRanges = []tpm2.TPMHandle{0x80000000, 0x02000000, 0x03000000}

// FlushStale flushes every transient object and session the TPM holds and
// returns how many there were. Behind the kernel's resource manager
// (/dev/tpmrm0) a process sees only its own, so there are none; on a TPM
// without one (swtpm, a raw device) they are what a process left behind
// when it died mid-operation, and they take the few slots a release
// needs (the SLB9670 has three of each). Run it only while nothing else
// of this process uses the TPM.
func FlushStale(t transport.TPM) (int, error) {
	n := 0
	for _, first := range staleHandleRanges {
		handles, err := handlesFrom(t, first)
		if err != nil {
			return n, fmt.Errorf("listing the TPM's loaded handles: %w", err)
		}
		for _, h := range handles {
			if _, err := (tpm2.FlushContext{FlushHandle: h}).Execute(t); err != nil {
				return n, fmt.Errorf("flushing TPM handle %#x: %w", uint32(h), err)
			}
			n++
		}
	}
	return n, nil
}

// LoadedHandles lists the transient objects and sessions the TPM holds.
func LoadedHandles(t transport.TPM) ([]tpm2.TPMHandle, error) {
	var all []tpm2.TPMHandle
	for _, first := range staleHandleRanges {
		handles, err := handlesFrom(t, first)
		if err != nil {
			return nil, err
		}
		all = append(all, handles...)
	}
	return all, nil
}

func handlesFrom(t transport.TPM, first tpm2.TPMHandle) ([]tpm2.TPMHandle, error) {
	rsp, err := tpm2.GetCapability{
		Capability: tpm2.TPMCapHandles, Property: uint32(first), PropertyCount: 64,
	}.Execute(t)
	if err != nil {
		return nil, err
	}
	handles, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, err
	}
	// The TPM lists handles from first on, of that type only; keep the
	// check in case one lists further.
	var out []tpm2.TPMHandle
	for _, h := range handles.Handle {
		if h>>24 == first>>24 {
			out = append(out, h)
		}
	}
	return out, nil
}
