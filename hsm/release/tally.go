package release

import (
	"crypto/sha256"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// DefaultTallyInterval is how often counted refusals are written to the
// ledger, as one unverified entry.
const DefaultTallyInterval = 6 * time.Hour

// maxLoggedRefusals bounds the refusals remembered as logged, so that a
// warrant refused again for the same reason is counted, not logged again.
const maxLoggedRefusals = 4096

// tally counts refusals that get no ledger entry of their own — anything
// before someone accountable is known to stand behind a request, and
// repeats — by code, until they are written as one unverified entry. It
// lives in memory only: counting writes nothing to disk or to the TPM.
type tally struct {
	mu     sync.Mutex
	counts map[string]uint64
	since  time.Time         // the start of the current interval
	logged map[[32]byte]bool // refusals that already have their entry
}

func newTally(now time.Time) *tally {
	return &tally{counts: map[string]uint64{}, since: now, logged: map[[32]byte]bool{}}
}

func (t *tally) add(code Code) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.counts[string(code)]++
}

// firstTime reports whether the refusal of a warrant for code is the first
// one since the daemon started, and remembers it. A warrant is known by its
// signed content, not by the submitted bytes: the CMS wrapping has parts
// nobody signs (the certificate set, an ECDSA signature's sign), so one
// copy could otherwise be turned into many "new" warrants. Memory is
// bounded: when full it forgets everything (a warrant may then be logged
// once more).
func (t *tally) firstTime(p7s []byte, code Code) bool {
	signed := p7s
	if content, err := warrant.Content(p7s); err == nil {
		signed = content
	}
	h := sha256.New()
	h.Write([]byte(code))
	h.Write([]byte{0})
	h.Write(signed)
	key := [32]byte(h.Sum(nil))
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.logged[key] {
		return false
	}
	if len(t.logged) >= maxLoggedRefusals {
		clear(t.logged)
	}
	t.logged[key] = true
	return true
}

// due returns the counts to write when the interval has passed (or always,
// when force is set), and starts a new interval. It returns nil when
// nothing was counted: an idle appliance writes no entry.
func (t *tally) due(now time.Time, interval time.Duration, force bool) map[string]uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !force && now.Sub(t.since) < interval {
		return nil
	}
	t.since = now
	if len(t.counts) == 0 {
		return nil
	}
	out := t.counts
	t.counts = map[string]uint64{}
	return out
}

// Counted returns the refusals counted since the last unverified entry.
func (d *Daemon) Counted() map[string]uint64 {
	d.tally.mu.Lock()
	defer d.tally.mu.Unlock()
	return maps.Clone(d.tally.counts)
}

// restore puts back counts that could not be written.
func (t *tally) restore(counts map[string]uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for r, n := range counts {
		t.counts[r] += n
	}
}

// count refuses without a ledger entry of its own: the refusal is tallied
// for the next unverified entry and logged at debug level only (the
// daemon's log is on disk too).
func (d *Daemon) count(code Code, err error) *Refusal {
	d.tally.add(code)
	d.cfg.Log.Debug("refused (counted)", "code", code, "err", err)
	return &Refusal{Code: code, Err: err, LedgerIndex: -1}
}

// writeTally appends the unverified entry when the interval has passed,
// or now if force. Counts that cannot be written are kept for the next try.
func (d *Daemon) writeTally(force bool) {
	counts := d.tally.due(d.now(), d.cfg.TallyInterval, force)
	if counts == nil {
		return
	}
	// More reasons than one entry holds (never with today's codes) take
	// more than one entry.
	reasons := slices.Sorted(maps.Keys(counts))
	for chunk := range slices.Chunk(reasons, ledger.MaxCounts) {
		part := map[string]uint64{}
		for _, r := range chunk {
			part[r] = counts[r]
		}
		e := ledger.Entry{Time: d.stamp(), Kind: ledger.KindUnverified, Outcome: ledger.OutcomeRefused, Counts: part}
		index, err := d.cfg.Appliance.Ledger.Append(e, nil, nil)
		if errors.Is(err, ledger.ErrUncounted) {
			// Stored: counting these again would log them twice.
			d.cfg.Log.Error("counted refusals logged; the TPM counter follows at the next start", "counts", part, "ledger_index", index, "err", err)
			continue
		}
		if err != nil {
			d.tally.restore(part)
			d.cfg.Log.Error("counted refusals not logged", "counts", part, "err", err)
			continue
		}
		d.cfg.Log.Info("counted refusals logged", "counts", part, "ledger_index", index)
	}
}

// tallyLoop writes the tally each interval until the daemon closes.
func (d *Daemon) tallyLoop() {
	defer d.wg.Done()
	tick := time.NewTicker(min(d.cfg.TallyInterval, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-tick.C:
			d.writeTally(false)
		}
	}
}
