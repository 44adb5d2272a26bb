// Package bytecache keeps the results of pure functions of bytes: parsing a
// key or a certificate, verifying a chain, whatever gives the same answer
// every time for the same input.
//
// Contract:
//   - A Cache maps a key (the input bytes themselves, or a digest of all the
//     inputs) to a value, and holds at most its size of them. When it is
//     full, adding a key evicts one entry that has not been used since
//     the last eviction sweep, so a flood of distinct inputs does not grow
//     memory or push out what is used all the time.
//   - Only results that depend on nothing but the key may go in: never a
//     freshness, revocation or clock check. Values are shared between
//     callers and must not be changed after Add.
//   - A Cache is safe for concurrent use.
package bytecache

import "sync"

// Cache is a bounded map from keys to immutable values.
type Cache[V any] struct {
	mu      sync.Mutex
	size    int
	entries map[string]*entry[V]
}

type entry[V any] struct {
	value V
	used  bool // looked up since the last sweep
}

// New makes a cache of at most size entries.
func New[V any](size int) *Cache[V] {
	return &Cache[V]{size: max(size, 1), entries: make(map[string]*entry[V], size)}
}

// Get returns the value stored for key.
func (c *Cache[V]) Get(key string) (V, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	e.used = true
	return e.value, true
}

// Add stores value for key, evicting an entry if the cache is full.
func (c *Cache[V]) Add(key string, value V) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[key]; !ok && len(c.entries) >= c.size {
		c.evict()
	}
	c.entries[key] = &entry[V]{value: value}
}

// Forget drops key's value, if any: for a result found to no longer hold
// (such as an object the TPM stopped loading).
func (c *Cache[V]) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.entries, key)
}

// Keys lists the keys held, in no order (tests use it to reach what was
// kept).
func (c *Cache[V]) Keys() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	keys := make([]string, 0, len(c.entries))
	for k := range c.entries {
		keys = append(keys, k)
	}
	return keys
}

// Len is the number of entries held (tests use it to see that a result
// was kept).
func (c *Cache[V]) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}

// evict drops one entry not used since the last sweep (a clock policy:
// cheap, and close enough to least recently used), clearing the marks it
// passes; if every entry was used, one of them goes.
func (c *Cache[V]) evict() {
	var victim string
	for k, e := range c.entries {
		victim = k
		if !e.used {
			break
		}
		e.used = false
	}
	delete(c.entries, victim)
}
