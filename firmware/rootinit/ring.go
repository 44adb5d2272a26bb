package rootinit

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// ring keeps the last lines of the root init's and the daemon's messages
// once the console serves the serial port they would otherwise interleave
// with; the console's status command shows them.
type ring struct {
	mu      sync.Mutex
	lines   []string
	partial []byte
	max     int
}

func newRing(max int) *ring { return &ring{max: max} }

// Write takes output in any chunks and keeps whole lines.
func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.partial = append(r.partial, p...)
	for {
		i := bytes.IndexByte(r.partial, '\n')
		if i < 0 {
			break
		}
		r.add(string(r.partial[:i]))
		r.partial = r.partial[i+1:]
	}
	if len(r.partial) > 4096 { // a line without end: keep what came
		r.add(string(r.partial))
		r.partial = nil
	}
	return len(p), nil
}

func (r *ring) add(line string) {
	if r.lines = append(r.lines, line); len(r.lines) > r.max {
		r.lines = r.lines[len(r.lines)-r.max:]
	}
}

// WriteTo prints the kept lines, each after prefix.
func (r *ring) print(w io.Writer, prefix string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		fmt.Fprintf(w, "%s%s\n", prefix, l)
	}
}
