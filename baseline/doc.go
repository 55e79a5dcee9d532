// Package baseline is the API inventory: it turns the stream of observed
// calls into endpoints (service, method, route), keeps lock-free
// statistics per endpoint, matches endpoints to the declared specs and
// raises the spec findings (shadow_api, zombie_api, undocumented_parameter,
// undocumented_status, undocumented_field).
//
// What it owns: the service index, one route table per service
// (baseline/route), the endpoint table, each endpoint's statistics —
// event-time bucketed counters, status classes and codes, a latency
// histogram, a HyperLogLog of distinct callers (keyed hashes of the
// principal), size sums and maxima, first and last seen — and the findings
// raised on endpoints; and, on object endpoints (routes with a parameter),
// per principal the distinct object ids touched over the last 1, 6 and 24
// hours of event time (objects.go), the ground for BOLA detection.
// Declared APIs come from baseline/spec.
//
// Hot path. Observer.Observe takes no lock and does not allocate once the
// call's service and endpoint exist: the service index and the endpoint
// table are read through atomic pointers and copied on write under a mutex
// that only creating a service, an endpoint or a finding takes. Every
// Observer writes its own shard of each endpoint's counters, so goroutines
// observing the same endpoint do not share written cache lines; sketches
// that only grow (HyperLogLog registers, the status-code bitmap) are
// written only when they change.
//
// Bounds. Services, endpoints, routes per service, drift findings per
// endpoint, query names per endpoint and principals (per endpoint and in
// all) have caps; calls past the
// endpoint or service cap count on one overflow endpoint and in Stats.
// Once the endpoint table is full, the route tables learn nothing more
// (a route without an endpoint would only hold memory).
//
// Findings are raised once per endpoint (and, for drift, per parameter,
// status or field), reported once through Options.OnFinding, and then only
// updated: count and last seen. Snapshot reports them with their current
// figures; Restore brings a saved snapshot back so that a restarted agent
// raises nothing twice.
//
// Principals. A caller is the JWT sub (decoded, not verified), an opaque
// bearer token, the Basic user, an API key, a session cookie, or else the
// client address (the last X-Forwarded-For hop when the client is a
// trusted proxy). Sketches count it by a SipHash keyed with Options.Key;
// anything exported carries HMAC-SHA256(Key, identity) or, for addresses,
// "ip:" and the address. Raw credentials never leave the call.
//
// Time is event time only: the calls' own timestamps move buckets, first
// and last seen, and the object windows (which end at the endpoint's last
// seen). There is no I/O here and no package-level mutable state;
// persistence lives in baseline/state.
package baseline
