package bpf

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"syscall"

	"github.com/cilium/ebpf/link"
)

// ErrNotSSL: the file does not export the OpenSSL read and write entry
// points, so nothing was attached to it.
var ErrNotSSL = errors.New("not an OpenSSL-compatible libssl (no SSL_read/SSL_write)")

// FileID names a file by device and inode: uprobes bind to the file, so
// two paths to the same inode (a bind mount, /proc/PID/root) share one
// attachment, and a copy at another path is a different file.
type FileID struct {
	Dev, Ino uint64
}

func (f FileID) String() string { return fmt.Sprintf("%d:%d", f.Dev, f.Ino) }

// StatFile returns the FileID of path (following symlinks).
func StatFile(path string) (FileID, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return FileID{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return FileID{}, fmt.Errorf("bpf: stat %s: no inode", path)
	}
	return FileID{Dev: st.Dev, Ino: st.Ino}, nil
}

// sslLinks are the probes on one library file.
type sslLinks struct {
	path  string
	links []link.Link
}

// sslProbe is one entry point and the program its entry runs. Every
// entry point also gets the shared return program.
type sslProbe struct {
	symbol, prog string
	required     bool
}

var sslProbes = [...]sslProbe{
	{"SSL_read", apisonarProgSslRead, true},
	{"SSL_write", apisonarProgSslWrite, true},
	// OpenSSL 1.1.1 and later; absent from 1.1.0 and some forks.
	{"SSL_read_ex", apisonarProgSslReadEx, false},
	{"SSL_write_ex", apisonarProgSslWriteEx, false},
}

// AttachSSL puts the TLS plaintext probes on the libssl at path: an entry
// and a return probe on SSL_read, SSL_write and, when exported,
// SSL_read_ex and SSL_write_ex. The probes fire in every process mapping
// that file, now or later. A file already attached (same FileID) is not
// attached again: the result is then (id, false, nil). A file without
// SSL_read and SSL_write gets nothing and ErrNotSSL.
func (t *Tracer) AttachSSL(path string) (FileID, bool, error) {
	id, err := StatFile(path)
	if err != nil {
		return FileID{}, false, fmt.Errorf("bpf: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return id, false, ErrClosed
	}
	if _, ok := t.uprobes[id]; ok {
		return id, false, nil
	}
	ex, err := link.OpenExecutable(path)
	if err != nil {
		return id, false, fmt.Errorf("bpf: open %s: %w", path, err)
	}
	ret := t.coll.Programs[apisonarProgSslRet]
	l := &sslLinks{path: path}
	for _, p := range sslProbes {
		// The return probe goes on first: an entry without its return
		// would leave a thread's call pending, and with it that thread's
		// syscalls unreported, until the thread's next TLS call.
		rl, err := ex.Uretprobe(p.symbol, ret, nil)
		if err != nil {
			if !p.required && errors.Is(err, link.ErrNoSymbol) {
				continue
			}
			closeLinks(l.links)
			if errors.Is(err, link.ErrNoSymbol) {
				return id, false, fmt.Errorf("bpf: %s: %w", path, ErrNotSSL)
			}
			return id, false, wrapPerm(fmt.Errorf("bpf: uretprobe %s in %s: %w", p.symbol, path, err))
		}
		l.links = append(l.links, rl)
		el, err := ex.Uprobe(p.symbol, t.coll.Programs[p.prog], nil)
		if err != nil {
			closeLinks(l.links)
			return id, false, wrapPerm(fmt.Errorf("bpf: uprobe %s in %s: %w", p.symbol, path, err))
		}
		l.links = append(l.links, el)
	}
	if t.uprobes == nil {
		t.uprobes = make(map[FileID]*sslLinks)
	}
	t.uprobes[id] = l
	t.log.Info("attached TLS probes", "path", path, "file", id.String(), "probes", len(l.links))
	return id, true, nil
}

// DetachSSL removes the probes of one library file. Unknown ids are not an
// error.
func (t *Tracer) DetachSSL(id FileID) error {
	return detachFile(t, t.uprobes, id, "detached TLS probes")
}

// SSLFiles lists the library files that have probes, sorted.
func (t *Tracer) SSLFiles() []FileID { return sortedFiles(t, t.uprobes) }

func (t *Tracer) closeUprobes() error {
	t.mu.Lock()
	all := t.uprobes
	t.uprobes = nil
	t.mu.Unlock()
	return closeFiles(all)
}

// probeSet is what the tracer keeps per probed file.
type probeSet interface {
	probePath() string
	probeLinks() []link.Link
}

func (l *sslLinks) probePath() string       { return l.path }
func (l *sslLinks) probeLinks() []link.Link { return l.links }

// detachFile removes and closes the probes of id in m (one of the tracer's
// tables, guarded by t.mu).
func detachFile[P probeSet](t *Tracer, m map[FileID]P, id FileID, msg string) error {
	t.mu.Lock()
	l, ok := m[id]
	delete(m, id)
	t.mu.Unlock()
	if !ok {
		return nil
	}
	t.log.Info(msg, "path", l.probePath(), "file", id.String())
	return closeLinks(l.probeLinks())
}

// sortedFiles lists the ids of m (guarded by t.mu) by device and inode.
func sortedFiles[P any](t *Tracer, m map[FileID]P) []FileID {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]FileID, 0, len(m))
	for id := range m {
		out = append(out, id)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Dev != out[j].Dev {
			return out[i].Dev < out[j].Dev
		}
		return out[i].Ino < out[j].Ino
	})
	return out
}

// closeFiles closes every probe of a table already taken from the tracer.
func closeFiles[P probeSet](all map[FileID]P) error {
	var errs []error
	for _, l := range all {
		errs = append(errs, closeLinks(l.probeLinks()))
	}
	return errors.Join(errs...)
}

func closeLinks(ls []link.Link) error {
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

func isUprobe(section string) bool {
	for _, p := range []string{"uprobe/", "uretprobe/"} {
		if len(section) >= len(p) && section[:len(p)] == p {
			return true
		}
	}
	return false
}
