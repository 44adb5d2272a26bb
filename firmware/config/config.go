// Package config is the appliance configuration, etc/custodian/config.toml in
// the read-only root: the network address, the daemon's listen address and
// devices, the operator's serial console and the hardware watchdog. The
// early init measures the file into PCR 11 before anything reads it; the
// root init reads it once at start-up.
//
// The format is TOML with exactly these keys (names are case-sensitive):
//
//	[network]
//	interface = "eth0"              # required
//	address   = "10.0.2.15/24"      # required: the address with its prefix length
//	gateway   = "10.0.2.2"          # optional: the default route, inside address's network
//	[serve]
//	listen    = "0.0.0.0:8443"      # required: an IP literal and a port >= 1024
//	button    = "gpio:GPIO17"       # required: gpio:NAME, or sim (test images)
//	led       = "gpio:GPIO27"       # optional: gpio:NAME
//	display   = "/dev/tty1"         # required: /dev/ttyN, /dev/ttyAMAN, /dev/ttySN or /dev/null
//	[console]
//	device    = "/dev/ttyAMA0"      # required: the operator's serial console
//	[watchdog]
//	device    = "/dev/watchdog"     # optional: fed while the root init runs
//
// Parse refuses a file over 16 KiB, an unknown key or one whose case
// differs, a wrong type, a missing required key, an address that is not
// what its key says, and a device path that is not a clean absolute path
// under /dev. A host name is never accepted where an address is asked for:
// the appliance resolves no names.
package config

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/custodian-project/custodian/firmware/button"
)

// Path is where the configuration sits in the root filesystem.
const Path = "/etc/custodian/config.toml"

// MaxSize caps the file: a configuration is a few hundred bytes.
const MaxSize = 16 << 10

// Config is a parsed and checked configuration.
type Config struct {
	Network  Network  `toml:"network"`
	Serve    Serve    `toml:"serve"`
	Console  Console  `toml:"console"`
	Watchdog Watchdog `toml:"watchdog"`
}

// Network is the one interface the appliance brings up.
type Network struct {
	Interface string `toml:"interface"`
	Address   string `toml:"address"`
	Gateway   string `toml:"gateway"`
}

// Serve is what the root init passes to custodian serve.
type Serve struct {
	Listen  string `toml:"listen"`
	Button  string `toml:"button"`
	LED     string `toml:"led"`
	Display string `toml:"display"`
}

// Console is the operator's serial console.
type Console struct {
	Device string `toml:"device"`
}

// Watchdog is the hardware watchdog the root init feeds.
type Watchdog struct {
	Device string `toml:"device"`
}

// keys are the configuration's keys, exactly as they must be written.
var keys = map[string]bool{
	"network": true, "network.interface": true, "network.address": true, "network.gateway": true,
	"serve": true, "serve.listen": true, "serve.button": true, "serve.led": true, "serve.display": true,
	"console": true, "console.device": true,
	"watchdog": true, "watchdog.device": true,
}

// Load reads and checks the configuration at file.
func Load(file string) (*Config, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("configuration %s: %w", file, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return c, nil
}

// Parse parses and checks configuration text.
func Parse(data []byte) (*Config, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("configuration: more than %d bytes; it holds a few settings only", MaxSize)
	}
	var c Config
	md, err := toml.Decode(string(data), &c)
	if err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("configuration: unknown key %q", und[0].String())
	}
	// The decoder also fills a field from a key that matches it only when
	// case is ignored; the configuration takes each key exactly as written.
	for _, k := range md.Keys() {
		if !keys[k.String()] {
			return nil, fmt.Errorf("configuration: unknown key %q (names are case-sensitive)", k.String())
		}
	}
	if err := c.check(); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	return &c, nil
}

func (c *Config) check() error {
	for _, step := range []func() error{c.Network.check, c.Serve.check, c.checkDevices} {
		if err := step(); err != nil {
			return err
		}
	}
	return nil
}

