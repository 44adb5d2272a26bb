package witness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/durable"
)

// Dir holds the newest cosigned checkpoint inside the data directory.
const Dir = "witness"

// FileName is the newest cosigned checkpoint in Dir: the ledger's signed
// checkpoint followed by every witness cosignature gathered for it.
const FileName = "checkpoint"

// Prover is the ledger as the cosigner needs it.
type Prover interface {
	ConsistencyProof(old, size int64) (tlog.TreeProof, error)
}

// ErrRefused: a witness refused the checkpoint for good — it cosigned
// another history of this log or a larger tree, or does not know the log
// or its key. Asking again does not help; an operator must look.
var ErrRefused = errors.New("the witnesses refused the checkpoint")

// ErrBehind: every refusal was a witness having cosigned a larger tree
// than the checkpoint's. From the appliance's own newest checkpoint that
// is a restored copy; from a checkpoint a monitor was served, it may also
// be a stale cache.
var ErrBehind = errors.New("the witnesses cosigned a larger tree")

// refusal is one witness's refusal for good; it is ErrRefused, and
// ErrBehind when behind.
type refusal struct {
	reason string
	behind bool
}

func (r *refusal) Error() string { return r.reason }
func (r *refusal) Is(target error) bool {
	return target == ErrRefused || (r.behind && target == ErrBehind)
}

func refused(format string, args ...any) error { return &refusal{reason: fmt.Sprintf(format, args...)} }

func refusedBehind(format string, args ...any) error {
	return &refusal{reason: fmt.Sprintf(format, args...), behind: true}
}

// ErrTimeout: the quorum did not answer before the deadline.
var ErrTimeout = errors.New("the witness quorum did not cosign in time")

// Cosigner gathers witnesses' cosignatures of the ledger's checkpoints
// and keeps the newest cosigned one durably in its directory. Its methods
// are safe for concurrent use.
type Cosigner struct {
	dir  string
	http *http.Client

	mu     sync.Mutex
	known  map[string]int64 // witness name → the tree size it last cosigned, as far as we know
	stored int64            // the size of the cosigned checkpoint stored last
}

// NewCosigner makes a cosigner keeping its file in dataDir/witness.
func NewCosigner(dataDir string, hc *http.Client) (*Cosigner, error) {
	if hc == nil {
		hc = &http.Client{}
	}
	dir := filepath.Join(dataDir, Dir)
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	return &Cosigner{dir: dir, http: hc, known: map[string]int64{}}, nil
}

// WithCosignatures returns signed, a checkpoint the ledger in dataDir
// signed just now, with the witnesses' cosignatures stored for the same
// tree: checkpoints are deterministic signatures of the tree head, so the
// stored one starts with the same bytes. Otherwise it returns signed.
func WithCosignatures(dataDir string, signed []byte) []byte {
	if latest := latestIn(filepath.Join(dataDir, Dir)); bytes.HasPrefix(latest, signed) {
		return latest
	}
	return signed
}

func latestIn(dir string) []byte {
	data, err := os.ReadFile(filepath.Join(dir, FileName))
	if err != nil || len(data) > MaxCosignedSize {
		return nil
	}
	return data
}

// Cosign submits signed, the ledger's checkpoint of size, to every witness
// of p at once, and returns signed with the cosignatures of those that
// answered once p.Quorum did, stored durably first. It gives up when ctx
// ends (ErrTimeout) or when too many witnesses refused for the quorum to
// be reached (ErrRefused, naming them).
func (c *Cosigner) Cosign(ctx context.Context, ledger Prover, signed []byte, size int64, p Policy) ([]byte, error) {
	vs, err := p.Verifiers()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		name  string
		lines []byte
		err   error
	}
	answers := make(chan answer, len(vs))
	for i, v := range vs {
		go func() {
			lines, err := c.submit(ctx, ledger, p.Witnesses[i].URL, v, signed, size)
			answers <- answer{v.Name(), lines, err}
		}()
	}
	cosigned := bytes.Clone(signed)
	var got int
	var refused []string
	allBehind := true
	for range vs {
		var a answer
		select {
		case a = <-answers:
		case <-ctx.Done():
			return nil, timedOut(got, p.Quorum, refused)
		}
		if a.err != nil && !errors.Is(a.err, ErrRefused) {
			return nil, timedOut(got, p.Quorum, refused) // submit gives up only when ctx ends
		}
		if a.err != nil {
			refused = append(refused, a.err.Error())
			allBehind = allBehind && errors.Is(a.err, ErrBehind)
			if len(vs)-len(refused) < p.Quorum {
				if allBehind {
					return nil, fmt.Errorf("%w (%w): %s", ErrRefused, ErrBehind, strings.Join(refused, "; "))
				}
				return nil, fmt.Errorf("%w: %s", ErrRefused, strings.Join(refused, "; "))
			}
			continue
		}
		cosigned = append(cosigned, a.lines...)
		if got++; got >= p.Quorum {
			break
		}
	}
	if err := c.store(cosigned, size); err != nil {
		return nil, fmt.Errorf("storing the cosigned checkpoint: %w", err)
	}
	return cosigned, nil
}

// timedOut says how far the witnesses got before the deadline.
func timedOut(got, quorum int, refused []string) error {
	err := fmt.Errorf("%w: %d of the %d needed cosigned", ErrTimeout, got, quorum)
	if len(refused) > 0 {
		err = fmt.Errorf("%w; %s", err, strings.Join(refused, "; "))
	}
	return err
}

