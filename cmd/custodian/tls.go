package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/custodian-project/custodian/hsm/release"
)

// The network between an officer or auditor and an appliance is not
// trusted: the daemon serves TLS 1.3 only (release.ServerTLS), and every
// client refuses plain HTTP unless --insecure-http says the person meant
// it. This file is the one place both ends set up their transport.

// plainHTTPWarning is what the daemon logs and shows, and what a client of
// its API prints, when a connection is not protected.
const plainHTTPWarning = "plain HTTP (--insecure-http): warrants, summaries and packages cross the network in clear and anyone on the path can read or change them"

// serverTLS are serve's transport flags.
type serverTLS struct {
	cert, key, clientCA string
	insecureHTTP        bool
}

func (s *serverTLS) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&s.cert, "tls-cert", "", "the appliance's TLS certificate chain (PEM; ECDSA P-256/P-384 or RSA >= 2048), with --tls-key")
	fl.StringVar(&s.key, "tls-key", "", "the certificate's private key (PEM; no access for other users)")
	fl.StringVar(&s.clientCA, "client-ca", "", "court officers' CA certificate(s) (PEM): submitting a warrant and reading a request then need an officer's client certificate")
	fl.BoolVar(&s.insecureHTTP, "insecure-http", false, "serve plain HTTP without TLS (loopback or a closed test network only; logged and shown on the display)")
}

// load checks the flags and returns the daemon's TLS configuration (nil
// with --insecure-http) and the officers' CAs (nil without --client-ca).
func (s *serverTLS) load(now time.Time) (*tls.Config, *x509.CertPool, error) {
	switch {
	case s.insecureHTTP && (s.cert != "" || s.key != "" || s.clientCA != ""):
		return nil, nil, withHint(errors.New("--insecure-http serves without TLS; it cannot go with --tls-cert, --tls-key or --client-ca"),
			"drop --insecure-http to serve TLS")
	case s.insecureHTTP:
		return nil, nil, nil
	case s.cert == "" && s.key == "":
		return nil, nil, withHint(errors.New("serve needs TLS: give --tls-cert and --tls-key"),
			"docs/operator.md (section 4) shows how to make a server certificate with openssl",
			"--insecure-http serves plain HTTP instead, for a loopback or a closed test network only")
	case s.cert == "" || s.key == "":
		return nil, nil, withHint(errors.New("--tls-cert and --tls-key go together"), "give both")
	}
	if err := checkKeyFile("--tls-key", s.key, "--tls-cert"); err != nil {
		return nil, nil, err
	}
	cert, err := loadKeyPair(s.cert, s.key)
	if err != nil {
		return nil, nil, withHint(fmt.Errorf("the TLS certificate: %w", keyPairError(err, "--tls-cert", "--tls-key")), "--tls-cert is the PEM certificate chain, --tls-key its PEM private key")
	}
	if err := checkServerCert(cert.Leaf, now); err != nil {
		return nil, nil, withHint(fmt.Errorf("--tls-cert %s: %w", s.cert, err), "docs/operator.md (section 4) shows how to make one with openssl")
	}
	var officers *x509.CertPool
	if s.clientCA != "" {
		if officers, err = readCertPool(s.clientCA); err != nil {
			return nil, nil, withHint(err, "--client-ca is the court officers' CA certificate, PEM")
		}
	}
	return release.ServerTLS(cert, officers), officers, nil
}

// checkServerCert refuses a certificate the clients would refuse anyway,
// or that is weaker than the rest of the appliance's cryptography.
func checkServerCert(c *x509.Certificate, now time.Time) error {
	switch k := c.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fmt.Errorf("an ECDSA key on %s; use P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("an RSA key of %d bits; use 2048 or more", k.N.BitLen())
		}
	default:
		return errors.New("an unsupported key type; use ECDSA P-256 or P-384, or RSA of 2048 bits or more")
	}
	if now.Before(c.NotBefore) || now.After(c.NotAfter) {
		return fmt.Errorf("valid from %s to %s, not now (%s)", c.NotBefore.Format(time.RFC3339), c.NotAfter.Format(time.RFC3339), now.Format(time.RFC3339))
	}
	if len(c.ExtKeyUsage) > 0 && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) && !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return errors.New("not for TLS servers (its extended key usage lacks serverAuth)")
	}
	return nil
}

// checkKeyFile refuses a private key file that other users may read or
// replace. The group may read it (root:custodian 0640 on the device). A
// certificate given where the key goes is named first: a certificate needs
// no chmod, and the flags were swapped.
func checkKeyFile(keyFlag, path, certFlag string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if b, _ := pem.Decode(data); b != nil && b.Type == "CERTIFICATE" {
		return withHint(fmt.Errorf("%s %s is a certificate, not a private key", keyFlag, path),
			certFlag+" is the certificate and "+keyFlag+" its private key: were they swapped?")
	}
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o007 != 0 {
		return withHint(fmt.Errorf("%s is open to other users (mode %04o): a private key must not be", path, info.Mode().Perm()),
			"chmod 600 "+path)
	}
	return nil
}

