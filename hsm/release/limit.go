package release

import (
	"sync"
	"time"
)

// Default rates. Per client: enough for an officer's client polling a
// request. For all submissions together: what a court could need, far
// below what the verifier sustains. A request over either limit is
// refused with 429 and only counted in memory (no disk, no TPM NV write).
const (
	DefaultRate        = 5  // requests per second per client, sustained
	DefaultBurst       = 20 // requests at once per client
	DefaultGlobalRate  = 10 // submissions per second from all clients
	DefaultGlobalBurst = 30
	// The read-only ledger routes (checkpoint, entries, consistency and
	// the tlog tiles) have their own bucket per client, never the
	// officer's: a mirror or a tlog client reads hundreds of tiles in a
	// row, about 50 at once (torchwood), and must not use up the bucket of
	// an officer behind the same address.
	DefaultReadRate  = 200  // ledger reads per second per client, sustained
	DefaultReadBurst = 1000 // ledger reads at once per client
	// DefaultTiles bounds the tile answers served at once: a request
	// waits up to tileWait for a slot, then gets 503 ledger_busy with
	// Retry-After.
	DefaultTiles = 4
	maxClients   = 4096
)

// Limiter is a token bucket per client address. Its memory is bounded: when
// it tracks maxClients addresses it forgets them all (every client then
// starts with a full bucket, which favours availability over a perfect
// limit).
type Limiter struct {
	mu      sync.Mutex
	rate    float64
	burst   float64
	buckets map[string]*bucket
	now     func() time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

// NewLimiter allows rate requests per second per client, with bursts.
func NewLimiter(rate, burst float64) *Limiter {
	return &Limiter{rate: rate, burst: burst, buckets: map[string]*bucket{}, now: time.Now}
}

// Allow takes a token for client.
func (l *Limiter) Allow(client string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[client]
	if !ok {
		if len(l.buckets) >= maxClients {
			clear(l.buckets)
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[client] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
