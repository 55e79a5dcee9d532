package bpf

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// systemLibSSL is the libssl the Debian peers (openssl, curl, python3) load.
func systemLibSSL(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/lib/x86_64-linux-gnu/libssl.so.3", "/usr/lib/x86_64-linux-gnu/libssl.so.3",
		"/lib/x86_64-linux-gnu/libssl.so.1.1", "/usr/lib/x86_64-linux-gnu/libssl.so.1.1"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("no system libssl")
	}
	t.Skip("no system libssl")
	return ""
}

func tlsTestdata(t *testing.T) (cert, key string) {
	t.Helper()
	dir, err := filepath.Abs("testdata/tls")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
}

// openssl s_server -www answers any GET with a status page; curl fetches
// it over TLS. curl's plaintext must arrive marked TLS on its connection,
// and no ciphertext of either connection may be copied.
func TestOpenSSLPlaintextFromCurl(t *testing.T) {
	lib := systemLibSSL(t)
	cert, key := tlsTestdata(t)
	port := freePort(t, "tcp4", "127.0.0.1:0")
	server := start(t, "", "openssl", "s_server", "-quiet", "-www", "-accept", fmt.Sprint(port),
		"-cert", cert, "-key", key)
	waitDial(t, fmt.Sprintf("127.0.0.1:%d", port))

	r := record(t, Config{})
	id, fresh, err := r.tr.AttachSSL(lib)
	if err != nil || !fresh {
		t.Fatalf("attach %s: %v (fresh %v)", lib, err, fresh)
	}
	if _, again, err := r.tr.AttachSSL(lib); err != nil || again {
		t.Errorf("second attach of the same file: fresh %v, err %v; want a no-op", again, err)
	}
	if files := r.tr.SSLFiles(); len(files) != 1 || files[0] != id {
		t.Errorf("attached files %v, want [%v]", files, id)
	}
	client := curl(t, "--cacert", cert, "--http1.1", fmt.Sprintf("https://127.0.0.1:%d/tls-probe?x=1", port))
	st := r.stats(t)
	recs := r.stop(t)

	cl := byPID(recs, client)
	if len(cl) == 0 {
		t.Fatalf("no records from curl (pid %d); stats %+v", client, st)
	}
	for _, c := range cl {
		if !c.TLS {
			t.Errorf("curl record without TLS mark (ciphertext leaked?): %v", c)
		}
	}
	req := stream(recs, cl[0].ConnID, Egress)
	if !bytes.HasPrefix(req, []byte("GET /tls-probe?x=1 HTTP/1.1\r\n")) {
		t.Errorf("curl's plaintext request: %q", req)
	}
	if cl[0].Role != RoleClient {
		t.Errorf("curl's role %s, want client", cl[0].Role)
	}
	if resp := stream(recs, cl[0].ConnID, Ingress); !bytes.HasPrefix(resp, []byte("HTTP/1.0 200 ok\r\n")) {
		t.Errorf("curl's plaintext response: %.60q", resp)
	}

	// s_server -www talks through a BIO_f_ssl, which OpenSSL 3 wires to
	// its internal read and write functions, not to the exported entry
	// points: its plaintext is not seen (a known limit of symbol probes),
	// and its ciphertext must not be copied either.
	if srv := byPID(recs, server.Process.Pid); len(srv) != 0 {
		t.Errorf("s_server records (ciphertext?): %v", srv)
	}
	if st.TLSCalls == 0 || st.TLSSkipped == 0 {
		t.Errorf("stats %+v: want TLS calls and skipped ciphertext syscalls counted", st)
	}
}

// A file that is not a libssl gets no probes and a clear error.
func TestAttachSSLRejectsOtherFiles(t *testing.T) {
	r := record(t, Config{})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.tr.AttachSSL(self); !errors.Is(err, ErrNotSSL) {
		t.Errorf("attach to a non-libssl ELF: %v, want ErrNotSSL", err)
	}
	if _, _, err := r.tr.AttachSSL(filepath.Join(t.TempDir(), "missing.so")); err == nil {
		t.Error("attach to a missing file succeeded")
	}
	if files := r.tr.SSLFiles(); len(files) != 0 {
		t.Errorf("files attached after failures: %v", files)
	}
}
