package release

import (
	"maps"
	"testing"
	"time"
)

// TestTallyIsDueOncePerIntervalAndOnlyWhenSomethingWasCounted drives the
// tally with a fake clock: nothing is due before the interval ends, the
// counts are due once when it does, and an idle interval gives nothing.
func TestTallyIsDueOncePerIntervalAndOnlyWhenSomethingWasCounted(t *testing.T) {
	t0 := time.Unix(1e9, 0)
	ta := newTally(t0)
	for range 3 {
		ta.add(CodeBusy)
	}
	ta.add(CodeRateLimited)
	if got := ta.due(t0.Add(59*time.Minute), time.Hour, false); got != nil {
		t.Fatalf("due before the interval ended: %v", got)
	}
	got := ta.due(t0.Add(time.Hour), time.Hour, false)
	if want := map[string]uint64{"busy": 3, "rate_limited": 1}; !maps.Equal(got, want) {
		t.Fatalf("due %v, want %v", got, want)
	}
	if got := ta.due(t0.Add(2*time.Hour), time.Hour, false); got != nil {
		t.Fatalf("an idle interval gave %v", got)
	}
	if got := ta.due(t0.Add(2*time.Hour), time.Hour, true); got != nil {
		t.Fatalf("forced with nothing counted gave %v", got)
	}
	ta.restore(map[string]uint64{"busy": 2})
	ta.add(CodeBusy)
	if got := ta.due(t0.Add(2*time.Hour), time.Hour, true); got["busy"] != 3 {
		t.Fatalf("restored counts lost: %v", got)
	}
}

// TestTallyRemembersRefusalsByContentWithinBounds: a refusal is logged
// once per warrant and code; memory stays bounded.
func TestTallyRemembersRefusalsByContentWithinBounds(t *testing.T) {
	ta := newTally(time.Unix(1e9, 0))
	if !ta.firstTime([]byte("w1"), CodeReplayed) || ta.firstTime([]byte("w1"), CodeReplayed) {
		t.Fatal("the same refusal was first twice, or never")
	}
	if !ta.firstTime([]byte("w1"), CodeNoPress) {
		t.Fatal("another code of the same warrant was not first")
	}
	for i := range maxLoggedRefusals + 10 {
		ta.firstTime([]byte{byte(i), byte(i >> 8)}, CodeReplayed)
	}
	if len(ta.logged) > maxLoggedRefusals {
		t.Fatalf("%d refusals remembered", len(ta.logged))
	}
}
