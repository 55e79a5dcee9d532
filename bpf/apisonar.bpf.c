//go:build ignore

// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// Syscall tracepoints that copy the plaintext of HTTP connections into a
// ring buffer. Only tracepoints and CO-RE reads are used: no kprobes, no
// fentry, no BTF-typed tracing, so the object loads where those are missing.
//
// Shape of one traced syscall:
//   sys_enter_*  resolves fd -> struct sock with CO-RE reads and, when the
//                socket is TCP and not already known to be uninteresting,
//                stashes the arguments per thread;
//   sys_exit_*   knows the byte count, decides the protocol on the first
//                bytes of a connection, and copies the payload in chunks.
// The common case on a busy host (a read of a file or a pipe) costs the
// fd walk at enter and one failed hash lookup at exit; a socket already
// found not to be HTTP costs one more lookup at enter and nothing at exit.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define AF_INET 2
#define AF_INET6 10
#define SOCK_STREAM 1
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define MSG_PEEK 2
#define EINPROGRESS 115

// CHUNK_SIZE is the most payload one record carries; a power of two so the
// verifier can be shown the bound with a mask.
#define CHUNK_SIZE 4096
// MAX_STEPS bounds the work per syscall: each step copies what fits of the
// current buffer into the pending record, or moves to the next iovec or
// message.
#define MAX_STEPS 128
// MAX_CAP is the largest per-unit copy cap the loader accepts (64 chunks).
#define MAX_CAP (256 << 10)
// PEEK is how many leading bytes decide the protocol of a connection.
#define PEEK 16

enum rec_kind {
	KIND_DATA = 1,
	KIND_CLOSE = 2,
	// KIND_EXEC: a process called execve; only pid, tid, comm and ts_ns
	// are set, there is no payload. User space uses it to look for TLS
	// libraries in the new program at once instead of on its next scan.
	KIND_EXEC = 3,
};

enum conn_role {
	ROLE_UNKNOWN = 0,
	ROLE_CLIENT = 1,
	ROLE_SERVER = 2,
};

enum direction {
	DIR_EGRESS = 0,
	DIR_INGRESS = 1,
};

enum conn_proto {
	PROTO_UNKNOWN = 0,
	PROTO_HTTP1 = 1,
	PROTO_HTTP2 = 2,
	PROTO_NONE = 3,
};

enum rec_flag {
	// FLAG_TRUNCATED: bytes [offset+len, total) of this unit were not
	// copied (over the cap, an unreadable page, or the step bound).
	FLAG_TRUNCATED = 1,
	// FLAG_TLS: the payload is TLS plaintext taken from a TLS library
	// call, not the bytes of a syscall.
	FLAG_TLS = 2,
};

enum syscall_op {
	OP_BUF = 1,     // read, write, sendto, recvfrom
	OP_IOV = 2,     // readv, writev
	OP_MSG = 3,     // sendmsg, recvmsg
	OP_MMSG = 4,    // sendmmsg, recvmmsg
	OP_CONNECT = 5,
};

// event is the fixed header of every ring buffer record; a data record is
// followed by len payload bytes.
//
// Padding rules: fields are ordered from widest to narrowest so that no
// implicit padding exists; the struct size (104) is a multiple of 8 so the
// payload that follows starts 8-byte aligned. The explicit _pad keeps the
// size stable. Addresses are in network byte order (IPv4 in the first four
// bytes), ports in host byte order. The Go side reads it through the
// bpf2go-generated type and checks its size.
struct event {
	__u64 conn_id;   // unique per traced socket, never reused
	__u64 ts_ns;     // bpf_ktime_get_ns (CLOCK_MONOTONIC)
	__u32 pid;       // tgid
	__u32 tid;
	__u32 fd;
	__u32 total;     // bytes the syscall (or mmsg message) moved
	__u32 offset;    // position of this chunk in those bytes
	__u32 len;       // payload bytes that follow the header
	__u32 seq;       // per connection and direction, one per record
	__u16 lport;
	__u16 rport;
	__u8 laddr[16];
	__u8 raddr[16];
	char comm[16];
	__u8 kind;       // enum rec_kind
	__u8 role;       // enum conn_role
	__u8 dir;        // enum direction
	__u8 proto;      // enum conn_proto
	__u8 family;     // AF_INET or AF_INET6
	__u8 flags;      // enum rec_flag
	__u8 _pad[2];
};

// counters are per CPU and summed by user space. Nothing is lost silently:
// every record the ring refused and every byte not copied moves one of them.
struct counters {
	__u64 records;         // records submitted
	__u64 bytes;           // payload bytes submitted
	__u64 lost_records;    // records the ring buffer had no room for
	__u64 lost_bytes;      // payload bytes in those records
	__u64 truncated;       // units with bytes beyond the copy cap
	__u64 truncated_bytes; // bytes beyond the cap
	__u64 read_errors;     // payload reads from user memory that failed
	__u64 step_limit;      // syscalls cut short by MAX_STEPS
	__u64 not_http;        // connections marked not interesting
	__u64 conns;           // connections tracked
	__u64 closes;          // close records
	__u64 tls_calls;       // TLS library calls that returned plaintext
	__u64 tls_no_conn;     // of those, calls whose socket is unknown
	__u64 tls_nested;      // TLS calls made inside another one, ignored
	__u64 tls_skipped;     // ciphertext syscalls not copied
	__u64 go_tls_enter;    // Go crypto/tls Read/Write entry probe hits
	__u64 go_tls_ret;      // Go crypto/tls RET probe hits
	__u64 go_tls_calls;    // Go crypto/tls calls that returned plaintext
	__u64 go_tls_no_conn;  // Go calls whose socket could not be found
	__u64 go_tls_short;    // Go Writes that moved fewer bytes than copied
	__u64 go_tls_reentry;  // Go calls entered again (stack growth), ignored
	__u64 execs;           // exec records
};

