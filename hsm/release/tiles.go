package release

import (
	"compress/gzip"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
)

// TlogPrefix is where the daemon serves its ledger as a C2SP tlog-tiles
// log (docs/ledger.md, "Tiles"): <prefix>checkpoint, <prefix>tile/... .
// Like every ledger route it is read-only and open to anyone, without a
// client certificate.
const TlogPrefix = "/v1/tlog/"

// Caching as C2SP tlog-tiles says: the checkpoint changes with every
// entry, so caches keep it a few seconds; a tile's path names its bytes
// for good (a partial tile's carries its width), so caches keep it.
const (
	cacheCheckpoint = "public, max-age=5"
	cacheTile       = "public, max-age=31536000, immutable"
)

func (a *API) tlogCheckpoint(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", cacheCheckpoint)
	a.checkpoint(w, r)
}

// tile serves one hash tile or entry bundle. A path that is not a tile's
// is a bad request; a tile past the ledger's size is not found (yet).
// Each answer reads at most 256 hashes or entries (at most about 1 MiB).
//
// A tile has one URL: the path is parsed as the client wrote it (escaped),
// so a percent-encoded spelling of a tile is not that tile, and a query
// string is refused. Otherwise each spelling would be another cache key
// for the same immutable bytes.
func (a *API) tile(w http.ResponseWriter, r *http.Request) {
	t, err := ledger.ParseTilePath(strings.TrimPrefix(r.URL.EscapedPath(), TlogPrefix))
	if err == nil && (r.URL.RawQuery != "" || r.URL.ForceQuery) {
		err = errors.New("a tile path takes no query string")
	}
	if err != nil {
		writeError(w, refusal(CodeBadRequest, "%v", err))
		return
	}
	if !a.tileSlot(w, r) {
		return
	}
	defer func() { <-a.tiles }()
	data, err := a.Daemon.cfg.Appliance.Ledger.Tile(t)
	if errors.Is(err, ledger.ErrTileBeyondTree) {
		writeError(w, refusal(CodeNotFound, "the ledger has %d entries and no tile %s yet; fetch %scheckpoint first and only the tiles its size needs",
			a.Daemon.cfg.Appliance.Ledger.Size(), ledger.TilePath(t), TlogPrefix))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Cache-Control", cacheTile)
	if t.L == -1 {
		writeBundle(w, r, data)
		return
	}
	w.Write(data) // hashes do not compress
}

// tileWait is how long a tile request waits for one of the API.Tiles
// slots before it is refused with 503 and Retry-After.
const tileWait = 2 * time.Second

// tileSlot takes one of the slots that bound the tile answers served at
// once, waiting up to tileWait; when none frees it answers 503
// ledger_busy with Retry-After and reports false. A client that honours
// Retry-After (custodian ledger export, torchwood's fetch of 50 at once)
// reads the whole log; nothing is counted against its rate.
func (a *API) tileSlot(w http.ResponseWriter, r *http.Request) bool {
	select {
	case a.tiles <- struct{}{}:
		return true
	default:
	}
	timer := time.NewTimer(tileWait)
	defer timer.Stop()
	select {
	case a.tiles <- struct{}{}:
		return true
	case <-r.Context().Done():
		return false
	case <-timer.C:
		w.Header().Set("Retry-After", "1")
		writeError(w, refusal(CodeLedgerBusy, "the appliance is serving %d tiles at once; retry after the time Retry-After gives", cap(a.tiles)))
		return false
	}
}

// writeBundle sends an entry bundle gzip-compressed to a client that
// accepts it, as C2SP tlog-tiles recommends: the entries' text shrinks
// about five times. Caches keep both forms apart (Vary).
func writeBundle(w http.ResponseWriter, r *http.Request, data []byte) {
	w.Header().Set("Vary", "Accept-Encoding")
	if !acceptsGzip(strings.Join(r.Header.Values("Accept-Encoding"), ",")) {
		w.Write(data)
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	zw := gzipWriters.Get().(*gzip.Writer)
	zw.Reset(w)
	zw.Write(data)
	zw.Close()
	gzipWriters.Put(zw)
}

// gzipWriters are reused: a new writer allocates about a megabyte of
// tables, more than compressing a bundle costs.
var gzipWriters = sync.Pool{New: func() any {
	zw, _ := gzip.NewWriterLevel(nil, gzip.BestSpeed) // a valid level: no error
	return zw
}}

// acceptsGzip reports whether an Accept-Encoding value allows gzip (RFC
// 9110, section 12.5.3): a "gzip" or "x-gzip" coding whose weight is not
// zero. Anything else, "*" included, gets the identity encoding, which
// every client reads.
func acceptsGzip(header string) bool {
	for _, part := range strings.Split(header, ",") {
		coding, params, _ := strings.Cut(part, ";")
		coding = strings.ToLower(strings.TrimSpace(coding))
		if coding == "gzip" || coding == "x-gzip" {
			return !zeroWeight(params)
		}
	}
	return false
}

// zeroWeight reports whether a coding's parameters give it weight 0
// ("q=0", "q=0.", "q=0.000"): the client refuses that coding.
func zeroWeight(params string) bool {
	for _, p := range strings.Split(params, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(strings.TrimSpace(name), "q") {
			return strings.TrimRight(strings.TrimSpace(value), "0") == "0." || strings.TrimSpace(value) == "0"
		}
	}
	return false
}
