package release

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/custodian-project/custodian/hsm/attest"
	"github.com/custodian-project/custodian/hsm/certfile"
	"github.com/custodian-project/custodian/hsm/internal/strictjson"
	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/opening"
	"github.com/custodian-project/custodian/hsm/warrant"
	"github.com/custodian-project/custodian/hsm/witness"
)

// MaxBody caps every request body.
const MaxBody = 64 << 10

// API serves the daemon over HTTP (docs/api.md):
//
//	POST /v1/warrants                           submit a signed warrant (DER CMS), or a warrant and its envelope list (multipart, submit.go)
//	GET  /v1/requests/{id}[?wait=SECONDS]       a request's state
//	GET  /v1/requests/{id}/packages/{key_id}    a release package
//	GET  /v1/checkpoint                         the signed checkpoint
//	GET  /v1/entries/{index}                    an entry with its inclusion proof
//	GET  /v1/entries?from=N&to=M                entries N to M (at most ledger.MaxRange) with proofs against one checkpoint
//	GET  /v1/consistency?old=N&size=M           a consistency proof
//	GET  /v1/tlog/checkpoint                    the ledger as a C2SP tlog-tiles log: its checkpoint,
//	GET  /v1/tlog/tile/<L>/<N>[.p/<W>]          a hash tile,
//	GET  /v1/tlog/tile/entries/<N>[.p/<W>]      an entry bundle (tiles.go)
//	POST /v1/attest                             {"nonce":"hex"}: a TPM quote
//	GET  /v1/health
//
// The three request routes (submit, status, packages) are the court
// officer's; with Officers set they need a client certificate that chains
// to one of its CAs, and a request's status (or a submission's refusal)
// carries the salts of its ledger entries (withSalts). The ledger routes,
// attestation and health are the auditors' and stay open to anyone; they
// never carry a salt.
type API struct {
	Daemon *Daemon
	// Attest answers an attestation request; nil answers "unavailable".
	// It runs alone on the TPM: one at a time, never beside a release's
	// TPM work and not while a warrant awaits its press (attest_busy
	// then). Its errors reach the log, the caller only attest_failed.
	Attest func(nonce []byte) (any, error)
	// Limit is the per-client rate limit on every route but the
	// read-only ledger routes (nil: DefaultRate, DefaultBurst).
	Limit *Limiter
	// Read is the per-client rate limit on the read-only ledger routes
	// (GET /v1/checkpoint, /v1/entries..., /v1/consistency, /v1/tlog/...),
	// a bucket apart from Limit (nil: DefaultReadRate, DefaultReadBurst).
	Read *Limiter
	// Tiles bounds the tile answers served at once (0: DefaultTiles).
	Tiles int
	// Global limits warrant submissions from all clients together (nil:
	// DefaultGlobalRate, DefaultGlobalBurst).
	Global *Limiter
	// Verify caps concurrent warrant verifications (0: 2): a flood of
	// submissions queues here instead of taking every core.
	Verify int
	// Lists caps the envelope lists read and held at once (0: 1): a
	// parsed list of 100,000 entries holds tens of MiB for as long as its
	// sender takes to send it. A submission with a list beyond the cap is
	// refused with busy before its list is read.
	Lists int
	// Officers, when set, holds the CAs of the court officers' client
	// certificates (ServerTLS asks the client for one). A request route
	// without a certificate is refused with client_cert_required, with one
	// that does not chain to Officers for client authentication with
	// client_cert_untrusted; neither reaches the daemon.
	Officers *x509.CertPool

	once  sync.Once
	sem   chan struct{}
	lists chan struct{}
	tiles chan struct{}
}

// Handler returns the API's routes.
func (a *API) Handler() http.Handler {
	a.once.Do(func() {
		if a.Limit == nil {
			a.Limit = NewLimiter(DefaultRate, DefaultBurst)
		}
		if a.Global == nil {
			a.Global = NewLimiter(DefaultGlobalRate, DefaultGlobalBurst)
		}
		if a.Verify <= 0 {
			a.Verify = 2
		}
		a.sem = make(chan struct{}, a.Verify)
		if a.Read == nil {
			a.Read = NewLimiter(DefaultReadRate, DefaultReadBurst)
		}
		if a.Tiles <= 0 {
			a.Tiles = DefaultTiles
		}
		a.tiles = make(chan struct{}, a.Tiles)
		if a.Lists <= 0 {
			a.Lists = 1
		}
		a.lists = make(chan struct{}, a.Lists)
	})
	mux := http.NewServeMux()
	// The officer check comes before the global submission budget: a
	// request without an officer's certificate must not use it up.
	mux.HandleFunc("POST /v1/warrants", a.officer(a.global(a.submit)))
	mux.HandleFunc("GET /v1/requests/{id}", a.officer(a.status))
	mux.HandleFunc("POST /v1/requests/{id}/resume", a.officer(a.resume))
	mux.HandleFunc("GET /v1/requests/{id}/packages/{key}", a.officer(a.pkg))
	mux.HandleFunc("GET /v1/checkpoint", a.checkpoint)
	mux.HandleFunc("GET /v1/entries/{index}", a.entry)
	mux.HandleFunc("GET /v1/entries", a.entries)
	mux.HandleFunc("GET /v1/consistency", a.consistency)
	mux.HandleFunc("GET "+TlogPrefix+"checkpoint", a.tlogCheckpoint)
	mux.HandleFunc("GET "+TlogPrefix+"tile/", a.tile)
	mux.HandleFunc("POST /v1/attest", a.attest)
	mux.HandleFunc("GET /v1/health", a.health)
	return a.limit(mux)
}