// conn_state is what the kernel remembers per socket.
// Padding rules: as for event; size 64.
//
// A socket that carried TLS plaintext has tls set: from then on its
// syscall bytes (ciphertext) are never copied, and tls_proto, not proto,
// says whether its plaintext is worth copying. proto keeps the verdict on
// the ciphertext (normally PROTO_NONE from the handshake), which must not
// stop the plaintext path.
struct conn_state {
	__u64 id;
	__u32 seq[2];    // next record sequence per direction
	__u16 lport;
	__u16 rport;
	__u8 laddr[16];
	__u8 raddr[16];
	__u8 role;
	__u8 proto;
	__u8 family;
	__u8 tls;
	__u8 tls_proto;
	__u8 _pad[7];
};

// ssl_call carries one TLS library call from its entry to its return on
// one thread. The socket is learnt from the syscall the library makes on
// this thread while inside the call.
struct ssl_call {
	__u64 ssl;       // SSL *
	__u64 buf;       // plaintext buffer
	__u64 out_len;   // size_t * of the _ex variants, 0 otherwise
	__u64 sk;        // struct sock * of a nested syscall, 0 if none yet
	__u8 dir;        // enum direction
	__u8 depth;      // TLS calls nested inside this one
	__u8 _pad[6];
};

// stash carries a syscall's arguments from enter to exit on one thread.
struct stash {
	__u64 buf;  // buffer, iovec array, msghdr or mmsghdr array
	__u64 sk;   // struct sock * resolved at enter
	__u64 vlen; // iovec or message count
	__u32 fd;
	__u8 op;    // enum syscall_op
	__u8 dir;   // enum direction
	__u8 _pad[2];
};

// Userland ABI of iovec, msghdr and mmsghdr on 64-bit targets; these are
// fixed by the syscall ABI, so they are plain structs, not CO-RE.
struct u_iovec {
	__u64 base;
	__u64 len;
};

struct u_msghdr {
	__u64 name;
	__u32 namelen;
	__u32 _pad0;
	__u64 iov;
	__u64 iovlen;
	__u64 control;
	__u64 controllen;
	__u32 flags;
	__u32 _pad1;
};

struct u_mmsghdr {
	struct u_msghdr hdr;
	__u32 len;
	__u32 _pad;
};

// scratch builds one record per CPU. data is twice a chunk so that the
// verifier can bound "fill + n" with two masks instead of a relation
// between two variables; a record never carries more than CHUNK_SIZE.
struct scratch {
	struct event ev;
	__u8 data[2 * CHUNK_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); // struct sock *
	__type(value, struct conn_state);
} conns SEC(".maps");

// stashes lives only from a syscall's enter to its exit, so a plain
// (preallocated) hash is enough and cheaper than an LRU; if it is full the
// syscall is simply not traced.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // pid_tgid
	__type(value, struct stash);
} stashes SEC(".maps");

// listen_ports counts listening TCP sockets per local port. Seeded from the
// kernel's socket table at start and kept up by inet_sock_set_state.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u16);
	__type(value, __u32);
} listen_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct counters);
} stats SEC(".maps");

// ssl_calls: TLS library calls in progress, by thread.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64); // pid_tgid
	__type(value, struct ssl_call);
} ssl_calls SEC(".maps");

// ssl_socks remembers the socket of each TLS session, so that a read served
// from the library's buffer (no syscall inside the call) still finds its
// connection. Keyed by the SSL * and the tgid, since the pointer is only
// unique within one process.
struct ssl_key {
	__u64 ssl;
	__u32 tgid;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, __u64); // struct sock *
} ssl_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratches SEC(".maps");

// Set by the loader before the object is loaded.
const volatile __u32 self_tgid = 0;
const volatile __u32 payload_cap = 16384;
const volatile __u64 wakeup_bytes = 256 << 10;

__u64 next_conn_id = 0;

// enum_anchor mentions every enum once so that the object's BTF carries
// them and bpf2go can export them as Go constants.
struct enum_anchor {
	enum rec_kind kind;
	enum conn_role role;
	enum direction dir;
	enum conn_proto proto;
	enum rec_flag flag;
};
const struct enum_anchor *unused_enum_anchor __attribute__((unused));

static __always_inline struct counters *counters(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&stats, &zero);
}

static __always_inline struct file *fd_to_file(__u64 fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt)
		return NULL;
	if (fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd & 0xffffffff]))
		return NULL;
	return f;
}

// file_to_sock returns the TCP socket behind f, or NULL for anything else
// (files, pipes, unix and UDP sockets): that is the early exit almost every
// read and write on a host takes.
static __always_inline struct sock *file_to_sock(struct file *f)
{
	if (!f)
		return NULL;
	umode_t mode = BPF_CORE_READ(f, f_inode, i_mode);
	if ((mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *sock = BPF_CORE_READ(f, private_data);
	if (!sock || BPF_CORE_READ(sock, type) != SOCK_STREAM)
		return NULL;
	struct sock *sk = BPF_CORE_READ(sock, sk);
	if (!sk)
		return NULL;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return NULL;
	return sk;
}

static __always_inline void read_tuple(struct sock *sk, struct conn_state *c)
{
	c->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	c->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	c->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (c->family == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)c->laddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)c->raddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&c->laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&c->raddr, sk, __sk_common.skc_v6_daddr);
	}
}

static __always_inline struct conn_state *new_conn(__u64 key, struct sock *sk, __u8 role)
{
	struct conn_state n = {};
	n.id = __sync_fetch_and_add(&next_conn_id, 1) + 1;
	n.role = role;
	read_tuple(sk, &n);
	bpf_map_update_elem(&conns, &key, &n, BPF_ANY);
	struct counters *cnt = counters();
	if (cnt)
		cnt->conns++;
	return bpf_map_lookup_elem(&conns, &key);
}

#define C4(a, b, c, d) ((__u32)(a) | (__u32)(b) << 8 | (__u32)(c) << 16 | (__u32)(d) << 24)

