// Package ids says what the names that tie the system together look like:
// custodian IDs and escrow key IDs. They appear in warrants, file names,
// ledger entries, checkpoint origins and HPKE info strings, so one rule for
// each, checked everywhere, keeps them unambiguous.
package ids

import (
	"fmt"
	"regexp"
)

var (
	// CustodianPattern: 1 to 63 lowercase letters, digits, '.' and '-',
	// starting with a letter or digit (e.g. "court-a").
	CustodianPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	// KeyIDPattern: 1 to 64 letters, digits, '.', '_', ':' and '-',
	// starting with a letter or digit (e.g. "2026-11").
	KeyIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$`)
)

// CheckCustodian reports whether id is a valid custodian ID.
func CheckCustodian(id string) error {
	if !CustodianPattern.MatchString(id) {
		return fmt.Errorf("custodian ID %q: use 1 to 63 lowercase letters, digits, '.' and '-', starting with a letter or digit", id)
	}
	return nil
}

// CheckKeyID reports whether id is a valid escrow key ID.
func CheckKeyID(id string) error {
	if !KeyIDPattern.MatchString(id) {
		return fmt.Errorf("key ID %q: use 1 to 64 letters, digits, '.', '_', ':' and '-', starting with a letter or digit", id)
	}
	return nil
}