// ServerTLS is the appliance's TLS configuration: TLS 1.3 only (every
// suite is an AEAD, every key exchange ephemeral), serving cert. With
// officers set, it asks the client for a certificate without judging it:
// the officer check runs per route (API.Officers), so an auditor's read
// needs none and a wrong one gets a specific refusal instead of a
// handshake alert. crypto/tls still makes a client that sends a
// certificate prove it holds the certificate's key.
func ServerTLS(cert tls.Certificate, officers *x509.CertPool) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if officers != nil {
		cfg.ClientAuth = tls.RequestClientCert
	}
	return cfg
}

// CheckOfficer returns nil if the connection presented a client
// certificate that chains to officers for client authentication at now,
// and a client_cert_required or client_cert_untrusted refusal otherwise.
func CheckOfficer(state *tls.ConnectionState, officers *x509.CertPool, now time.Time) *Refusal {
	if state == nil || len(state.PeerCertificates) == 0 {
		return refusal(CodeClientCertRequired, "this custodian takes warrants only from a court officer's client certificate, and none was presented")
	}
	leaf := state.PeerCertificates[0]
	inter := x509.NewCertPool()
	for _, c := range state.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := leaf.Verify(x509.VerifyOptions{Roots: officers, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return refusal(CodeClientCertUntrusted, "the client certificate %q does not chain to this custodian's court officers' CA for client authentication, or is not valid now", leaf.Subject.CommonName)
	}
	return nil
}

// Fingerprint is the certfile.Fingerprint of the client certificate a
// connection presented; "" for none.
func Fingerprint(state *tls.ConnectionState) string {
	if state == nil || len(state.PeerCertificates) == 0 {
		return ""
	}
	return certfile.Fingerprint(state.PeerCertificates[0])
}

// officer guards a request route when Officers is set, before the body is
// read. The refusal is counted, like every unauthenticated request: no
// ledger entry (an entry per request would let anyone write the TPM's NV)
// and no log line per request (the log is on disk too).
func (a *API) officer(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if a.Officers != nil {
			if ref := CheckOfficer(r.TLS, a.Officers, a.Daemon.now()); ref != nil {
				writeError(w, a.Daemon.count(ref.Code, ref.Err))
				return
			}
		}
		next(w, r)
	}
}

// global takes a token of the submission budget all clients share.
func (a *API) global(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.Global.Allow("") {
			a.rateLimited(w, "too many warrant submissions to this custodian; try again in a moment")
			return
		}
		next(w, r)
	}
}

// Server returns an http.Server with the timeouts and caps the appliance
// uses. tlsCfg is ServerTLS's, or nil for plain HTTP (serve
// --insecure-http: a loopback or a closed test network).
func (a *API) Server(tlsCfg *tls.Config) *http.Server {
	return &http.Server{
		Handler:           a.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      150 * time.Second, // a waiting status poll lasts up to 120 s
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		TLSConfig:         tlsCfg,
	}
}

