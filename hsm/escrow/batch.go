package escrow

import (
	"bytes"
	"errors"
	"runtime"
	"sync"

	"github.com/custodian-project/custodian/hsm/warrant"
)

// Opener opens envelopes: a [*ScopedOpener], or a recovered [*Key].
type Opener interface {
	// Open opens an envelope from its bytes, its seal proof checked on
	// its own.
	Open(envelope []byte) (*Envelope, []byte, error)
	// OpenProven opens an envelope whose seal proof was checked with
	// others (OpenBatch); it refuses any other.
	OpenProven(env *Envelope) (*Envelope, []byte, error)
}

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

// proofBatch is how many envelopes OpenBatch reads ahead to check their
// seal proofs together: enough that the sum of multiples costs a small
// part of the per-proof checks, few enough that their references stay
// small in memory (a few hundred bytes each).
const proofBatch = 8192

// OpenBatch opens the envelopes of b with workers goroutines (all CPUs
// when workers < 1). Envelopes are independent: one that fails (a forged
// seal proof, a wrong partial, too few partials) is reported in its
// Outcome and the others still open.
//
// It goes proofBatch envelopes at a time: it reads and decodes them, checks
// their seal proofs at once ([CheckSealProofs]: version 3 proofs in one
// random linear combination per CPU, falling back to each on its own to
// name a forgery), then reads each again to open it, provided it is still
// the envelope whose proof was checked (else its proof is checked again,
// alone). At most a few envelopes per worker are between reading and Done
// at any time, so memory stays bounded whatever the count.
func OpenBatch(open Opener, b Batch, workers int) {
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	for lo := 0; lo < b.Count; lo += proofBatch {
		hi := min(lo+proofBatch, b.Count)
		pipeline(b, lo, hi, workers, checkProofs(b, lo, hi), open)
	}
}

// checked is what the proof pass learnt of one envelope: the reference
// whose proof verified, or why it did not.
type checked struct {
	ref *warrant.EnvelopeRef
	err error // the envelope did not read or decode, or its proof failed
}

// checkProofs reads and decodes envelopes lo..hi-1 and checks their seal
// proofs together. A version 1 envelope gets neither (its opener decides).
func checkProofs(b Batch, lo, hi int) []checked {
	out := make([]checked, hi-lo)
	forEach(hi-lo, func(j int) {
		data, err := b.Read(lo + j)
		switch {
		case err != nil:
			out[j].err = err
		case bytes.HasPrefix(data, []byte(envelopeMagicV1)):
		default:
			env, err := DecodeEnvelope(data)
			if err != nil {
				out[j].err = err
				return
			}
			ref := env.Ref()
			out[j].ref = &ref
		}
	})
	var refs []warrant.EnvelopeRef
	var at []int
	for j, c := range out {
		if c.ref != nil {
			refs, at = append(refs, *c.ref), append(at, j)
		}
	}
	for k, err := range CheckSealProofs(refs) {
		if err != nil {
			out[at[k]] = checked{err: err}
		}
	}
	return out
}

// pipeline opens envelopes lo..hi-1 on workers goroutines and reports
// them in order.
func pipeline(b Batch, lo, hi, workers int, pre []checked, open Opener) {
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
				results <- openOne(open, b, i, pre[i-lo])
			}
		}()
	}
	go func() {
		for i := lo; i < hi; i++ {
			slots <- struct{}{}
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		close(results)
	}()
	pending := make(map[int]Outcome, window)
	next := lo
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

func openOne(open Opener, b Batch, i int, pre checked) Outcome {
	out := Outcome{Index: i}
	if pre.err != nil {
		out.Err = pre.err
		return out
	}
	data, err := b.Read(i)
	if err != nil {
		out.Err = err
		return out
	}
	env, pt, err := openRead(open, data, pre.ref)
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

// openRead opens data, skipping the seal proof's check when data is the
// envelope of ref, whose proof verified.
func openRead(open Opener, data []byte, ref *warrant.EnvelopeRef) (*Envelope, []byte, error) {
	if ref == nil {
		return open.Open(data)
	}
	env, err := DecodeEnvelope(data)
	if err != nil || !sameRef(env.Ref(), *ref) {
		return open.Open(data) // changed since its proof was checked
	}
	env.proven = true
	return open.OpenProven(env)
}

func sameRef(a, b warrant.EnvelopeRef) bool {
	return a.KeyID == b.KeyID && a.Target == b.Target && bytes.Equal(a.Enc, b.Enc) &&
		bytes.Equal(a.CiphertextSHA256, b.CiphertextSHA256) && bytes.Equal(a.Proof, b.Proof)
}
