package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
)

// remoteLedger is an auditor's view of a running appliance's ledger: every
// answer is checked against the verifier key the auditor pinned, never
// against a key the server offers.
type remoteLedger struct {
	g           *globals
	server, key string
	network     clientTLS
	c           *apiClient // made once: a plain-HTTP warning is printed once
}

func (r *remoteLedger) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&r.server, "server", "", "read the ledger of a running appliance (custodian serve) instead of the local data directory")
	r.network.register(cmd, false)
	cmd.Flags().StringVar(&r.key, "verifier-key", "", "with --server: the appliance's pinned checkpoint verifier key, or a file holding it (ledger-key.pub)")
}

func (r *remoteLedger) enabled() bool { return r.server != "" }

// verifier returns the pinned key; with --server it is required, since an
// unverified checkpoint proves nothing.
func (r *remoteLedger) verifier() (string, error) {
	if r.key == "" {
		return "", withHint(errors.New("--server needs --verifier-key"), "pin the appliance's key from its ledger-key.pub (published by its operator)")
	}
	key, err := readKeyArg("verifier-key", r.key)
	if err != nil {
		return "", err
	}
	return key, checkVerifierKey("verifier-key", key)
}

// refuseLocal refuses the network flags without --server: they would be
// ignored, and a pinned --verifier-key left unchecked is worse than none.
func (r *remoteLedger) refuseLocal(cmd *cobra.Command) error {
	for _, name := range []string{"verifier-key", "ca", "insecure-http"} {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			return withHint(fmt.Errorf("--%s needs --server", name),
				"without --server the device's own data directory is read and checked with its own key; to check a running appliance against your pinned key, add --server https://…")
		}
	}
	return nil
}

func (r *remoteLedger) client() (*apiClient, string, error) {
	key, err := r.verifier()
	if err != nil {
		return nil, "", err
	}
	if r.c == nil {
		if r.c, err = r.g.apiClient(r.server, r.network); err != nil {
			return nil, "", err
		}
		r.c.pace = newPacer()
	}
	return r.c, key, nil
}

// checkpoint fetches and verifies the current checkpoint.
func (r *remoteLedger) checkpoint(ctx context.Context) ([]byte, string, error) {
	c, key, err := r.client()
	if err != nil {
		return nil, "", err
	}
	var signed []byte
	if err := c.do(ctx, http.MethodGet, "/v1/checkpoint", nil, &signed); err != nil {
		return nil, "", err
	}
	if len(signed) > ledger.MaxCheckpointSize {
		return nil, "", errors.New("the server's checkpoint is too large")
	}
	if _, err := ledger.VerifyCheckpoint(signed, key); err != nil {
		return nil, "", withHint(errors.New("the server's checkpoint is not signed by the pinned verifier key"),
			"check that --verifier-key is this appliance's ledger-key.pub and that --server is that appliance; if both are right, the server is not the appliance: report it to the appliance's operator")
	}
	return signed, key, nil
}

func (r *remoteLedger) prove(ctx context.Context, index int64) (*ledger.Inclusion, error) {
	c, key, err := r.client()
	if err != nil {
		return nil, err
	}
	var inc ledger.Inclusion
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/entries/%d", index), nil, &inc); err != nil {
		return nil, err
	}
	if inc.Index != index {
		return nil, fmt.Errorf("the server answered entry %d for %d", inc.Index, index)
	}
	if _, err := inc.Check(key); err != nil {
		return nil, fmt.Errorf("the server's proof does not verify: %w", err)
	}
	return &inc, nil
}

// verify checks the current checkpoint and, given an old one, that the
// ledger only grew since.
func (r *remoteLedger) verify(ctx context.Context, g *globals, oldPath string, quorum witnessQuorum) error {
	signed, key, err := r.checkpoint(ctx)
	if err != nil {
		return err
	}
	now, _ := ledger.VerifyCheckpoint(signed, key)
	cosigned, err := quorum.check(signed)
	if err != nil {
		return err
	}
	if oldPath != "" {
		data, err := os.ReadFile(oldPath)
		if err != nil {
			return err
		}
		old, err := ledger.VerifyCheckpoint(data, key)
		if err != nil {
			return fmt.Errorf("--old: %w", err)
		}
		prove := func(old, size int64) (tlog.TreeProof, error) { return r.consistency(ctx, old, size) }
		if err := ledger.CheckExtends(old, now, prove); err != nil {
			return extendsHint(err)
		}
	}
	g.printf("ledger %s at %d entries: checkpoint verifies with the pinned key", now.Origin, now.Size)
	if oldPath != "" {
		g.printf(", and extends the old checkpoint")
	}
	g.printf("%s\n", cosigned)
	return nil
}

// consistency fetches the proof that the tree of size old is a prefix of
// the tree of size size.
func (r *remoteLedger) consistency(ctx context.Context, old, size int64) (tlog.TreeProof, error) {
	c, _, err := r.client()
	if err != nil {
		return nil, err
	}
	var resp struct {
		Old   int64          `json:"old"`
		Size  int64          `json:"size"`
		Proof tlog.TreeProof `json:"proof"`
	}
	if err := c.do(ctx, http.MethodGet, fmt.Sprintf("/v1/consistency?old=%d&size=%d", old, size), nil, &resp); err != nil {
		return nil, err
	}
	if resp.Old != old || resp.Size != size {
		return nil, fmt.Errorf("the server answered a proof from %d to %d entries for %d to %d", resp.Old, resp.Size, old, size)
	}
	return resp.Proof, nil
}

// source returns the remote ledger as a rangeSource, its pinned key read.
func (r *remoteLedger) source(ctx context.Context) (rangeSource, error) {
	_, key, err := r.client()
	if err != nil {
		return nil, err
	}
	return remoteRange{r: r, ctx: ctx, vk: key}, nil
}

// remoteRange is a running appliance's ledger as ledger list reads it.
type remoteRange struct {
	r   *remoteLedger
	ctx context.Context
	vk  string
}

func (s remoteRange) key() string { return s.vk }

func (s remoteRange) checkpoint() ([]byte, error) {
	signed, _, err := s.r.checkpoint(s.ctx)
	return signed, err
}

func (s remoteRange) prove(from, to int64) (*ledger.RangeProof, error) {
	var rp ledger.RangeProof
	err := s.r.c.do(s.ctx, http.MethodGet, fmt.Sprintf("/v1/entries?from=%d&to=%d", from, to), nil, &rp)
	return &rp, err
}

func (s remoteRange) consistency(old, size int64) (tlog.TreeProof, error) {
	return s.r.consistency(s.ctx, old, size)
}

// pacer spaces a client's requests: a few at once, then one per interval,
// below release.DefaultRate so that an honest reader never meets the
// limiter. A nil pacer does not wait.
type pacer struct {
	burst    int
	interval time.Duration
	sent     int
	last     time.Time
}

func newPacer() *pacer {
	return &pacer{burst: release.DefaultBurst / 2, interval: time.Second / (release.DefaultRate - 1)}
}

func (p *pacer) wait(ctx context.Context) error {
	if p == nil {
		return nil
	}
	p.sent++
	if p.sent > p.burst {
		if d := time.Until(p.last.Add(p.interval)); d > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(d):
			}
		}
	}
	p.last = time.Now()
	return nil
}