// store keeps cosigned as the newest cosigned checkpoint, unless one of a
// larger tree was stored meanwhile (two submissions at once).
func (c *Cosigner) store(cosigned []byte, size int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if size < c.stored {
		return nil
	}
	if err := durable.WriteFile(filepath.Join(c.dir, FileName), cosigned, 0o644); err != nil {
		return err
	}
	c.stored = size
	return nil
}

// retryEvery is how soon a witness that did not answer is asked again,
// until the deadline.
const retryEvery = 250 * time.Millisecond

// submit runs add-checkpoint with one witness until it cosigns, refuses
// for good (ErrRefused), or ctx ends; a witness that cannot be reached is
// asked again. It returns the witness's cosignature line.
func (c *Cosigner) submit(ctx context.Context, ledger Prover, base string, v note.Verifier, signed []byte, size int64) ([]byte, error) {
	for {
		line, err := c.submitOnce(ctx, ledger, base, v, signed, size)
		if err == nil || errors.Is(err, ErrRefused) {
			return line, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(retryEvery):
		}
	}
}

// submitOnce asks the witness from the size it last cosigned, and once
// more from the size it says it knows (HTTP 409), as the protocol
// provides.
func (c *Cosigner) submitOnce(ctx context.Context, ledger Prover, base string, v note.Verifier, signed []byte, size int64) ([]byte, error) {
	c.mu.Lock()
	old := c.known[v.Name()]
	c.mu.Unlock()
	for try := 0; ; try++ {
		if old > size {
			return nil, refusedBehind("witness %s cosigned %d entries of this log and this checkpoint has %d: another history, or a data directory restored from a copy", v.Name(), old, size)
		}
		var proof tlog.TreeProof
		if old > 0 && old < size {
			var err error
			if proof, err = ledger.ConsistencyProof(old, size); err != nil {
				return nil, refused("witness %s cosigned %d entries of this log, and the log cannot prove it grew from them: %v", v.Name(), old, err)
			}
		}
		lines, known, err := addCheckpoint(ctx, c.http, base, old, proof, signed)
		var conflict *conflictError
		if errors.As(err, &conflict) && try == 0 {
			old = conflict.known
			continue
		}
		var r *refusal
		if errors.As(err, &r) {
			return nil, &refusal{reason: fmt.Sprintf("witness %s refused: %s", v.Name(), r.reason), behind: r.behind}
		}
		if err != nil {
			return nil, fmt.Errorf("witness %s: %w", v.Name(), err)
		}
		line, err := ownLine(signed, lines, v)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.known[v.Name()] = max(known, size)
		c.mu.Unlock()
		return line, nil
	}
}

// ownLine checks that the witness's answer holds its valid cosignature
// of signed, and returns that line alone.
func ownLine(signed, lines []byte, v note.Verifier) ([]byte, error) {
	n, err := note.Open(append(bytes.Clone(signed), lines...), note.VerifierList(v))
	if err != nil {
		return nil, fmt.Errorf("witness %s answered without a valid cosignature", v.Name())
	}
	for _, s := range n.Sigs {
		if s.Name == v.Name() && s.Hash == v.KeyHash() {
			return []byte("— " + s.Name + " " + s.Base64 + "\n"), nil
		}
	}
	return nil, fmt.Errorf("witness %s answered without a valid cosignature", v.Name())
}

type conflictError struct{ known int64 }

func (e *conflictError) Error() string {
	return fmt.Sprintf("it knows %d entries of this log", e.known)
}

// maxAnswer caps a witness's answer: cosignature lines or a short error.
const maxAnswer = 16 << 10

// addCheckpoint is one C2SP tlog-witness add-checkpoint request.
func addCheckpoint(ctx context.Context, hc *http.Client, base string, old int64, proof tlog.TreeProof, signed []byte) (lines []byte, known int64, err error) {
	var body bytes.Buffer
	fmt.Fprintf(&body, "old %d\n", old)
	for _, h := range proof {
		fmt.Fprintf(&body, "%s\n", h)
	}
	body.WriteString("\n")
	body.Write(signed)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(base, "/")+"/add-checkpoint", &body)
	if err != nil {
		return nil, 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fmt.Errorf("no answer before the deadline")
		}
		return nil, 0, fmt.Errorf("unreachable (%s)", netProblem(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, 0, fmt.Errorf("its answer was cut off")
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return data, old, nil
	case http.StatusConflict:
		n, err := strconv.ParseInt(strings.TrimSpace(string(data)), 10, 64)
		if err != nil || n < 0 {
			return nil, 0, refused("it answered 409 without the size it knows")
		}
		return nil, n, &conflictError{n}
	case http.StatusUnprocessableEntity:
		return nil, 0, refused("this checkpoint is not consistent with the tree it cosigned before (another history of this log)")
	case http.StatusBadRequest:
		return nil, 0, refusedBehind("it cosigned a larger tree of this log than this checkpoint's")
	case http.StatusForbidden, http.StatusNotFound:
		return nil, 0, refused("it does not know this log or its key (add the log's origin and verifier key to the witness)")
	}
	return nil, 0, fmt.Errorf("it answered HTTP %d", resp.StatusCode)
}

// netProblem names a transport failure without Go's error text.
func netProblem(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out"
	case strings.Contains(err.Error(), "connection refused"):
		return "connection refused"
	}
	return "network error"
}
