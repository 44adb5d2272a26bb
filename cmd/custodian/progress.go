package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/term"
)

// progress shows how far a long batch has come on stderr: a bar redrawn
// in place when stderr is a terminal, a plain line every plainEvery
// otherwise, and nothing in --json mode, whose only output is its report.
type progress struct {
	w           io.Writer
	off, tty    bool
	total       int
	start, last time.Time
	now         func() time.Time
	drawn       bool // the bar is on the current line
	done, fail  int
	unit        string // what is counted: "envelopes" unless set
}

const (
	barEvery   = 100 * time.Millisecond
	plainEvery = 5 * time.Second
	barWidth   = 30
)

func newProgress(g *globals, total int) *progress {
	p := &progress{w: g.stderr, off: g.json, total: total, now: time.Now}
	if f, ok := g.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		p.tty = true
	}
	p.start = p.now()
	p.last = p.start
	return p
}

// update records done envelopes (failed of them) and redraws when due.
func (p *progress) update(done, failed int) {
	p.done, p.fail = done, failed
	if p.off {
		return
	}
	now := p.now()
	every := plainEvery
	if p.tty {
		every = barEvery
	}
	if now.Sub(p.last) < every && done < p.total {
		return
	}
	p.last = now
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", p.bar(now))
		p.drawn = true
		return
	}
	if done < p.total {
		fmt.Fprintf(p.w, "progress: %s\n", p.status(now))
	}
}

// println writes a line above the bar (a warning, a refusal).
func (p *progress) println(line string) {
	if p.off {
		return
	}
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
	fmt.Fprintln(p.w, line)
}

// finish ends the bar's line.
func (p *progress) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
		p.drawn = false
	}
}

func (p *progress) bar(now time.Time) string {
	filled := 0
	if p.total > 0 {
		filled = barWidth * p.done / p.total
	}
	return "[" + strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled) + "] " + p.status(now)
}

// status is "N of M envelopes, F not opened, R/s" (unit for envelopes).
func (p *progress) status(now time.Time) string {
	s := fmt.Sprintf("%d of %d %s", p.done, p.total, cmp.Or(p.unit, "envelopes"))
	if p.fail > 0 {
		s += fmt.Sprintf(", %d not opened", p.fail)
	}
	if elapsed := now.Sub(p.start).Seconds(); elapsed > 0 {
		s += fmt.Sprintf(", %.0f/s", float64(p.done)/elapsed)
	}
	return s
}
