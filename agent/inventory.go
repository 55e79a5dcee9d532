package agent

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/apisonar/apisonar/agent/export"
	"github.com/apisonar/apisonar/baseline"
	"github.com/apisonar/apisonar/baseline/state"
	"github.com/apisonar/apisonar/parser"
)

// keyFile holds the agent's principal-hashing key in the state directory,
// so hashed principals stay comparable across restarts.
const keyFile = "principal.key"

// loadKey returns the key in dir, creating it when missing. With dir empty
// (replay) the key is random for this process: hashes are comparable
// within one run only.
func loadKey(dir string) ([]byte, error) {
	if dir == "" {
		return randomKey()
	}
	p := filepath.Join(dir, keyFile)
	b, err := os.ReadFile(p)
	if err == nil && len(b) == 32 {
		return b, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	k, err := randomKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	if err := writeFileAtomic(p, k); err != nil {
		return nil, fmt.Errorf("state dir %s: %w", dir, err)
	}
	os.Chmod(p, 0o600)
	return k, nil
}

func randomKey() ([]byte, error) {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	return k, nil
}

// localAddrs are the host's own addresses: a call whose server is one of
// them is also seen from the server's side, so its client-side view is
// not counted twice in the inventory.
type localAddrs map[netip.Addr]bool

func hostAddrs() localAddrs {
	m := localAddrs{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil {
				m[p.Addr().Unmap()] = true
			}
		}
	}
	return m
}

func (l localAddrs) has(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || l[a]
}

// countable reports whether c goes into the inventory: every server-side
// and packet-capture view, and client-side views of servers elsewhere.
func (p *Pipeline) countable(c *parser.Call) bool {
	if c.Conn == nil || c.Conn.Side != parser.SideClient {
		return true
	}
	return !p.local.has(c.Conn.Server.Addr())
}

// writeFinding puts a finding on the JSON lines.
func (p *Pipeline) writeFinding(f baseline.Finding) {
	p.findings.Add(1)
	p.exp.Finding(export.Finding{
		Time: f.Time, Kind: f.Kind, Severity: f.Severity, OWASP: f.OWASP, Service: f.Service,
		Method: f.Method, Route: f.Route, Principal: f.Principal, FirstSeen: f.FirstSeen,
		LastSeen: f.LastSeen, Count: f.Count, Summary: f.Summary, Evidence: f.Evidence,
	})
	if p.out == nil {
		return
	}
	f.Type = "finding"
	b, err := json.Marshal(f)
	if err != nil {
		p.log.Error("encoding a finding", "err", err)
		return
	}
	p.out.WriteRaw(b)
}

// restoreState loads the persisted inventory, if any.
func (p *Pipeline) restoreState() {
	if p.cfg.StateDir == "" || !p.persist {
		return
	}
	snap, err := state.Load(p.cfg.StateDir)
	if err != nil {
		p.log.Warn("persisted inventory not loaded; starting afresh", "err", err)
		return
	}
	if snap == nil {
		return
	}
	if err := p.inv.Restore(snap); err != nil {
		p.log.Warn("persisted inventory not restored; starting afresh", "err", err)
		return
	}
	p.log.Info("restored inventory", "endpoints", len(snap.Endpoints), "findings", len(snap.Findings))
}

// saveState persists the inventory now.
func (p *Pipeline) saveState() error {
	if p.cfg.StateDir == "" || !p.persist {
		return nil
	}
	return state.Save(p.cfg.StateDir, p.inv.Snapshot())
}

// stateLoop saves the inventory on every flush interval and once more at
// the end: a kill -9 loses at most one interval.
func (p *Pipeline) stateLoop(ctx context.Context) error {
	t := time.NewTicker(p.cfg.StateFlush)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := p.saveState(); err != nil {
				p.log.Error("saving inventory", "err", err)
			}
			return nil
		case <-t.C:
			if err := p.saveState(); err != nil {
				p.log.Error("saving inventory", "err", err)
			}
		}
	}
}

// writeInventory writes the observed inventory as an OpenAPI 3 document
// (YAML for .yaml/.yml, JSON otherwise), atomically.
func (p *Pipeline) writeInventory(path string) error {
	b, err := p.inventoryOpenAPI(strings.HasSuffix(strings.ToLower(path), ".yaml") ||
		strings.HasSuffix(strings.ToLower(path), ".yml"))
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, b); err != nil {
		return UserError{fmt.Errorf("inventory-out %s: %w", path, err)}
	}
	return nil
}

func (p *Pipeline) inventoryOpenAPI(asYAML bool) ([]byte, error) {
	doc := p.inv.Snapshot().OpenAPI("Observed API inventory", "observed")
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the inventory: %w", err)
	}
	if !asYAML {
		return append(b, '\n'), nil
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return yaml.Marshal(v)
}

// inventoryRoutes are the local API's views of the inventory.
func (p *Pipeline) inventoryRoutes() map[string]http.Handler {
	return map[string]http.Handler{
		"GET /inventory": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, p.inv.Snapshot().WithoutSketches())
		}),
		"GET /inventory/openapi": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, err := p.inventoryOpenAPI(r.URL.Query().Get("format") == "yaml")
			if err != nil {
				writeJSON(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
				return
			}
			w.Header().Set("Content-Type", "application/json")
			if r.URL.Query().Get("format") == "yaml" {
				w.Header().Set("Content-Type", "application/yaml")
			}
			w.Write(b)
		}),
		"GET /metrics": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", export.PrometheusContentType)
			if err := p.exp.WritePrometheus(w); err != nil {
				p.log.Warn("writing /metrics", "err", err)
			}
		}),
		"GET /findings": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			q := r.URL.Query()
			var since time.Time
			if s := q.Get("since"); s != "" {
				t, err := time.Parse(time.RFC3339Nano, s)
				if err != nil {
					writeJSON(w, http.StatusBadRequest, map[string]string{"error": "since: want an RFC 3339 time, got " + s})
					return
				}
				since = t
			}
			kind := q.Get("kind")
			out := []baseline.Finding{}
			for _, f := range p.inv.Findings() {
				if kind != "" && f.Kind != kind {
					continue
				}
				if !since.IsZero() && f.LastSeen.Before(since) {
					continue
				}
				f.Type = "finding"
				out = append(out, f)
			}
			writeJSON(w, http.StatusOK, map[string]any{"findings": out})
		}),
	}
}
