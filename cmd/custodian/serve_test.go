package main

import (
	"path/filepath"
	"strings"
	"testing"
)

func TestServeButtonReleaseFlagErrors(t *testing.T) {
	dir := t.TempDir()
	w := writeTemp(t, "not a warrant")
	for name, c := range map[string]struct {
		args []string
		want []string
	}{
		"unknown button":           {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--insecure-http", "--button", "GPIO17"}, []string{"unknown button", "gpio:NAME"}},
		"no default":               {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0"}, []string{`"button" not set`}},
		"short window":             {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--button", "sim", "--window", "1s"}, []string{"out of range", "hint: "}},
		"short witness timeout":    {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--button", "sim", "--witness-timeout", "1ms"}, []string{"witness timeout 1ms out of range", "hint: use --witness-timeout between 2s and 5m:"}},
		"long witness timeout":     {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--button", "sim", "--witness-timeout", "1000h"}, []string{"out of range", "hint: "}},
		"negative witness timeout": {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--button", "sim", "--witness-timeout", "-1s"}, []string{"out of range", "hint: "}},
		"unknown LED":              {[]string{"--data-dir", dir, "serve", "--listen", "127.0.0.1:0", "--button", "sim", "--insecure-http", "--led", "sim"}, []string{"unknown LED"}},
		"no sim button":            {[]string{"--data-dir", dir, "button", "press"}, []string{"no simulated button", "hint: start custodian serve --button sim"}},
		"bad server":               {[]string{"release", "--server", "custodian-a:8443", "--warrant", w, "--out", filepath.Join(dir, "r.json")}, []string{"bad --server"}},
		"not a warrant":            {[]string{"release", "--server", "https://127.0.0.1:1", "--warrant", w, "--out", filepath.Join(dir, "r.json")}, []string{"hint: --warrant must be a signed warrant"}},
		"release outfile":          {[]string{"release", "--server", "https://127.0.0.1:1", "--warrant", w, "--out", "/dev/null"}, []string{"regular file"}},
	} {
		t.Run(name, func(t *testing.T) {
			code, out, errOut := custodian(t, c.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out)
			}
			for _, want := range c.want {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr %q lacks %q", errOut, want)
				}
			}
		})
	}
}
