package report

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/custodian-project/custodian/hsm/durable"
)

// The files Write puts in its directory.
const (
	PageFile    = "index.html"
	JSONFile    = "report.json"
	MonthsCSV   = "months.csv"
	ReasonsCSV  = "reasons.csv"
	KeyIDsCSV   = "key-ids.csv"
	OpenedCSV   = "opened.csv"
	maxBarWidth = 480 // pixels for the largest value of a series
	barHeight   = 14
	labelHeight = 16  // each row's label has a line of its own, above its bars
	valueWidth  = 150 // room right of a bar for its value: 20 digits
)

//go:embed page.html.tmpl
var pageText string

var page = template.Must(template.New("page").Parse(pageText))

// files are what Write puts in its directory, in the order it writes
// them: the page last.
func (r *Report) files() []outFile {
	return []outFile{{JSONFile, r.WriteJSON}, {MonthsCSV, r.writeMonths}, {ReasonsCSV, r.writeReasons},
		{KeyIDsCSV, r.writeKeys}, {OpenedCSV, r.writeOpened}, {PageFile, r.WriteHTML}}
}

type outFile struct {
	name  string
	write func(io.Writer) error
}

// CheckOut reports whether Write could write into dir: it is a directory
// or does not exist yet, and none of the files it would replace is
// anything but a regular file. A caller that reads for a while first
// calls it before reading.
func CheckOut(dir string) error {
	info, err := os.Stat(dir) // a symbolic link to a directory is the user's choice
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !info.IsDir():
		return fmt.Errorf("%s exists and is not a directory", dir)
	}
	for _, name := range []string{PageFile, JSONFile, MonthsCSV, ReasonsCSV, KeyIDsCSV, OpenedCSV} {
		if err := durable.CheckReplaceable(filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// Write writes the page, the JSON and the CSV files into dir (created if
// need be). Every file is rendered and every one it replaces checked
// before the first is written; then each is replaced durably (a synced
// temporary file renamed over it), the page last. A failure then (a full
// disk) can leave new data files beside the old page, never a new page
// beside old data files, and never a file cut short.
func (r *Report) Write(dir string) error {
	files := r.files()
	data := make([][]byte, len(files))
	for i, f := range files {
		var buf bytes.Buffer
		if err := f.write(&buf); err != nil {
			return err
		}
		data[i] = buf.Bytes()
	}
	if err := CheckOut(dir); err != nil {
		return err
	}
	if err := durable.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	for i, f := range files {
		if err := durable.WriteFileIn(root, f.name, data[i], 0o644); err != nil {
			return err
		}
	}
	return nil
}

// WriteHTML writes the page: figures, charts and the tables behind them.
func (r *Report) WriteHTML(w io.Writer) error {
	return page.Execute(w, view{Report: r, Totals: r.Totals(), Charts: r.charts(), MaxReasons: MaxReasons, MaxKeyIDs: MaxKeyIDs})
}

// WriteJSON writes every figure as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *Report) writeMonths(w io.Writer) error {
	rows := [][]string{{"month", "custodian", "releases", "failed_releases", "refusals", "counted", "failures", "other"}}
	for _, m := range r.Months {
		rows = append(rows, []string{m.Month, m.Custodian, u(m.Releases), u(m.Failed), u(m.Refusals), u(m.Counted), u(m.Failures), u(m.Other)})
	}
	return writeCSV(w, rows, 2)
}

func (r *Report) writeReasons(w io.Writer) error {
	rows := [][]string{{"month", "custodian", "reason", "counted", "count"}}
	for _, x := range r.Reasons {
		rows = append(rows, []string{x.Month, x.Custodian, x.Reason, strconv.FormatBool(x.Counted), u(x.Count)})
	}
	return writeCSV(w, rows, 3)
}

func (r *Report) writeKeys(w io.Writer) error {
	rows := [][]string{{"key_id", "custodian", "releases", "failed_releases", "refusals", "provisions", "first", "last"}}
	for _, k := range r.Keys {
		rows = append(rows, []string{k.KeyID, k.Custodian, u(k.Releases), u(k.Failed), u(k.Refusals), u(k.Provisions), k.First, k.Last})
	}
	return writeCSV(w, rows, 2)
}

// writeOpened writes the opened entries, their name columns (which a
// spreadsheet must not read as numbers or dates: a docket such as 2026-11)
// first.
func (r *Report) writeOpened(w io.Writer) error {
	rows := [][]string{{"custodian", "court", "docket", "serial", "signers", "key_id", "kind", "outcome", "reason",
		"index", "time", "envelopes", "court_verified", "checked", "shows"}}
	for _, o := range r.Opened {
		rows = append(rows, []string{o.Custodian, o.Court, o.Docket, o.Serial, strings.Join(o.Signers, "; "), o.KeyID, o.Kind, o.Outcome, o.Reason,
			strconv.FormatInt(o.Index, 10), o.Time, strconv.Itoa(o.Envelopes), strconv.FormatBool(o.CourtVerified), o.Checked, o.Shows})
	}
	return writeCSV(w, rows, 9)
}

// writeCSV writes rows, whose first text columns are names (month,
// custodian, reason, key ID), the rest numbers and times. A spreadsheet
// opening the file would run a field starting with = + - @ as a formula
// (a device wrote it), and read a name such as 2026-11, 1e5 or 0042 as a
// date or a number: such fields are marked as text with a leading ',
// as spreadsheets do. report.json has every value as it is.
func writeCSV(w io.Writer, rows [][]string, text int) error {
	cw := csv.NewWriter(w)
	for r, row := range rows {
		for i, f := range row {
			if f != "" && (f[0] == '=' || f[0] == '+' || f[0] == '-' || f[0] == '@') ||
				r > 0 && i < text && looksNumeric(f) {
				row[i] = "'" + f
			}
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// looksNumeric reports whether a spreadsheet could take f for a number,
// a date or a time: digits with only separators and exponents among them.
func looksNumeric(f string) bool {
	return strings.ContainsAny(f, "0123456789") && strings.Trim(f, "0123456789-.:/eE") == ""
}

func u(n uint64) string { return strconv.FormatUint(n, 10) }

// view is what the page template reads.
type view struct {
	*Report
	Totals                Totals
	Charts                []chart
	MaxReasons, MaxKeyIDs int
}

// chart is a horizontal bar chart, laid out here so that the template
// only places what is computed: one row per label, one bar per series.
type chart struct {
	ID, Title, Desc string
	Table           string // the id of the table with the same figures
	Series          []series
	Rows            []chartRow
	Width, Height   int
}

type series struct{ Name, Class string }

type chartRow struct {
	Label string
	Y     int // the row's top
	Bars  []chartBar
}

type chartBar struct {
	Class          string
	X, Y, W, TextX int
	Value          uint64
}

// charts lays out the page's three charts.
func (r *Report) charts() []chart {
	monthly := chart{ID: "chart-months", Table: "months", Title: "Releases and refusals per month, per custodian",
		Desc:   "Horizontal bars, one group per month and custodian: releases (failed releases left out), refusals logged one by one, and refusals counted in tallies. Each series has its own scale: compare a bar with the bars of its own colour, and read the numbers. The table below holds the same numbers.",
		Series: []series{{"releases", "release"}, {"refusals logged", "refusal"}, {"refusals counted", "counted"}}}
	for _, m := range r.Months {
		monthly.add("month "+m.Month+", "+m.Custodian, m.Releases, m.Refusals, m.Counted)
	}
	reasons := chart{ID: "chart-reasons", Table: "reasons", Title: "Refusals by reason, all months",
		Desc:   "Horizontal bars, one per reason and custodian, summed over every month, the most frequent first. Each series has its own scale. The table below holds each month's numbers.",
		Series: []series{{"refusals logged", "refusal"}, {"refusals counted", "counted"}}}
	type rk struct{ reason, custodian string }
	sums := map[rk][2]uint64{}
	var order []rk
	for _, x := range r.Reasons {
		k := rk{x.Reason, x.Custodian}
		s, seen := sums[k]
		if !seen {
			order = append(order, k)
		}
		if x.Counted {
			s[1] = Sum(s[1], x.Count)
		} else {
			s[0] = Sum(s[0], x.Count)
		}
		sums[k] = s
	}
	// Largest first: a reason's place says how often it was given.
	slices.SortStableFunc(order, func(a, b rk) int {
		return cmp.Compare(Sum(sums[b][0], sums[b][1]), Sum(sums[a][0], sums[a][1]))
	})
	for _, k := range order {
		reasons.add("reason "+k.reason+", "+k.custodian, sums[k][0], sums[k][1])
	}
	keys := chart{ID: "chart-keys", Table: "key-ids", Title: "Release entries per key ID, per custodian",
		Desc:   "Horizontal bars, one per key ID and custodian: its release entries (one per request, failed releases left out). The table below holds the same numbers.",
		Series: []series{{"release entries", "release"}}}
	for _, k := range r.Keys {
		keys.add("key ID "+k.KeyID+", "+k.Custodian, k.Releases)
	}
	out := []chart{monthly, reasons, keys}
	for i := range out {
		out[i].scale()
	}
	return out
}

// add appends a row of values, one per series; scale sizes the bars.
func (c *chart) add(label string, values ...uint64) {
	row := chartRow{Label: label}
	for i, v := range values {
		row.Bars = append(row.Bars, chartBar{Class: c.Series[i].Class, Value: v})
	}
	c.Rows = append(c.Rows, row)
}

// scale places every row, its label on a line above its bars, and sizes
// every bar against its series' largest value: each series has its own
// scale, so that a flood of one (counted busy refusals) leaves the others
// readable. The numbers beside the bars, and the tables, are the figures.
func (c *chart) scale() {
	most := make([]uint64, len(c.Series))
	for _, row := range c.Rows {
		for j, b := range row.Bars {
			most[j] = max(most[j], b.Value, 1)
		}
	}
	y := 4
	for i := range c.Rows {
		c.Rows[i].Y = y
		for j := range c.Rows[i].Bars {
			b := &c.Rows[i].Bars[j]
			b.X, b.Y = 0, y+labelHeight+j*barHeight
			b.W = int(float64(b.Value) / float64(most[j]) * maxBarWidth)
			b.TextX = b.W + 4
		}
		y += labelHeight + len(c.Series)*barHeight + 8
	}
	c.Width, c.Height = maxBarWidth+valueWidth, y+4
}

// String is a chart's summary, for tests and logs.
func (c chart) String() string { return fmt.Sprintf("%s: %d rows", c.ID, len(c.Rows)) }