// ErrorBody is every error response.
type ErrorBody struct {
	Error struct {
		Code        Code   `json:"code"`
		Message     string `json:"message"`
		LedgerIndex *int64 `json:"ledger_index,omitempty"`
		// Salt opens the refusal entry's commitment; only for a court
		// officer's authenticated client (API.withSalts).
		Salt string `json:"salt,omitempty"`
	} `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, err error) {
	var ref *Refusal
	if !errors.As(err, &ref) {
		ref = &Refusal{Code: CodeInternal, Err: err, LedgerIndex: -1}
	}
	var body ErrorBody
	body.Error.Code = ref.Code
	body.Error.Message = ref.Err.Error()
	if ref.LedgerIndex >= 0 {
		i := ref.LedgerIndex
		body.Error.LedgerIndex = &i
	}
	writeJSON(w, ref.Status(), body)
}

func refusal(code Code, format string, args ...any) *Refusal {
	return &Refusal{Code: code, Err: fmt.Errorf(format, args...), LedgerIndex: -1}
}

func (a *API) limit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		limit, what := a.Limit, "requests"
		if isLedgerRead(r) {
			limit, what = a.Read, "ledger reads"
		}
		if !limit.Allow(host) {
			a.rateLimited(w, "too many %s from %s; retry after the time Retry-After gives", what, host)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// isLedgerRead reports whether r is for a read-only ledger route: those
// have their own limiter (API.Read).
func isLedgerRead(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	p := r.URL.Path
	return p == "/v1/checkpoint" || p == "/v1/consistency" || p == "/v1/entries" ||
		strings.HasPrefix(p, "/v1/entries/") || strings.HasPrefix(p, TlogPrefix)
}

// rateLimited refuses with 429: counted in memory, nothing written.
func (a *API) rateLimited(w http.ResponseWriter, format string, args ...any) {
	a.Daemon.tally.add(CodeRateLimited)
	w.Header().Set("Retry-After", "1")
	writeError(w, refusal(CodeRateLimited, format, args...))
}

func (a *API) submit(w http.ResponseWriter, r *http.Request) {
	var body []byte
	var list *warrant.EnvelopeList
	var err error
	if isMultipart(r) {
		var done func()
		body, list, done, err = a.readWithList(w, r)
		defer done()
	} else {
		body, err = a.readWarrantBody(http.MaxBytesReader(w, r.Body, MaxBody+1))
	}
	if err != nil {
		writeError(w, err)
		return
	}
	select {
	case a.sem <- struct{}{}:
	case <-r.Context().Done():
		return
	}
	st, err := a.Daemon.SubmitFrom(Fingerprint(r.TLS), body, list)
	<-a.sem
	var ref *Refusal
	if errors.As(err, &ref) && ref.LedgerIndex >= 0 && a.Officers != nil && ref.Code != CodeReplayed {
		// The submitter is an officer, and the refusal its own entry. A
		// replayed warrant was the court's before: whoever resubmits a
		// copy gets no salt that would let it publish the warrant's use.
		writeErrorWithSalt(w, ref, a.Daemon.salt(ref.LedgerIndex))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, st)
}

// withSalts adds to st the salts of its entries, for the court officer's
// client that submitted it: the API gives salts only with Officers set,
// where every request route needs an officer's certificate, and only a
// request's own salts, to the certificate that submitted it (another
// officer's certificate holding the ID gets none). An appliance that
// takes warrants from anyone gives salts to no one. Public routes never
// carry a salt (docs/threat-model.md, "Salts").
func (a *API) withSalts(r *http.Request, st *Status) {
	fp := Fingerprint(r.TLS)
	if a.Officers == nil || fp == "" || a.Daemon.Submitter(st.ID) != fp {
		return
	}
	for _, k := range sortedKeys(st.LedgerIndices) {
		i := st.LedgerIndices[k]
		if s := a.Daemon.salt(i); s != "" {
			st.Salts = append(st.Salts, opening.Salt{Index: i, Salt: s})
		}
	}
}

func writeErrorWithSalt(w http.ResponseWriter, ref *Refusal, salt string) {
	var body ErrorBody
	body.Error.Code, body.Error.Message, body.Error.Salt = ref.Code, ref.Err.Error(), salt
	i := ref.LedgerIndex
	body.Error.LedgerIndex = &i
	writeJSON(w, ref.Status(), body)
}

// readWarrantBody reads a signed warrant of at most MaxBody bytes, refusing
// (counted) a larger or unreadable one.
func (a *API) readWarrantBody(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	switch {
	case err != nil:
		return nil, a.Daemon.count(CodeBadRequest, errors.New("the request body could not be read"))
	case len(body) > MaxBody:
		return nil, a.Daemon.count(CodeTooLarge, fmt.Errorf("the warrant is larger than %d bytes", MaxBody))
	}
	return body, nil
}

func (a *API) status(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if ws := r.URL.Query().Get("wait"); ws != "" {
		secs, err := strconv.Atoi(ws)
		if err != nil || secs < 0 || secs > 130 {
			writeError(w, refusal(CodeBadRequest, "wait must be 0..130 seconds"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), time.Duration(secs)*time.Second)
		defer cancel()
		st, err := a.Daemon.Wait(ctx, id)
		if err != nil {
			writeError(w, err)
			return
		}
		a.withSalts(r, st)
		writeJSON(w, http.StatusOK, st)
		return
	}
	st, err := a.Daemon.Status(id)
	if err != nil {
		writeError(w, err)
		return
	}
	a.withSalts(r, st)
	writeJSON(w, http.StatusOK, st)
}

// resume starts another try of a parked request. With Officers set only
// the certificate that submitted it may: the officer who pressed chose
// the release, and no other officer picks its moment. Any other
// certificate is told, as for an unknown ID, that no request awaits.
func (a *API) resume(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if a.Officers != nil {
		if fp := Fingerprint(r.TLS); fp == "" || a.Daemon.Submitter(id) != fp {
			writeError(w, errNotParked)
			return
		}
	}
	st, err := a.Daemon.Resume(id)
	if err == errNoParked && a.Officers != nil {
		err = errNotParked // as for another officer's request
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, st)
}

func (a *API) pkg(w http.ResponseWriter, r *http.Request) {
	data, err := a.Daemon.Package(r.PathValue("id"), r.PathValue("key"))
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(data)
}

func (a *API) checkpoint(w http.ResponseWriter, r *http.Request) {
	cp, err := a.Daemon.cfg.Appliance.Ledger.Checkpoint()
	if err != nil {
		writeError(w, refusal(CodeImageNotApproved, "cannot sign a checkpoint: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(witness.WithCosignatures(a.Daemon.cfg.Appliance.Dir, cp))
}

func (a *API) entry(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.ParseInt(r.PathValue("index"), 10, 64)
	l := a.Daemon.cfg.Appliance.Ledger
	if err != nil || i < 0 || i >= l.Size() {
		writeError(w, refusal(CodeNotFound, "no entry %q (the ledger has %d)", r.PathValue("index"), l.Size()))
		return
	}
	inc, err := l.Prove(i)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, inc)
}

// entries answers a range of entries, bounded by ledger.MaxRange; it only
// reads the ledger.
func (a *API) entries(w http.ResponseWriter, r *http.Request) {
	l := a.Daemon.cfg.Appliance.Ledger
	from, err1 := strconv.ParseInt(r.URL.Query().Get("from"), 10, 64)
	to, err2 := strconv.ParseInt(r.URL.Query().Get("to"), 10, 64)
	if err1 != nil || err2 != nil || from < 0 || to < from || to-from >= ledger.MaxRange {
		writeError(w, refusal(CodeBadRequest, "need from=N&to=M with 0 <= N <= M and at most %d entries at once", ledger.MaxRange))
		return
	}
	rp, err := l.ProveRange(from, to)
	switch {
	case errors.Is(err, ledger.ErrBadRange): // past the end
		writeError(w, refusal(CodeNotFound, "%v", err))
	case errors.Is(err, ledger.ErrNoSigner): // as /v1/checkpoint answers it
		writeError(w, refusal(CodeImageNotApproved, "cannot sign a checkpoint: %v", err))
	case err != nil:
		writeError(w, err)
	default:
		// Compact: a page is up to 128 entries with their proofs, and
		// indentation would add a fifth to every answer.
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(rp)
	}
}

func (a *API) consistency(w http.ResponseWriter, r *http.Request) {
	l := a.Daemon.cfg.Appliance.Ledger
	old, err1 := strconv.ParseInt(r.URL.Query().Get("old"), 10, 64)
	size, err2 := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
	if err1 != nil || err2 != nil || old < 1 || old > size || size > l.Size() {
		writeError(w, refusal(CodeBadRequest, "need 1 <= old <= size <= %d", l.Size()))
		return
	}
	proof, err := l.ConsistencyProof(old, size)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"old": old, "size": size, "proof": proof})
}

func (a *API) attest(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Nonce string `json:"nonce"`
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAttestBody))
	if err == nil {
		err = strictjson.Decode(body, &req, maxAttestBody)
	}
	if err != nil {
		writeError(w, refusal(CodeBadRequest, "expected {\"nonce\":\"hex\"}: %v", err))
		return
	}
	nonce, err := hex.DecodeString(req.Nonce)
	if err != nil || len(nonce) < attest.MinNonce || len(nonce) > attest.MaxNonce {
		writeError(w, refusal(CodeBadRequest, "the nonce must be %d to %d bytes of hex", attest.MinNonce, attest.MaxNonce))
		return
	}
	if a.Attest == nil {
		writeError(w, refusal(CodeUnavailable, "attestation is not configured on this appliance"))
		return
	}
	out, err := a.Daemon.attestAlone(func() (any, error) { return a.Attest(nonce) })
	if err != nil {
		if errors.Is(err, errAttestBusy) {
			w.Header().Set("Retry-After", "1")
		}
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) health(w http.ResponseWriter, r *http.Request) {
	app := a.Daemon.cfg.Appliance
	h := map[string]any{"custodian_id": app.ID, "ledger_size": app.Ledger.Size(), "ok": true, "counted": a.Daemon.Counted()}
	if err := app.Ledger.Blocked(); err != nil {
		h["ok"], h["blocked"] = false, err.Error()
	}
	if app.SignerErr != nil {
		h["ok"], h["image_not_approved"] = false, app.SignerErr.Error()
	}
	writeJSON(w, http.StatusOK, h)
}