// classify names the protocol from the first bytes one peer sent. *side is
// 1 when the bytes are a request (the sender is the client), 0 for a
// response, -1 when the bytes do not tell (HTTP/2 frames both peers send).
static __always_inline __u8 classify(const __u8 *b, __u32 n, int *side)
{
	__u32 w0 = C4(b[0], b[1], b[2], b[3]);
	__u32 w1 = C4(b[4], b[5], b[6], b[7]);

	*side = 1;
	if (n >= 4 && (w0 == C4('G', 'E', 'T', ' ') || w0 == C4('P', 'U', 'T', ' ')))
		return PROTO_HTTP1;
	if (n >= 5 && b[4] == ' ' && (w0 == C4('P', 'O', 'S', 'T') || w0 == C4('H', 'E', 'A', 'D')))
		return PROTO_HTTP1;
	if (n >= 6 && w0 == C4('P', 'A', 'T', 'C') && b[4] == 'H' && b[5] == ' ')
		return PROTO_HTTP1;
	if (n >= 6 && w0 == C4('T', 'R', 'A', 'C') && b[4] == 'E' && b[5] == ' ')
		return PROTO_HTTP1;
	if (n >= 7 && w0 == C4('D', 'E', 'L', 'E') && b[4] == 'T' && b[5] == 'E' && b[6] == ' ')
		return PROTO_HTTP1;
	if (n >= 8 && w0 == C4('O', 'P', 'T', 'I') && w1 == C4('O', 'N', 'S', ' '))
		return PROTO_HTTP1;
	if (n >= 8 && w0 == C4('C', 'O', 'N', 'N') && w1 == C4('E', 'C', 'T', ' '))
		return PROTO_HTTP1;
	if (n >= 8 && w0 == C4('P', 'R', 'I', ' ') && w1 == C4('*', ' ', 'H', 'T'))
		return PROTO_HTTP2;
	*side = 0;
	if (n >= 7 && w0 == C4('H', 'T', 'T', 'P') && b[4] == '/' && b[5] == '1' && b[6] == '.')
		return PROTO_HTTP1;

	// Fewer bytes than a method or status line (a writev whose first
	// iovec is tiny): accept any prefix of one, user space decides once
	// it has more.
	if (n < 8) {
		__u64 mask = (1ULL << (8 * n)) - 1;
		__u64 w = ((__u64)w1 << 32 | w0) & mask;
#define P8(a, b, c, d, e, f, g, h) (((__u64)C4(e, f, g, h) << 32 | C4(a, b, c, d)) & mask)
		*side = 1;
		if (w == P8('G', 'E', 'T', ' ', 0, 0, 0, 0) || w == P8('P', 'U', 'T', ' ', 0, 0, 0, 0) ||
		    w == P8('P', 'O', 'S', 'T', ' ', 0, 0, 0) || w == P8('H', 'E', 'A', 'D', ' ', 0, 0, 0) ||
		    w == P8('P', 'A', 'T', 'C', 'H', ' ', 0, 0) || w == P8('T', 'R', 'A', 'C', 'E', ' ', 0, 0) ||
		    w == P8('D', 'E', 'L', 'E', 'T', 'E', ' ', 0) || w == P8('O', 'P', 'T', 'I', 'O', 'N', 'S', ' ') ||
		    w == P8('C', 'O', 'N', 'N', 'E', 'C', 'T', ' '))
			return PROTO_HTTP1;
		if (w == P8('P', 'R', 'I', ' ', '*', ' ', 'H', 'T'))
			return PROTO_HTTP2;
		*side = 0;
		if (w == P8('H', 'T', 'T', 'P', '/', '1', '.', 0))
			return PROTO_HTTP1;
#undef P8
	}

	// A connection joined after the HTTP/2 preface: a plausible frame header.
	*side = -1;
	if (n < 9)
		return PROTO_NONE;
	__u32 length = (__u32)b[0] << 16 | (__u32)b[1] << 8 | b[2];
	__u8 type = b[3], flags = b[4];
	__u32 sid = ((__u32)b[5] & 0x7f) << 24 | (__u32)b[6] << 16 | (__u32)b[7] << 8 | b[8];
	if (length > (1 << 14))
		return PROTO_NONE;
	switch (type) {
	case 0x0: // DATA
	case 0x1: // HEADERS
		return sid ? PROTO_HTTP2 : PROTO_NONE;
	case 0x3: // RST_STREAM
		return sid && length == 4 ? PROTO_HTTP2 : PROTO_NONE;
	case 0x4: // SETTINGS: stream 0, whole settings, ACK is the only flag
		return !sid && length % 6 == 0 && !(flags & ~1) ? PROTO_HTTP2 : PROTO_NONE;
	case 0x6: // PING
		return !sid && length == 8 ? PROTO_HTTP2 : PROTO_NONE;
	case 0x7: // GOAWAY
		return !sid && length >= 8 ? PROTO_HTTP2 : PROTO_NONE;
	case 0x8: // WINDOW_UPDATE
		return length == 4 ? PROTO_HTTP2 : PROTO_NONE;
	}
	return PROTO_NONE;
}

// walk is the state of copying one syscall's bytes, shared with the
// bpf_loop callback. A unit is one syscall, or one message of an mmsg call.
// Bytes of consecutive iovecs are packed into one record until it holds
// CHUNK_SIZE bytes or the unit ends, so that writev of a header and a body
// costs one record, not two.
struct walk {
	__u64 sk;
	__u64 seg;        // user address of the current contiguous segment
	__u64 seg_left;   // bytes left in it that belong to the unit
	__u64 iov;        // next iovec to read
	__u64 iov_left;
	__u64 mmsg;       // next mmsghdr to read
	__u64 msg_left;
	__u32 total;      // bytes in the current unit
	__u32 off;        // bytes of the unit copied so far
	__u32 limit;      // min(total, cap): bytes of the unit to copy
	__u32 cap;
	__u32 fill;       // bytes waiting in the scratch record
	__u32 chunk_off;  // unit offset of the scratch record's first byte
	__u8 dir;
	__u8 open;        // a unit is being copied
	__u8 done;
	__u8 flags;       // flags every record of the walk carries
};

static __always_inline void submit(struct event *ev, __u32 len)
{
	struct counters *cnt = counters();
	if (len > CHUNK_SIZE)
		return;
	__u64 size = sizeof(struct event) + len;
	__u64 flags = BPF_RB_NO_WAKEUP;
	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, ev, size, flags)) {
		if (cnt) {
			cnt->lost_records++;
			cnt->lost_bytes += len;
		}
		return;
	}
	if (cnt) {
		cnt->records++;
		cnt->bytes += len;
	}
}

