package tpm

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/internal/bytecache"
)

// kept holds, for the life of the process, what TPM2_Import returned for
// the wrapped objects of scoped keys: each object's private part as the
// TPM wrapped it to its parent (the import key for a gate key, the gate
// key for the ZGen key and its twin). A later call only loads it, which
// saves each object's TPM2_Import and that command's policy.
//
// Nothing is weakened. Such a private part loads only under its parent and
// only through the parent's policy: the gate (PolicyPCR · PolicyNV(floor),
// or the approval) sits in every branch of the gate key's policy, so it
// runs at every load of the ZGen key and the twin. Neither
// parent's policy allows TPM2_Rewrap, and a kept private part is the
// TPM's own wrapping under its parent's seed (the import key's, made in
// the TPM; the gate key's, made at sealing and inside the bundle), not an
// outer wrapper TPM2_Rewrap takes. Keeping it exposes nothing the bundle
// does not hold. The objects stay stClear.
var kept = bytecache.New[tpm2.TPM2BPrivate](1024) // a device holds a few scoped keys, three objects each

// keptKey names w under the parent of that Name.
func keptKey(parent []byte, w *wrapped) string {
	h := sha256.New()
	for _, field := range [][]byte{parent, tpm2.Marshal(w.public), w.duplicate, w.seed} {
		h.Write(tpm2.Marshal(tpm2.TPM2BData{Buffer: field}))
	}
	return string(h.Sum(nil))
}

// errKeptStale means a kept private part did not load because the TPM
// refused the part itself (TPM2_Load's first parameter: its wrapping does
// not check under the parent, as on another TPM behind the transport or
// after a changed seed): the key's kept parts are forgotten, and the call
// starts again with TPM2_Import. Any other load failure (no room for
// objects, a policy refused) is the call's error, and the parts stay.
var errKeptStale = errors.New("a kept scoped object no longer loads")

// privateRefused reports whether err is the TPM's refusal of TPM2_Load's
// inPrivate parameter.
func privateRefused(err error) bool {
	var f1 tpm2.TPMFmt1Error
	if !errors.As(err, &f1) {
		return false
	}
	isParam, index := f1.Parameter()
	return isParam && index == 1
}

// loadKept loads w under parent: from its kept private part when an
// earlier call imported it, else by TPM2_Import then TPM2_Load, keeping
// the private part once it loaded. pass satisfies the parent's policy for
// the command code it is given; what names the object in errors.
func loadKept(t transport.TPM, parent tpm2.AuthHandle, w *wrapped, pass func(tpm2.TPMCC) error, what string) (*tpm2.LoadResponse, error) {
	key := keptKey(parent.Name.Buffer, w)
	if private, ok := kept.Get(key); ok {
		if err := pass(tpm2.TPMCCLoad); err != nil {
			return nil, err
		}
		loaded, err := tpm2.Load{ParentHandle: parent, InPrivate: private, InPublic: tpm2.New2B(w.public)}.Execute(t)
		if privateRefused(err) {
			return nil, fmt.Errorf("%w: %v", errKeptStale, err)
		}
		if err != nil {
			return nil, fmt.Errorf("loading kept %s: %w", what, err)
		}
		return loaded, nil
	}
	if err := pass(tpm2.TPMCCImport); err != nil {
		return nil, err
	}
	private, err := importUnder(t, parent, w)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", what, err)
	}
	if err := pass(tpm2.TPMCCLoad); err != nil {
		return nil, err
	}
	loaded, err := tpm2.Load{ParentHandle: parent, InPrivate: private, InPublic: tpm2.New2B(w.public)}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", what, err)
	}
	kept.Add(key, private)
	return loaded, nil
}

// forgetKept forgets the kept private parts of k's three objects.
func (k *ScopedKey) forgetKept() {
	kept.Forget(keptKey(k.Key.Name(), &k.gateKey))
	gateName, err := tpm2.ObjectName(&k.gateKey.public)
	if err != nil {
		return
	}
	for _, w := range []*wrapped{&k.zgen, &k.twin} {
		kept.Forget(keptKey(gateName.Buffer, w))
	}
}
