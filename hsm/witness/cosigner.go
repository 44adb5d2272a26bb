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
// than the checkpoint's, and the log (when the cosigner can read its
// newest checkpoint) holds fewer entries than that. From the appliance's
// own ledger that is a restored copy; from a checkpoint a monitor was
// served, it may also be a stale cache.
var ErrBehind = errors.New("the witnesses cosigned a larger tree")

// ErrConflict: at least one refusal was a witness saying the checkpoint
// is not consistent with the tree it cosigned before (HTTP 422): another
// history of this log. It is the witness's word, not a signed proof.
var ErrConflict = errors.New("a witness cosigned another history of this log")

// refusal is one witness's refusal for good; it is ErrRefused, ErrBehind
// when the witness cosigned a larger tree (ahead: its size, when known),
// and ErrConflict when it cosigned another history.
type refusal struct {
	reason   string
	behind   bool
	conflict bool
	ahead    int64
}

func (r *refusal) Error() string { return r.reason }
func (r *refusal) Is(target error) bool {
	return target == ErrRefused || (r.behind && target == ErrBehind) || (r.conflict && target == ErrConflict)
}

func refused(format string, args ...any) error { return &refusal{reason: fmt.Sprintf(format, args...)} }

func refusedBehind(ahead int64, format string, args ...any) error {
	return &refusal{reason: fmt.Sprintf(format, args...), behind: true, ahead: ahead}
}

// ErrTimeout: the quorum did not answer before the deadline.
var ErrTimeout = errors.New("the witness quorum did not cosign in time")

// Cosigner gathers witnesses' cosignatures of the ledger's checkpoints
// and keeps the newest cosigned one durably in its directory. Its methods
// are safe for concurrent use.
type Cosigner struct {
	dir  string
	http *http.Client

	mu         sync.Mutex
	known      map[string]int64 // witness name → the tree size it last cosigned, as far as we know
	storedSize int64            // the size of the cosigned checkpoint stored last
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

// Latest is a ledger whose newest checkpoint the cosigner can take: the
// appliance's own. With it, a witness that already cosigned a larger tree
// of this log (submitted by anyone, or by another call) is sent the
// newest checkpoint, which still holds every entry of the older one, with
// its consistency proof; only a log smaller than what the witness knows
// is behind.
type Latest interface {
	CheckpointSize() ([]byte, int64, error)
}

// Cosign submits signed, the ledger's checkpoint of size, to the
// witnesses of p that have not cosigned it yet (the stored cosigned
// checkpoint counts), all at once, and returns the checkpoint with every
// cosignature stored for it once p.Quorum of p's witnesses cosigned it,
// stored durably first, and the checkpoint's size. When a witness
// cosigned a larger tree and ledger is [Latest] with at least as many
// entries, Cosign moves to the newest checkpoint: the size returned is
// then larger than size. It gives up when ctx ends (ErrTimeout) or when
// too many witnesses refused for the quorum to be reached (ErrRefused,
// naming them).
func (c *Cosigner) Cosign(ctx context.Context, ledger Prover, signed []byte, size int64, p Policy) ([]byte, int64, error) {
	return c.cosign(ctx, ledger, signed, size, p, true)
}

// Ask is Cosign without counting cosignatures stored before: each of p's
// witnesses is asked now, so a quorum shows the witnesses answer at this
// moment (a release asks before it writes anything, so that an outage
// costs no warrant).
func (c *Cosigner) Ask(ctx context.Context, ledger Prover, signed []byte, size int64, p Policy) ([]byte, int64, error) {
	return c.cosign(ctx, ledger, signed, size, p, false)
}

func (c *Cosigner) cosign(ctx context.Context, ledger Prover, signed []byte, size int64, p Policy, reuse bool) ([]byte, int64, error) {
	for {
		cosigned, err := c.cosignOnce(ctx, ledger, signed, size, p, reuse)
		var r *refusal
		if errors.As(err, &r) && r.behind && r.ahead > size {
			if fresh, fsize, ok := newer(ledger, r.ahead); ok {
				signed, size = fresh, fsize
				continue
			}
		}
		if err != nil {
			return nil, 0, err
		}
		return cosigned, size, nil
	}
}

// newer is the ledger's newest checkpoint when it holds at least the
// ahead entries a witness cosigned.
func newer(ledger Prover, ahead int64) ([]byte, int64, bool) {
	l, ok := ledger.(Latest)
	if !ok {
		return nil, 0, false
	}
	signed, size, err := l.CheckpointSize()
	if err != nil || size < ahead {
		return nil, 0, false
	}
	return signed, size, true
}

// cosignOnce is Cosign for one checkpoint. A witness found ahead of it
// ends the round at once (a *refusal with ahead set) when the ledger may
// hold a newer checkpoint. With reuse, a stored cosignature of a witness
// stands for its answer.
func (c *Cosigner) cosignOnce(ctx context.Context, ledger Prover, signed []byte, size int64, p Policy, reuse bool) ([]byte, error) {
	vs, err := p.Verifiers()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		lines []byte
		err   error
	}
	var have []byte
	if reuse {
		have = c.stored(signed)
	}
	answers := make(chan answer, len(vs))
	var got int
	for i, v := range vs {
		if have != nil { // the signature check only when something is stored
			if line, err := ownLine(signed, have, v); err == nil {
				answers <- answer{line, nil} // cosigned already
				continue
			}
		}
		go func() {
			lines, err := c.submit(ctx, ledger, p.Witnesses[i].URL, v, signed, size)
			answers <- answer{lines, err}
		}()
	}
	var lines []byte
	var refused []error
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
			var r *refusal
			if errors.As(a.err, &r) && r.behind && r.ahead > size {
				if _, ok := ledger.(Latest); ok {
					return nil, r // Cosign tries the newest checkpoint
				}
			}
			refused = append(refused, a.err)
			if len(vs)-len(refused) < p.Quorum {
				return nil, refusedAll(refused)
			}
			continue
		}
		lines = append(lines, a.lines...)
		if got++; got >= p.Quorum && p.Quorum > 0 {
			break
		}
	}
	cosigned, err := c.store(signed, lines, size)
	if err != nil {
		return nil, fmt.Errorf("storing the cosigned checkpoint: %w", err)
	}
	return cosigned, nil
}

