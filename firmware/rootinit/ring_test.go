package rootinit

import (
	"strings"
	"testing"
)

func TestRingKeepsLastLines(t *testing.T) {
	r := newRing(3)
	for _, chunk := range []string{"one\ntw", "o\nthree\n", "four\nfive", "\n"} {
		r.Write([]byte(chunk))
	}
	var b strings.Builder
	r.print(&b, "log: ")
	if want := "log: three\nlog: four\nlog: five\n"; b.String() != want {
		t.Errorf("kept %q, want %q", b.String(), want)
	}
}