static __always_inline __u32 next_seq(__u64 sk, __u8 dir)
{
	struct conn_state *c = bpf_map_lookup_elem(&conns, &sk);
	if (!c)
		return 0;
	return __sync_fetch_and_add(&c->seq[dir & 1], 1);
}

// flush submits what the scratch record holds. truncated says that the
// rest of the unit will not be copied; then a record is sent even when it
// is empty, so user space learns about the gap.
static __always_inline void flush(struct walk *w, int truncated)
{
	if (!w->fill && !truncated)
		return;
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratches, &zero);
	if (!s)
		return;
	s->ev.total = w->total;
	s->ev.offset = w->chunk_off;
	s->ev.len = w->fill;
	s->ev.flags = (truncated && w->chunk_off + w->fill < w->total ? FLAG_TRUNCATED : 0) | w->flags;
	s->ev.seq = next_seq(w->sk, w->dir);
	submit(&s->ev, w->fill);
	w->chunk_off += w->fill;
	w->fill = 0;
}

// close_unit ends the current unit; the bytes not copied, if any, are
// announced on its last record.
static __always_inline void close_unit(struct walk *w)
{
	flush(w, w->chunk_off + w->fill < w->total);
	w->open = 0;
}

// copy_bytes moves up to one record's room of the current segment into the
// scratch record.
static __always_inline void copy_bytes(struct walk *w)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratches, &zero);
	if (!s) {
		w->done = 1;
		return;
	}
	__u32 fill = w->fill & (CHUNK_SIZE - 1);
	__u32 n = w->limit - w->off;
	if (n > w->seg_left)
		n = w->seg_left;
	if (n > CHUNK_SIZE - fill)
		n = CHUNK_SIZE - fill;
	if (n > CHUNK_SIZE)
		n = CHUNK_SIZE;
	if (bpf_probe_read_user(&s->data[fill], n, (void *)w->seg)) {
		struct counters *cnt = counters();
		if (cnt)
			cnt->read_errors++;
		close_unit(w);
		return;
	}
	w->fill = fill + n;
	w->off += n;
	w->seg += n;
	w->seg_left -= n;
	if (w->off >= w->limit)
		close_unit(w);
	else if (w->fill >= CHUNK_SIZE)
		flush(w, 0);
}

static __always_inline void open_unit(struct walk *w, __u32 total)
{
	w->total = total;
	w->off = 0;
	w->fill = 0;
	w->chunk_off = 0;
	w->limit = total < w->cap ? total : w->cap;
	w->open = total > 0;
	if (total > w->cap) {
		struct counters *cnt = counters();
		if (cnt) {
			cnt->truncated++;
			cnt->truncated_bytes += total - w->cap;
		}
	}
}

static long step(__u64 index, void *ctx)
{
	struct walk *w = ctx;

	if (w->done)
		return 1;
	if (!w->open) {
		// The next message of a sendmmsg/recvmmsg, if any.
		if (!w->msg_left) {
			w->done = 1;
			return 1;
		}
		struct u_mmsghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)w->mmsg)) {
			w->done = 1;
			return 1;
		}
		w->mmsg += sizeof(m);
		w->msg_left--;
		w->iov = m.hdr.iov;
		w->iov_left = m.hdr.iovlen;
		w->seg_left = 0;
		open_unit(w, m.len);
		return 0;
	}
	if (!w->seg_left) {
		struct u_iovec v;
		if (!w->iov_left || bpf_probe_read_user(&v, sizeof(v), (void *)w->iov)) {
			// Fewer buffers than bytes: report the rest as lost.
			close_unit(w);
			return 0;
		}
		w->iov += sizeof(v);
		w->iov_left--;
		w->seg = v.base;
		w->seg_left = v.len;
		if (w->seg_left > w->total - w->off)
			w->seg_left = w->total - w->off;
		return 0;
	}
	copy_bytes(w);
	return 0;
}

// first_segment returns the user address and length of the first bytes of
// the syscall, for protocol inference.
static __always_inline int first_segment(struct stash *st, __u64 ret, __u64 *addr, __u64 *len)
{
	struct u_iovec v = {};
	struct u_msghdr m;
	struct u_mmsghdr mm;

	switch (st->op) {
	case OP_BUF:
		*addr = st->buf;
		*len = ret;
		return 0;
	case OP_IOV:
		if (bpf_probe_read_user(&v, sizeof(v), (void *)st->buf))
			return -1;
		break;
	case OP_MSG:
		if (bpf_probe_read_user(&m, sizeof(m), (void *)st->buf) ||
		    bpf_probe_read_user(&v, sizeof(v), (void *)m.iov))
			return -1;
		break;
	case OP_MMSG:
		if (bpf_probe_read_user(&mm, sizeof(mm), (void *)st->buf) ||
		    bpf_probe_read_user(&v, sizeof(v), (void *)mm.hdr.iov))
			return -1;
		ret = mm.len;
		break;
	default:
		return -1;
	}
	*addr = v.base;
	*len = v.len < ret ? v.len : ret;
	return 0;
}

static __always_inline __u8 infer_role(int side, __u8 dir, struct conn_state *c)
{
	if (side == 1)
		return dir == DIR_EGRESS ? ROLE_CLIENT : ROLE_SERVER;
	if (side == 0)
		return dir == DIR_EGRESS ? ROLE_SERVER : ROLE_CLIENT;
	__u16 port = c->lport;
	if (bpf_map_lookup_elem(&listen_ports, &port))
		return ROLE_SERVER;
	port = c->rport;
	if (bpf_map_lookup_elem(&listen_ports, &port))
		return ROLE_CLIENT;
	return ROLE_UNKNOWN;
}

static __always_inline int enter_data(__u64 fd, __u64 buf, __u64 vlen, __u8 op, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) == self_tgid)
		return 0;
	struct sock *sk = file_to_sock(fd_to_file(fd));
	if (!sk)
		return 0;
	__u64 key = (__u64)sk;
	// Inside a TLS library call the bytes are ciphertext: only the socket
	// is of use, to the call's return probe.
	struct ssl_call *call = bpf_map_lookup_elem(&ssl_calls, &id);
	if (call) {
		if (op != OP_CONNECT) {
			call->sk = key;
			struct counters *cnt = counters();
			if (cnt)
				cnt->tls_skipped++;
			return 0;
		}
	}
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (c && (c->proto == PROTO_NONE || c->tls))
		return 0;
	struct stash st = {
		.buf = buf,
		.sk = key,
		.vlen = vlen,
		.fd = (__u32)fd,
		.op = op,
		.dir = dir,
	};
	bpf_map_update_elem(&stashes, &id, &st, BPF_ANY);
	return 0;
}

