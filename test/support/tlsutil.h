/* Shared by the TLS suites: certificate paths (made by gen-certs.sh in the
 * build tree), ready-made configurations, patterned data, an in-process
 * memory transport with a byte budget (to cut a handshake at any byte),
 * TCP plumbing on 127.0.0.1 port 0, and a TLS endpoint that echoes or
 * sends patterned data and records how its session ended.
 *
 * Part of the test-support library (tlsutil.c), like helpers.h. */
#ifndef UVCTX_TEST_TLSUTIL_H
#define UVCTX_TEST_TLSUTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "helpers.h"
#include "tls/tls_internal.h"
#include "uvctx/tls.h"

#ifndef UVCTX_TLS_CERT_DIR
#error "UVCTX_TLS_CERT_DIR must point at the generated certificates"
#endif

/* ---- certificates and configurations ------------------------------------- */

const char* tu_cert(const char* name);

uvctx_tls_config_t* tu_server_cfg_with(const char* cert, const char* key,
                                       int version);

uvctx_tls_config_t* tu_server_cfg(int version);

uvctx_tls_config_t* tu_client_cfg(int version);

/* ---- patterned data ------------------------------------------------------ */

/* Binary by default; text lines (letters, '\n' every 64 bytes) for peers
 * that only echo text. */
extern int tu_text_pattern;

unsigned char tu_pat(uint64_t i);

void tu_fill(char* p, uint64_t off, size_t n);

int tu_check(const char* p, uint64_t off, size_t n);

/* ---- the memory transport -------------------------------------------------
 * Two ends of a pipe, each a uvctx stream. Writes are copied into the
 * peer's inbound buffer at once and completed from an idle "pump"; the pump
 * delivers inbound bytes to readers while the pipe's byte budget (counted
 * over both directions, in delivery order) lasts. When the budget is spent
 * with bytes still undelivered the pipe is "cut": on_cut runs once, and
 * nothing more is delivered except ends: closing one end gives the other
 * UV_EOF, and tu_mp_inject() hands an end EOF or an error. */

typedef struct tu_mpipe_s tu_mpipe_t;

typedef struct tu_mend_s {
  uvctx_stream_t s;
  tu_mpipe_t* p;
  int idx;
  char* in;
  size_t in_len; /* bytes in `in` */
  size_t in_off; /* bytes of them delivered */
  size_t in_cap;
  uvctx_write_t* wq_head;
  uvctx_write_t** wq_tail;
  uvctx_shutdown_t* sd;
  int peer_shut;   /* the peer shut its write side: EOF after the data */
  int peer_closed; /* the peer closed: EOF now */
  int inject;      /* an error (or UV_EOF) to deliver next */
  int ended;       /* EOF or an error was delivered */
  int reading;
  int closing;
  int close_done;
} tu_mend_t;

struct tu_mpipe_s {
  uv_idle_t pump;
  tu_mend_t end[2];
  size_t budget; /* SIZE_MAX: unlimited */
  size_t moved;
  int cut;
  void (*on_cut)(tu_mpipe_t* p);
  void* data;
  int pump_closed;
  size_t chunk; /* most bytes handed over per read callback (0: all) */
};

void tu_mp_pump_cb(uv_idle_t* h);
void tu_mp_kick(tu_mpipe_t* p);
tu_mend_t* tu_mend(const uvctx_stream_t* s);

int tu_mp_read_start(uvctx_stream_t* s);

int tu_mp_read_stop(uvctx_stream_t* s);

int tu_mp_write(uvctx_stream_t* s, uvctx_write_t* req, const uv_buf_t bufs[],
                unsigned nbufs);

int tu_mp_shutdown(uvctx_stream_t* s, uvctx_shutdown_t* req);

void tu_mp_close(uvctx_stream_t* s);

size_t tu_mp_wqs(const uvctx_stream_t* s);

extern const uvctx_stream_ops_t tu_mp_ops;

/* One end's work; returns 1 if it did anything. */
int tu_mp_pump_end(tu_mpipe_t* p, tu_mend_t* e);

