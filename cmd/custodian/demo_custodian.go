//go:build !appliance

package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/custodian-project/custodian/firmware/button"
	"github.com/custodian-project/custodian/firmware/measure"
	"github.com/custodian-project/custodian/hsm/appliance"
	"github.com/custodian-project/custodian/hsm/enrollment"
	"github.com/custodian-project/custodian/hsm/escrow"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/release"
	"github.com/custodian-project/custodian/hsm/release/tlstest"
	"github.com/custodian-project/custodian/hsm/report"
	"github.com/custodian-project/custodian/tpm"
	"github.com/custodian-project/custodian/tpm/swtpm"
)

// demoWindow is how long the demo's officer has to press: short, because
// the press follows at once, but well above the daemon's minimum.
const demoWindow = 30 * time.Second

// demoCustodian is one appliance of the demo: its swtpm, its one TPM
// connection (swtpm serves one client), its data directory and, once it
// serves, its release daemon behind a loopback HTTP server.
type demoCustodian struct {
	id   string
	dir  string // everything of this custodian, swtpm state included
	data string // the appliance's --data-dir
	sw   *swtpm.Process
	conn transport.TPMCloser
	ek   *tpm.EK
	// importKey is what the ceremony seals this custodian's share to.
	importKey *tpm.ImportKey
	app       *appliance.Appliance

	btn     *button.Sim
	daemon  *release.Daemon
	srv     *http.Server
	client  *apiClient
	closers []io.Closer
}

// startDemoCustodian manufactures and starts the custodian's swtpm. On
// error it returns what it started, so the caller can stop it.
func startDemoCustodian(id, dir string) (*demoCustodian, error) {
	c := &demoCustodian{id: id, dir: dir, data: filepath.Join(dir, "data")}
	if err := os.MkdirAll(c.data, 0o700); err != nil {
		return nil, err
	}
	sw, err := swtpm.Start(filepath.Join(dir, "swtpm"))
	if err != nil {
		return nil, err
	}
	c.sw = sw
	c.conn, err = tpm.Open(sw.Spec())
	return c, err
}

func (c *demoCustodian) runDir() string { return filepath.Join(c.dir, "run") }

// stop ends the server, the daemon, the ledger and the swtpm, in the
// reverse order of their start.
func (c *demoCustodian) stop() {
	if c.srv != nil {
		_ = c.srv.Close()
	}
	if c.daemon != nil {
		c.daemon.Close()
	}
	if c.btn != nil {
		_ = c.btn.Close()
	}
	if c.app != nil {
		_ = c.app.Close()
	}
	for _, cl := range c.closers {
		_ = cl.Close()
	}
	if c.conn != nil {
		_ = c.conn.Close()
	}
	if c.sw != nil {
		c.sw.Stop()
	}
}

// enrollCustodians runs each device's enrollment with the escrow
// authority's challenge, verifies it, and creates the device's ledger.
func (d *demo) enrollCustodians(context.Context) error {
	for _, c := range d.custodians {
		if err := d.enroll(c); err != nil {
			return fmt.Errorf("enrolling %s: %w", c.id, err)
		}
		if err := d.initLedger(c); err != nil {
			return fmt.Errorf("creating the ledger of %s: %w", c.id, err)
		}
	}
	return nil
}

// enroll is the challenge exchange: the first enrollment shows the EK and
// AK, the escrow authority's challenge can only be answered by the TPM
// holding both, and the answer verifies with the secret it kept.
func (d *demo) enroll(c *demoCustodian) error {
	first, err := enrollment.Create(c.conn, c.id, tpm.EKRSA2048, nil, time.Now())
	if err != nil {
		return err
	}
	challenge, secret, err := enrollment.NewChallenge(first)
	if err != nil {
		return err
	}
	e, err := enrollment.Create(c.conn, c.id, tpm.EKRSA2048, challenge, time.Now())
	if err != nil {
		return err
	}
	roots, err := c.sw.EKRoots()
	if err != nil {
		return err
	}
	v, err := e.Verify(enrollment.VerifyOptions{Secret: secret, EKRoots: roots})
	if err != nil {
		return err
	}
	c.ek, c.importKey = v.EK, v.ImportKey
	device := *d.g
	device.dataDir = c.data
	if err := device.saveEnrollment(e, d.path(c.id+".enrollment.json")); err != nil {
		return err
	}
	d.say("custodian "+c.id, "enrolled: EK %s with its manufacturer certificate, AK, a quote of its boot, and the import key the AK certified", e.EK.Kind)
	d.say("escrow authority", "verified %s's enrollment: EK certified: %s, AK answered the challenge: %s",
		c.id, yesNo(v.EKCertified), yesNo(v.AKBound))
	return nil
}

func (d *demo) initLedger(c *demoCustodian) error {
	a, err := appliance.Init(c.data, c.conn, measure.DefaultSpec().PCRs(), time.Now())
	if err != nil {
		return err
	}
	c.app = a
	d.say("custodian "+c.id, "created its ledger; the checkpoint key is sealed to the approved image")
	return nil
}

