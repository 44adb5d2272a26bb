package enrollment

import "testing"

// TestVendorCertificatesAllRead: every built-in EK CA file (51 of them)
// reads through package certfile, whose PEM reader refuses a damaged
// block: none of the vendors' files has one.
func TestVendorCertificatesAllRead(t *testing.T) {
	roots, inters, err := VendorCertificates()
	if err != nil {
		t.Fatal(err)
	}
	if len(roots)+len(inters) < 51 {
		t.Fatalf("%d roots and %d intermediates from 51 files", len(roots), len(inters))
	}
}
