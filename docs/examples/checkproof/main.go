// Checkproof verifies one "custodian ledger prove" answer with the
// ledger's pinned verifier key, using only golang.org/x/mod.
//
//	go run ./docs/examples/checkproof ledger-key.pub proof.json
package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func main() {
	if err := check(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
}

func check(keyFile, proofFile string) error {
	key, err := os.ReadFile(keyFile)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(proofFile)
	if err != nil {
		return err
	}
	var p struct {
		Index      int64       `json:"index"`
		Entry      string      `json:"entry"`
		Proof      []tlog.Hash `json:"proof"`
		Checkpoint string      `json:"checkpoint"`
	}
	if err := json.Unmarshal(data, &p); err != nil {
		return err
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(key)))
	if err != nil {
		return err
	}
	n, err := note.Open([]byte(p.Checkpoint), note.VerifierList(v))
	if err != nil {
		return fmt.Errorf("checkpoint signature: %w", err)
	}
	// C2SP tlog-checkpoint body: origin, tree size, base64 root hash.
	lines := strings.Split(n.Text, "\n")
	if len(lines) < 4 || lines[0] != v.Name() {
		return fmt.Errorf("checkpoint is not for %s", v.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return err
	}
	raw, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(raw) != tlog.HashSize {
		return fmt.Errorf("bad root hash")
	}
	var root tlog.Hash
	copy(root[:], raw)
	leaf := tlog.RecordHash([]byte(p.Entry))
	if err := tlog.CheckRecord(p.Proof, size, root, p.Index, leaf); err != nil {
		return fmt.Errorf("inclusion proof: %w", err)
	}
	fmt.Printf("OK: entry %d is in %s's ledger of %d entries\n", p.Index, v.Name(), size)
	return nil
}
