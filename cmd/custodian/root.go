package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// globals are the flags every subcommand shares. They live in a value built
// per invocation, never in package variables, so tests can run the command
// tree many times in one process.
type globals struct {
	dataDir string
	tpmSpec string
	json    bool

	stdout io.Writer
	stderr io.Writer
}

const defaultDataDir = "/var/lib/custodian"

func newRootCommand(stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:           "custodian",
		Short:         "Warrant custodian appliance: releases a key share only for a verified, approved warrant",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(flagError)

	dataDir := os.Getenv("CUSTODIAN_DATA_DIR")
	if dataDir == "" {
		dataDir = defaultDataDir
	}
	pf := root.PersistentFlags()
	pf.StringVar(&g.dataDir, "data-dir", dataDir, "directory that holds the appliance's state (env CUSTODIAN_DATA_DIR)")
	pf.StringVar(&g.tpmSpec, "tpm", "/dev/tpmrm0", "TPM to use: a device path, swtpm:HOST:PORT, or sim (in-process simulator)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")

	registerCommands(root, g)
	// cobra adds completion only when it runs: add it now, so that it
	// refuses an unknown subcommand like every other group.
	root.InitDefaultCompletionCmd()
	refuseUnknownSubcommands(root)
	return root
}

// refuseUnknownSubcommands makes every command group below the root refuse
// a subcommand it does not have: cobra checks that only at the root, and
// below it prints the group's help and exits 0, so "custodian warrant
// submit" would look as if it had done something.
func refuseUnknownSubcommands(root *cobra.Command) {
	for _, c := range root.Commands() {
		refuseUnknownSubcommands(c)
		if !c.HasSubCommands() || c.Runnable() {
			continue
		}
		c.Args = cobra.ArbitraryArgs
		c.DisableFlagsInUseLine = true
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[groupOnly] = "true"
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return unknownSubcommand(cmd, args[0])
			}
			return cmd.Help()
		}
	}
}

// groupOnly marks a command that only groups subcommands.
const groupOnly = "custodian-group-only"

// unknownSubcommand refuses name as a subcommand of the group cmd, with
// the subcommands it may have meant.
func unknownSubcommand(cmd *cobra.Command, name string) error {
	err := fmt.Errorf("unknown command %q for %q", name, cmd.CommandPath())
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2 // cobra's default, set only when the root suggests
	}
	help := cmd.CommandPath() + " --help lists its commands"
	if s := cmd.SuggestionsFor(name); len(s) > 0 {
		return withHint(err, "did you mean "+cmd.CommandPath()+" "+strings.Join(s, " or ")+"?", help)
	}
	return withHint(err, help)
}

// misspelledSubcommand finds a command line whose group is followed by a
// word that is none of its subcommands, before the flags are parsed: the
// flags belong to the subcommand meant, and "unknown flag" would hide the
// misspelled word.
func misspelledSubcommand(root *cobra.Command, args []string) error {
	cmd, rest, err := root.Find(args)
	if err != nil || cmd.Annotations[groupOnly] == "" || len(rest) == 0 || strings.HasPrefix(rest[0], "-") {
		return nil
	}
	if sub, _, err := cmd.Find(rest[:1]); err == nil && sub != cmd {
		return nil
	}
	return unknownSubcommand(cmd, rest[0])
}

// printJSON writes v as indented JSON to stdout.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printf writes a line for a person to stdout.
func (g *globals) printf(format string, args ...any) {
	fmt.Fprintf(g.stdout, format, args...)
}