// refusedAll is the refusals that made the quorum unreachable: ErrBehind
// when every one was a witness ahead of the log, ErrConflict when one was
// another history.
func refusedAll(refused []error) error {
	behind, conflict := true, false
	reasons := make([]string, len(refused))
	for i, err := range refused {
		reasons[i] = err.Error()
		behind = behind && errors.Is(err, ErrBehind)
		conflict = conflict || errors.Is(err, ErrConflict)
	}
	switch {
	case behind:
		return fmt.Errorf("%w (%w): %s", ErrRefused, ErrBehind, strings.Join(reasons, "; "))
	case conflict:
		return fmt.Errorf("%w (%w): %s", ErrRefused, ErrConflict, strings.Join(reasons, "; "))
	}
	return fmt.Errorf("%w: %s", ErrRefused, strings.Join(reasons, "; "))
}

// timedOut says how far the witnesses got before the deadline.
func timedOut(got, quorum int, refused []error) error {
	err := fmt.Errorf("%w: %d of the %d needed cosigned", ErrTimeout, got, quorum)
	for _, r := range refused {
		err = fmt.Errorf("%w; %v", err, r)
	}
	return err
}

// stored is the cosignature lines stored for signed, if the stored
// cosigned checkpoint is signed's.
func (c *Cosigner) stored(signed []byte) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if latest := latestIn(c.dir); bytes.HasPrefix(latest, signed) {
		return latest[len(signed):]
	}
	return nil
}

// store adds lines to the stored cosigned checkpoint when it is signed's,
// or stores signed with lines as the newest, unless one of a larger tree
// was stored meanwhile. Each escrow file's quorum adds its witnesses'
// lines to one file, so the served checkpoint carries them all.
func (c *Cosigner) store(signed, lines []byte, size int64) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	all := lines
	cosigned := bytes.Clone(signed)
	if latest := latestIn(c.dir); bytes.HasPrefix(latest, signed) {
		cosigned = latest
	}
	for len(lines) > 0 {
		line, rest, _ := bytes.Cut(lines, []byte("\n"))
		line = append(line, '\n')
		if !bytes.Contains(cosigned[len(signed):], line) {
			cosigned = append(cosigned, line...)
		}
		lines = rest
	}
	if len(cosigned) > MaxCosignedSize {
		// No reader would accept it (many escrow files' witnesses at
		// once): keep this quorum's lines, which Policy.Check sized to fit.
		cosigned = append(bytes.Clone(signed), all...)
	}
	if size < c.storedSize {
		return cosigned, nil
	}
	if err := durable.WriteFile(filepath.Join(c.dir, FileName), cosigned, 0o644); err != nil {
		return nil, err
	}
	c.storedSize = size
	return cosigned, nil
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
			return nil, refusedBehind(old, "witness %s cosigned %d entries of this log and this checkpoint has %d: another history, or a data directory restored from a copy", v.Name(), old, size)
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
			return nil, &refusal{reason: fmt.Sprintf("witness %s refused: %s", v.Name(), r.reason), behind: r.behind, conflict: r.conflict, ahead: r.ahead}
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
		return nil, 0, &refusal{reason: "this checkpoint is not consistent with the tree it cosigned before (another history of this log)", conflict: true}
	case http.StatusBadRequest:
		// Never a rollback: a size the witness knows above this
		// checkpoint's is caught before asking (submitOnce).
		return nil, 0, refused("it refused the request as malformed (HTTP 400): check that it speaks the C2SP tlog-witness protocol")
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