// keyPairError puts the TLS library's words for a certificate and key
// that do not belong together in a person's.
func keyPairError(err error, certFlag, keyFlag string) error {
	if strings.Contains(err.Error(), "does not match public key") { // crypto/tls has no error value for it
		return fmt.Errorf("%s is not the private key of the certificate in %s", keyFlag, certFlag)
	}
	return err
}

// clientTLS are a client's transport flags.
type clientTLS struct {
	ca, cert, key string
	insecureHTTP  bool
}

// register adds the flags; officer adds the client certificate flags of
// the commands that submit.
func (c *clientTLS) register(cmd *cobra.Command, officer bool) {
	fl := cmd.Flags()
	fl.StringVar(&c.ca, "ca", "", "with --server: trust only this CA certificate (PEM) for the server's TLS certificate, not the system's roots")
	fl.BoolVar(&c.insecureHTTP, "insecure-http", false, "allow an http:// --server (a daemon run with --insecure-http): nothing is protected on the way")
	if officer {
		fl.StringVar(&c.cert, "client-cert", "", "your court officer's client certificate (PEM), for a custodian that requires one (serve --client-ca)")
		fl.StringVar(&c.key, "client-key", "", "its private key (PEM; no access for other users)")
	}
}

// peer is how a client's messages name the server it talks to: a
// custodian's API behind --server, the monitor's appliance behind
// --appliance, or, for the report, any web server serving a ledger behind
// --ledger.
type peer struct {
	name     string // "the custodian"
	flag     string // the flag that gave its URL
	what     string // what the flag must name
	redirect string // what a redirect means, and what to do
	https    string // where its https:// address comes from
	// plainHTTP is what a client warns of over plain HTTP: what is at
	// stake on the way to this peer.
	plainHTTP string
}

// publicLogOverHTTP is the plain-HTTP warning of a reader of a public log,
// given with flag.
func publicLogOverHTTP(flag string) string {
	return "plain HTTP (--insecure-http): anyone on the path can change or withhold what " + flag +
		" serves; every entry is still checked against --verifier-key, but an old copy cannot be told from a current one"
}

var (
	custodianPeer = peer{name: "the custodian", flag: "--server", what: "a custodian appliance",
		redirect:  "which the custodian API never sends; check --server",
		https:     "use the https:// address of the custodian (custodian serve requires TLS)",
		plainHTTP: plainHTTPWarning}
	appliancePeer = peer{name: "the appliance", flag: "--appliance", what: "a custodian appliance",
		redirect:  "which the custodian API never sends; check --appliance",
		https:     "use the https:// address of the appliance (custodian serve requires TLS)",
		plainHTTP: publicLogOverHTTP("--appliance")}
	ledgerPeer = peer{name: "the server", flag: "--ledger", what: "an appliance or a static copy of its ledger",
		redirect:  "which the report does not follow: give the URL it leads to",
		https:     "use the https:// address of the appliance or of the web server",
		plainHTTP: publicLogOverHTTP("--ledger")}
)

// credentialsInURL refuses a URL that names a user or password before its
// host: Go would send them with every request, and the URL is printed,
// kept in --state and published by the report. why says why none is
// needed, hint what to do instead.
func credentialsInURL(flag string, u *url.URL, why, hint string) error {
	if u.User == nil {
		return nil
	}
	shown := *u
	shown.User = nil
	return withHint(fmt.Errorf("%s %s names a user or password before the host, %s", flag, shown.String(), why),
		"give the URL without user:password@; "+hint)
}

// apiClient returns a client for a custodian's API at server, with TLS
// 1.3 and the pinned CA, or plain HTTP only when --insecure-http allows it.
func (g *globals) apiClient(server string, c clientTLS) (*apiClient, error) {
	u, err := url.Parse(server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, withHint(fmt.Errorf("bad --server %q", server), "give a URL such as https://custodian-a:8443")
	}
	if err := credentialsInURL("--server", u, "which no custodian takes", "a court officer proves who they are with --client-cert"); err != nil {
		return nil, err
	}
	return g.client(u, c, custodianPeer)
}