void tu_mp_pump_cb(uv_idle_t* h);

void tu_mp_init(tu_mpipe_t* p, uv_loop_t* loop, size_t budget);

/* Makes end `i` see `err` (UV_EOF, UV_ECONNRESET) at its next read. */
void tu_mp_inject(tu_mpipe_t* p, int i, int err);

void tu_mp_pump_close_cb(uv_handle_t* h);

/* After both ends closed: frees the buffers and closes the pump. */
void tu_mp_close_pump(tu_mpipe_t* p);

/* ---- an endpoint ------------------------------------------------------------
 * A TLS session with the bookkeeping the tests assert on. Modes:
 *   TU_ECHO  echo every byte back; on EOF, shut down (close_notify).
 *   TU_SEND  send `send_len` patterned bytes, then shut down after the
 *            peer's EOF; check that what comes back is the same pattern.
 * In both, reading runs from the handshake's end and the endpoint closes
 * itself once it has both sent its shutdown and read the peer's end. */

enum { TU_IDLE = 0, TU_ECHO, TU_SEND };

typedef struct tu_ep_s {
  uvctx_tls_t tls;
  uv_tcp_t tcp;
  uvctx_stream_t uvs; /* the transport when over TCP */
  int mode;
  int hs_calls;
  int hs_status;
  int closed;
  uint64_t rx;
  uint64_t tx;
  uint64_t send_len;
  int rx_bad; /* patterned data did not match */
  int rx_end; /* 0 while reading; UV_EOF or an error */
  int writes; /* in flight */
  int write_err;
  int sd_started;
  int sd_status;
  int sd_done;
  int auto_close;
  uint64_t shut_after; /* TU_ECHO: shut down after echoing this many */
  int version;         /* what the session said at the handshake's end */
  char alpn[32];
  char sni[64];
  char cipher[64];
  char peer[256]; /* uvctx_tls_peer_subject() at the handshake's end */
  char reason[256];
  char rbuf[65536];
} tu_ep_t;

typedef struct {
  uvctx_write_t req;
  tu_ep_t* ep;
  size_t len;
  char data[];
} tu_wr_t;

void tu_ep_close_cb(uvctx_stream_t* s);

void tu_ep_maybe_close(tu_ep_t* ep);

void tu_ep_sd_cb(uvctx_shutdown_t* req, int status);

void tu_ep_shutdown(tu_ep_t* ep);

void tu_ep_write_cb(uvctx_write_t* req, int status);

int tu_ep_write(tu_ep_t* ep, const char* data, size_t len);

void tu_ep_alloc(uvctx_stream_t* s, size_t sug, uv_buf_t* buf);

void tu_ep_read(uvctx_stream_t* s, ssize_t n, const uv_buf_t* buf);

void tu_ep_send_all(tu_ep_t* ep);

void tu_ep_hs_cb(uvctx_tls_t* tls, int status);

/* Makes `ep` (zeroed memory, or after tu_accept()) a session over
 * `transport`, with ep->tls.stream.data = ep. */
void tu_ep_init(tu_ep_t* ep, uvctx_tls_config_t* cfg, uvctx_stream_t* transport,
                const char* name, int mode);

void tu_ep_start(tu_ep_t* ep, uvctx_t* ctx);

/* Closes `ep` if it is not closing yet. */
void tu_ep_close(tu_ep_t* ep);

int tu_eps_closed__(tu_ep_t* const* eps, int n);

/* Closes every endpoint of `eps` and runs the loop until all have. */
void tu_eps_close_all(tu_ep_t* const* eps, int n);

/* ---- TCP ----------------------------------------------------------------- */

/* Binds `srv` to 127.0.0.1 port 0, listens, and returns the port. */
int tu_listen(uv_loop_t* loop, uv_tcp_t* srv, uv_connection_cb cb);

/* Accepts a connection into ep->tcp and makes it ep's transport. */
void tu_accept(uv_stream_t* srv, tu_ep_t* ep);

#endif /* UVCTX_TEST_TLSUTIL_H */
