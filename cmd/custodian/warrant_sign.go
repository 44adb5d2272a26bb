package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/smartcard"
	"github.com/custodian-project/custodian/hsm/warrant"
)

func newWarrantSignCommand(g *globals) *cobra.Command {
	var in, module, keyURI, certFile, out string
	var pss bool
	cmd := &cobra.Command{
		Use:   "sign --in w.json --module LIB --key PKCS11-URI [--cert judge.pem] --out w.p7s",
		Short: "Sign a warrant with a smartcard (or co-sign a signed one); the PIN comes from CUSTODIAN_PIN or a prompt",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := smartcard.Supported(); err != nil {
				return withHint(err, "build custodian with CGO_ENABLED=1 on the judge's workstation")
			}
			wf, err := readWarrantFile(in)
			if err != nil {
				return err
			}
			uri, err := smartcard.ParseURI(keyURI)
			if err != nil {
				return err
			}
			if err := mustNotExist("out", out); err != nil {
				return err
			}
			// Check the document, and show the judge what the appliance will
			// show, before asking for a PIN.
			summary, err := signingSummary(wf)
			if err != nil {
				return err
			}
			fmt.Fprintf(g.stderr, "You are signing this warrant; it reads so on the appliance's display:\n\n%s\n", summary)
			chain, err := readChain(certFile)
			if err != nil {
				return err
			}
			pin, err := smartcard.ReadPIN("PIN for " + keyURI + ": ")
			if err != nil {
				return err
			}
			var leaf *x509.Certificate
			if len(chain) > 0 {
				leaf = chain[0]
			}
			key, err := smartcard.Open(module, uri, pin, leaf)
			if err != nil {
				return pinHint(err)
			}
			defer key.Close()
			if leaf == nil {
				chain = []*x509.Certificate{key.Certificate()}
			}
			signers := []warrant.Signer{{Key: key, Chain: chain, PSS: pss}}
			var p7s []byte
			if wf.signed {
				p7s, err = warrant.CoSign(wf.data, signers, time.Now())
			} else {
				p7s, err = warrant.Sign(wf.data, signers, time.Now())
			}
			if err != nil {
				return pinHint(err)
			}
			if err := writeNew("out", out, p7s, 0o644); err != nil {
				return err
			}
			g.printf("signed by %s; wrote %s\n", chain[0].Subject.CommonName, out)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&in, "in", "", "warrant JSON, or a signed warrant to co-sign")
	f.StringVar(&module, "module", "", "PKCS#11 module: opensc-pkcs11.so for PIV cards, libsofthsm2.so for SoftHSM2")
	f.StringVar(&keyURI, "key", "", "the key's pkcs11: URI, e.g. 'pkcs11:token=judge;object=judge-key' (PIV: object=SIGN key)")
	f.StringVar(&certFile, "cert", "", "the judge's certificate (PEM, intermediates may follow); default: the one on the card")
	f.BoolVar(&pss, "pss", false, "RSA keys: sign with RSASSA-PSS instead of PKCS #1 v1.5")
	f.StringVar(&out, "out", "", "new file for the signed warrant (CMS, DER)")
	for _, name := range []string{"in", "module", "key", "out"} {
		cmd.MarkFlagRequired(name)
	}
	return cmd
}

// signingSummary checks what warrant sign is about to sign and returns the
// summary the appliance will show of it. A warrant document must be
// exactly as warrant new writes it (warrant.Warrant.Encodes): what a
// person reads with cat or an editor is then what is signed, with no
// carriage return or other white space able to hide part of it. A signed
// warrant to co-sign is shown with its signers.
func signingSummary(wf *warrantFile) (string, error) {
	if !wf.signed && !wf.w.Encodes(wf.data) {
		return "", withHint(errors.New("the warrant file is not exactly as custodian warrant new writes it (its bytes differ: white space, order or escapes), so what it shows may not be what is signed"),
			"write the warrant again with custodian warrant new; do not edit the file by hand")
	}
	return warrant.Summary(wf.w, wf.signers), nil
}

// pinHint advises against guessing when the card refused the PIN.
func pinHint(err error) error {
	switch {
	case errors.Is(err, smartcard.ErrPINLocked):
		return withHint(err, "stop: ask the court's card officer to unblock the card (PIV: with its PUK)")
	case errors.Is(err, smartcard.ErrWrongPIN):
		return withHint(err, "a PIV card locks its PIN after a few wrong tries (often 3); do not guess")
	}
	return err
}

func readChain(path string) ([]*x509.Certificate, error) {
	if path == "" {
		return nil, nil
	}
	return readCertificates(path)
}
