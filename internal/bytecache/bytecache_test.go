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

// TestCacheStaysBounded: after a flood of distinct keys, at most the size
// of them can still be found, the newest is, and an entry in use survived.
func TestCacheStaysBounded(t *testing.T) {
	c := New[int](8)
	c.Add("hot", -1)
	for i := range 1000 {
		c.Get("hot")
		c.Add(strconv.Itoa(i), i)
	}
	if v, ok := c.Get("hot"); !ok || v != -1 {
		t.Fatal("an entry used before every addition was evicted")
	}
	if v, ok := c.Get("999"); !ok || v != 999 {
		t.Fatal("the entry added last was not found")
	}
	found := 1 // "hot"
	for i := range 1000 {
		if _, ok := c.Get(strconv.Itoa(i)); ok {
			found++
		}
	}
	if found > 8 {
		t.Fatalf("%d entries can be found, at most 8 allowed", found)
	}
}

func TestForgetDropsOnlyItsKey(t *testing.T) {
	c := New[int](4)
	c.Add("a", 1)
	c.Add("b", 2)
	c.Forget("a")
	if _, ok := c.Get("a"); ok {
		t.Fatal("a forgotten key is still returned")
	}
	if v, ok := c.Get("b"); !ok || v != 2 {
		t.Fatalf("Get(b) after forgetting a = %v, %v; want 2, true", v, ok)
	}
	if keys := c.Keys(); len(keys) != 1 || keys[0] != "b" {
		t.Fatalf("Keys() = %q; want [b]", keys)
	}
}