// serveCustodians starts the release daemons of the custodians the officer
// will visit, as custodian serve --button sim does, in this process.
func (d *demo) serveCustodians(context.Context) error {
	for _, c := range d.custodians {
		if !slices.Contains(demoReleasers, c.id) {
			continue
		}
		if err := c.serve(d.g, d.pki); err != nil {
			return fmt.Errorf("starting the daemon of %s: %w", c.id, err)
		}
		d.say("custodian "+c.id, "serving TLS 1.3 on %s, warrants only from court officers' certificates, with a simulated button (summary on display.txt, log in daemon.log)", c.client.base)
	}
	return nil
}

// serve reopens the appliance on a serialized TPM connection (the daemon's
// goroutines share it) and serves the API on a loopback port over TLS, as
// custodian serve --tls-cert --tls-key --client-ca does; its client is the
// officer's, as custodian release --ca --client-cert --client-key.
func (c *demoCustodian) serve(g *globals, pki *tlstest.PKI) error {
	if err := c.app.Close(); err != nil {
		return err
	}
	c.app = nil
	t := release.Serialize(c.conn)
	a, err := appliance.Open(c.data, t)
	if err != nil {
		return err
	}
	c.app = a
	if c.btn, err = button.ListenSim(filepath.Join(c.data, button.SimSocket)); err != nil {
		return err
	}
	display, err := c.create("display.txt")
	if err != nil {
		return err
	}
	logFile, err := c.create("daemon.log")
	if err != nil {
		return err
	}
	c.daemon, err = release.New(release.Config{Appliance: a, TPM: t, Button: c.btn, Display: display,
		Window: demoWindow, Log: slog.New(slog.NewTextHandler(logFile, nil))})
	if err != nil {
		return err
	}
	return c.listen(g, pki)
}

// create opens a file in the custodian's directory, closed at stop.
func (c *demoCustodian) create(name string) (*os.File, error) {
	f, err := os.Create(filepath.Join(c.dir, name))
	if err == nil {
		c.closers = append(c.closers, f)
	}
	return f, err
}

func (c *demoCustodian) listen(g *globals, pki *tlstest.PKI) error {
	network := serverTLS{cert: pki.ServerCert, key: pki.ServerKey, clientCA: pki.OfficerCA}
	tlsCfg, officers, err := network.load(time.Now())
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	c.srv = (&release.API{Daemon: c.daemon, Officers: officers}).Server(tlsCfg)
	go func() { _ = c.srv.Serve(tls.NewListener(ln, tlsCfg)) }()
	c.client, err = g.apiClient("https://"+ln.Addr().String(), clientTLS{ca: pki.ServerCA, cert: pki.Cert, key: pki.Key})
	return err
}

// releaseShares is the court officer's round: the warrant to each of the
// threshold's custodians, a press at each device, a package from each.
func (d *demo) releaseShares(ctx context.Context) error {
	for _, c := range d.custodians {
		if !slices.Contains(demoReleasers, c.id) {
			continue
		}
		if err := d.releaseFrom(ctx, c); err != nil {
			return fmt.Errorf("release from %s: %w", c.id, err)
		}
	}
	return nil
}

func (d *demo) releaseFrom(ctx context.Context, c *demoCustodian) error {
	var st release.Status
	if err := c.client.do(ctx, http.MethodPost, "/v1/warrants", d.p7s, &st); err != nil {
		return releaseHint(err)
	}
	d.say("court officer", "submitted the warrant to %s: it verified; the device shows the summary and waits for the button", c.id)
	d.say("court officer", "presses the button on %s", c.id)
	if err := button.Press(ctx, filepath.Join(c.data, button.SimSocket), 200*time.Millisecond); err != nil {
		return err
	}
	st, err := c.waitReleased(ctx, st)
	if err != nil {
		return err
	}
	r, err := c.fetchPackage(ctx, st.ID, d.keyID)
	if err != nil {
		return err
	}
	d.packages = append(d.packages, r)
	data, err := r.Marshal()
	if err != nil {
		return err
	}
	d.say("custodian "+c.id, "logged release entry %d, then its TPM computed and proved its partial decryption of message.env, sealed to the agency's key (%s.release.json)",
		st.LedgerIndices[d.keyID], c.id)
	return d.write(c.id+".release.json", data, 0o644)
}

// waitReleased follows a request until it leaves the approval and release
// steps; anything but released is an error with the custodian's reason.
func (c *demoCustodian) waitReleased(ctx context.Context, st release.Status) (release.Status, error) {
	for st.State == release.StateAwaitingPress || st.State == release.StateReleasing {
		if err := c.client.do(ctx, http.MethodGet, "/v1/requests/"+st.ID+"?wait=5", nil, &st); err != nil {
			return st, err
		}
	}
	if st.State != release.StateReleased {
		return st, releaseHint(&apiError{code: st.Code, message: st.Message})
	}
	return st, nil
}

