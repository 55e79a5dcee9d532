package agent

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// API is the local HTTP API: the inventory, the agent's counters, health.
// It binds to loopback by default; it serves nothing that holds header
// values, credentials or bodies.
type API struct {
	Seen *SeenTable
	// Counters returns the agent's own counters by name.
	Counters func() map[string]uint64
	// Ready reports whether every source is attached and running.
	Ready func() bool
	Log   *slog.Logger

	// Extra routes added by later stages (findings, OpenAPI).
	Extra map[string]http.Handler
}

type seenRow struct {
	SeenEntry
	FirstSeen string `json:"first_seen"`
	LastSeen  string `json:"last_seen"`
}

func (a *API) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /inventory/seen", func(w http.ResponseWriter, r *http.Request) {
		rows, overflow := a.Seen.Snapshot()
		out := struct {
			Endpoints []seenRow `json:"endpoints"`
			Overflow  uint64    `json:"overflow"`
		}{Endpoints: make([]seenRow, len(rows)), Overflow: overflow}
		for i, e := range rows {
			out.Endpoints[i] = seenRow{SeenEntry: e,
				FirstSeen: string(AppendTime(nil, e.FirstSeen)), LastSeen: string(AppendTime(nil, e.LastSeen))}
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, a.Counters())
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if a.Ready != nil && !a.Ready() {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	for p, h := range a.Extra {
		mux.Handle(p, h)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			probe := r.Clone(r.Context())
			probe.Method = http.MethodGet
			if _, p := mux.Handler(probe); p != "" {
				w.Header().Set("Allow", "GET")
				writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": r.Method + " not allowed on " + r.URL.Path})
				return
			}
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no such endpoint: " + r.URL.Path})
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Serve listens on addr until ctx ends. A listen failure is returned at
// once so that a busy port is a clear startup error.
func (a *API) Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return a.ServeListener(ctx, ln)
}

// ServeListener serves on ln until ctx ends.
func (a *API) ServeListener(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: a.handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
