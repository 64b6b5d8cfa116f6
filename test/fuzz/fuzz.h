/* fuzz.h owns what the fuzz targets share: the libFuzzer entry points,
 * a check that aborts (so that libFuzzer and the replay driver both see a
 * broken invariant as a crash), a loop fixture that proves at the end of
 * every input that nothing leaked, deterministic OpenSSL (a fixed clock and
 * a seeded RAND, as OpenSSL's own fuzzers have), and a memory stream whose
 * bytes the target delivers by hand.
 *
 * Every target is built twice: against libFuzzer (UVCTX_FUZZ, clang), and
 * against replay.c, a plain main() that runs each file of the corpora once,
 * in every build of the test command. */
#ifndef UVCTX_FUZZ_H
#define UVCTX_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <uv.h>

#include "uvctx.h"
#include "uvctx/stream.h"

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

/* A broken invariant: says which and aborts. */
#define FZ_CHECK(cond)                                                     \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, \
              #cond);                                                      \
      abort();                                                             \
    }                                                                      \
  } while (0)

/* ---- reading the input --------------------------------------------------- */

/* The input as a stream of small decisions; past its end every read is 0. */
typedef struct fz_in_s {
  const uint8_t* p;
  size_t n;
} fz_in_t;

unsigned fz_byte(fz_in_t* in);
/* A value in [0, n), n > 0. */
unsigned fz_below(fz_in_t* in, unsigned n);

/* ---- one input's loop ---------------------------------------------------- */

typedef struct fz_loop_s {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uint64_t allocs; /* uvctx_live_allocations() when the input began */
} fz_loop_t;

void fz_loop_begin(fz_loop_t* f);
/* Runs the loop until nothing is left, closes the binding and the loop,
 * and checks: uvctx_loop_close() == 0, uv_loop_close() == 0, the library's
 * live allocations (and TLS sessions) back to where the input began. */
void fz_loop_end(fz_loop_t* f);
/* Runs up to `turns` UV_RUN_NOWAIT passes. */
void fz_loop_turns(fz_loop_t* f, int turns);

/* ---- deterministic OpenSSL ----------------------------------------------- */

/* Installs the seeded RAND (once) and rewinds it: each input then sees the
 * same "random" bytes, so a reproducer reproduces. time() is fixed in the
 * TLS targets' binaries (fuzz_openssl.c). */
void fz_openssl_deterministic(void);

#ifdef UVCTX_WITH_TLS
/* The configurations of the TLS targets, made once per process: a server
 * with the test certificate (server.pem), or a client that does not verify
 * (verification would end every handshake at the certificate). */
struct uvctx_tls_config_s* fz_tls_config(int server);
#endif

/* ---- a memory stream ----------------------------------------------------- */

/* A stream whose peer is the target: writes are copied into `out` and
 * completed from the loop; the target puts bytes into `in` (fz_mem_feed)
 * and they are delivered to the reader from the loop, at most `chunk`
 * bytes per read callback (0: all). Two of them and a target moving bytes
 * from one's `out` to the other's `in` make a connection whose delivery
 * the input decides. */
typedef struct fz_mem_s {
  uvctx_stream_t s;
  uv_idle_t pump;
  uint8_t* in;
  size_t in_len;
  size_t in_off;
  size_t in_cap;
  uint8_t* out; /* what was written and not taken yet */
  size_t out_len;
  size_t out_cap;
  uvctx_write_t* wq_head; /* written, callback not run yet (via next_) */
  uvctx_write_t** wq_tail;
  uvctx_shutdown_t* sd;
  size_t chunk;
  int eof;    /* deliver UV_EOF once `in` is drained */
  int inject; /* an error to deliver next (0: none) */
  int ended;  /* EOF or an error delivered */
  int reading;
  int closing;
  int close_reported;
  int pump_closed;
} fz_mem_t;

int fz_mem_init(fz_mem_t* m, uv_loop_t* loop);
/* Moves up to n bytes of `from`'s output into `to`'s input; returns how
 * many. */
size_t fz_mem_move(fz_mem_t* from, fz_mem_t* to, size_t n);
void fz_mem_feed(fz_mem_t* m, const void* p, size_t n);
/* The peer will send nothing more: UV_EOF after the data. */
void fz_mem_eof(fz_mem_t* m);
/* The next read reports `err` (UV_ECONNRESET, ...). */
void fz_mem_fail(fz_mem_t* m, int err);
/* Frees the buffers and closes the pump: after the stream's close
 * callback, once per end. */
void fz_mem_release(fz_mem_t* m);

#endif /* UVCTX_FUZZ_H */
