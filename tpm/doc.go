// Package tpm keeps key shares safe in a TPM 2.0.
//
// It does six things, each with a small API:
//
//   - Connect: [Open] names a TPM by a spec string: a Linux device path
//     ("/dev/tpmrm0"), swtpm's TCP data port ("swtpm:HOST:PORT"), or the
//     in-process reference simulator ("sim", only in cgo builds). Every
//     connection retries TPM_RC_RETRY and caps response sizes.
//
//   - Seal to a remote TPM: [Seal] runs anywhere, without a TPM. From a
//     TPM's import key ([ImportKey]: a primary of the endorsement hierarchy
//     whose policy allows only Import, Load and Certify, certified by the
//     AK at enrollment) and a set of PCR values (predicted, not
//     necessarily current) it builds a [Blob] that only that TPM can import,
//     and whose content only that TPM can unseal, and only while its SHA-256
//     PCRs hold exactly those values. It refuses an empty PCR selection, a
//     PCR that was never extended (all zero), and PCRs 16 and 23, which
//     software at locality 0 can reset. Nothing is ever wrapped for the EK:
//     its policy, PolicySecret(endorsement), also authorizes TPM2_Rewrap to
//     TPM_RH_NULL, which returns a duplicate's sensitive area in the clear
//     without its own policy; the import key's policy fails Rewrap.
//
//   - Open on the device: [Unseal] imports and unseals a Blob through one
//     policy session salted to the import key with response parameter
//     encryption, so no plaintext crosses the bus between CPU and TPM. The
//     import key's Name is computed from the key the blob was made for,
//     never read back from the TPM, so a substituted salt key cannot turn the
//     encryption off. It uses twelve TPM commands.
//
//   - Hold a share that never leaves: [SealScoped] wraps a share offline as
//     two TPM keys, under a gate key wrapped for the import key, usable
//     only under the PCR policy (or an approval the
//     authority signed, checked by the TPM with PolicyAuthorize): one that
//     only runs ECDH_ZGen, and its ECDAA twin that only runs Commit and Sign.
//     [Partials] returns s·R for each point R with the TPM's own proof that
//     it is correct, which [VerifyPartial] checks anywhere (dleq.go says why
//     the proof is sound). Its ZGen responses are encrypted in a session
//     salted to the gate key, the parent the ZGen key loads under.
//
//   - Refuse downgrades: every secret carries its image's security version
//     and opens only while the TPM's version floor ([FloorIndex], an NV
//     counter that only rises) is at most that version, a PolicyNV term
//     the TPM enforces. [RaiseFloor] moves the floor up; nothing moves it
//     down.
//
//   - Anchor one key for the TPM's life: [Anchor] writes a digest into a
//     platform NV index ([AnchorIndex]) that is locked after its one write
//     and cannot be deleted, not even by TPM2_Clear; [CheckAnchor] reads it
//     only if its Name is that of the locked template.
//
//   - Account: PCR read/extend and offline prediction ([ReadPCRs],
//     [ExtendPCR], [PCRValues.Extend]), NV monotonic counters ([Counter]),
//     and quotes by a restricted ECC P-256 attestation key ([Quote],
//     [VerifyQuote]) whose tie to the endorsement key is proved by
//     credential activation ([MakeChallenge], [ActivateChallenge]).
//
// Only the SHA-256 PCR bank is used. The package flushes every transient
// object and session it loads, on success and on error, because swtpm and
// the Pi's SLB9670 have no resource manager of their own and only three
// transient slots.
package tpm
