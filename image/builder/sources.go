package builder

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/custodian-project/custodian/image"
	"github.com/custodian-project/custodian/image/deb"
)

// readSources reads the sources srcs of the manifest, by their text: host
// files relative to the manifest, and files inside the debs, each deb
// checked against its pinned SHA-256 and read once. debDir, if set, is
// where the debs are found (by their file's base name) instead of beside
// the manifest.
func readSources(m *image.Manifest, debDir string, srcs []string) (map[string][]byte, error) {
	out := map[string][]byte{}
	perDeb := map[string][]string{}
	for _, s := range srcs {
		src, err := image.ParseSource(s)
		if err != nil {
			return nil, err
		}
		if _, done := out[s]; done {
			continue
		}
		if src.Deb != "" {
			if !slices.Contains(perDeb[src.Deb], src.Path) {
				perDeb[src.Deb] = append(perDeb[src.Deb], src.Path)
			}
			continue
		}
		data, err := os.ReadFile(m.Resolve(src.Path))
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", s, err)
		}
		out[s] = data
	}
	for _, d := range m.Debs {
		want := perDeb[d.Name]
		if len(want) == 0 {
			continue
		}
		files, err := readDeb(m, d, debDir, want)
		if err != nil {
			return nil, err
		}
		for p, data := range files {
			out[image.Source{Deb: d.Name, Path: p}.String()] = data
		}
	}
	return out, nil
}

// DebPath is where the build looks for a deb: debDir/<base name> when
// debDir is set, else the manifest's file.
func DebPath(m *image.Manifest, d image.Deb, debDir string) string {
	if debDir != "" {
		return filepath.Join(debDir, filepath.Base(filepath.FromSlash(d.File)))
	}
	return m.Resolve(d.File)
}

// readDeb checks a deb's digest and extracts the wanted paths from it.
func readDeb(m *image.Manifest, d image.Deb, debDir string, want []string) (map[string][]byte, error) {
	file := DebPath(m, d, debDir)
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("deb %s: %w", d.Name, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("deb %s: %w", d.Name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != d.SHA256 {
		return nil, &DigestError{Deb: d.Name, File: file, Want: d.SHA256, Got: got}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	files, err := deb.Extract(f, want, deb.DefaultLimits)
	if err != nil {
		return nil, fmt.Errorf("deb %s (%s): %w", d.Name, file, err)
	}
	return files, nil
}

// DigestError is a deb whose SHA-256 is not the one the manifest pins.
type DigestError struct {
	Deb, File, Want, Got string
}

func (e *DigestError) Error() string {
	return fmt.Sprintf("deb %s: %s has SHA-256 %s, the manifest pins %s", e.Deb, e.File, e.Got, e.Want)
}