/* process_comm names the process, not the thread: runtimes name their
 * threads (grpcio's "default-executo", a JVM's "C2 CompilerThre"), and a
 * call belongs to the program that made it. */
static __always_inline void process_comm(char *dst)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	if (!leader || bpf_probe_read_kernel_str(dst, 16, &leader->comm) < 0)
		bpf_get_current_comm(dst, 16);
}

/* data_header fills a data record's header for connection c. */
static __always_inline void data_header(struct event *ev, __u64 id, __u32 fd,
					__u8 dir, __u8 proto, const struct conn_state *c)
{
	ev->kind = KIND_DATA;
	ev->conn_id = c->id;
	ev->ts_ns = bpf_ktime_get_ns();
	ev->pid = id >> 32;
	ev->tid = (__u32)id;
	ev->fd = fd;
	ev->role = c->role;
	ev->dir = dir;
	ev->proto = proto;
	ev->family = c->family;
	ev->lport = c->lport;
	ev->rport = c->rport;
	__builtin_memcpy(ev->laddr, c->laddr, 16);
	__builtin_memcpy(ev->raddr, c->raddr, 16);
	process_comm(ev->comm);
}

static __always_inline int exit_data(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct stash *sp = bpf_map_lookup_elem(&stashes, &id);
	if (!sp)
		return 0;
	struct stash st = *sp;
	bpf_map_delete_elem(&stashes, &id);
	if (ret <= 0 || st.op == OP_CONNECT)
		return 0;

	struct conn_state *c = bpf_map_lookup_elem(&conns, &st.sk);
	if (c && (c->proto == PROTO_NONE || c->tls))
		return 0;
	if (!c || c->proto == PROTO_UNKNOWN) {
		__u64 addr = 0, len = 0;
		__u8 head[PEEK] = {};
		if (first_segment(&st, ret, &addr, &len))
			return 0;
		if (len > PEEK)
			len = PEEK;
		if (!len)
			return 0; // an empty first iovec: decide on the next bytes
		if (bpf_probe_read_user(head, len, (void *)addr))
			return 0;
		int side = -1;
		__u8 proto = classify(head, len, &side);
		if (!c) {
			c = new_conn(st.sk, (struct sock *)st.sk, ROLE_UNKNOWN);
			if (!c)
				return 0;
		}
		c->proto = proto;
		if (proto == PROTO_NONE) {
			struct counters *cnt = counters();
			if (cnt)
				cnt->not_http++;
			return 0;
		}
		if (c->role == ROLE_UNKNOWN)
			c->role = infer_role(side, st.dir, c);
	}

	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratches, &zero);
	if (!s)
		return 0;
	data_header(&s->ev, id, st.fd, st.dir, c->proto, c);

	struct walk w = {
		.sk = st.sk,
		.dir = st.dir,
		.cap = payload_cap < MAX_CAP ? payload_cap : MAX_CAP,
	};
	switch (st.op) {
	case OP_BUF:
		w.seg = st.buf;
		w.seg_left = ret;
		open_unit(&w, ret);
		break;
	case OP_IOV:
		w.iov = st.buf;
		w.iov_left = st.vlen;
		open_unit(&w, ret);
		break;
	case OP_MSG: {
		struct u_msghdr m;
		if (bpf_probe_read_user(&m, sizeof(m), (void *)st.buf))
			return 0;
		w.iov = m.iov;
		w.iov_left = m.iovlen;
		open_unit(&w, ret);
		break;
	}
	case OP_MMSG:
		w.mmsg = st.buf;
		w.msg_left = (__u64)ret < st.vlen ? (__u64)ret : st.vlen;
		break;
	default:
		return 0;
	}
	bpf_loop(MAX_STEPS, step, &w, 0);
	if (!w.done && (w.open || w.msg_left)) {
		// Out of steps: the rest of the unit (and of any further
		// messages) is reported missing on the last record.
		struct counters *cnt = counters();
		if (cnt)
			cnt->step_limit++;
		if (w.open)
			close_unit(&w);
	}
	return 0;
}

// emit_close tells user space that a connection ended and forgets it.
static __always_inline void emit_close(__u64 key, struct conn_state *c)
{
	__u8 proto = c->tls ? c->tls_proto : c->proto;
	if (proto == PROTO_HTTP1 || proto == PROTO_HTTP2) {
		struct event ev = {};
		__u64 id = bpf_get_current_pid_tgid();
		ev.kind = KIND_CLOSE;
		ev.conn_id = c->id;
		ev.ts_ns = bpf_ktime_get_ns();
		ev.pid = id >> 32;
		ev.tid = (__u32)id;
		ev.role = c->role;
		ev.proto = proto;
		ev.flags = c->tls ? FLAG_TLS : 0;
		ev.family = c->family;
		ev.lport = c->lport;
		ev.rport = c->rport;
		struct counters *cnt = counters();
		if (cnt)
			cnt->closes++;
		submit(&ev, 0);
	}
	bpf_map_delete_elem(&conns, &key);
}

#define ENTER_DATA(name, op, dir)                                              \
	SEC("tracepoint/syscalls/sys_enter_" #name)                            \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)                \
	{                                                                      \
		return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], op, dir); \
	}                                                                      \
	SEC("tracepoint/syscalls/sys_exit_" #name)                             \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)                  \
	{                                                                      \
		return exit_data(ctx->ret);                                    \
	}

ENTER_DATA(read, OP_BUF, DIR_INGRESS)
ENTER_DATA(write, OP_BUF, DIR_EGRESS)
ENTER_DATA(readv, OP_IOV, DIR_INGRESS)
ENTER_DATA(writev, OP_IOV, DIR_EGRESS)
ENTER_DATA(sendto, OP_BUF, DIR_EGRESS)
ENTER_DATA(sendmsg, OP_MSG, DIR_EGRESS)
ENTER_DATA(sendmmsg, OP_MMSG, DIR_EGRESS)

// Receives that only peek leave the data in the socket: the real read
// that follows is the one to copy.
SEC("tracepoint/syscalls/sys_enter_recvfrom")
int enter_recvfrom(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[3] & MSG_PEEK)
		return 0;
	return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], OP_BUF, DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_exit_recvfrom")
