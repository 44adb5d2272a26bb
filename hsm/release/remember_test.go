package release

import (
	"fmt"
	"testing"
)

// TestRememberSkipsParkedRequests: a request awaiting its witnesses at
// the head of the remembered requests is kept (a resume needs it), and
// the finished requests after it are still evicted past maxRemembered.
func TestRememberSkipsParkedRequests(t *testing.T) {
	d := &Daemon{requests: map[string]*request{}}
	parked := &request{}
	parked.status = Status{ID: fmt.Sprintf("%032x", 0), State: StateAwaitingWitnesses}
	d.remember(parked)
	var last string
	for i := 1; i <= 3*maxRemembered; i++ {
		r := &request{}
		last = fmt.Sprintf("%032x", i)
		r.status = Status{ID: last, State: StateRefused}
		d.remember(r)
	}
	if len(d.requests) != maxRemembered || len(d.order) != maxRemembered {
		t.Errorf("%d requests remembered (%d in order), want the bound %d", len(d.requests), len(d.order), maxRemembered)
	}
	if d.requests[parked.status.ID] != parked || d.order[0] != parked.status.ID {
		t.Errorf("the parked request was evicted")
	}
	if d.requests[last] == nil || d.order[len(d.order)-1] != last {
		t.Errorf("the newest request was evicted")
	}
	if d.requests[fmt.Sprintf("%032x", 1)] != nil {
		t.Errorf("the oldest finished request was kept")
	}
}
