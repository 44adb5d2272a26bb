// Package measuretest gives tests a small root filesystem laid out as the
// custodian image is (measure.DefaultSpec), so they can measure a boot
// without building an image.
package measuretest

import "testing/fstest"

// Root is an image root whose configuration file holds config: two roots
// that differ in config measure to different PCR values.
func Root(config string) fstest.MapFS {
	return fstest.MapFS{
		"usr/bin/custodian":         {Data: []byte("the custodian binary"), Mode: 0o755},
		"etc/custodian/config.toml": {Data: []byte(config), Mode: 0o644},
		"etc/custodian/trust/a.pem": {Data: []byte("court root"), Mode: 0o644},
		"etc/custodian/trust/b.pem": {Data: []byte("another court root"), Mode: 0o644},
	}
}
