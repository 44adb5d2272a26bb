// Package warrant reads, signs and verifies court warrants.
//
// A warrant is a strict JSON document (see docs/warrant.md) signed as CMS
// SignedData (RFC 5652) with the content attached, in DER. Sign makes one
// from any crypto.Signer, such as a key on a judge's smartcard. Verifier
// decides whether an appliance may act on one.
//
// Contract: Verifier.Verify accepts a warrant only if
//   - it is DER CMS SignedData of id-data content, at most 256 KiB, whose
//     JSON passes Parse (no unknown or duplicate keys, no trailing data, every
//     required field present and printable, at most 64 KiB, validity span
//     capped, each envelope listed once, for one of its key IDs and
//     targets, with an uncompressed P-256 point as its encapsulated key);
//   - every SignerInfo has signed attributes with exactly one content-type
//     (id-data), one message-digest (equal, compared in constant time) and one
//     signing-time, no unsigned attributes, SHA-256/384/512, and an ECDSA
//     P-256/P-384 or RSA ≥ 2048 (PKCS #1 v1.5 or PSS) signature that verifies
//     with the certificate it names;
//   - each signer certificate is not a CA, names a person (personName),
//     has the digitalSignature key usage, and chains to the root the trust
//     store pins for the warrant's court (so every signer is of that
//     court), and to no other court's root by any chain; it carries one of the
//     policy's accepted signing EKUs, which every CA of the chain with an EKU
//     extension allows; every certificate below the root asserts each
//     required certificate policy (an intermediate may assert anyPolicy);
//     no certificate the warrant carries, nor any of the chain, has a name
//     constraint crypto/x509 would skip (trust.CheckNameConstraints); every
//     certificate of the chain is valid now and at the signing time (which
//     is at most SigningSkew ahead of now), and every non-root one is absent
//     from a fresh CRL of its issuer (no CRL, or a stale one, refuses);
//     every signer must pass, not just enough of them;
//   - the signers are distinct people with distinct keys, at least as many
//     as the approval policy asks: two signers whose keys or person names
//     (common name, else given name and surname; case, spacing and
//     compatibility forms folded) match count once (sameSigner);
//   - now is within [not_before, not_after), the warrant lists this
//     custodian, and this custodian holds every key ID it names.
//
// Envelopes are optional: they scope a release to the escrow envelopes they
// name. Whether a key ID is released in scoped mode, and so whether its
// envelopes are required or refused, is the appliance's to check, and so
// is each envelope's seal proof (its ciphertext_sha256 and proof, package
// escrow): this package checks only that the warrant is coherent.
//
// Every refusal is an *Error with a stable Reason. Replay protection is the
// caller's: Verified.Replay is the (court root key, court, serial) key to
// check against the ledger. An empty trust store or custodian ID verifies
// nothing.
//
// What depends on bytes alone is kept between calls, in bounded caches
// (cache.go): parsed certificates, signer identities, and the chains path
// building returns, under the pinned roots' digest and only while no
// certificate it could use changes validity. CRL freshness, revocation,
// the court binding and every clock check run for every warrant.
package warrant
