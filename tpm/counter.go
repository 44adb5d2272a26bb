package tpm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// DefaultCounterIndex is the NV index of the appliance's release counter,
// in the owner range (0x01800000–0x01BFFFFF) of the TCG handle registry.
const DefaultCounterIndex tpm2.TPMHandle = 0x01800C57

// Counter is a TPM NV counter: a 64-bit value that only goes up, survives
// power loss, and cannot be written or rolled back, only incremented.
//
// Attributes: TPM_NT_COUNTER, AUTHREAD|AUTHWRITE with an empty
// authorization (anyone may read or increment: increments can only make a
// rolled-back copy of the data directory more obviously stale), NO_DA (no
// dictionary-attack lockout from a wrong empty password), and no
// PLATFORMCREATE. Deleting it needs the owner hierarchy; a counter defined
// again starts at the highest value any counter of that TPM ever held
// (TPM 2.0 Part 1, "NV Counters"), so delete-and-recreate cannot rewind it.
type Counter struct {
	Index tpm2.TPMHandle
}

// ErrNoCounter means the NV index is not defined.
var ErrNoCounter = errors.New("the TPM has no NV counter at that index")

func counterAttributes() tpm2.TPMANV {
	return tpm2.TPMANV{
		NT:        tpm2.TPMNTCounter,
		AuthRead:  true,
		AuthWrite: true,
		NoDA:      true,
	}
}

func (c Counter) public() tpm2.TPMSNVPublic {
	return tpm2.TPMSNVPublic{
		NVIndex:    c.Index,
		NameAlg:    tpm2.TPMAlgSHA256,
		Attributes: counterAttributes(),
		DataSize:   8,
	}
}

// Create defines the counter and increments it once, since a counter
// cannot be read before its first increment. It returns the first value.
// Creating needs the owner hierarchy's (empty) authorization.
func (c Counter) Create(t transport.TPM) (uint64, error) {
	_, err := tpm2.NVDefineSpace{
		AuthHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)},
		PublicInfo: tpm2.New2B(c.public()),
	}.Execute(t)
	if err != nil {
		return 0, fmt.Errorf("defining NV counter %#x: %w", uint32(c.Index), err)
	}
	return c.Increment(t)
}

// handle names the index for a command, checking that the TPM's index is
// the counter we define (same attributes and size), not some other NV
// area that an attacker placed at that index.
func (c Counter) handle(t transport.TPM) (tpm2.AuthHandle, error) {
	rsp, err := tpm2.NVReadPublic{NVIndex: c.Index}.Execute(t)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return tpm2.AuthHandle{}, fmt.Errorf("%w (%#x)", ErrNoCounter, uint32(c.Index))
	}
	if err != nil {
		return tpm2.AuthHandle{}, fmt.Errorf("reading NV counter %#x: %w", uint32(c.Index), err)
	}
	unwritten, err := c.name(false)
	if err != nil {
		return tpm2.AuthHandle{}, err
	}
	written, err := c.name(true)
	if err != nil {
		return tpm2.AuthHandle{}, err
	}
	if !equalBytes(rsp.NVName.Buffer, unwritten.Buffer) && !equalBytes(rsp.NVName.Buffer, written.Buffer) {
		return tpm2.AuthHandle{}, fmt.Errorf("NV index %#x is not a custodian counter (other attributes)", uint32(c.Index))
	}
	return tpm2.AuthHandle{Handle: c.Index, Name: rsp.NVName, Auth: tpm2.PasswordAuth(nil)}, nil
}

// name is the index's Name before or after its first write.
func (c Counter) name(written bool) (tpm2.TPM2BName, error) {
	key := counterName{c.Index, written}
	if name, ok := counterNames.Load(key); ok {
		return tpm2.TPM2BName{Buffer: bytes.Clone(name.([]byte))}, nil
	}
	public := c.public()
	public.Attributes.Written = written
	name, err := tpm2.NVName(&public)
	if err != nil {
		return tpm2.TPM2BName{}, err
	}
	counterNames.Store(key, bytes.Clone(name.Buffer))
	return *name, nil
}

