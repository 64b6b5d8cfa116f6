/* relay_peers.h: the relays bench_relay.c compares, each running on the
 * calling thread over two connected TCP sockets (in: from the sender, out:
 * to the sink) until EOF has been forwarded, reporting the thread's CPU
 * seconds. The uvctx relay lives in bench_relay.c, the peers in
 * relay_peers.c. */
#ifndef UVCTX_BENCH_RELAY_PEERS_H
#define UVCTX_BENCH_RELAY_PEERS_H

#include <uv.h>

#define RELAY_BUF (64 * 1024)
/* The bare relay's flow control, the same marks as the copy's defaults. */
#define RELAY_HIGH (4 * RELAY_BUF)
#define RELAY_LOW (1 * RELAY_BUF)

/* CPU seconds used by the calling thread so far. */
double relay_thread_cpu(void);

/* A bare libuv relay: a 64 KiB malloc'd buffer per read, freed in the write
 * callback; reading stops above RELAY_HIGH queued and resumes at or below
 * RELAY_LOW; EOF shuts the output down. */
void relay_bare(uv_os_sock_t in, uv_os_sock_t out, double* cpu);

/* The try-write variant of a bare libuv relay: every read lands in one
 * reused 64 KiB buffer and goes out at once with uv_try_write(); only the
 * tail a full socket refuses is handed to uv_write(), and reading pauses
 * until that write completes. EOF shuts the output down. */
void relay_bare_try(uv_os_sock_t in, uv_os_sock_t out, double* cpu);

/* A blocking read/write relay with one 64 KiB buffer. */
void relay_blocking(uv_os_sock_t in, uv_os_sock_t out, double* cpu);

/* Bare libuv abort: starts relaying like relay_bare(), then after
 * `after_ms` closes both handles; returns the nanoseconds from the
 * decision to the second close callback. */
uint64_t relay_bare_abort(uv_os_sock_t in, uv_os_sock_t out, uint64_t after_ms);

#endif /* UVCTX_BENCH_RELAY_PEERS_H */
