package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const valid = `
[network]
interface = "eth0"
address = "10.0.2.15/24"
gateway = "10.0.2.2"

[serve]
listen = "0.0.0.0:8443"
button = "gpio:GPIO17"
led = "gpio:GPIO27"
display = "/dev/tty1"

[console]
device = "/dev/ttyAMA0"

[watchdog]
device = "/dev/watchdog"
`

func TestParseValid(t *testing.T) {
	c, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	p, err := c.Network.Prefix()
	if err != nil || p != netip.MustParsePrefix("10.0.2.15/24") {
		t.Errorf("prefix %v, %v", p, err)
	}
	if gw, ok := c.Network.GatewayAddr(); !ok || gw != netip.MustParseAddr("10.0.2.2") {
		t.Errorf("gateway %v %v", gw, ok)
	}
	want := Config{
		Network:  Network{"eth0", "10.0.2.15/24", "10.0.2.2"},
		Serve:    Serve{"0.0.0.0:8443", "gpio:GPIO17", "gpio:GPIO27", "/dev/tty1"},
		Console:  Console{"/dev/ttyAMA0"},
		Watchdog: Watchdog{"/dev/watchdog"},
	}
	if *c != want {
		t.Errorf("parsed %+v, want %+v", *c, want)
	}
}

// The optional keys may be left out; sim is a button serve accepts.
func TestParseMinimal(t *testing.T) {
	min := `
[network]
interface = "end0"
address = "fd00::15/64"
[serve]
listen = "[::]:8443"
button = "sim"
display = "/dev/tty1"
[console]
device = "/dev/ttyS0"
`
	c, err := Parse([]byte(min))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Network.GatewayAddr(); ok {
		t.Error("a configuration without gateway reports one")
	}
	if c.Watchdog.Device != "" || c.Serve.LED != "" {
		t.Errorf("optional keys not empty: %+v", c)
	}
}

func TestParseRefuses(t *testing.T) {
	cases := map[string]struct{ old, new, msg string }{
		"unknown key":        {`gateway = "10.0.2.2"`, "gateway = \"10.0.2.2\"\nmtu = 1500", `unknown key "network.mtu"`},
		"unknown table":      {"[watchdog]", "[clock]\nntp = \"x\"\n[watchdog]", `unknown key "clock`},
		"key case":           {"interface =", "Interface =", "case-sensitive"},
		"table case":         {"[console]", "[Console]", "case-sensitive"},
		"wrong type":         {`listen = "0.0.0.0:8443"`, `listen = 8443`, "serve.listen"},
		"duplicate key":      {`button = "gpio:GPIO17"`, "button = \"gpio:GPIO17\"\nbutton = \"sim\"", "already been defined"},
		"no interface":       {`interface = "eth0"`, ``, "network.interface"},
		"interface slash":    {`interface = "eth0"`, `interface = "../eth0"`, "network.interface"},
		"interface too long": {`interface = "eth0"`, `interface = "eth0123456789abc"`, "network.interface"},
		"no prefix":          {`address = "10.0.2.15/24"`, `address = "10.0.2.15"`, "prefix length"},
		"host name":          {`address = "10.0.2.15/24"`, `address = "custodian.lan/24"`, "network.address"},
		"network address":    {`address = "10.0.2.15/24"`, `address = "10.0.2.0/24"`, "network or broadcast"},
		"broadcast address":  {`address = "10.0.2.15/24"`, `address = "10.0.2.255/24"`, "network or broadcast"},
		"loopback":           {`address = "10.0.2.15/24"`, `address = "127.0.0.2/8"`, "not a unicast host address"},
		"gateway off-link":   {`gateway = "10.0.2.2"`, `gateway = "10.0.3.2"`, "inside network.address's network"},
		"gateway is self":    {`gateway = "10.0.2.2"`, `gateway = "10.0.2.15"`, "another address"},
		"gateway name":       {`gateway = "10.0.2.2"`, `gateway = "router"`, "network.gateway"},
		"gateway family":     {`gateway = "10.0.2.2"`, `gateway = "fe80::1"`, "inside network.address's network"},
		"listen name":        {`listen = "0.0.0.0:8443"`, `listen = "localhost:8443"`, "not a name"},
		"listen low port":    {`listen = "0.0.0.0:8443"`, `listen = "0.0.0.0:443"`, "1024 to 65535"},
		"listen port form":   {`listen = "0.0.0.0:8443"`, `listen = "0.0.0.0:08443"`, "1024 to 65535"},
		"listen no port":     {`listen = "0.0.0.0:8443"`, `listen = "0.0.0.0"`, "IP:PORT"},
		"button unknown":     {`button = "gpio:GPIO17"`, `button = "GPIO17"`, "serve.button"},
		"button empty name":  {`button = "gpio:GPIO17"`, `button = "gpio:"`, "serve.button"},
		"button odd name":    {`button = "gpio:GPIO17"`, `button = "gpio:GPIO 17"`, "serve.button"},
		"led sim":            {`led = "gpio:GPIO27"`, `led = "sim"`, "serve.led"},
		"display relative":   {`display = "/dev/tty1"`, `display = "tty1"`, "serve.display"},
		"display outside":    {`display = "/dev/tty1"`, `display = "/etc/passwd"`, "serve.display"},
		"display dotdot":     {`display = "/dev/tty1"`, `display = "/dev/../etc/shadow"`, "serve.display"},
		"display unclean":    {`display = "/dev/tty1"`, `display = "/dev//tty1"`, "serve.display"},
		"no display":         {`display = "/dev/tty1"`, ``, "serve.display"},
		"no console":         {`device = "/dev/ttyAMA0"`, ``, "console.device"},
		"console is display": {`device = "/dev/ttyAMA0"`, `device = "/dev/tty1"`, "different devices"},
		"watchdog outside":   {`device = "/dev/watchdog"`, `device = "/sys/watchdog"`, "watchdog.device"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			text := strings.Replace(valid, tc.old, tc.new, 1)
			if text == valid {
				t.Fatalf("the edit %q does not apply", tc.old)
			}
			_, err := Parse([]byte(text))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q does not say %q", err, tc.msg)
			}
		})
	}
}