// counterNames keeps the Names name computed: a counter's public area is
// the fixed template at its index, so its Name is a function of the index
// and the written bit alone, and go-tpm computes it by reflection, at a
// cost near a TPM command's (every ReadFloor checks the index against
// both Names). A process uses a few indices.
var counterNames sync.Map // counterName → []byte

type counterName struct {
	index   tpm2.TPMHandle
	written bool
}

// Read returns the counter's value.
func (c Counter) Read(t transport.TPM) (uint64, error) {
	h, err := c.handle(t)
	if err != nil {
		return 0, err
	}
	return c.read(t, h)
}

func (c Counter) read(t transport.TPM, h tpm2.AuthHandle) (uint64, error) {
	rsp, err := tpm2.NVRead{AuthHandle: h, NVIndex: tpm2.NamedHandle{Handle: h.Handle, Name: h.Name}, Size: 8}.Execute(t)
	if err != nil {
		return 0, fmt.Errorf("reading NV counter %#x: %w", uint32(c.Index), err)
	}
	if len(rsp.Data.Buffer) != 8 {
		return 0, fmt.Errorf("NV counter %#x returned %d bytes", uint32(c.Index), len(rsp.Data.Buffer))
	}
	return binary.BigEndian.Uint64(rsp.Data.Buffer), nil
}

// Increment adds one to the counter and returns the new value: three
// commands (NV_ReadPublic, NV_Increment, NV_Read). A caller that keeps
// the value (the ledger's TPMCounter) checks the index once with
// Read and then calls Bump, one command per increment.
func (c Counter) Increment(t transport.TPM) (uint64, error) {
	h, err := c.handle(t)
	if err != nil {
		return 0, err
	}
	if err := c.increment(t, h); err != nil {
		return 0, err
	}
	// The first increment sets TPMA_NV_WRITTEN and so changes the Name.
	h.Name, err = c.name(true)
	if err != nil {
		return 0, err
	}
	return c.read(t, h)
}

// Bump adds one to a counter that Read or Increment found to be this
// counter on this TPM since it last started: one command, NV_Increment,
// under the index's own (empty) password. The value is the caller's to
// keep: the counter only goes up by one per Bump.
//
// No session: the command carries no secret (the index's authorization
// is empty, so anyone may increment, which only makes an older copy of
// the data directory more obviously stale), and an HMAC session keyed by
// an empty authValue would be computable by anyone who reads the bus.
// The index's Name is not sent with a password; it was checked by the
// Read before (NV_ReadPublic against the template). Replacing the index
// needs the owner hierarchy and a TPM command of its own, and the next
// start's Read refuses the impostor.
func (c Counter) Bump(t transport.TPM) error {
	name, err := c.name(true)
	if err != nil {
		return err
	}
	return c.increment(t, tpm2.AuthHandle{Handle: c.Index, Name: name, Auth: tpm2.PasswordAuth(nil)})
}

// BumpAndRead is Bump followed by NV_Read of the value (two commands):
// the value is the TPM's, so an increment by anyone else since the last
// read shows in it now.
func (c Counter) BumpAndRead(t transport.TPM) (uint64, error) {
	if err := c.Bump(t); err != nil {
		return 0, err
	}
	name, err := c.name(true)
	if err != nil {
		return 0, err
	}
	return c.read(t, tpm2.AuthHandle{Handle: c.Index, Name: name, Auth: tpm2.PasswordAuth(nil)})
}

func (c Counter) increment(t transport.TPM, h tpm2.AuthHandle) error {
	if _, err := (tpm2.NVIncrement{AuthHandle: h, NVIndex: tpm2.NamedHandle{Handle: h.Handle, Name: h.Name}}).Execute(t); err != nil {
		return fmt.Errorf("incrementing NV counter %#x: %w", uint32(c.Index), err)
	}
	return nil
}
