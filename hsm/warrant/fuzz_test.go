package warrant

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzParse feeds the strict JSON parser. Whatever it accepts must encode
// back to a document it accepts with the same meaning.
func FuzzParse(f *testing.F) {
	fx := newFixture(f)
	good := fx.content(f, fx.warrant())
	f.Add(good)
	f.Add(fx.content(f, scopedWarrant(fx)))
	f.Add([]byte(`{"version":1}`))
	f.Add([]byte(`{"version":1,"version":1}`))
	f.Add(append(bytes.Clone(good), '{', '}'))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		w, err := Parse(data, 0)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		again, err := w.Marshal(0)
		if err != nil {
			t.Fatalf("accepted warrant does not marshal: %v", err)
		}
		w2, err := Parse(again, 0)
		if err != nil || w2.Court != w.Court || w2.Serial != w.Serial || w2.Recipient != w.Recipient || !reflect.DeepEqual(w2.Envelopes, w.Envelopes) {
			t.Fatalf("round trip changed the warrant: %v", err)
		}
	})
}

// FuzzVerify feeds the CMS decoder and the whole verifier. Every refusal
// must carry a reason, and a mutated warrant must never verify with
// different content than was signed.
func FuzzVerify(f *testing.F) {
	fx := newFixture(f)
	content := fx.content(f, fx.warrant())
	good := fx.sign(f, content, fx.signer())
	f.Add(good)
	f.Add(fx.sign(f, content, fx.signer(), fx.signer2()))
	f.Add(good[:len(good)/2])
	f.Add([]byte{0x30, 0x80, 0x00, 0x00})
	f.Add([]byte{})
	v := fx.verifier()
	f.Fuzz(func(t *testing.T, p7s []byte) {
		got, err := v.Verify(p7s)
		if err != nil {
			if ReasonOf(err) == "" {
				t.Fatalf("refusal without a reason: %v", err)
			}
			return
		}
		if !bytes.Equal(got.Content, content) {
			t.Fatalf("verified content that the judge did not sign: %q", got.Content)
		}
	})
}
