package main

import (
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// TestUsageHintOnlyForUsageErrors: a command line the parser or cobra
// refuses points to the command's help; an error that merely begins with
// a flag's name (what the flag named was wrong) does not.
func TestUsageHintOnlyForUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"ledger", "prove", "--index", "x"},   // a flag's value
		{"ledger", "prove", "--no-such-flag"}, // an unknown flag
		{"ledger", "prove", "--index"},        // a flag without its value
		{"agency", "keygen", "extra"},         // an argument where none goes
		{"warrant", "new", "--serial", "s"},   // the command's own check of its flags
	} {
		root := newRootCommand(io.Discard, io.Discard)
		root.SetArgs(args)
		cmd, err := root.ExecuteC()
		if err == nil {
			t.Fatalf("%v: no error", args)
		}
		if !slices.ContainsFunc(hintsOf(usageHint(cmd, err)), func(h string) bool { return strings.HasSuffix(h, "--help shows how to call it") }) {
			t.Errorf("%v: %v has no pointer to the help", args, err)
		}
	}
	root := newRootCommand(io.Discard, io.Discard)
	for _, err := range []error{
		errors.New("--old: checkpoint does not verify: it is not signed by the pinned key"),
		errors.New("--signing-key: key.txt is longer than 16384 bytes; it is not what the flag takes"),
	} {
		if hints := hintsOf(usageHint(root, err)); len(hints) != 0 {
			t.Errorf("%v: got hints %q, want none (not a usage error)", err, hints)
		}
	}
}