var ifaceName = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]{0,14}$`)

func (n Network) check() error {
	if !ifaceName.MatchString(n.Interface) {
		return fmt.Errorf("network.interface %q: want an interface name such as eth0 (letters, digits, . _ -, at most 15)", n.Interface)
	}
	p, err := n.Prefix()
	if err != nil {
		return err
	}
	if n.Gateway == "" {
		return nil
	}
	gw, err := netip.ParseAddr(n.Gateway)
	if err != nil || gw.Zone() != "" || gw.Is4In6() {
		return fmt.Errorf("network.gateway %q: want an IP address such as 10.0.2.2", n.Gateway)
	}
	if !p.Masked().Contains(gw) || gw == p.Addr() {
		return fmt.Errorf("network.gateway %s: must be another address inside network.address's network %s", gw, p.Masked())
	}
	return nil
}

// Prefix is network.address: the address with its prefix length.
func (n Network) Prefix() (netip.Prefix, error) {
	p, err := netip.ParsePrefix(n.Address)
	if err != nil || p.Addr().Zone() != "" || p.Addr().Is4In6() {
		return netip.Prefix{}, fmt.Errorf("network.address %q: want an address with its prefix length, such as 10.0.2.15/24", n.Address)
	}
	a := p.Addr()
	if !a.IsGlobalUnicast() {
		return netip.Prefix{}, fmt.Errorf("network.address %s: not a unicast host address", a)
	}
	if a.Is4() && p.Bits() < 31 && (a == p.Masked().Addr() || a == lastAddr(p)) {
		return netip.Prefix{}, fmt.Errorf("network.address %s: the network or broadcast address of %s, not a host address", a, p.Masked())
	}
	return p, nil
}

// GatewayAddr is network.gateway, if it is set.
func (n Network) GatewayAddr() (netip.Addr, bool) {
	gw, err := netip.ParseAddr(n.Gateway)
	return gw, err == nil
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

var gpioName = regexp.MustCompile(`^[A-Za-z0-9_]{1,32}$`)

func (s Serve) check() error {
	host, port, err := net.SplitHostPort(s.Listen)
	if err != nil {
		return fmt.Errorf("serve.listen %q: want IP:PORT, such as 0.0.0.0:8443", s.Listen)
	}
	if a, err := netip.ParseAddr(host); err != nil || a.Zone() != "" {
		return fmt.Errorf("serve.listen %q: the host must be an IP address (0.0.0.0 for every interface), not a name", s.Listen)
	}
	// The daemon runs unprivileged, without CAP_NET_BIND_SERVICE.
	if n, err := strconv.Atoi(port); err != nil || n < 1024 || n > 65535 || strconv.Itoa(n) != port {
		return fmt.Errorf("serve.listen %q: the port must be 1024 to 65535 (the daemon runs without privileges)", s.Listen)
	}
	sim, name, err := button.ParseSpec(s.Button)
	if err != nil {
		return fmt.Errorf("serve.button: %w", err)
	}
	if !sim && !gpioName.MatchString(name) {
		return fmt.Errorf("serve.button %q: the GPIO line name is letters, digits and _ (e.g. gpio:GPIO17)", s.Button)
	}
	if s.LED != "" {
		sim, name, err := button.ParseSpec(s.LED)
		if err != nil || sim || !gpioName.MatchString(name) {
			return fmt.Errorf("serve.led %q: want gpio:NAME (e.g. gpio:GPIO27), or leave it out", s.LED)
		}
	}
	return nil
}

func (c *Config) checkDevices() error {
	devices := []struct {
		key, value string
		optional   bool
	}{
		{"serve.display", c.Serve.Display, false},
		{"console.device", c.Console.Device, false},
		{"watchdog.device", c.Watchdog.Device, true},
	}
	for _, d := range devices {
		if d.value == "" && d.optional {
			continue
		}
		if err := checkDevice(d.value); err != nil {
			return fmt.Errorf("%s %q: %w", d.key, d.value, err)
		}
	}
	if !displayPath.MatchString(c.Serve.Display) {
		return fmt.Errorf("serve.display %q: want a terminal: /dev/ttyN (a virtual console, N from 1), /dev/ttyAMAN or /dev/ttySN (a serial port), or /dev/null for none (the daemon's user is given this device)", c.Serve.Display)
	}
	if path.Clean(c.Console.Device) == path.Clean(c.Serve.Display) {
		return errors.New("console.device and serve.display must be different devices: the console would mix warrant summaries into the operator's session")
	}
	return nil
}

var devicePath = regexp.MustCompile(`^/dev/[A-Za-z0-9._/-]{1,64}$`)

// displayPath are the devices serve.display may name: the root init gives
// it to the daemon's group and binds it into every sandbox, so it is a
// terminal from this short list, never a disk, the TPM or memory.
// /dev/tty0 and /dev/console are not on it: they stand for whichever
// terminal is current, which may be the operator's console.
var displayPath = regexp.MustCompile(`^/dev/(tty[1-9][0-9]?|ttyAMA[0-9]{1,2}|ttyS[0-9]{1,2}|null)$`)

// checkDevice accepts a clean absolute path under /dev.
func checkDevice(p string) error {
	if !devicePath.MatchString(p) || path.Clean(p) != p || strings.Contains(p, "/.") {
		return errors.New("want a device path under /dev, such as /dev/ttyAMA0")
	}
	return nil
}
