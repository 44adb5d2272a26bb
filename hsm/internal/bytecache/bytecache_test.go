package bytecache

import (
	"strconv"
	"testing"
)

func TestGetReturnsWhatWasAdded(t *testing.T) {
	c := New[int](4)
	c.Add("a", 1)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("got %v %v, want 1 true", v, ok)
	}
	if _, ok := c.Get("b"); ok {
		t.Fatal("a key never added was found")
	}
}

// TestCacheStaysBounded: a flood of distinct keys never holds more than the
// size, and an entry in use survives the flood.
func TestCacheStaysBounded(t *testing.T) {
	c := New[int](8)
	c.Add("hot", -1)
	for i := range 1000 {
		c.Get("hot")
		c.Add(strconv.Itoa(i), i)
		if n := c.Len(); n > 8 {
			t.Fatalf("cache holds %d entries, at most 8 allowed", n)
		}
	}
	if v, ok := c.Get("hot"); !ok || v != -1 {
		t.Fatal("an entry used before every addition was evicted")
	}
}
