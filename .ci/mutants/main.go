// Command mutants checks that the tests catch the breaks they exist for.
// Each break in breaks.go is a property of the README or the threat
// model, broken on purpose: exact source fragments replaced. For each
// one, a copy of the tree gets the break and the named tests run there;
// at least one of them must fail. The run fails when a break survives, or
// when a fragment is no longer in the source (a refactor changed the code:
// update the break with it, so the property stays guarded).
//
//	go run ./.ci/mutants [-run REGEXP] [-j N] [-keep] [-check]
//
// The working tree is never changed. Breaks run on N workers at once
// (default 2), each in its own copy of the tree. It prints one line per
// break, in the list's order, and ends with "mutants: N caught, M
// survived".
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// edit replaces the one occurrence of from in file with to.
type edit struct {
	file, from, to string
}

// mutant is one break and the tests that must catch it.
type mutant struct {
	name  string
	edits []edit
	pkg   string   // e.g. ./tpm
	tests []string // at least one must fail
}

func main() {
	run := flag.String("run", "", "only the breaks whose name matches this regular expression")
	keep := flag.Bool("keep", false, "keep the copies of the tree")
	workers := flag.Int("j", 2, "breaks tried at once, each in its own copy of the tree")
	check := flag.Bool("check", false, "only check that every break's fragments occur once in the tree, without running tests")
	flag.Parse()
	filter, err := regexp.Compile(*run)
	if err != nil {
		fail(err)
	}
	if *workers < 1 {
		fail(fmt.Errorf("-j %d: at least one break must run at a time", *workers))
	}
	root, err := gitOutput("rev-parse", "--show-toplevel")
	if err != nil {
		fail(err)
	}
	var chosen []mutant
	for _, m := range breaks {
		if filter.MatchString(m.name) {
			chosen = append(chosen, m)
		}
	}
	if *check {
		checkFragments(strings.TrimSpace(root), chosen)
		return
	}
	caught, survived := 0, 0
	for r := range tryAll(strings.TrimSpace(root), chosen, min(*workers, max(len(chosen), 1)), *keep) {
		if r.err == nil {
			caught++
			fmt.Printf("caught    %-60s %s (%s)\n", r.name, r.verdict, r.took.Round(time.Second))
			continue
		}
		survived++
		fmt.Printf("SURVIVED  %-60s %v\n", r.name, r.err)
	}
	fmt.Printf("mutants: %d caught, %d survived\n", caught, survived)
	if survived > 0 {
		os.Exit(1)
	}
}

// result is one break's verdict.
type result struct {
	name    string
	verdict string
	err     error
	took    time.Duration
}

// tryAll tries the breaks on n workers, each with its own copy of the
// tree (so two breaks of one package can run at once), and sends the
// results in the order of breaks, each as soon as it and those before it
// are done.
func tryAll(root string, breaks []mutant, n int, keep bool) <-chan result {
	works := make([]string, n)
	for i := range works {
		work, err := os.MkdirTemp("", "custodian-mutants-")
		if err != nil {
			fail(err)
		}
		if keep {
			fmt.Println("copy of the tree:", work)
		}
		if err := copyTree(root, work); err != nil {
			fail(err)
		}
		works[i] = work
	}
	done := make([]chan result, len(breaks))
	for i := range done {
		done[i] = make(chan result, 1)
	}
	next := make(chan int)
	go func() {
		for i := range breaks {
			next <- i
		}
		close(next)
	}()
	for _, work := range works {
		go func() {
			for i := range next {
				start := time.Now()
				verdict, err := try(work, breaks[i])
				done[i] <- result{breaks[i].name, verdict, err, time.Since(start)}
			}
		}()
	}
	ordered := make(chan result)
	go func() {
		defer close(ordered)
		for _, d := range done {
			ordered <- <-d
		}
		if !keep {
			for _, work := range works {
				os.RemoveAll(work)
			}
		}
	}()
	return ordered
}

