package witness_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/custodian-project/custodian/hsm/witness"
	"github.com/custodian-project/custodian/hsm/witness/witnesstest"
)

// TestBadRequestIsAPlainRefusal: a witness that answers HTTP 400 refused
// a malformed request; it is not taken for one that holds a larger tree
// (ErrBehind, which tells the operator the ledger may be a restored copy).
func TestBadRequestIsAPlainRefusal(t *testing.T) {
	skey, vkey := logKeys(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "bad request", http.StatusBadRequest)
	}))
	defer srv.Close()
	ref := witnesstest.Start(t, "witness.test/strict", origin, vkey).Ref()
	ref.URL = srv.URL
	l := newLog(t, skey)
	l.append(t, "x")
	c, _ := witness.NewCosigner(t.TempDir(), nil)
	_, err := cosign(t, c, l, witness.Policy{Witnesses: []witness.Witness{ref}, Quorum: 1})
	if !errors.Is(err, witness.ErrRefused) || errors.Is(err, witness.ErrBehind) || errors.Is(err, witness.ErrConflict) || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("a witness answering 400: %v", err)
	}
}
