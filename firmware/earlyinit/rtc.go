package earlyinit

import (
	"errors"
	"fmt"
	"time"
)

// RTCTime is the kernel's struct rtc_time, as RTC_RD_TIME fills it: a
// broken-down UTC time, months from 0, years from 1900.
type RTCTime struct {
	Sec, Min, Hour, Mday, Mon, Year int
}

// Time converts an RTC reading, refusing a field out of range or a date
// that does not exist (the 31st of February): a flat battery or a
// corrupted chip reads such values.
func (r RTCTime) Time() (time.Time, error) {
	if r.Sec < 0 || r.Sec > 59 || r.Min < 0 || r.Min > 59 || r.Hour < 0 || r.Hour > 23 ||
		r.Mday < 1 || r.Mday > 31 || r.Mon < 0 || r.Mon > 11 || r.Year < 70 || r.Year > 1100 {
		return time.Time{}, fmt.Errorf("the RTC reads an impossible time (%04d-%02d-%02d %02d:%02d:%02d)", r.Year+1900, r.Mon+1, r.Mday, r.Hour, r.Min, r.Sec)
	}
	t := time.Date(r.Year+1900, time.Month(r.Mon+1), r.Mday, r.Hour, r.Min, r.Sec, 0, time.UTC)
	if t.Day() != r.Mday {
		return time.Time{}, fmt.Errorf("the RTC reads a date that does not exist (%04d-%02d-%02d)", r.Year+1900, r.Mon+1, r.Mday)
	}
	return t, nil
}

// latestSaneTime is the first instant the appliance treats as impossible:
// the DS3231 counts years up to 2099.
var latestSaneTime = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

// ErrClockInsane is returned by [CheckClock].
var ErrClockInsane = errors.New("the clock is not plausible")

// ClockHorizonYears bounds how far after its build an image trusts the
// RTC. A clock set far ahead (a swapped or rewritten RTC) would put that
// time on the first ledger entry, and every later entry and resolve would
// refuse a corrected clock as behind it: one such boot would end the
// device. Ten years is longer than an image is meant to run without an
// update, and short enough that such a jump is refused at boot.
const ClockHorizonYears = 10

// ClockHorizon is the first instant an image built at built refuses.
func ClockHorizon(built time.Time) time.Time {
	return built.UTC().AddDate(ClockHorizonYears, 0, 0)
}

// CheckClock refuses a time before the image was built (built, the
// manifest's source_date_epoch), ClockHorizonYears or more after it, or
// from 2100 on. Every decision the
// appliance makes is bound to time — a warrant's validity, a CRL's
// freshness, the officers' TLS certificates, the ledger's time stamps and
// clock floor — and the RTC is its only clock, so the boot stops rather
// than run on a time it knows is wrong.
func CheckClock(now, built time.Time) error {
	if now.Before(built) {
		return fmt.Errorf("%w: %s is before this image was built (%s)", ErrClockInsane, now.UTC().Format(time.RFC3339), built.UTC().Format(time.RFC3339))
	}
	if horizon := ClockHorizon(built); !now.Before(horizon) {
		return fmt.Errorf("%w: %s is %d years or more after this image was built (%s); an image trusts its clock until %s", ErrClockInsane,
			now.UTC().Format(time.RFC3339), ClockHorizonYears, built.UTC().Format(time.RFC3339), horizon.Format(time.RFC3339))
	}
	if !now.Before(latestSaneTime) {
		return fmt.Errorf("%w: %s is past what the RTC can count", ErrClockInsane, now.UTC().Format(time.RFC3339))
	}
	return nil
}
