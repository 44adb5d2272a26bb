package earlyinit

import (
	"testing"
	"time"
)

// CheckClock takes any RTC time from the image's build up to 2099. A clock
// set forward by decades (an RTC module swapped or written over I2C, which
// the brief trusts) boots; the first ledger entry then carries that time,
// and every later append and every resolve refuse a corrected clock as
// "behind the newest ledger entry" (hsm/ledger checkClock) until that
// date comes. A new ledger cannot be made either once the anchor is
// locked: one wrong boot ends the device. docs/threat-model.md says only
// that a clock set forward makes warrants valid early.
func TestBreakClockDecadesAheadOfTheImageBoots(t *testing.T) {
	built := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	ahead := time.Date(2099, 12, 31, 0, 0, 0, 0, time.UTC)
	if err := CheckClock(ahead, built); err == nil {
		t.Errorf("an RTC at %s boots an image built %s: its first ledger entry locks the ledger until then", ahead.Format(time.DateOnly), built.Format(time.DateOnly))
	}
}
