package release

import (
	"errors"
	"net/http"
	"strings"

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
func (a *API) tile(w http.ResponseWriter, r *http.Request) {
	t, err := ledger.ParseTilePath(strings.TrimPrefix(r.URL.Path, TlogPrefix))
	if err != nil {
		writeError(w, refusal(CodeBadRequest, "%v", err))
		return
	}
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
	w.Write(data)
}