// try applies m to the copy in work, runs its tests, and undoes it. It
// returns nil when a named test failed, and why the break was not caught
// otherwise.
func try(work string, m mutant) (string, error) {
	originals := map[string][]byte{}
	defer func() {
		for file, data := range originals {
			_ = os.WriteFile(filepath.Join(work, file), data, 0o644)
		}
	}()
	for _, e := range m.edits {
		path := filepath.Join(work, e.file)
		data, err := os.ReadFile(path)
		if err != nil {
			return "", err
		}
		if _, ok := originals[e.file]; !ok {
			originals[e.file] = bytes.Clone(data)
		}
		switch n := bytes.Count(data, []byte(e.from)); n {
		case 1:
		case 0:
			return "", fmt.Errorf("the fragment is no longer in %s; update the break to the current code:\n%s", e.file, e.from)
		default:
			return "", fmt.Errorf("the fragment occurs %d times in %s; make it unique:\n%s", n, e.file, e.from)
		}
		if err := os.WriteFile(path, bytes.Replace(data, []byte(e.from), []byte(e.to), 1), 0o644); err != nil {
			return "", err
		}
	}
	return runTests(work, m)
}

// runTests runs m's tests in the broken copy and reads go test's JSON.
func runTests(work string, m mutant) (string, error) {
	pattern := "^(" + strings.Join(m.tests, "|") + ")$"
	// No -trimpath: the standard library and the modules then come from
	// the build cache `go test ./...` filled; only this tree's packages
	// build again in the copy. -failfast: the first failing named test
	// catches the break; the rest need not run.
	cmd := exec.Command("go", "test", "-count=1", "-failfast", "-json", "-run", pattern, m.pkg)
	cmd.Dir = work
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		return "", err
	}
	results, output := readEvents(out)
	var failed, passed, skipped []string
	for _, t := range m.tests {
		switch results[t] {
		case "fail":
			failed = append(failed, t)
		case "pass":
			passed = append(passed, t)
		case "skip":
			skipped = append(skipped, t)
		}
	}
	switch {
	case len(failed) > 0:
		return "by " + strings.Join(failed, ", "), nil
	case strings.Contains(stderr.String()+output, "build failed") || strings.Contains(stderr.String(), "setup failed"):
		return "", fmt.Errorf("the broken copy does not build; fix the break:\n%s%s", stderr.String(), output)
	case len(skipped) > 0:
		return "", fmt.Errorf("%s skipped (a missing tool?) and nothing else failed", strings.Join(skipped, ", "))
	case len(passed) == 0:
		return "", fmt.Errorf("none of %s ran in %s", strings.Join(m.tests, ", "), m.pkg)
	}
	return "", fmt.Errorf("%s passed with the break", strings.Join(passed, ", "))
}

// readEvents returns the result of each top-level test, and the output
// lines of the package.
func readEvents(out []byte) (map[string]string, string) {
	results := map[string]string{}
	var output strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var e struct{ Action, Test, Output string }
		if json.Unmarshal(sc.Bytes(), &e) != nil {
			output.WriteString(sc.Text() + "\n")
			continue
		}
		switch {
		case (e.Action == "output" || e.Action == "build-output") && e.Test == "":
			output.WriteString(e.Output)
		case (e.Action == "pass" || e.Action == "fail" || e.Action == "skip") && e.Test != "" && !strings.Contains(e.Test, "/"):
			results[e.Test] = e.Action
		}
	}
	return results, output.String()
}

// copyTree copies the files git knows of (tracked, and new ones not
// ignored) from root to dst, as they are in the working tree.
func copyTree(root, dst string) error {
	list, err := gitOutput("-C", root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	if err != nil {
		return err
	}
	for _, name := range strings.Split(list, "\x00") {
		if name == "" {
			continue
		}
		if err := copyFile(filepath.Join(root, name), filepath.Join(dst, name)); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	info, err := os.Lstat(src)
	if errors.Is(err, os.ErrNotExist) {
		return nil // deleted in the working tree
	}
	if err != nil || !info.Mode().IsRegular() {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func gitOutput(args ...string) (string, error) {
	out, err := exec.Command("git", args...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return string(out), nil
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "mutants:", err)
	os.Exit(2)
}

// checkFragments reports every break whose fragment is not exactly once in
// its file of the working tree: a change that moved the code a break names
// shows in seconds, before any test runs.
func checkFragments(root string, ms []mutant) {
	bad := 0
	for _, m := range ms {
		for _, e := range m.edits {
			data, err := os.ReadFile(filepath.Join(root, e.file))
			if n := bytes.Count(data, []byte(e.from)); err != nil || n != 1 {
				bad++
				fmt.Printf("STALE     %-60s %s: the fragment occurs %d times (%v)\n", m.name, e.file, n, err)
			}
		}
	}
	fmt.Printf("mutants: %d breaks checked, %d stale fragments\n", len(ms), bad)
	if bad > 0 {
		os.Exit(1)
	}
}
