package main

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/custodian-project/custodian/hsm/durable"
	"github.com/custodian-project/custodian/hsm/escrow"
)

// envelopeFile is one envelope to open and where its plaintext goes; outFlag
// is the flag that named out (--out, or --out-dir for its directory).
type envelopeFile struct{ in, out, outFlag string }

// envelopeExt names the envelope files --in-dir takes, and is dropped
// from an envelope's name to name its plaintext.
const envelopeExt = ".env"

// envelopeFiles checks the combination of input and output flags and
// lists the envelopes in order: --in as given, then --in-dir sorted by
// name. With --out-dir every plaintext gets its own name, checked before
// any work.
func envelopeFiles(ins []string, inDir, out, outDir string) ([]envelopeFile, error) {
	if (out == "") == (outDir == "") {
		return nil, withHint(errors.New("give either --out (one envelope) or --out-dir (many)"),
			"custodian escrow open ... --in F.env --out F, or ... --in-dir DIR --out-dir PLAIN")
	}
	if out != "" {
		if len(ins) != 1 || inDir != "" {
			return nil, withHint(errors.New("--out takes exactly one --in"), "to open many envelopes, use --out-dir")
		}
		return []envelopeFile{{in: ins[0], out: out, outFlag: "out"}}, nil
	}
	paths := slices.Clone(ins)
	if inDir != "" {
		listed, err := envelopesIn(inDir)
		if err != nil {
			return nil, err
		}
		paths = append(paths, listed...)
	}
	if len(paths) == 0 {
		return nil, withHint(errors.New("no envelopes to open"), "name them with --in, or a directory of *.env files with --in-dir")
	}
	files := make([]envelopeFile, len(paths))
	from := map[string]string{}
	for i, p := range paths {
		name := strings.TrimSuffix(filepath.Base(p), envelopeExt)
		if name == "" || name == "." || name == ".." || name == string(filepath.Separator) {
			return nil, fmt.Errorf("%s: the envelope's file name gives no name for its plaintext", p)
		}
		if other, ok := from[name]; ok {
			return nil, withHint(fmt.Errorf("%s and %s would both open into %s", other, p, name), "open envelopes with the same file name into different --out-dir directories")
		}
		from[name] = p
		files[i] = envelopeFile{in: p, out: filepath.Join(outDir, name), outFlag: "out-dir"}
	}
	return files, nil
}

// envelopesIn lists the regular *.env files of dir, sorted by name.
func envelopesIn(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir) // sorted by name
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasSuffix(e.Name(), envelopeExt) {
			out = append(out, filepath.Join(dir, e.Name()))
		}
	}
	return out, nil
}

// prepareOutDir makes dir (0700), or accepts it when it is an empty
// directory: plaintexts are never written over anything.
func prepareOutDir(dir string) error {
	err := os.Mkdir(dir, 0o700)
	if err == nil || !errors.Is(err, fs.ErrExist) {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return withHint(fmt.Errorf("%s is not empty", dir), "give a new or empty directory as --out-dir")
	}
	return nil
}

// batchReport is the --json output of a batch open.
type batchReport struct {
	KeyID     string `json:"key_id"`
	OutDir    string `json:"out_dir"`
	Envelopes int    `json:"envelopes"`
	Opened    int    `json:"opened"`
	Failed    int    `json:"failed"`
	// BadReleases names custodians whose package gave no partial at all.
	BadReleases map[string]string `json:"bad_releases,omitempty"`
	Outcomes    []envelopeOutcome `json:"outcomes"`
}

type envelopeOutcome struct {
	In     string `json:"in"`
	Out    string `json:"out,omitempty"` // only when opened
	Target string `json:"target,omitempty"`
	Opened bool   `json:"opened"`
	Error  string `json:"error,omitempty"`
	// BadPartials names custodians whose partial for this envelope was
	// missing or failed its proof.
	BadPartials map[string]string `json:"bad_partials,omitempty"`
}

// openEnvelopes opens many envelopes into outDir and reports each one.
func openEnvelopes(g *globals, o *envelopeOpener, files []envelopeFile, outDir string, workers int) error {
	if err := prepareOutDir(outDir); err != nil {
		return err
	}
	report := &batchReport{KeyID: o.keyID, OutDir: outDir, Envelopes: len(files), Outcomes: []envelopeOutcome{}}
	if o.packages != nil {
		report.BadReleases = o.packages.Custodians
	}
	bar := newProgress(g, len(files))
	if o.packages != nil {
		bar.println(fmt.Sprintf("warning: %v (for every envelope)", o.packages))
	}
	escrow.OpenBatch(o.open, escrow.Batch{
		Count: len(files),
		Read:  func(i int) ([]byte, error) { return os.ReadFile(files[i].in) },
		Keep: func(i int, _ *escrow.Envelope, plaintext []byte) error {
			return durable.CreateFileInBatch(files[i].out, plaintext, 0o600)
		},
		Done: func(out escrow.Outcome) {
			r := outcomeOf(files[out.Index], out, o.packages)
			if r.Opened {
				report.Opened++
			} else {
				report.Failed++
			}
			if g.json {
				report.Outcomes = append(report.Outcomes, r)
			} else {
				reportOutcome(bar, r)
			}
			bar.update(report.Opened+report.Failed, report.Failed)
		},
	}, workers)
	bar.finish()
	if err := durable.SyncDir(outDir); err != nil {
		return err
	}
	if g.json {
		if err := g.printJSON(report); err != nil {
			return err
		}
	} else {
		g.printf("opened %d of %d envelopes (key ID %s) into %s\n", report.Opened, report.Envelopes, o.keyID, outDir)
	}
	if report.Failed > 0 {
		return withHint(fmt.Errorf("%d of %d envelopes did not open", report.Failed, report.Envelopes),
			"each one is named with its reason; the envelopes that opened are in "+outDir)
	}
	return nil
}

// outcomeOf describes one envelope's outcome, leaving out custodians
// already named for every envelope.
func outcomeOf(f envelopeFile, out escrow.Outcome, packages *escrow.BadShareError) envelopeOutcome {
	r := envelopeOutcome{In: f.in, Opened: out.Err == nil}
	if out.Envelope != nil {
		r.Target = out.Envelope.Target
	}
	if r.Opened {
		r.Out = f.out
	} else {
		// The custodians joined to a refusal are in BadPartials.
		r.Error, _, _ = strings.Cut(out.Err.Error(), "\n")
		for _, h := range hintsOf(envelopeHint(out.Err)) {
			r.Error += " (" + h + ")"
		}
	}
	if out.Bad != nil {
		for id, why := range out.Bad.Custodians {
			if packages != nil && packages.Custodians[id] != "" {
				continue
			}
			if r.BadPartials == nil {
				r.BadPartials = map[string]string{}
			}
			r.BadPartials[id] = why
		}
	}
	return r
}

// reportOutcome writes a line for an envelope that did not open, and one
// for each custodian whose partial of it failed.
func reportOutcome(bar *progress, r envelopeOutcome) {
	if !r.Opened {
		bar.println(fmt.Sprintf("%s: not opened: %s", r.In, r.Error))
	}
	for _, id := range slices.Sorted(maps.Keys(r.BadPartials)) {
		bar.println(fmt.Sprintf("warning: %s: bad partial from %s: %s", r.In, id, r.BadPartials[id]))
	}
}
