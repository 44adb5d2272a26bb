// Package console is the operator's console on the appliance: a
// line-oriented protocol on a serial port, served by the root init. There
// is no shell on the appliance; this is the only way in besides the
// daemon's API, and it runs only allowlisted custodian subcommands.
//
// The protocol (a program drives it through the serial port, so it is
// exact; the console does not echo what it reads):
//
//	prompt        "custodian> " (no newline)
//	put NAME      then base64 lines, ended by a line "."; writes transfer/NAME
//	get NAME      prints transfer/NAME as base64 lines of 76 characters, then "."
//	status        prints the daemon's state and what the device still lacks
//	help          lists the commands
//	SUBCOMMAND …  an allowlisted custodian subcommand, run with the fixed
//	              --data-dir and --tpm (a line that gives either is refused),
//	              in the working directory transfer/, as the daemon's user
//	              in its sandbox; only update apply --image NAME and update
//	              commit run as root, and update sign and update keygen (the
//	              escrow authority's offline steps) are refused
//
// After every command but an empty line, a line "[exit N]" follows (N the
// exit status; 2 when the console refused the line without running
// anything), then the prompt again. Words are separated by spaces; a
// double-quoted part of a word keeps its spaces (--court "District Court",
// for names the runbooks give with spaces), and there are no escapes: a
// word cannot hold a double quote. NAME is [A-Za-z0-9._-]{1,64} without a
// leading dot.
//
// The daemon is stopped while a subcommand that may open the TPM or the
// ledger runs (the device has one TPM resource manager and one ledger
// writer: they are never opened twice), and started again after it. Every
// subcommand has a time limit (DefaultTimeout; DefaultApplyTimeout for
// update apply); the Runner kills one that passes it, and reads its
// standard input from nothing, so no command waits on a terminal.
package console

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"
)

// Prompt is printed before every command line.
const Prompt = "custodian> "

// Exit statuses of the console's own commands.
const (
	ExitOK      = 0
	ExitFailed  = 1
	ExitRefused = 2
)

// maxLine bounds one input line; base64 lines are far shorter.
const maxLine = 64 << 10

// Command is one subcommand to run.
type Command struct {
	Args []string  // the complete arguments after the program name
	Dir  string    // working directory
	Root bool      // run as root (update writes raw partitions), not as the daemon's user
	Out  io.Writer // the console: stdout and stderr
}

// Runner runs a custodian subcommand and returns its exit status.
type Runner interface {
	Run(ctx context.Context, c Command) (int, error)
}

// Daemon is the release daemon, which the console pauses around commands
// that open the TPM or the ledger.
type Daemon interface {
	// Stop returns once the daemon is not running (and does not restart).
	Stop() error
	// Start lets the daemon run again.
	Start()
	// Status is one line about the daemon for the status command.
	Status() string
}

// Console serves the protocol on one connection.
type Console struct {
	In  io.Reader
	Out io.Writer

	Files   *Transfer // the transfer directory (put, get, working directory)
	Runner  Runner
	Daemon  Daemon
	DataDir string // --data-dir for every subcommand
	TPM     string // --tpm for every subcommand
	// Commands are the allowlisted subcommands (first words).
	Commands []string
	// Status adds lines to the status command (what the device lacks).
	Status func(io.Writer)
	// Timeout bounds one subcommand (DefaultTimeout when zero), and
	// ApplyTimeout update apply (DefaultApplyTimeout when zero): a command
	// that hangs is killed, and the daemon it stopped runs again.
	Timeout, ApplyTimeout time.Duration
}

// The default time limits: generous for every command the runbook gives,
// and for update apply, which writes and reads back a slot on an SD card.
const (
	DefaultTimeout      = 15 * time.Minute
	DefaultApplyTimeout = 2 * time.Hour
)

// DefaultCommands are the subcommands the appliance's console runs: the
// operator's and the court trust admin's device-side commands. button is
// added in builds with the simulated button.
var DefaultCommands = []string{"attest", "enroll", "floor", "ledger", "provision", "reseal", "trust", "update", "warrant"}

// freeOfDevice are subcommands (first words, or first two) that open
// neither the TPM nor the ledger, and so run beside the daemon: button
// press talks to the running daemon.
var freeOfDevice = [][]string{{"button"}, {"warrant", "show"}}

