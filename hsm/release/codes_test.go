package release

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/hsm/ledger"
	"github.com/custodian-project/custodian/hsm/warrant"
)

// TestEveryCodeIsALedgerReason: each code can be logged as it is returned.
func TestEveryCodeIsALedgerReason(t *testing.T) {
	seen := map[Code]bool{}
	for _, c := range Codes() {
		if seen[c] {
			t.Errorf("code %q used twice", c)
		}
		seen[c] = true
		e := ledger.Entry{Time: time.Unix(1e9, 0).UTC(), Kind: ledger.KindRefusal, Outcome: ledger.OutcomeRefused, Reason: string(c)}
		if _, err := e.Marshal(); err != nil {
			t.Errorf("code %q is not a ledger reason: %v", c, err)
		}
		if s := HTTPStatus(c); s < 400 || s > 599 {
			t.Errorf("code %q maps to %d", c, s)
		}
	}
}

func TestWarrantRefusalsAreUnprocessable(t *testing.T) {
	for _, r := range warrant.Reasons() {
		if s := HTTPStatus(Code(r)); s != http.StatusUnprocessableEntity && Code(r) != CodeTooLarge {
			t.Errorf("%s → %d", r, s)
		}
		if got := codeOf(&warrant.Error{Reason: r}); got != Code(r) {
			t.Errorf("codeOf(%s) = %s", r, got)
		}
	}
	if codeOf(ledger.ErrRolledBack) != CodeLedgerBlocked || codeOf(ledger.ErrClockBehind) != CodeClockBehind || codeOf(ledger.ErrReplay) != CodeReplayed {
		t.Error("ledger errors are not mapped")
	}
	for err, want := range map[error]Code{
		ledger.ErrStateMismatch:        CodeStateMismatch,
		ledger.ErrChangeInterrupted:    CodeStateInterrupt,
		ledger.ErrStateUnauthenticated: CodeImageNotApproved,
		ledger.ErrForeignLedgerKey:     CodeForeignLedgerKey,
	} {
		if got := codeOf(fmt.Errorf("opening: %w", err)); got != want {
			t.Errorf("codeOf(%v) = %s, want %s", err, got, want)
		}
	}
}

func TestLimiter(t *testing.T) {
	now := time.Unix(0, 0)
	l := NewLimiter(1, 3)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if !l.Allow("a") {
			t.Fatalf("burst request %d refused", i)
		}
	}
	if l.Allow("a") {
		t.Fatal("over the burst")
	}
	if !l.Allow("b") {
		t.Fatal("another client was limited")
	}
	now = now.Add(time.Second)
	if !l.Allow("a") || l.Allow("a") {
		t.Fatal("refill is not one per second")
	}
	for i := range maxClients + 10 {
		l.Allow(string(rune(i)))
	}
	if len(l.buckets) > maxClients {
		t.Fatalf("%d buckets", len(l.buckets))
	}
}

// TestCodesListsEveryCodeAndDocsNameThem: every Code constant declared in
// this package is in Codes(), and docs/api.md names each of them (warrant
// reasons are listed with hsm/warrant's catalogue), so a new refusal cannot go undocumented.
func TestCodesListsEveryCodeAndDocsNameThem(t *testing.T) {
	listed := map[Code]bool{}
	for _, c := range Codes() {
		listed[c] = true
	}
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	declared := 0
	ast.Inspect(f, func(n ast.Node) bool {
		spec, ok := n.(*ast.ValueSpec)
		if !ok || spec.Type == nil || fmt.Sprint(spec.Type) != "Code" {
			return true
		}
		for i, name := range spec.Names {
			lit, ok := spec.Values[i].(*ast.BasicLit)
			if !ok {
				continue
			}
			value, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			declared++
			if !listed[Code(value)] {
				t.Errorf("%s (%q) is declared but not in Codes()", name.Name, value)
			}
		}
		return true
	})
	if declared < 20 {
		t.Fatalf("found only %d Code constants in codes.go", declared)
	}
	docs, err := os.ReadFile("../../docs/api.md")
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[Code]bool{}
	for _, r := range warrant.Reasons() {
		reasons[Code(r)] = true
	}
	for _, c := range Codes() {
		if !reasons[c] && !strings.Contains(string(docs), "`"+string(c)+"`") {
			t.Errorf("docs/api.md does not name the code %q", c)
		}
	}
}
