//go:build !appliance

package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/custodian-project/custodian/firmware"
	"github.com/custodian-project/custodian/hsm/release"
)

// shellCommands returns the commands of a document's sh blocks whose first
// word is one of first, continuation lines joined.
func shellCommands(t *testing.T, file string, first ...string) []string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	inBlock, shell, pending := false, false, ""
	for _, line := range strings.Split(string(data), "\n") {
		if fence := strings.TrimSpace(line); strings.HasPrefix(fence, "```") {
			inBlock = !inBlock
			shell = inBlock && fence == "```sh"
			continue
		}
		if !shell {
			continue
		}
		line = pending + strings.TrimSpace(line)
		pending = ""
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`) + " "
			continue
		}
		for _, f := range first {
			if strings.HasPrefix(line, f+" ") {
				out = append(out, strings.Join(strings.Fields(line), " "))
			}
		}
	}
	return out
}

// TestRunbookTLSCommandsMakeCertificatesServeAndClientsAccept runs the
// openssl commands of docs/officer.md (the officer's key and request) and
// docs/operator.md (the CAs, the server's files, the officer's signed
// certificate) as written, then checks serve accepts the server
// files as it loads them, and that over real TLS on loopback a client
// pinning the documented CA reaches it for the documented name and its
// officer certificate passes the daemon's officer check.
func TestRunbookTLSCommandsMakeCertificatesServeAndClientsAccept(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl is not installed")
	}
	// The officer makes the key and request on the workstation; the
	// operator signs the request.
	commands := shellCommands(t, "../../docs/officer.md", "openssl")
	commands = append(commands, shellCommands(t, "../../docs/operator.md", "openssl", "printf")...)
	if len(commands) < 8 {
		t.Fatalf("found %d openssl commands in docs/officer.md and docs/operator.md", len(commands))
	}
	dir := t.TempDir()
	for _, c := range commands {
		cmd := exec.Command("sh", "-c", c)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }

	network := serverTLS{cert: p("server.pem"), key: p("server.key"), clientCA: p("officer-ca.pem")}
	tlsCfg, officers, err := network.load(time.Now())
	if err != nil {
		t.Fatalf("serve refuses the runbook's files: %v %v", err, hintsOf(err))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	officerOK := make(chan bool, 4)
	srv := &http.Server{TLSConfig: tlsCfg, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		officerOK <- release.CheckOfficer(r.TLS, officers, time.Now()) == nil
		w.Write([]byte("{}"))
	})}
	go srv.ServeTLS(ln, "", "")
	defer srv.Close()

	g := &globals{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	for _, c := range []struct {
		name    string
		network clientTLS
		officer bool
	}{
		{"officer", clientTLS{ca: p("server-ca.pem"), cert: p("officer.pem"), key: p("officer.key")}, true},
		{"auditor", clientTLS{ca: p("server-ca.pem")}, false},
	} {
		client, err := g.apiClient("https://custodian-a.court.example:8443", c.network)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		client.http.Transport.(*http.Transport).DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", ln.Addr().String())
		}
		var out map[string]any
		if err := client.do(context.Background(), http.MethodGet, "/v1/health", nil, &out); err != nil {
			t.Fatalf("%s: the runbook's server certificate is refused: %v", c.name, err)
		}
		if got := <-officerOK; got != c.officer {
			t.Errorf("%s: the officer check says %v", c.name, got)
		}
	}
	pool, err := readCertPool(p("server-ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := loadLeaf(t, p("server.pem"))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.court.example"}); err == nil {
		t.Error("the server certificate verifies for a name it was not made for")
	}
}

func loadLeaf(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// TestServiceUnitServesTLSWithTheDocumentedFiles: the device's unit runs
// serve with the TLS files where docs/operator.md puts them, never plain.
func TestServiceUnitServesTLSWithTheDocumentedFiles(t *testing.T) {
	m := regexp.MustCompile(`(?m)^ExecStart=/usr/bin/(custodian .*)$`).FindSubmatch(firmware.ServiceUnit)
	if m == nil {
		t.Fatal("no ExecStart running custodian")
	}
	line := string(m[1])
	if err := checkCommandLine(referenceRoot(), line); err != nil {
		t.Fatalf("ExecStart: %v", err)
	}
	operator, err := os.ReadFile("../../docs/operator.md")
	if err != nil {
		t.Fatal(err)
	}
	words := shellWords(line)
	for _, flag := range []string{"--tls-cert", "--tls-key", "--client-ca"} {
		i := slices.Index(words, flag)
		if i < 0 || i+1 >= len(words) {
			t.Errorf("ExecStart lacks %s", flag)
			continue
		}
		path := words[i+1]
		if !strings.HasPrefix(path, "/var/lib/custodian/tls/") || !bytes.Contains(operator, []byte(filepath.Base(path))) ||
			!bytes.Contains(operator, []byte("/var/lib/custodian/tls/")) {
			t.Errorf("%s %s is not where docs/operator.md puts it", flag, path)
		}
	}
	if strings.Contains(line, "--insecure-http") {
		t.Error("the device's unit serves plain HTTP")
	}
}