func TestParseRefusesSize(t *testing.T) {
	text := valid + "#" + strings.Repeat("x", MaxSize)
	if _, err := Parse([]byte(text)); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Errorf("an oversized file: %v", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(file, []byte(valid), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(valid+strings.Repeat("#\n", MaxSize)), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Errorf("oversized file: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("a missing file loads")
	}
}

// Whatever Parse accepts holds the promises the root init relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(strings.Replace(valid, "10.0.2.15/24", "fd00::1/64", 1)))
	f.Add([]byte("[network]\ninterface = \"eth0\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if _, err := c.Network.Prefix(); err != nil {
			t.Fatalf("accepted address %q: %v", c.Network.Address, err)
		}
		for _, d := range []string{c.Serve.Display, c.Console.Device} {
			if checkDevice(d) != nil {
				t.Fatalf("accepted device %q", d)
			}
		}
		if c.Watchdog.Device != "" && checkDevice(c.Watchdog.Device) != nil {
			t.Fatalf("accepted watchdog %q", c.Watchdog.Device)
		}
		if again, err := Parse(data); err != nil || *again != *c {
			t.Fatalf("a second parse differs: %v", err)
		}
	})
}

// serve.display is a terminal from a short list: the root init gives that
// node to the daemon's group and binds it into every sandboxed command's
// /dev, so /dev/mmcblk0 (the raw SD card), /dev/tpm0 (the TPM without its
// resource manager) or /dev/mem would hand them to the daemon. And
// /dev/console (the kernel console, ttyAMA0 with console=ttyAMA0) or
// /dev/tty0 could be the operator's console, where warrant summaries must
// not go.
func TestInvariantDisplayIsATerminalFromTheAllowlist(t *testing.T) {
	for _, display := range []string{"/dev/mmcblk0", "/dev/tpm0", "/dev/mem", "/dev/console", "/dev/tty0", "/dev/ttyAMA0", "/dev/sda", "/dev/tty1/", "/dev/./tty1"} {
		text := strings.Replace(valid, `display = "/dev/tty1"`, `display = "`+display+`"`, 1)
		if _, err := Parse([]byte(text)); err == nil {
			t.Errorf("serve.display %s accepted", display)
		}
	}
	for _, display := range []string{"/dev/tty1", "/dev/tty12", "/dev/ttyS0", "/dev/ttyAMA1", "/dev/null"} {
		text := strings.Replace(valid, `display = "/dev/tty1"`, `display = "`+display+`"`, 1)
		if _, err := Parse([]byte(text)); err != nil {
			t.Errorf("serve.display %s refused: %v", display, err)
		}
	}
}
