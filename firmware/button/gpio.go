package button

import (
	"fmt"
	"strings"

	"periph.io/x/conn/v3/driver/driverreg"
	"periph.io/x/conn/v3/gpio"
	"periph.io/x/conn/v3/gpio/gpioreg"
	_ "periph.io/x/host/v3/gpioioctl" // the Linux GPIO character device driver (Pi 4/5)
)

// SimSocket is the simulated button's socket in the data directory.
const SimSocket = "button.sock"

// OpenPin finds a GPIO line by name (e.g. "GPIO17") through the Linux GPIO
// character device.
func OpenPin(name string) (gpio.PinIO, error) {
	if _, err := driverreg.Init(); err != nil {
		return nil, fmt.Errorf("gpio: %w", err)
	}
	p := gpioreg.ByName(name)
	if p == nil {
		return nil, fmt.Errorf("no GPIO line named %s (is /dev/gpiochip0 present and readable?)", name)
	}
	return p, nil
}

// ParseSpec reads a --button or --led value: "sim", or "gpio:NAME".
func ParseSpec(spec string) (sim bool, name string, err error) {
	if spec == "sim" {
		return true, "", nil
	}
	if n, ok := strings.CutPrefix(spec, "gpio:"); ok && n != "" {
		return false, n, nil
	}
	return false, "", fmt.Errorf("unknown button %q: use gpio:NAME (e.g. gpio:GPIO17) or sim", spec)
}