func (c *demoCustodian) fetchPackage(ctx context.Context, requestID, keyID string) (*escrow.Release, error) {
	var data []byte
	if err := c.client.do(ctx, http.MethodGet, "/v1/requests/"+requestID+"/packages/"+url.PathEscape(keyID), nil, &data); err != nil {
		return nil, err
	}
	return escrow.ParseRelease(data)
}

// replay submits the used warrant again: the custodian must refuse it from
// its ledger's replay index, and log the refusal.
func (d *demo) replay(ctx context.Context) error {
	c := d.custodian(demoReleasers[0])
	var st release.Status
	err := c.client.do(ctx, http.MethodPost, "/v1/warrants", d.p7s, &st)
	var refused *apiError
	if !errors.As(err, &refused) || refused.code != release.CodeReplayed {
		return fmt.Errorf("the replayed warrant was not refused as %s (got %v)", release.CodeReplayed, err)
	}
	entry := "not logged"
	if refused.index != nil {
		entry = fmt.Sprintf("logged as ledger entry %d", *refused.index)
	}
	d.say("custodian "+c.id, "refused the same warrant submitted again: %s (%s)", refused.code, entry)
	return nil
}

// stranger submits the warrant over TLS without an officer's certificate:
// the custodian refuses it before reading it, and keeps serving.
func (d *demo) stranger(ctx context.Context) error {
	c := d.custodian(demoReleasers[0])
	anyone, err := d.g.apiClient(c.client.base.String(), clientTLS{ca: d.pki.ServerCA})
	if err != nil {
		return err
	}
	var st release.Status
	err = anyone.do(ctx, http.MethodPost, "/v1/warrants", d.p7s, &st)
	var refused *apiError
	if !errors.As(err, &refused) || refused.code != release.CodeClientCertRequired {
		return fmt.Errorf("a submission without an officer's certificate was not refused as %s (got %v)", release.CodeClientCertRequired, err)
	}
	d.say("custodian "+c.id, "refused a submission without a court officer's certificate: %s (not logged in the ledger: nobody accountable sent it)", refused.code)
	return nil
}

// audit is what anyone can check with a custodian's public verifier key:
// its signed checkpoint, and that a release is in its ledger.
func (d *demo) audit(ctx context.Context) error {
	c := d.custodian(demoReleasers[0])
	data, err := os.ReadFile(filepath.Join(c.data, appliance.LedgerKeyPub))
	if err != nil {
		return err
	}
	verifier := strings.TrimSpace(string(data))
	auditor, err := d.g.apiClient(c.client.base.String(), clientTLS{ca: d.pki.ServerCA})
	if err != nil {
		return err
	}
	var signed []byte
	if err := auditor.do(ctx, http.MethodGet, "/v1/checkpoint", nil, &signed); err != nil {
		return err
	}
	cp, err := ledger.VerifyCheckpoint(signed, verifier)
	if err != nil {
		return fmt.Errorf("%s's checkpoint: %w", c.id, err)
	}
	if err := d.write(c.id+".checkpoint", signed, 0o644); err != nil {
		return err
	}
	inc := d.packages[0].Ledger
	e, err := inc.Check(verifier)
	if err != nil {
		return fmt.Errorf("the inclusion proof of %s's release: %w", c.id, err)
	}
	d.say("auditor", "fetched %s's signed checkpoint over TLS without a client certificate, verified it (%d entries) and the inclusion proof of entry %d (%s, key ID %s)",
		c.id, cp.Size, inc.Index, e.Kind, e.KeyID)
	return nil
}

// transparencyReport is what anyone can publish from the custodians'
// public ledgers: custodian report over each one's tiles, checked with
// its pinned key. A custodian that serves is read over TLS; one that does
// not publishes its ledger exported as static tiles (ledger export).
func (d *demo) transparencyReport(ctx context.Context) error {
	f := reportFlags{out: d.path("report"), network: clientTLS{ca: d.pki.ServerCA}}
	for _, c := range d.custodians {
		source := filepath.Join(d.dir, c.id+"-tiles")
		if c.client != nil {
			source = c.client.base.String()
		} else if _, err := c.app.Ledger.Export(source); err != nil {
			return fmt.Errorf("exporting the ledger of %s: %w", c.id, err)
		}
		f.ledgers = append(f.ledgers, source)
		f.keys = append(f.keys, filepath.Join(c.data, appliance.LedgerKeyPub))
	}
	r, err := f.build(ctx, d.g)
	if err != nil {
		return err
	}
	if err := f.write(r); err != nil {
		return err
	}
	d.say("auditor", "read the %d custodians' ledgers as tiles, each entry proven under its signed checkpoint, and wrote the transparency report %s: %s",
		len(r.Logs), filepath.Join(f.out, report.PageFile), r.Totals())
	return nil
}

func (d *demo) custodian(id string) *demoCustodian {
	for _, c := range d.custodians {
		if c.id == id {
			return c
		}
	}
	panic("demo: no custodian " + id)
}