int exit_recvfrom(struct trace_event_raw_sys_exit *ctx)
{
	return exit_data(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_recvmsg")
int enter_recvmsg(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[2] & MSG_PEEK)
		return 0;
	return enter_data(ctx->args[0], ctx->args[1], 0, OP_MSG, DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_exit_recvmsg")
int exit_recvmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_data(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_recvmmsg")
int enter_recvmmsg(struct trace_event_raw_sys_enter *ctx)
{
	if (ctx->args[3] & MSG_PEEK)
		return 0;
	return enter_data(ctx->args[0], ctx->args[1], ctx->args[2], OP_MMSG, DIR_INGRESS);
}

SEC("tracepoint/syscalls/sys_exit_recvmmsg")
int exit_recvmmsg(struct trace_event_raw_sys_exit *ctx)
{
	return exit_data(ctx->ret);
}

SEC("tracepoint/syscalls/sys_enter_connect")
int enter_connect(struct trace_event_raw_sys_enter *ctx)
{
	return enter_data(ctx->args[0], 0, 0, OP_CONNECT, DIR_EGRESS);
}

// A connect that succeeded or is in progress makes this side the client.
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct stash *sp = bpf_map_lookup_elem(&stashes, &id);
	if (!sp)
		return 0;
	__u64 sk = sp->sk;
	__u8 op = sp->op;
	bpf_map_delete_elem(&stashes, &id);
	if (op != OP_CONNECT || (ctx->ret != 0 && ctx->ret != -EINPROGRESS))
		return 0;
	new_conn(sk, (struct sock *)sk, ROLE_CLIENT);
	return 0;
}

static __always_inline int exit_accept(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (ret < 0 || (__u32)(id >> 32) == self_tgid)
		return 0;
	struct sock *sk = file_to_sock(fd_to_file(ret));
	if (!sk)
		return 0;
	new_conn((__u64)sk, sk, ROLE_SERVER);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept0(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return exit_accept(ctx->ret);
}

struct file___pre613 {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

// last_ref reports whether the descriptor table holds the only reference to
// f, so that closing the descriptor ends the socket. A dup'd or inherited
// descriptor leaves the connection alive.
static __always_inline int last_ref(struct file *f)
{
	if (bpf_core_field_exists(struct file, f_ref)) {
		// file_ref_t counts from 0 meaning one reference.
		return BPF_CORE_READ(f, f_ref.refcnt.counter) == 0;
	}
	return BPF_CORE_READ((struct file___pre613 *)f, f_count.counter) == 1;
}

SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) == self_tgid)
		return 0;
	struct file *f = fd_to_file(ctx->args[0]);
	struct sock *sk = file_to_sock(f);
	if (!sk)
		return 0;
	__u64 key = (__u64)sk;
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (!c || !last_ref(f))
		return 0;
	emit_close(key, c);
	return 0;
}

// A successful execve: tell user space, which probes the TLS files of the
// new program (its executable now, its libssl once the loader or the
// program maps it). No payload, no map lookups besides the counters.
SEC("tracepoint/sched/sched_process_exec")
int sched_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) == self_tgid)
		return 0;
	struct event ev = {};
	ev.kind = KIND_EXEC;
	ev.ts_ns = bpf_ktime_get_ns();
	ev.pid = id >> 32;
	ev.tid = (__u32)id;
	bpf_get_current_comm(ev.comm, sizeof(ev.comm));
	struct counters *cnt = counters();
	if (cnt)
		cnt->execs++;
	submit(&ev, 0);
	return 0;
}

SEC("tracepoint/sock/inet_sock_set_state")
int sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	__u16 port = ctx->sport;
	if (ctx->newstate == TCP_LISTEN) {
		__u32 one = 1;
		__u32 *n = bpf_map_lookup_elem(&listen_ports, &port);
		if (n)
			__sync_fetch_and_add(n, 1);
		else
			bpf_map_update_elem(&listen_ports, &port, &one, BPF_NOEXIST);
		return 0;
	}
	if (ctx->newstate != TCP_CLOSE)
		return 0;
	if (ctx->oldstate == TCP_LISTEN) {
		__u32 *n = bpf_map_lookup_elem(&listen_ports, &port);
		if (n && __sync_fetch_and_add(n, -1) <= 1)
			bpf_map_delete_elem(&listen_ports, &port);
		return 0;
	}
	__u64 key = (__u64)ctx->skaddr;
	struct conn_state *c = bpf_map_lookup_elem(&conns, &key);
	if (c)
		emit_close(key, c);
	return 0;
}


// TLS libraries (OpenSSL 1.1 and 3, and ABI-compatible forks).
//
// An entry probe notes the call on its thread; the read or write syscall
// the library makes inside the call names the socket (enter_data); the
// return probe copies the plaintext into the ring on that socket's
// connection. No library struct is read, so no offsets are needed. The
// probes read the x86-64 SysV argument registers directly.

