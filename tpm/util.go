package tpm

import "crypto/subtle"

// equalBytes compares digests and names in constant time.
func equalBytes(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }
