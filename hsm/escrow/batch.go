package escrow

import (
	"errors"
	"runtime"
	"sync"
)

// Opener opens one envelope: [ScopedOpener.Open], or [Open] with a
// recovered key.
type Opener func(envelope []byte) (*Envelope, []byte, error)

// Outcome is what became of one envelope of a batch.
type Outcome struct {
	Index    int
	Envelope *Envelope // nil when the envelope did not parse or read
	// Err is nil when the envelope opened and its plaintext was kept.
	Err error
	// Bad names the custodians whose partial for this envelope was
	// missing or failed its proof, whether or not it opened.
	Bad *BadShareError
}

// Batch describes envelopes 0..Count-1 to open. Read returns envelope i.
// Keep stores the plaintext of envelope i (in a file, say) and must not
// hold on to it: it is called concurrently, for distinct i, and the batch
// holds no plaintext after it returns. Done is called once per envelope,
// in order of i, from one goroutine.
type Batch struct {
	Count int
	Read  func(i int) ([]byte, error)
	Keep  func(i int, env *Envelope, plaintext []byte) error
	Done  func(Outcome)
}

// OpenBatch opens the envelopes of b with workers goroutines (all CPUs
// when workers < 1). Envelopes are independent: one that fails (a forged
// seal proof, a wrong partial, too few partials) is reported in its
// Outcome and the others still open. At most a few envelopes per worker
// are between reading and Done at any time, so memory stays bounded
// whatever the count.
func OpenBatch(open Opener, b Batch, workers int) {
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	// window bounds the outcomes waiting for an earlier, slower envelope.
	window := 4 * workers
	slots := make(chan struct{}, window)
	jobs := make(chan int)
	results := make(chan Outcome, window)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				results <- openOne(open, b, i)
			}
		}()
	}
	go func() {
		for i := range b.Count {
			slots <- struct{}{}
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	pending := make(map[int]Outcome, window)
	next := 0
	for o := range results {
		pending[o.Index] = o
		for {
			o, ok := pending[next]
			if !ok {
				break
			}
			delete(pending, next)
			b.Done(o)
			<-slots
			next++
		}
	}
}

func openOne(open Opener, b Batch, i int) Outcome {
	out := Outcome{Index: i}
	data, err := b.Read(i)
	if err != nil {
		out.Err = err
		return out
	}
	env, pt, err := open(data)
	if errors.As(err, &out.Bad) && pt != nil {
		err = nil // opened; Bad names who failed
	}
	out.Envelope = env
	if err != nil {
		out.Err = err
		return out
	}
	out.Err = b.Keep(i, env, pt)
	clear(pt)
	return out
}