// client returns a client for u, which names p.
func (g *globals) client(u *url.URL, c clientTLS, p peer) (*apiClient, error) {
	var err error
	if (c.cert == "") != (c.key == "") {
		return nil, withHint(errors.New("--client-cert and --client-key go together"), "give both")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil // a proxy would be one more party on the path
	if u.Scheme == "http" {
		if !c.insecureHTTP {
			return nil, withHint(fmt.Errorf("refusing plain HTTP to %s: what is sent and answered would cross the network in clear", u.Host),
				p.https,
				"only for a daemon run with --insecure-http on a closed test network: add --insecure-http")
		}
		if c.cert != "" {
			return nil, withHint(errors.New("--client-cert needs an https:// --server"), "use the custodian's https:// address")
		}
		fmt.Fprintf(g.stderr, "warning: %s (%s)\n", p.plainHTTP, u.Host)
		return &apiClient{base: u, http: newHTTPClient(tr, p), peer: p}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS13}
	if c.ca != "" {
		if cfg.RootCAs, err = readCertPool(c.ca); err != nil {
			return nil, withHint(err, "--ca is the PEM certificate of the CA that issued the TLS certificate of "+p.name)
		}
	}
	if c.cert != "" {
		if err := checkKeyFile("--client-key", c.key, "--client-cert"); err != nil {
			return nil, err
		}
		pair, err := loadKeyPair(c.cert, c.key)
		if err != nil {
			return nil, withHint(fmt.Errorf("the client certificate: %w", keyPairError(err, "--client-cert", "--client-key")), "--client-cert is your PEM certificate, --client-key its PEM private key")
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	tr.TLSClientConfig = cfg
	return &apiClient{base: u, http: newHTTPClient(tr, p), ca: c.ca, peer: p}, nil
}

// newHTTPClient follows no redirect: the API never sends one, and following
// it would hand the warrant to an address nobody checked.
func newHTTPClient(tr *http.Transport, p peer) *http.Client {
	return &http.Client{Transport: tr, Timeout: 150 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("the server answered with a redirect, " + p.redirect)
		}}
}

// transportHint explains a failed request in terms of the client's flags.
// The request (method and URL) is dropped from the message: the person
// knows the --server they gave, and Go's request text would only hide the
// cause.
func (c *apiClient) transportHint(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		cause := ue.Err
		var op *net.OpError
		if errors.As(cause, &op) && op.Op == "dial" {
			cause = op.Err // "connect: connection refused", without Go's "dial tcp ADDR"
		}
		err = fmt.Errorf("cannot reach %s at %s: %w", c.peer.name, c.base.Host, transportWords(cause))
	}
	var unknown x509.UnknownAuthorityError
	var hostname x509.HostnameError
	var invalid x509.CertificateInvalidError
	var dns *net.DNSError
	var record tls.RecordHeaderError
	switch {
	case errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &record):
		return withHint(err, "the server speaks plain HTTP: it runs custodian serve --insecure-http; ask its operator for its https:// address",
			"only on a closed test network: use http://"+c.base.Host+" with --insecure-http")
	case errors.Is(err, io.EOF) && c.base.Scheme == "http":
		return withHint(err, "the server closed the connection at once, as a TLS server does to plain HTTP: use https://"+c.base.Host+" without --insecure-http")
	case errors.As(err, &dns) && dns.IsNotFound:
		return withHint(err, "check the host name in "+c.peer.flag+" (or give its IP address) and this computer's DNS settings")
	case errors.As(err, &unknown) && c.ca == "":
		return withHint(err, "the server's certificate is not from a CA this computer trusts: pass --ca FILE, "+
			"the CA certificate its operator publishes")
	case errors.As(err, &unknown):
		return withHint(err, "the server's certificate is not from the CA you pinned (--ca "+c.ca+
			"): check that "+c.peer.flag+" names the server you meant, and get its CA certificate from its operator again")
	case errors.As(err, &hostname):
		return withHint(err, "the certificate is for another name: use the address its operator publishes")
	case errors.As(err, &invalid):
		return withHint(err, "the server's certificate is expired or not for a TLS server; tell its operator")
	}
	return withHint(err, "check "+c.peer.flag+" and that "+c.peer.name+" is up")
}

// transportWords says in words what the network and TLS libraries report
// in their own terms; the error stays in the chain for the hints.
func transportWords(cause error) error {
	var unknown x509.UnknownAuthorityError
	var dns *net.DNSError
	var record tls.RecordHeaderError
	switch {
	case errors.As(cause, &unknown):
		return wordsFor{"its TLS certificate is signed by a CA that is not trusted here (certificate signed by unknown authority)", cause}
	case errors.As(cause, &dns) && dns.IsNotFound:
		return wordsFor{"no computer named " + dns.Name + " is known (DNS: no such host)", cause}
	case errors.Is(cause, http.ErrSchemeMismatch) || errors.As(cause, &record):
		return wordsFor{"it answered in plain HTTP to a TLS (https://) request", cause}
	case errors.Is(cause, io.EOF):
		return wordsFor{"it closed the connection without an answer", cause}
	}
	return cause
}

// wordsFor is an error shown in words of its own, keeping the library's
// error underneath for errors.Is and errors.As.
type wordsFor struct {
	words string
	err   error
}

func (w wordsFor) Error() string { return w.words }
func (w wordsFor) Unwrap() error { return w.err }
