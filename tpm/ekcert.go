package tpm

import (
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// maxCertSize caps a certificate read from NV; EK certificates are 1–2 KiB.
const maxCertSize = 8 << 10

// nvChunk is how much one NV_Read asks for: below every TPM's
// TPM_PT_NV_BUFFER_MAX (1024 on swtpm, 768 on some discrete TPMs).
const nvChunk = 512

// ReadEKCertificate returns the DER certificate of the EK of the given
// kind that the manufacturer stored in NV, and any certificates of its
// chain stored in the TCG chain range. A TPM without one returns nil, nil.
func ReadEKCertificate(t transport.TPM, kind EKKind) (cert []byte, chain [][]byte, err error) {
	index := rsaEKCertIndex
	if kind == EKECCP256 {
		index = eccEKCertIndex
	}
	cert, err = readNV(t, index)
	if errors.Is(err, tpm2.TPMRCHandle) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading the EK certificate: %w", err)
	}
	chain, err = readEKChain(t)
	return cert, chain, err
}

// readEKChain reads the certificates in the TCG EK chain NV range.
func readEKChain(t transport.TPM) ([][]byte, error) {
	rsp, err := tpm2.GetCapability{
		Capability: tpm2.TPMCapHandles, Property: uint32(ekChainFirst), PropertyCount: maxCertificates,
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("listing EK chain certificates: %w", err)
	}
	handles, err := rsp.CapabilityData.Data.Handles()
	if err != nil {
		return nil, err
	}
	var chain [][]byte
	for _, h := range handles.Handle {
		if h > ekChainLast {
			break
		}
		der, err := readNV(t, h)
		if err != nil {
			return nil, fmt.Errorf("reading EK chain certificate %#x: %w", uint32(h), err)
		}
		chain = append(chain, der)
	}
	return chain, nil
}

// readNV reads a whole NV index, authorizing with the index itself (the
// EK certificate indices are readable with an empty authorization).
func readNV(t transport.TPM, index tpm2.TPMHandle) ([]byte, error) {
	pub, err := tpm2.NVReadPublic{NVIndex: index}.Execute(t)
	if err != nil {
		return nil, err
	}
	info, err := pub.NVPublic.Contents()
	if err != nil {
		return nil, err
	}
	size := int(info.DataSize)
	if size > maxCertSize {
		return nil, fmt.Errorf("NV index %#x holds %d bytes, more than a certificate", uint32(index), size)
	}
	auth := tpm2.AuthHandle{Handle: index, Name: pub.NVName, Auth: tpm2.PasswordAuth(nil)}
	if !info.Attributes.AuthRead {
		auth = tpm2.AuthHandle{Handle: tpm2.TPMRHOwner, Auth: tpm2.PasswordAuth(nil)}
	}
	out := make([]byte, 0, size)
	for len(out) < size {
		n := min(nvChunk, size-len(out))
		rsp, err := tpm2.NVRead{
			AuthHandle: auth,
			NVIndex:    tpm2.NamedHandle{Handle: index, Name: pub.NVName},
			Size:       uint16(n),
			Offset:     uint16(len(out)),
		}.Execute(t)
		if err != nil {
			return nil, err
		}
		if len(rsp.Data.Buffer) != n {
			return nil, fmt.Errorf("NV index %#x returned %d bytes, asked for %d", uint32(index), len(rsp.Data.Buffer), n)
		}
		out = append(out, rsp.Data.Buffer...)
	}
	return out, nil
}