// tls_copy sends n bytes of TLS plaintext at buf, which a TLS call moved
// in direction dir on socket sk (connection c), into the ring, deciding
// the plaintext protocol on the first call. It marks the connection TLS,
// so that its syscalls (ciphertext) are no longer copied.
static __always_inline void tls_copy(__u64 id, __u32 fd, __u64 sk, struct conn_state *c,
				     __u8 dir, __u64 buf, __u64 n)
{
	struct counters *cnt = counters();
	c->tls = 1;
	if (c->tls_proto == PROTO_NONE)
		return;
	if (c->tls_proto == PROTO_UNKNOWN) {
		__u8 head[PEEK] = {};
		__u64 len = n;
		if (len > PEEK)
			len = PEEK;
		if (bpf_probe_read_user(head, len, (void *)buf))
			return;
		int side = -1;
		__u8 proto = classify(head, len, &side);
		c->tls_proto = proto;
		if (proto == PROTO_NONE) {
			if (cnt)
				cnt->not_http++;
			return;
		}
		if (c->role == ROLE_UNKNOWN)
			c->role = infer_role(side, dir, c);
	}

	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&scratches, &zero);
	if (!s)
		return;
	data_header(&s->ev, id, fd, dir, c->tls_proto, c);

	struct walk w = {
		.sk = sk,
		.dir = dir,
		.cap = payload_cap < MAX_CAP ? payload_cap : MAX_CAP,
		.seg = buf,
		.seg_left = n,
		.flags = FLAG_TLS,
	};
	open_unit(&w, n);
	bpf_loop(MAX_STEPS, step, &w, 0);
	if (!w.done && w.open) {
		if (cnt)
			cnt->step_limit++;
		close_unit(&w);
	}
}

static __always_inline int ssl_enter(struct pt_regs *ctx, __u8 dir, int ex)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) == self_tgid)
		return 0;
	struct ssl_call *outer = bpf_map_lookup_elem(&ssl_calls, &id);
	if (outer) {
		// A TLS call made inside another (a callback): the outer call
		// owns the thread's syscalls and its plaintext.
		outer->depth++;
		return 0;
	}
	struct ssl_call call = {
		.ssl = ctx->di,
		.buf = ctx->si,
		.out_len = ex ? ctx->cx : 0,
		.dir = dir,
	};
	bpf_map_update_elem(&ssl_calls, &id, &call, BPF_ANY);
	return 0;
}

static __always_inline int ssl_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call *cp = bpf_map_lookup_elem(&ssl_calls, &id);
	if (!cp)
		return 0;
	if (cp->depth) {
		cp->depth--;
		struct counters *cnt = counters();
		if (cnt)
			cnt->tls_nested++;
		return 0;
	}
	struct ssl_call call = *cp;
	bpf_map_delete_elem(&ssl_calls, &id);

	long ret = (long)(int)ctx->ax;
	if (ret <= 0)
		return 0;
	__u64 n = ret;
	if (call.out_len) {
		// SSL_read_ex / SSL_write_ex return 1 and store the count.
		if (bpf_probe_read_user(&n, sizeof(n), (void *)call.out_len))
			return 0;
	}
	if (!n || n > 0x7fffffff)
		return 0;

	struct counters *cnt = counters();
	if (cnt)
		cnt->tls_calls++;
	struct ssl_key sk_key = {.ssl = call.ssl, .tgid = id >> 32};
	__u64 sk = call.sk;
	struct conn_state *c = NULL;
	if (sk) {
		bpf_map_update_elem(&ssl_socks, &sk_key, &sk, BPF_ANY);
		c = bpf_map_lookup_elem(&conns, &sk);
		if (!c)
			c = new_conn(sk, (struct sock *)sk, ROLE_UNKNOWN);
	} else {
		// Served from the library's buffer: the socket of the session's
		// last syscall. A socket whose state is gone (closed) is not
		// revived from a stale pointer.
		__u64 *known = bpf_map_lookup_elem(&ssl_socks, &sk_key);
		if (known) {
			sk = *known;
			c = bpf_map_lookup_elem(&conns, &sk);
		}
	}
	if (!c) {
		if (cnt)
			cnt->tls_no_conn++;
		return 0;
	}
	tls_copy(id, 0, sk, c, call.dir, call.buf, n);
	return 0;
}

SEC("uprobe/SSL_write")
int ssl_write(struct pt_regs *ctx)
{
	return ssl_enter(ctx, DIR_EGRESS, 0);
}

SEC("uprobe/SSL_write_ex")
int ssl_write_ex(struct pt_regs *ctx)
{
	return ssl_enter(ctx, DIR_EGRESS, 1);
}

SEC("uprobe/SSL_read")
int ssl_read(struct pt_regs *ctx)
{
	return ssl_enter(ctx, DIR_INGRESS, 0);
}

SEC("uprobe/SSL_read_ex")
int ssl_read_ex(struct pt_regs *ctx)
{
	return ssl_enter(ctx, DIR_INGRESS, 1);
}

// One return program serves all four: the direction and the kind of
// length were noted at entry.
SEC("uretprobe/SSL_rw")
int ssl_ret(struct pt_regs *ctx)
{
	return ssl_return(ctx);
}

// Go crypto/tls (Go 1.17 and later, amd64, register ABI).
//
// Go code gets no return probes: a uretprobe replaces the return address
// on the stack, and Go moves stacks (growth copies them) and walks them
// (GC, tracebacks, panics), so a foreign return address corrupts or
// crashes the program. Instead user space disassembles (*Conn).Read and
// (*Conn).Write and puts a plain uprobe on every RET instruction; at a RET
// the results are in registers: n in RAX, the error in RBX and RCX.
//
// Between entry and return a goroutine may block in the netpoller and
// resume on another thread, so a call is keyed by its goroutine (the g
// pointer, which ABIInternal keeps in R14) and the tgid, not by thread.
//
// A Write's plaintext is copied at its entry, not at its RET: the whole
// buffer is there, and it reaches the ring before the bytes reach the
// socket. Copied at the RET, a request could land in the ring after the
// response another goroutine already read (the writer is descheduled
// between its syscall and its RET), and the streams would be out of order;
// or after the peer's close removed the connection. crypto/tls writes all
// of b unless it fails; the RET counts the rare short write (go_tls_short)
// whose tail was reported but never sent. A Read's plaintext is copied at
// its RET, where n is known.
//
// The socket comes from the receiver, not from a nested syscall (a Read
// served from crypto/tls's buffer makes none): tls.Conn.conn is an
// interface whose data word points to a *net.TCPConn; its netFD's
// poll.FD holds Sysfd. The remote port in netFD.raddr (a *net.TCPAddr)
// must equal the socket's: any other type behind the interface (a
// wrapper, a unix socket) fails that check and is skipped rather than
// attributed to whatever socket its bytes happen to name. The offsets
// along that chain differ per binary (they come from its DWARF or a
// per-Go-version table) and reach the program in the probe's attach
// cookie, so that one loaded program serves every binary, and a process
// started later needs no map entry and no user-space round trip:
//
//	bits  0-7   offset of the interface tls.Conn.conn in tls.Conn
//	bits  8-15  offset of the *netFD in net.TCPConn (net.conn.fd)
//	bits 16-23  offset of Sysfd in netFD (netFD.pfd + poll.FD.Sysfd)
//	bits 24-31  offset of the interface netFD.raddr
//	bits 32-39  offset of Port in net.TCPAddr
//	bits 56-63  GO_COOKIE_MAGIC, so that an unset cookie is never used
#define GO_COOKIE_MAGIC 0x60

