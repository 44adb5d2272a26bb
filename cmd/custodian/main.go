// Command custodian is the software of a warrant custodian appliance and the
// tools that the people around it use: operators, the escrow authority,
// judges, court officers, agencies and auditors.
//
// Every subcommand is a thin shell: it parses flags, calls one package, and
// prints. Errors leave through main, once, as "custodian: error: ..." with
// optional "hint: ..." lines, and a non-zero exit status.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	if role := initRole(); role != nil {
		role() // PID 1: never returns
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line and returns the process exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand(stdout, stderr)
	root.SetArgs(args)
	if err := misspelledSubcommand(root, args); err != nil {
		printError(stderr, err)
		return 1
	}
	if cmd, err := root.ExecuteC(); err != nil {
		printError(stderr, usageHint(cmd, explainOS(err)))
		var coded interface{ ExitCode() int }
		if errors.As(err, &coded) {
			return coded.ExitCode()
		}
		return 1
	}
	return 0
}

// printError writes err for a person: one error line, then its hints.
func printError(w io.Writer, err error) {
	fmt.Fprintf(w, "custodian: error: %v\n", err)
	for _, h := range hintsOf(err) {
		fmt.Fprintf(w, "hint: %s\n", h)
	}
}
