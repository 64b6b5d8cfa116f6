/* copy_peers.h owns the real peers the stream, copy and pipe suites run
 * against: connected TCP pairs on 127.0.0.1 (port 0) and uv_pipe_t pairs
 * (a Unix socketpair), a sender writing a position-dependent pattern with
 * random chunking, a sink verifying it (optionally rate-limited), and a
 * handle close counter. Plain libuv on purpose: the peers must not share
 * code with what they test. The sender and the sink also run over a uvctx
 * stream, for suites whose peers must be TLS sessions (the TLS shim is then
 * the peer, not what is tested).
 *
 * Part of the test-support library (copy_peers.c), like helpers.h. */
#ifndef UVCTX_TEST_COPY_PEERS_H
#define UVCTX_TEST_COPY_PEERS_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "helpers.h"
#include "uvctx/copy.h"

#define CP_CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

typedef union cp_handle_u {
  uv_handle_t h;
  uv_stream_t s;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
  uv_tty_t tty;
} cp_handle_t;

/* ---- the pattern --------------------------------------------------------- */

/* Byte `i` of every transfer: depends on the position so that a lost,
 * repeated or reordered chunk of any length shows. */
uint8_t cp_pattern(uint64_t i);

void cp_fill(char* p, uint64_t off, size_t n);

/* ---- closing plain handles ----------------------------------------------- */

extern int cp_closes_pending__;

void cp_on_close__(uv_handle_t* h);

/* Closes `x` unless it is closing already (its close is then counted by
 * whoever started it). */
void cp_close_h(uv_handle_t* h);

void cp_close(cp_handle_t* x);

void cp_wait_closed(void);

/* ---- connected pairs ----------------------------------------------------- */

typedef struct cp_listener_s {
  uv_tcp_t tcp;
  struct sockaddr_in addr;
  cp_handle_t* accept_into;
  int accepted;
} cp_listener_t;

void cp_on_conn__(uv_stream_t* l, int status);

void cp_listen(cp_listener_t* L);

void cp_unlisten(cp_listener_t* L);

extern int cp_connected__;

void cp_on_connect__(uv_connect_t* req, int status);

/* Connects `client` to the listener; the accepted end goes to `server`. */
void cp_tcp_pair(cp_listener_t* L, cp_handle_t* client, cp_handle_t* server);

/* Two connected uv_pipe_t over a Unix socketpair. */
void cp_unix_pair(cp_handle_t* a, cp_handle_t* b);

/* Small kernel buffers, so that a stalled reader fills queues quickly. */
void cp_small_buffers(cp_handle_t* x, int bytes);

/* ---- the sender ---------------------------------------------------------- */

/* A sender or a sink runs over a raw libuv stream (`s`, the copy suites'
 * peers: plain libuv on purpose) or over a uvctx stream (`st`, for peers
 * that are TLS sessions); one of the two is set. */
typedef struct cp_sender_s {
  uv_stream_t* s;
  uvctx_stream_t* st;
  uint64_t total; /* UINT64_MAX: until stopped */
  uint64_t queued;
  uint64_t written;
  uint64_t rng;
  size_t max_chunk;
  unsigned inflight;
  unsigned max_inflight;
  uint64_t writes_started;
  uint64_t writes_done;
  int shutdown_at_end;
  int shut_state; /* 0 none, 1 requested, 2 its callback ran */
  int shut_status;
  int err;
  int stopped;
  uv_shutdown_t shut_req;
  uvctx_shutdown_t ushut_req;
  void (*on_shutdown)(struct cp_sender_s* x);
  void* data;
} cp_sender_t;

typedef struct cp_wreq_s {
  union {
    uv_write_t req;
    uvctx_write_t ureq;
  };
  cp_sender_t* snd;
  size_t len;
  char bytes[];
} cp_wreq_t;

void cp_sender_write_cb__(uv_write_t* r, int status);
void cp_sender_uwrite_cb__(uvctx_write_t* r, int status);
void cp_sender_shutdown_cb__(uv_shutdown_t* r, int status);
void cp_sender_ushutdown_cb__(uvctx_shutdown_t* r, int status);

void cp_sender_pump(cp_sender_t* x);

/* Sends `total` pattern bytes in random chunks of 1..max_chunk, then shuts
 * the write half down if `shutdown_at_end`. */
void cp_sender_start(cp_sender_t* x, uv_stream_t* s, uint64_t total,
                     size_t max_chunk, uint64_t seed, int shutdown_at_end);

/* The same over a uvctx stream. */
void cp_sender_start_stream(cp_sender_t* x, uvctx_stream_t* s, uint64_t total,
                            size_t max_chunk, uint64_t seed,
                            int shutdown_at_end);

/* ---- the sink ------------------------------------------------------------ */

typedef struct cp_sink_s {
  uv_stream_t* s;
  uvctx_stream_t* st;
  uint64_t received;
  uint64_t bad; /* first wrong offset + 1; 0 while all is well */
  int eof;
  int err;
  uint64_t rng;
  size_t max_read;
  char* buf;
  int reading;
  /* Rate limiting: read at most bytes_per_tick per 10 ms. */
  uv_timer_t timer;
  int limited;
  int64_t budget;
  int64_t per_tick;
  void (*on_data)(struct cp_sink_s* k); /* after each read, optional */
  void (*on_end)(struct cp_sink_s* k);  /* after EOF or an error */
  void* data;
} cp_sink_t;

void cp_sink_alloc__(uv_handle_t* h, size_t sugg, uv_buf_t* b);

/* Checks `n` received bytes at stream offset `at` against cp_pattern();
 * records the first mismatch (1-based offset) in *bad, once. Shared by
 * every sink that verifies a patterned transfer. */
void cp_verify(uint64_t* bad, uint64_t at, const char* p, size_t n);

void cp_sink_read__(uv_stream_t* s, ssize_t n, const uv_buf_t* b);
void cp_sink_ualloc__(uvctx_stream_t* s, size_t sugg, uv_buf_t* b);
void cp_sink_uread__(uvctx_stream_t* s, ssize_t n, const uv_buf_t* b);

void cp_sink_resume(cp_sink_t* k);

void cp_sink_pause(cp_sink_t* k);

void cp_sink_tick__(uv_timer_t* t);

/* Reads and verifies everything that arrives on `s`. random_reads: read
 * sizes vary in 1..max_read. start: begin reading now (else call
 * cp_sink_resume() later). */
void cp_sink_init(cp_sink_t* k, uv_stream_t* s, size_t max_read, uint64_t seed,
                  int start);

/* The same over a uvctx stream, whose `data` stays its owner's: the sink
 * finds itself from the stream in a small table (at most CP_STREAM_SINKS
 * at a time, until cp_sink_free()). */
#define CP_STREAM_SINKS 8
void cp_sink_init_stream(cp_sink_t* k, uvctx_stream_t* s, size_t max_read,
                         uint64_t seed, int start);

/* Limits the sink to `bytes_per_sec` (in 10 ms ticks). */
void cp_sink_limit(cp_sink_t* k, uint64_t bytes_per_sec);

void cp_sink_free(cp_sink_t* k);

#endif /* UVCTX_TEST_COPY_PEERS_H */
