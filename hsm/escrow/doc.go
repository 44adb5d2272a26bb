// Package escrow is the life of an escrow key: made for one key ID (an
// epoch such as "2026-11") in a ceremony, split t-of-n so that no appliance
// or institution holds it, and rebuilt only from t released shares.
//
// Ceremony ([Ceremony]) runs on an offline workstation. It draws a P-256
// scalar s, splits it with Shamir over the P-256 scalar field with Feldman
// commitments (cloudflare/circl), and seals each share to one custodian's
// endorsement key and the approved image's PCRs (package tpm). s and the
// shares live only in its memory. It writes a [Public] escrow file (key ID,
// public key s·G, threshold, commitments, custodians with share indices and
// EK Names, the PCR policy) and one [Bundle] per custodian.
//
// Provisioning ([Provision]) checks a bundle is for this device, opens it in
// the TPM under the current PCRs, checks the share against the commitments,
// and forgets the share again.
//
// Recovery ([Recover]) opens release packages with the agency's identity,
// checks every share against the commitments (naming a custodian whose share
// is bad), refuses duplicates and other key IDs, and rebuilds s from
// threshold-many good shares.
//
// Envelopes ([Seal], [Open]) are the messaging side: HPKE (RFC 9180)
// DHKEM(P-256), HKDF-SHA256, ChaCha20-Poly1305 to the escrow public key,
// with the key ID and the target bound into the info string. DHKEM(P-256)
// keeps the door open for scoped releases: the envelope's encapsulated key is
// a P-256 point R, and a TPM holding a share as an ECDH key can compute
// s_i·R without revealing s_i.
//
// Threshold means "shares needed to recover" here, from 2 to n; circl's own
// t is one less.
package escrow