struct go_key {
	__u64 g;
	__u32 tgid;
	__u32 _pad;
};

struct go_call {
	__u64 buf;  // the []byte's data pointer
	__u64 len;  // its length
	__u64 sk;   // struct sock *
	__u32 fd;
	__u8 dir;   // enum direction
	__u8 _pad[3];
};

// go_calls: Go TLS calls in progress, by goroutine. An LRU because a call
// may never reach a RET (a panic unwinding through it).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct go_call);
} go_calls SEC(".maps");

// go_sock follows the receiver's connection chain to its socket.
static __always_inline __u64 go_sock(__u64 conn, __u64 cookie, __u32 *fd)
{
#define GO_OFF(i) ((cookie >> (8 * (i))) & 0xff)
	if (cookie >> 56 != GO_COOKIE_MAGIC || !conn)
		return 0;
	__u64 data = 0, netfd = 0, addr = 0;
	__s64 sysfd = -1, port = -1;
	if (bpf_probe_read_user(&data, sizeof(data), (void *)(conn + GO_OFF(0) + 8)) || !data)
		return 0;
	if (bpf_probe_read_user(&netfd, sizeof(netfd), (void *)(data + GO_OFF(1))) || !netfd)
		return 0;
	if (bpf_probe_read_user(&sysfd, sizeof(sysfd), (void *)(netfd + GO_OFF(2))))
		return 0;
	if (sysfd < 0 || sysfd > 0x7fffffff)
		return 0;
	if (bpf_probe_read_user(&addr, sizeof(addr), (void *)(netfd + GO_OFF(3) + 8)) || !addr)
		return 0;
	if (bpf_probe_read_user(&port, sizeof(port), (void *)(addr + GO_OFF(4))))
		return 0;
#undef GO_OFF
	struct sock *sk = file_to_sock(fd_to_file(sysfd));
	if (!sk || bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)) != port)
		return 0;
	*fd = sysfd;
	return (__u64)sk;
}

static __always_inline int go_tls_enter(struct pt_regs *ctx, __u8 dir)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) == self_tgid)
		return 0;
	struct counters *cnt = counters();
	if (cnt)
		cnt->go_tls_enter++;
	struct go_key k = {.g = ctx->r14, .tgid = id >> 32};
	struct go_call call = {.buf = ctx->bx, .len = ctx->cx, .dir = dir};
	// A goroutine whose stack must grow runs the function's prologue,
	// calls morestack and starts the function over: the entry probe fires
	// twice for one call, with the same arguments, and no RET between
	// them. The second is not a new call (a Write would be reported twice).
	struct go_call *prev = bpf_map_lookup_elem(&go_calls, &k);
	if (prev && prev->dir == dir && prev->buf == call.buf && prev->len == call.len) {
		if (cnt)
			cnt->go_tls_reentry++;
		return 0;
	}
	call.sk = go_sock(ctx->ax, bpf_get_attach_cookie(ctx), &call.fd);
	if (!call.sk) {
		if (cnt)
			cnt->go_tls_no_conn++;
		bpf_map_delete_elem(&go_calls, &k);
		return 0;
	}
	// Mark the connection TLS before the call's own syscalls (handshake
	// and records, all ciphertext) run, so that none of them is copied.
	struct conn_state *c = bpf_map_lookup_elem(&conns, &call.sk);
	if (!c)
		c = new_conn(call.sk, (struct sock *)call.sk, ROLE_UNKNOWN);
	if (!c)
		return 0;
	c->tls = 1;
	bpf_map_update_elem(&go_calls, &k, &call, BPF_ANY);
	if (dir == DIR_EGRESS && call.len && call.len <= 0x7fffffff) {
		if (cnt)
			cnt->go_tls_calls++;
		tls_copy(id, call.fd, call.sk, c, DIR_EGRESS, call.buf, call.len);
	}
	return 0;
}

SEC("uprobe/go_tls_write")
int go_tls_write(struct pt_regs *ctx)
{
	return go_tls_enter(ctx, DIR_EGRESS);
}

SEC("uprobe/go_tls_read")
int go_tls_read(struct pt_regs *ctx)
{
	return go_tls_enter(ctx, DIR_INGRESS);
}

// go_tls_ret runs at every RET of (*Conn).Read and (*Conn).Write.
SEC("uprobe/go_tls_ret")
int go_tls_ret(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if ((__u32)(id >> 32) == self_tgid)
		return 0;
	struct counters *cnt = counters();
	if (cnt)
		cnt->go_tls_ret++;
	struct go_key k = {.g = ctx->r14, .tgid = id >> 32};
	struct go_call *cp = bpf_map_lookup_elem(&go_calls, &k);
	if (!cp)
		return 0;
	struct go_call call = *cp;
	bpf_map_delete_elem(&go_calls, &k);
	long n = (long)ctx->ax;
	if (call.dir == DIR_EGRESS) {
		// Copied at entry; n < len only when the write failed.
		if ((__u64)n < call.len && call.len <= 0x7fffffff && cnt)
			cnt->go_tls_short++;
		return 0;
	}
	if (n <= 0 || n > 0x7fffffff)
		return 0;
	// Closed during the call: not revived from a stale pointer.
	struct conn_state *c = bpf_map_lookup_elem(&conns, &call.sk);
	if (!c) {
		if (cnt)
			cnt->go_tls_no_conn++;
		return 0;
	}
	if (cnt)
		cnt->go_tls_calls++;
	tls_copy(id, call.fd, call.sk, c, call.dir, call.buf, n);
	return 0;
}
