//go:build !appliance

package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/ids"
)

// TestCheckedInDocsAreCurrent regenerates the man pages and completion
// scripts and compares them with the ones under docs/: a command or flag
// added, removed or reworded without "make man" fails here.
func TestCheckedInDocsAreCurrent(t *testing.T) {
	for _, c := range []struct {
		dir string
		gen func() (map[string][]byte, error)
	}{
		{"../../docs/man", manPages},
		{"../../docs/completions", completionScripts},
	} {
		want, err := c.gen()
		if err != nil {
			t.Fatal(err)
		}
		entries, err := os.ReadDir(c.dir)
		if err != nil {
			t.Fatalf("%v (run make man)", err)
		}
		have := make(map[string]bool)
		for _, e := range entries {
			have[e.Name()] = true
			got, err := os.ReadFile(filepath.Join(c.dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if w, ok := want[e.Name()]; !ok {
				t.Errorf("%s/%s: no such command any more (run make man)", c.dir, e.Name())
			} else if !bytes.Equal(got, w) {
				t.Errorf("%s/%s is stale (run make man)", c.dir, e.Name())
			}
		}
		var missing []string
		for name := range want {
			if !have[name] {
				missing = append(missing, name)
			}
		}
		sort.Strings(missing)
		for _, name := range missing {
			t.Errorf("%s/%s is missing (run make man)", c.dir, name)
		}
	}
}

// TestDocsAreDeterministic checks the generated files do not depend on the
// time or on the environment of whoever generates them.
func TestDocsAreDeterministic(t *testing.T) {
	first, err := manPages()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("CUSTODIAN_DATA_DIR", "/somewhere/else")
	t.Setenv("SOURCE_DATE_EPOCH", "1")
	second, err := manPages()
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(second) {
		t.Fatalf("%d pages, then %d", len(first), len(second))
	}
	for name, page := range first {
		if !bytes.Equal(page, second[name]) {
			t.Errorf("%s differs between runs", name)
		}
	}
	if bytes.Contains(first["custodian.1"], []byte("/somewhere/else")) || bytes.Contains(second["custodian.1"], []byte("/somewhere/else")) {
		t.Error("the environment's data directory leaked into the page")
	}
}

// TestDocsCommandWritesAndPrunes runs "custodian docs man" twice over one
// directory: a page of a command that no longer exists is removed, other
// files stay.
func TestDocsCommandWritesAndPrunes(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "custodian-frobnicate.1")
	other := filepath.Join(dir, "README")
	for _, p := range []string{stale, other} {
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "docs", "man", dir)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale page kept: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("unrelated file removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "custodian-ledger-prove.1")); err != nil {
		t.Error(err)
	}
	mustRun(t, "docs", "completions", filepath.Join(dir, "completions"))
	if _, err := os.Stat(filepath.Join(dir, "completions", "custodian.bash")); err != nil {
		t.Error(err)
	}
	if code, _, errOut := custodian(t, "docs", "man", other); code == 0 {
		t.Errorf("wrote into a file: %s", errOut)
	}
}

// docFiles are the documents whose commands and test names are checked.
func docFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append(files, "../../README.md", "../../firmware/SECURE-BOOT.md")
}

