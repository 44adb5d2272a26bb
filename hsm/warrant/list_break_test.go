package warrant

import (
	"bytes"
	"runtime"
	"strings"
	"testing"
)

// BenchmarkBreakListHeldPerSubmission reports the heap one parsed list of
// MaxListEntries entries with 300-byte targets holds: what each submission
// with a list keeps while the appliance reads it, before the warrant's
// signature is checked and outside the API's verification slots (the
// semaphore is taken only after the list is parsed). The appliance lets
// 128 connections do this at once, each for up to 30 minutes.
func BenchmarkBreakListHeldPerSubmission(b *testing.B) {
	refs := testList(MaxListEntries)
	long := strings.Repeat("x", 300)
	for i := range refs {
		refs[i].Target = long
	}
	file := listFile(b, refs)
	b.ReportMetric(float64(len(file))/(1<<20), "MiB-file")
	refs = nil
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		l, err := ReadEnvelopeList(bytes.NewReader(file))
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "MiB-held")
		runtime.KeepAlive(l)
	}
}
