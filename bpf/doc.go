// Package bpf loads apisonar's kernel side and reads what it records.
//
// The kernel side (apisonar.bpf.c) hooks syscall tracepoints and the
// sock:inet_sock_set_state and sched:sched_process_exec tracepoints only
// (plus the uprobes below); kprobes, fentry and BTF-typed
// tracing are never used, so it runs where those are locked down. BTF is
// still needed: struct reads (fd -> file -> socket -> sock -> 4-tuple) are
// CO-RE relocated against the running kernel.
//
// Kernel requirements: BTF (/sys/kernel/btf/vmlinux), tracefs, and 5.17 or
// later (bpf_loop; ring buffers and atomic fetch-add are older).
//
// What the kernel side owns: a table of TCP sockets (LRU, keyed by the
// struct sock address) with a connection id that is never reused, the role
// of this end (client or server) and the protocol decided on the first
// bytes (HTTP/1.x, HTTP/2, or not interesting). Sockets that are not
// interesting are never copied again; only a counter moves. Payload is
// copied in records of at most ChunkSize bytes (consecutive iovecs packed
// together), up to Config.PayloadCap per syscall (or per sendmmsg/recvmmsg
// message); the rest is announced by a record flagged Truncated so user
// space can report a gap. The role of a socket comes from accept/connect,
// else from its first bytes (a request or a response), else from the set
// of listening ports (seeded by SeedListeners, then kept by the
// inet_sock_set_state tracepoint).
//
// TLS plaintext comes from uprobes on the TLS code itself, bound to files
// (not processes): AttachSSL puts entry and return probes on a libssl;
// AttachGoTLS puts entry probes and a probe on every RET instruction (never
// a uretprobe) on crypto/tls.(*Conn).Read and .Write of a Go executable,
// with the struct offsets the kernel side needs carried in each probe's
// cookie (see gotls.go). Either way the connection is marked TLS and its
// ciphertext syscalls are no longer copied.
//
// Every successful execve (except by Config.SelfPID) yields a small
// KindExec record: pid, tid, the new comm and the time, no payload,
// counted in Stats.Execs. It is submitted like any other record (no
// wakeup of its own), so user space sees it within PollInterval, and uses
// it to probe the TLS files of a new program at once rather than on its
// next /proc scan (agent.TLSManager).
//
// Known blind spot: a syscall already blocked when the programs attach
// (a blocking recv waiting for data) is not seen; the next one is.
//
// Invariants user space can rely on:
//   - records of one connection and direction carry consecutive Seq values;
//     a hole means a record was lost (the ring was full);
//   - within one syscall, records arrive in Offset order and cover
//     [0, min(Total, PayloadCap)) unless one is flagged Truncated, after
//     which nothing of that syscall follows;
//   - the process named by Config.SelfPID is never traced.
//
// Lifecycle: Open loads and attaches everything; Read is called from one
// goroutine; Close detaches, frees the kernel objects and makes a blocked
// Read return ErrClosed. The records' Payload aliases the reader's buffer
// and is valid until the next Read.
//
// The generated files apisonar_bpfel.go and apisonar_bpfel.o are committed;
// `go generate ./bpf` rebuilds them with clang and must reproduce them
// byte for byte.
package bpf
