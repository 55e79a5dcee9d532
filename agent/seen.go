package agent

import (
	"sort"
	"sync"

	"github.com/apisonar/apisonar/parser"
)

// SeenTable is the raw inventory: every (service, method, host, path) as
// seen on the wire, with counts and event-time first/last seen. It is
// bounded: past Max distinct keys, calls land in an overflow counter.
// The templated, spec-aware inventory lives in baseline/; this table is
// what the local API shows of the traffic itself.
type SeenTable struct {
	mu       sync.Mutex
	max      int
	m        map[string]*SeenEntry
	overflow uint64
	key      []byte
}

// SeenEntry is one row of the raw inventory.
type SeenEntry struct {
	Protocol string `json:"protocol"`
	Method   string `json:"method"`
	Host     string `json:"host"`
	Path     string `json:"path"`
	Server   string `json:"server,omitempty"`
	// Side is the end the observing process held ("server", "client"), or
	// empty for packet capture: a call between two local processes is
	// counted once on each side.
	Side      string `json:"side,omitempty"`
	Count     uint64 `json:"count"`
	Errors    uint64 `json:"errors"`
	FirstSeen int64  `json:"-"`
	LastSeen  int64  `json:"-"`
	// LastStatus is the status of the newest call.
	LastStatus int `json:"last_status"`
	// Statuses are the distinct statuses seen, at most maxStatuses.
	Statuses []int `json:"statuses"`
}

const maxStatuses = 16

// NewSeenTable returns a table capped at max keys (0: 10,000).
func NewSeenTable(max int) *SeenTable {
	if max <= 0 {
		max = 10000
	}
	return &SeenTable{max: max, m: make(map[string]*SeenEntry)}
}

// Observe counts c. It does not allocate for a key already present.
func (s *SeenTable) Observe(c *parser.Call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.key[:0]
	k = append(k, c.Protocol.String()...)
	k = append(k, 0)
	k = append(k, c.Method...)
	k = append(k, 0)
	k = append(k, c.Host...)
	k = append(k, 0)
	k = append(k, c.Path...)
	var side parser.Side
	if c.Conn != nil {
		side = c.Conn.Side
	}
	k = append(k, 0, byte(side))
	s.key = k
	e := s.m[string(k)]
	if e == nil {
		if len(s.m) >= s.max {
			s.overflow++
			return
		}
		e = &SeenEntry{
			Protocol: c.Protocol.String(), Method: string(c.Method), Host: string(c.Host),
			Path: string(c.Path), FirstSeen: c.Start, Side: side.String(),
		}
		if c.Conn != nil && c.Conn.Server.IsValid() {
			e.Server = c.Conn.Server.String()
		}
		s.m[string(k)] = e
	}
	e.Count++
	if c.Status >= 500 || (c.Protocol == parser.ProtoGRPC && c.GRPCStatus > 0) {
		e.Errors++
	}
	if c.Status != 0 && len(e.Statuses) < maxStatuses && !hasInt(e.Statuses, c.Status) {
		e.Statuses = append(e.Statuses, c.Status)
	}
	if c.Start < e.FirstSeen {
		e.FirstSeen = c.Start
	}
	if c.Start > e.LastSeen {
		e.LastSeen = c.Start
		e.LastStatus = c.Status
	}
}

// Snapshot returns a copy of the rows, sorted by host, path and method, and
// the overflow count.
func (s *SeenTable) Snapshot() ([]SeenEntry, uint64) {
	s.mu.Lock()
	out := make([]SeenEntry, 0, len(s.m))
	for _, e := range s.m {
		r := *e
		r.Statuses = append([]int(nil), e.Statuses...)
		out = append(out, r)
	}
	of := s.overflow
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool {
		a, b := &out[i], &out[j]
		if a.Host != b.Host {
			return a.Host < b.Host
		}
		if a.Path != b.Path {
			return a.Path < b.Path
		}
		if a.Method != b.Method {
			return a.Method < b.Method
		}
		return a.Side > b.Side
	})
	return out, of
}

func hasInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