var errQuit = errors.New("input closed")

// Serve runs the console until its input ends or ctx is done.
func (c *Console) Serve(ctx context.Context) error {
	in := bufio.NewReaderSize(c.In, 4096)
	for ctx.Err() == nil {
		fmt.Fprint(c.Out, Prompt)
		line, err := readLine(in)
		if errors.Is(err, errTooLong) {
			c.exit(ExitRefused, "the line is too long (at most 64 KiB)")
			continue
		}
		if err != nil {
			return err
		}
		words, err := splitWords(line)
		if err != nil {
			fmt.Fprintf(c.Out, "[exit %d]\n", c.exit(ExitRefused, err.Error()))
			continue
		}
		if len(words) == 0 {
			continue
		}
		status := c.dispatch(ctx, in, words)
		fmt.Fprintf(c.Out, "[exit %d]\n", status)
	}
	return ctx.Err()
}

func (c *Console) dispatch(ctx context.Context, in *bufio.Reader, words []string) int {
	switch words[0] {
	case "put":
		return c.put(in, words[1:])
	case "get":
		return c.get(words[1:])
	case "status":
		return c.status()
	case "help":
		c.help()
		return ExitOK
	}
	return c.run(ctx, words)
}

// exit prints a console error; the caller prints the exit line.
func (c *Console) exit(status int, msg string) int {
	fmt.Fprintf(c.Out, "custodian: error: %s\n", msg)
	return status
}

func (c *Console) run(ctx context.Context, words []string) int {
	if !slices.Contains(c.Commands, words[0]) {
		return c.exit(ExitRefused, fmt.Sprintf("%q is not a console command (commands: put get status help %s)", words[0], strings.Join(c.Commands, " ")))
	}
	for _, w := range words[1:] {
		if fixedFlag(w) {
			return c.exit(ExitRefused, fmt.Sprintf("%s is fixed on the console (--data-dir %s --tpm %s); leave it out", w, c.DataDir, c.TPM))
		}
	}
	root, err := asRoot(words)
	if err != nil {
		return c.exit(ExitRefused, err.Error())
	}
	out := &lineEnd{w: c.Out, last: '\n'}
	cmd := Command{
		Args: append([]string{"--data-dir", c.DataDir, "--tpm", c.TPM}, words...),
		Dir:  c.Files.Dir,
		Root: root,
		Out:  out,
	}
	if needsDevice(words) {
		if err := c.Daemon.Stop(); err != nil {
			return c.exit(ExitFailed, "stopping the daemon: "+err.Error())
		}
		defer c.Daemon.Start()
	}
	limit := c.limit(words)
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	status, err := c.Runner.Run(ctx, cmd)
	if out.last != '\n' { // the exit line starts a line of its own
		fmt.Fprintln(c.Out)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return c.exit(ExitFailed, fmt.Sprintf("%s did not finish within %s and was stopped (a file it waited on, such as a terminal, never ended?)", words[0], limit))
	}
	if err != nil {
		return c.exit(ExitFailed, err.Error())
	}
	return status
}

// limit is the time limit of a line.
func (c *Console) limit(words []string) time.Duration {
	if hasPrefix(words, []string{"update", "apply"}) {
		return cmp.Or(c.ApplyTimeout, DefaultApplyTimeout)
	}
	return cmp.Or(c.Timeout, DefaultTimeout)
}

// offDevice are subcommands the console refuses: the escrow authority's
// offline steps, which write their output wherever their flags say.
var offDevice = [][]string{{"update", "sign"}, {"update", "keygen"}}

// asRoot decides whether a line runs as root. Only update apply and update
// commit do (they write the disk's raw partitions), and only in the forms
// the runbook gives: apply's image is a file of transfer/, named as put
// names it, and the disk is always the device's own. Every other line
// runs as the daemon's user, in the sandbox.
func asRoot(words []string) (bool, error) {
	for _, off := range offDevice {
		if hasPrefix(words, off) {
			return false, fmt.Errorf("%s is the escrow authority's offline step and does not run on the device", strings.Join(off, " "))
		}
	}
	switch {
	case hasPrefix(words, []string{"update", "apply"}):
		return true, checkApply(words[2:])
	case hasPrefix(words, []string{"update", "commit"}):
		if len(words) > 2 {
			return true, errors.New("update commit takes nothing more on the console (the disk is the device's own)")
		}
		return true, nil
	}
	return false, nil
}

