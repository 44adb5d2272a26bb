// Package escrow is the life of an escrow key: made for one key ID (an
// epoch such as "2026-11") in a ceremony, split t-of-n so that no appliance
// or institution holds it, and used only through t custodians' releases.
//
// A key ID has a mode. In scoped mode ([ModeScoped], the default) each share
// is a TPM key that never leaves its custodian's TPM (tpm.SealScoped), and a
// release is the partial decryption of each envelope the warrant names,
// proved correct by the TPM; the agency opens exactly those envelopes
// ([OpenScoped]; for many envelopes, one [ScopedOpener] and [OpenBatch],
// which opens them on every CPU and gives each its own outcome) and no
// escrow key exists after the ceremony. In share mode
// ([ModeShare]) a release hands out the share, and t of them rebuild the
// key, which opens every envelope of the key ID ([Recover], [Open]).
//
// Ceremony ([Ceremony]) runs on an offline workstation. It draws a P-256
// scalar s, splits it with Shamir over the P-256 scalar field with Feldman
// commitments (cloudflare/circl), and seals each share to one custodian's
// import key (certified at enrollment) and the approved image's PCRs
// (package tpm). s and the
// shares live only in its memory. It writes a [Public] escrow file (key ID,
// mode, public key s·G, threshold, commitments, custodians with share
// indices, EK Names and, in scoped mode, proof keys s_i·B; the PCR policy;
// the update and approval keys) and one [Bundle] per custodian.
//
// Provisioning ([Provision]) checks a bundle is for this device and works in
// its TPM under the current PCRs: a share is opened and checked against the
// commitments, then forgotten; a scoped key computes and proves its partial
// of the generator, which must be the share's commitment.
//
// Updates ([SignUpdate], [Reseal]) move a custodian to an approved image: a
// share-mode share is resealed in the TPM; a scoped key stays as it is and
// the bundle takes the update's approval, which its TPM policy accepts.
//
// Envelopes ([Seal]) are the messaging side: HPKE (RFC 9180) DHKEM(P-256),
// HKDF-SHA256, ChaCha20-Poly1305 to the escrow public key, with the key ID
// and the target bound into the info string. The encapsulated key is a P-256
// point R, so t partials s_i·R combine to s·R ([CombinePartials]) and finish
// the decapsulation through crypto/hpke ([OpenWithDH]). Each envelope
// carries its sealer's proof of knowledge of the ephemeral scalar r with
// R = r·G, bound to its key ID, target and ciphertext (a Schnorr proof,
// Fiat–Shamir; sealproof.go for version 2's c ‖ z, sealproof3.go for
// version 3's A ‖ z): [ParseEnvelope] refuses an envelope without a
// valid one ([ErrUnproven]), version 1 envelopes included, and the
// appliance checks the proofs a warrant names its envelopes with
// ([CheckSealProofs], version 3 ones together) before it works on them. Without it, a requester could
// have a custodian compute on α·R or R + β·G for another envelope's R.
//
// Threshold means "shares needed to recover" here, from 2 to n; circl's own
// t is one less.
package escrow
