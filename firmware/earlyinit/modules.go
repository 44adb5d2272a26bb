package earlyinit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Limits on /modules/order: the appliance loads a handful of modules.
const (
	maxOrderSize    = 64 << 10
	maxOrderModules = 256
)

var moduleFile = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_+-]{0,127}\.ko(\.xz|\.zst|\.gz)?$`)

// ParseOrder parses /modules/order: one module file name per line, in the
// order they are loaded. Empty lines are skipped; a name with a path, an
// unknown suffix, or listed twice is refused.
func ParseOrder(data []byte) ([]string, error) {
	if len(data) > maxOrderSize {
		return nil, fmt.Errorf("modules/order: more than %d bytes", maxOrderSize)
	}
	var files []string
	seen := map[string]bool{}
	for n, line := range strings.Split(string(data), "\n") {
		n++
		if line == "" {
			continue
		}
		if !moduleFile.MatchString(line) {
			return nil, fmt.Errorf("modules/order line %d: %q is not a module file name (NAME.ko, NAME.ko.xz, .zst or .gz, without a directory)", n, line)
		}
		if seen[ModuleName(line)] {
			return nil, fmt.Errorf("modules/order line %d: module %s is listed twice", n, ModuleName(line))
		}
		seen[ModuleName(line)] = true
		if files = append(files, line); len(files) > maxOrderModules {
			return nil, fmt.Errorf("modules/order: more than %d modules", maxOrderModules)
		}
	}
	return files, nil
}

// ModuleName is the kernel's name for a module file: the file name without
// its suffixes, with - as _ (the name under /sys/module).
func ModuleName(file string) string {
	name, _, _ := strings.Cut(file, ".ko")
	return strings.ReplaceAll(name, "-", "_")
}

// Compressed reports whether the kernel must decompress the module file.
func Compressed(file string) bool { return !strings.HasSuffix(file, ".ko") }

// ErrModuleExists is what a loader returns for a module the kernel has
// already (loaded, or built in).
var ErrModuleExists = errors.New("module already present")

// ModuleLoader loads one module file into the kernel.
type ModuleLoader func(path string, compressed bool) error

// LoadModules loads the files named in dir/order, in order. A module that
// sysModule (/sys/module) already lists, or that the kernel reports as
// present, is skipped: it is built in or loaded. It returns the names it
// loaded and those it found present.
func LoadModules(dir, sysModule string, load ModuleLoader) (loaded, present []string, err error) {
	data, err := os.ReadFile(filepath.Join(dir, "order"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil // an initramfs that needs no module
	}
	if err != nil {
		return nil, nil, err
	}
	files, err := ParseOrder(data)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		name := ModuleName(f)
		if _, err := os.Stat(filepath.Join(sysModule, name)); err == nil {
			present = append(present, name)
			continue
		}
		switch err := load(filepath.Join(dir, f), Compressed(f)); {
		case errors.Is(err, ErrModuleExists):
			present = append(present, name)
		case err != nil:
			return loaded, present, fmt.Errorf("loading module %s: %w", f, err)
		default:
			loaded = append(loaded, name)
		}
	}
	return loaded, present, nil
}