// checkApply allows only --image NAME (a file of transfer/) and --no-reboot.
func checkApply(args []string) error {
	image := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, isImage := strings.CutPrefix(a, "--image=")
		switch {
		case a == "--no-reboot":
			continue
		case a == "--image" && i+1 < len(args):
			i++
			name, isImage = args[i], true
		}
		if !isImage {
			return fmt.Errorf("update apply on the console takes only --image NAME and --no-reboot, not %q (the disk is the device's own)", a)
		}
		if !ValidName(name) {
			return fmt.Errorf("update apply --image %q: give the name of a file put into transfer/ (letters, digits, . _ -), not a path", name)
		}
		image = true
	}
	if !image {
		return errors.New("update apply needs --image NAME, a file put into transfer/")
	}
	return nil
}

func hasPrefix(words, prefix []string) bool {
	return len(words) >= len(prefix) && slices.Equal(words[:len(prefix)], prefix)
}

// fixedFlag reports a word that would set --data-dir or --tpm, in any of
// the forms the flag parser takes.
func fixedFlag(w string) bool {
	for _, f := range []string{"--data-dir", "--tpm"} {
		if w == f || strings.HasPrefix(w, f+"=") {
			return true
		}
	}
	return false
}

func needsDevice(words []string) bool {
	for _, free := range freeOfDevice {
		if hasPrefix(words, free) {
			return false
		}
	}
	return true
}

func (c *Console) status() int {
	fmt.Fprintf(c.Out, "daemon: %s\n", c.Daemon.Status())
	if c.Status != nil {
		c.Status(c.Out)
	}
	return ExitOK
}

func (c *Console) help() {
	fmt.Fprintf(c.Out, `commands:
  put NAME          receive transfer/NAME: base64 lines, then a line "."
  get NAME          send transfer/NAME as base64 lines, then a line "."
  status            the daemon's state and what the device lacks
  %s ...
                    custodian subcommands (--data-dir and --tpm are fixed; files are in transfer/)
`, strings.Join(c.Commands, " | "))
}

// lineEnd passes output on and remembers its last byte.
type lineEnd struct {
	w    io.Writer
	last byte
}

func (l *lineEnd) Write(p []byte) (int, error) {
	if len(p) > 0 {
		l.last = p[len(p)-1]
	}
	return l.w.Write(p)
}

var errTooLong = errors.New("line too long")

// splitWords splits a line at white space outside double quotes and drops
// the quotes: `--court "District Court"` is two words. A quote that is
// never closed refuses the line, so that nothing runs with a half-read
// argument.
func splitWords(line string) ([]string, error) {
	var words []string
	var word strings.Builder
	inWord, quoted := false, false
	for _, r := range line {
		switch {
		case r == '"':
			quoted, inWord = !quoted, true
		case unicode.IsSpace(r) && !quoted:
			if inWord {
				words = append(words, word.String())
				word.Reset()
				inWord = false
			}
		default:
			word.WriteRune(r)
			inWord = true
		}
	}
	if quoted {
		return nil, errors.New(`a double quote is not closed: quote a word with spaces as "…" (there are no escapes)`)
	}
	if inWord {
		words = append(words, word.String())
	}
	return words, nil
}

// readLine reads one line without its end (LF or CRLF). A line over
// maxLine is consumed and refused.
func readLine(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		chunk, err := r.ReadSlice('\n')
		if b.Len()+len(chunk) <= maxLine+2 {
			b.Write(chunk)
		} else {
			b.WriteString("\x00") // marks the overflow
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if err != nil && (err != io.EOF || b.Len() == 0) {
			return "", err
		}
		line := strings.TrimSuffix(strings.TrimSuffix(b.String(), "\n"), "\r")
		if strings.Contains(line, "\x00") || len(line) > maxLine {
			return "", errTooLong
		}
		return line, nil
	}
}

var nameRule = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$`)

// ValidName reports whether name may name a file in the transfer directory.
func ValidName(name string) bool { return nameRule.MatchString(name) }
