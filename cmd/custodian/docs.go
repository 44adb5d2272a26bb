//go:build !appliance

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manDate is the date every generated man page carries. It is fixed so that
// one command tree always gives the same bytes: the pages checked in under
// docs/man are compared with freshly generated ones by a test. Move it
// forward when the manual changes in a way worth dating.
var manDate = time.Date(2026, time.November, 1, 0, 0, 0, 0, time.UTC)

// The reference files are generated from a fresh command tree, never from the
// one that is running, so that what this invocation parsed cannot leak in.
func newDocsCommand(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "docs",
		Short: "Generate the man pages and shell completions from this command tree",
		Long: `Docs writes reference files generated from the commands and flags of this
binary. The repository keeps them under docs/man and docs/completions;
"make man" regenerates both, and a test fails when they are out of date.

Files of the same kind already in DIR that this binary would not write
(pages of removed commands) are deleted; other files are left alone.`,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "man DIR",
		Short: "Write one man page (section 1) per command into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			files, err := manPages()
			if err != nil {
				return err
			}
			return writeGenerated(g, args[0], files, ".1")
		},
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "completions DIR",
		Short: "Write completion scripts for bash, zsh, fish and PowerShell into DIR",
		Args:  cobra.ExactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			files, err := completionScripts()
			if err != nil {
				return err
			}
			return writeGenerated(g, args[0], files, "")
		},
	})
	return cmd
}

// referenceRoot builds the command tree the reference files describe: the
// root with cobra's help and completion commands added (as Execute would),
// and defaults that do not depend on the environment of whoever runs it.
func referenceRoot() *cobra.Command {
	root := newRootCommand(io.Discard, io.Discard)
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	if f := root.PersistentFlags().Lookup("data-dir"); f != nil {
		f.DefValue = defaultDataDir // not whatever CUSTODIAN_DATA_DIR says here
	}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		c.DisableAutoGenTag = true // the tag carries the generation date
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	return root
}

// manPages renders one page per available command, keyed by file name
// (custodian-ledger-prove.1).
func manPages() (map[string][]byte, error) {
	root := referenceRoot()
	files := make(map[string][]byte)
	var walk func(*cobra.Command) error
	walk = func(c *cobra.Command) error {
		if !c.IsAvailableCommand() && c != root || c.IsAdditionalHelpTopicCommand() {
			return nil
		}
		date := manDate
		header := &doc.GenManHeader{Section: "1", Date: &date, Source: "custodian", Manual: "Custodian Manual"}
		var buf bytes.Buffer
		if err := doc.GenMan(c, header, &buf); err != nil {
			return fmt.Errorf("man page of %q: %w", c.CommandPath(), err)
		}
		files[strings.ReplaceAll(c.CommandPath(), " ", "-")+".1"] = buf.Bytes()
		for _, sub := range c.Commands() {
			if err := walk(sub); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root); err != nil {
		return nil, err
	}
	return files, nil
}

// completionScripts renders the completion script of each shell cobra
// supports, under the name that shell's loader looks for.
func completionScripts() (map[string][]byte, error) {
	root := referenceRoot()
	gens := map[string]func(io.Writer) error{
		"custodian.bash": func(w io.Writer) error { return root.GenBashCompletionV2(w, true) },
		"_custodian":     root.GenZshCompletion,
		"custodian.fish": func(w io.Writer) error { return root.GenFishCompletion(w, true) },
		"custodian.ps1":  root.GenPowerShellCompletionWithDesc,
	}
	files := make(map[string][]byte)
	for name, gen := range gens {
		var buf bytes.Buffer
		if err := gen(&buf); err != nil {
			return nil, fmt.Errorf("completion %s: %w", name, err)
		}
		files[name] = buf.Bytes()
	}
	return files, nil
}

// writeGenerated writes files into dir (created if missing) and removes the
// files in dir that look generated (suffix, or for completions the known
// names) but are no longer part of the set.
func writeGenerated(g *globals, dir string, files map[string][]byte, suffix string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	info, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !info.IsDir() {
		return withHint(fmt.Errorf("%s is not a directory", dir), "name a directory to write the files into")
	}
	if suffix != "" {
		old, err := filepath.Glob(filepath.Join(dir, "custodian*"+suffix))
		if err != nil {
			return err
		}
		for _, path := range old {
			if _, keep := files[filepath.Base(path)]; !keep {
				if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
					return err
				}
			}
		}
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(dir, name), files[name], 0o644); err != nil {
			return err
		}
	}
	g.printf("wrote %d files to %s\n", len(names), dir)
	return nil
}