var (
	inlineCommand     = regexp.MustCompile("`((?:bin/)?custodian [^`]+)`")
	documentedCommand = regexp.MustCompile(`^custodian (-|[a-z])`)
	testName          = regexp.MustCompile("`((?:Test|Fuzz|Benchmark)[A-Z][A-Za-z0-9_]*)`")
	testFunc          = regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|Benchmark)[A-Za-z0-9_]*)\(`)
)

// TestDocumentedCommandsExist reads every custodian command line in the
// README and docs (sh code blocks and inline code) and checks that its
// subcommands and flags exist in the command tree.
func TestDocumentedCommandsExist(t *testing.T) {
	root := referenceRoot()
	checked := 0
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		inBlock, shell := false, false
		var pending string
		for _, line := range strings.Split(string(data), "\n") {
			if fence := strings.TrimSpace(line); strings.HasPrefix(fence, "```") {
				inBlock = !inBlock
				shell = inBlock && fence == "```sh"
				continue
			}
			if !shell {
				continue
			}
			line = pending + strings.TrimSpace(line)
			pending = ""
			if strings.HasSuffix(line, `\`) {
				pending = strings.TrimSuffix(line, `\`) + " "
				continue
			}
			lines = append(lines, line)
		}
		for _, m := range inlineCommand.FindAllStringSubmatch(string(data), -1) {
			lines = append(lines, strings.Join(strings.Fields(m[1]), " "))
		}
		for _, line := range lines {
			line = strings.TrimPrefix(strings.TrimPrefix(line, "sudo "), "bin/")
			if !documentedCommand.MatchString(line) {
				continue // prose such as an error message quoting a custodian ID
			}
			checked++
			if err := checkCommandLine(root, line); err != nil {
				t.Errorf("%s: %q: %v", filepath.Base(file), line, err)
			}
		}
	}
	if checked < 50 {
		t.Errorf("only %d documented command lines found; is the parser broken?", checked)
	}
}

func TestCheckCommandLine(t *testing.T) {
	root := referenceRoot()
	for line, ok := range map[string]bool{
		"custodian --json trust list": true,
		"custodian warrant sign --in w.json --key 'pkcs11:token=a;object=b' --out w.p7s": true,
		"custodian trust add-root court-root.pem --court 'District Court of Testing'":    true,
		"custodian trust add-root court-root.pem":                                        true,
		"custodian release --server URL":                                                 true,
		"custodian serve --listen :8443 --tls-cert c.pem --tls-key k.pem":                true,
		"custodian serve --listen :8443 --tls-crt c.pem":                                 false,
		"custodian ledger prove --index 7 > entry-7.json":                                true,
		"custodian ledger frobnicate":                                                    false,
		"custodian ledger prove --indx 7":                                                false,
		"custodian enroll --id a --challange c.json":                                     false,
	} {
		if err := checkCommandLine(root, line); (err == nil) != ok {
			t.Errorf("%q: %v", line, err)
		}
	}
}

func checkCommandLine(root *cobra.Command, line string) error {
	words := shellWords(line)[1:]
	cmd := root
	descending := true
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "..." || w == "…" {
			continue
		}
		if strings.HasPrefix(w, "--") {
			name, _, hasValue := strings.Cut(strings.TrimPrefix(w, "--"), "=")
			// Cobra merges persistent flags into Flags() lazily, so ask
			// each set: the result must not depend on what ran before.
			f := cmd.Flags().Lookup(name)
			if f == nil {
				f = cmd.PersistentFlags().Lookup(name)
			}
			if f == nil {
				f = cmd.InheritedFlags().Lookup(name)
			}
			if f == nil {
				return fmt.Errorf("%q has no flag --%s", cmd.CommandPath(), name)
			}
			if f.Value.Type() != "bool" && !hasValue {
				i++ // the flag's value
			}
			continue
		}
		if !descending {
			continue
		}
		next, _, err := cmd.Find([]string{w})
		if err != nil || next == cmd {
			if cmd.HasAvailableSubCommands() {
				return fmt.Errorf("%q has no subcommand %q", cmd.CommandPath(), w)
			}
			descending = false // a positional argument
			continue
		}
		cmd = next
	}
	return nil
}

// shellWords splits a documented command line into words: quotes group,
// and a comment, pipe or redirection ends the command.
func shellWords(line string) []string {
	var words []string
	var cur strings.Builder
	inWord := false
	quote := rune(0)
	for _, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '\'' || r == '"':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case !inWord && (r == '#' || r == '|' || r == '>' || r == '<' || r == ';' || r == '&'):
			if inWord {
				words = append(words, cur.String())
			}
			return words
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// TestDocumentedTestsExist checks that every test named in the README and
// docs is a test function in the repository.
func TestDocumentedTestsExist(t *testing.T) {
	defined := make(map[string]bool)
	err := filepath.WalkDir("../..", func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range testFunc.FindAllStringSubmatch(string(data), -1) {
			defined[m[1]] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range docFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range testName.FindAllStringSubmatch(string(data), -1) {
			if !defined[m[1]] {
				t.Errorf("%s names %s, which is not a test here", filepath.Base(file), m[1])
			}
		}
	}
}

// TestDocumentedIDPatternsAreTheCode: the ID rules docs/warrant.md quotes
// are the patterns hsm/ids checks, each named beside its kind of ID.
func TestDocumentedIDPatternsAreTheCode(t *testing.T) {
	data, err := os.ReadFile("../../docs/warrant.md")
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Join(strings.Fields(string(data)), " ")
	for kind, re := range map[string]*regexp.Regexp{"Custodian IDs": ids.CustodianPattern, "key IDs": ids.KeyIDPattern} {
		quoted := regexp.MustCompile(regexp.QuoteMeta(kind) + " match `([^`]+)`").FindStringSubmatch(text)
		if quoted == nil {
			t.Errorf("docs/warrant.md does not say which pattern %s match", kind)
			continue
		}
		if quoted[1] != re.String() {
			t.Errorf("docs/warrant.md: %s match %s; hsm/ids checks %s", kind, quoted[1], re)
		}
	}
}
