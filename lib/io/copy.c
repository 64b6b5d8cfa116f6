/* copy.c owns uvctx_copy_start() and uvctx_pipe_start(): one engine (an
 * "op") running one direction (copy) or two (pipe) over any uvctx stream,
 * with buffers taken only as data flows (from a shared pool or the
 * allocator), the try-write fast path, high/low-water flow control, an
 * idle and send timer and a context watch, and the rules for finishing
 * exactly once. */
#include <stddef.h>
#include <string.h>

#include "common/alloc.h"
#include "common/debug.h"
#include "io/io.h"
#include "uvctx/copy.h"

enum { OP_COPY, OP_PIPE };

/* With a pool, a direction offers its first read, and the first after
 * each time its destination refused part of one, this much (its buffer
 * size if less), and quadruples it with every read the destination takes
 * whole, up to the buffer size: what the destination refuses then waits
 * in a small write. A reader that never reads (slowhttptest -X) is found
 * out on the first read of the response, when the kernel takes a few
 * KiB of it: its connection then holds about this much instead of a
 * buffer. Destinations that keep up take whole reads nearly always, so a
 * bulk transfer pays two smaller reads at its start and after each of
 * its rare refusals. */
#define FIRST_READ (4 * 1024)

/* What is left of a read that the destination refused in part is copied
 * to memory of its own size (with a pool) only when that saves at least a
 * page of the buffer. */
#define SHRINK_MIN_SAVING 4096

/* One buffer slot and the write request that carries it. A slot is on its
 * direction's free stack, lent to the source's read, or in a write; its
 * buffer (`base`) is taken when a read needs it and given back when the
 * direction has nothing more to read for now, so an idle direction holds
 * none and a stalled one only what its queued writes carry. A write that
 * the destination refused in part may carry instead an exact-size copy of
 * what is left (`shrunk`, from the pool), its buffer already given back. */
typedef struct slot_s {
  uvctx_write_t req;
  char* base;   /* NULL while the slot holds no buffer */
  char* shrunk; /* the write's own copy of its bytes, or NULL */
  size_t held;  /* bytes a try-write left with the destination, counted
                   with this write (see on_read) */
  struct slot_s* next;
} slot_t;

typedef struct op_s op_t;

typedef struct dir_s {
  op_t* op;
  uvctx_stream_t* src;
  uvctx_stream_t* dst;
  slot_t* slots; /* `buffers` of them */
  slot_t* free;
  slot_t* lent; /* the slot whose buffer the source is reading into */
  unsigned nfree;
  unsigned inflight; /* writes whose callback has not run */
  uint64_t queued;   /* their bytes */
  uint64_t bytes;
  uint64_t blocked_since;      /* uv_hrtime() when the queue stopped reading */
  size_t rdsize;               /* bytes offered to the next read */
  uvctx__pool_waiter_t waiter; /* waiting for a pool buffer */
  int starved;                 /* why on_alloc gave no buffer */
  uvctx_shutdown_t shut;
  unsigned reading : 1;
  unsigned try_write : 1;    /* dst may offer a try-write (until UV_ENOSYS) */
  unsigned can_coalesce : 1; /* see uvctx__stream_can_coalesce() */
  unsigned coalescing : 1;   /* dst's TCP_NODELAY is off for a burst */
  unsigned eof : 1;
  unsigned shutting : 1;
  unsigned done : 1;
  unsigned cut : 1; /* counted at the close: later writes add nothing */
} dir_t;

struct op_s {
  int kind;
  void* req; /* the uvctx_copy_t or uvctx_pipe_t */
  uvctx_watch_t* watch;
  uvctx_t* ctx; /* valid while `watching`: the watch holds a reference */
  uv_loop_t* loop;
  uvctx_stream_t* streams[2];
  unsigned nstreams;
  unsigned ndirs;
  unsigned ndone;
  unsigned nslots; /* per direction */
  size_t bufsize;
  size_t high;
  size_t low;
  unsigned flags;
  uvctx_copy_pool_t* pool; /* NULL: buffers from the allocator */
  uint64_t idle_ms;
  uint64_t send_ms;
  uint64_t last_progress; /* uv_hrtime() of the last byte in or out */
  uint64_t fin_ms[2];     /* half-close timeouts (pipes) */
  int fin_wait;           /* 1 + the stream index a half-close timeout
                             waits for; 0 while none runs */
  uv_timer_t timer;
  unsigned timer_on : 1;
  unsigned watching : 1;
  unsigned finishing : 1;
  unsigned send_timed_out : 1;
  int status;
  int err_at;      /* UVCTX_PIPE_AT_* of the I/O error that ended it */
  int err_stream;  /* its index in streams[] */
  unsigned closes; /* close callbacks still due: streams and timer */
  dir_t dir[2];
};

/* How an operation that ends early treats its streams: CLOSE them (an I/O
 * error, memory), or LEAVE_IDLE_OPEN, which keeps streams with nothing in
 * flight open when UVCTX_COPY_KEEP_OPEN_IDLE asks for it (the context's
 * end, the idle timeout). */
typedef enum { OP_END_CLOSE = 0, OP_END_LEAVE_IDLE_OPEN } op_end_t;

static void op_fail(op_t* op, int status, op_end_t how);
static void op_abort(op_t* op, int status, op_end_t how);
static void on_timer(uv_timer_t* t);
static void op_fail_io(op_t* op, int status, uvctx_stream_t* s, int at);
static void op_abort_io(op_t* op, int status, uvctx_stream_t* s, int at);
static void op_maybe_complete(op_t* op);

/* ---- options ------------------------------------------------------------- */

typedef struct {
  size_t bufsize;
  unsigned buffers;
  size_t high;
  size_t low;
  uint64_t idle_ms;
  uint64_t send_ms;
  unsigned flags;
  uvctx_copy_pool_t* pool;
  uint64_t fin_ms[2];
} conf_t;

static int resolve(const uvctx_copy_options_t* o, conf_t* c) {
  uvctx_copy_options_t z;

  if (o == NULL) {
    memset(&z, 0, sizeof(z));
    o = &z;
  }
  c->pool = o->pool;
  c->bufsize = o->buffer_size ? o->buffer_size
               : c->pool      ? uvctx__pool_bufsize(c->pool)
                              : UVCTX_COPY_DEFAULT_BUFFER_SIZE;
  c->buffers = o->buffers ? o->buffers : UVCTX_COPY_DEFAULT_BUFFERS;
  if (c->bufsize < UVCTX_COPY_MIN_BUFFER_SIZE ||
      c->bufsize > UVCTX_COPY_MAX_BUFFER_SIZE ||
      c->buffers > UVCTX_COPY_MAX_BUFFERS ||
      (c->pool != NULL && c->bufsize != uvctx__pool_bufsize(c->pool)))
    return UVCTX__EINVAL("buffer_size or buffers out of range, or not the "
                         "pool's buffer size");
  /* The high-water mark respects the cap on buffers: a queue past it could
   * never be filled from them. */
  c->high = o->high_water ? o->high_water
                          : c->bufsize * UVCTX_COPY_DEFAULT_HIGH_BUFFERS;
  if (!o->high_water && c->high > c->bufsize * c->buffers)
    c->high = c->bufsize * c->buffers;
  if (c->high < c->bufsize || c->high > c->bufsize * c->buffers)
    return UVCTX__EINVAL("high_water below one buffer or above the pool");
  if (o->low_water) {
    c->low = o->low_water;
    if (c->low > c->high - c->bufsize)
      return UVCTX__EINVAL("low_water above high_water minus one buffer");
  } else {
    c->low = c->bufsize * UVCTX_COPY_DEFAULT_LOW_BUFFERS;
    if (c->low > c->high - c->bufsize)
      c->low = c->high - c->bufsize;
  }
  c->idle_ms = o->idle_timeout_ms;
  c->send_ms = o->send_timeout_ms;
  c->flags = o->flags;
  c->fin_ms[0] = o->half_close_timeout_ms[0];
  c->fin_ms[1] = o->half_close_timeout_ms[1];
  if (c->flags &
      ~(unsigned)(UVCTX_COPY_NO_SHUTDOWN | UVCTX_COPY_KEEP_OPEN_IDLE))
    return UVCTX__EINVAL("unknown flags");
  return 0;
}

/* ---- one direction ------------------------------------------------------- */

static void slot_put(dir_t* d, slot_t* s) {
  s->next = d->free;
  d->free = s;
  d->nfree++;
}

static char* buf_take(op_t* op, int* err) {
  char* b;

  if (op->pool != NULL)
    return uvctx__pool_take(op->pool, err);
  b = uvctx__malloc(op->bufsize);
  if (b == NULL)
    *err = UV_ENOMEM;
  return b;
}

static void buf_give(op_t* op, char* b) {
  if (op->pool != NULL)
    uvctx__pool_give(op->pool, b);
  else
    uvctx__free(b);
}

/* Gives back the buffers of the free slots to the pool: the direction has
 * nothing to read for now (the source said so, reading paused, or it
 * ended), or a write completed. While a burst goes on (full reads straight
 * out through the fast path) the same buffer serves read after read
 * instead. Without a pool a direction keeps the buffers it has taken (at
 * most `buffers`) until the copy ends: handing them to the allocator and
 * taking them back at every write or readable event made glibc trim and
 * regrow its heap each time; a pool keeps returned buffers itself, shared
 * by its copies, so with one a direction keeps none. */
static void dir_trim(dir_t* d) {
  slot_t* sl;

  if (d->op->pool == NULL)
    return;
  for (sl = d->free; sl != NULL; sl = sl->next)
    if (sl->base != NULL) {
      buf_give(d->op, sl->base);
      sl->base = NULL;
    }
}

/* The end: every slot's buffer goes back. */
static void dir_release(dir_t* d) {
  op_t* op;
  unsigned i;

  op = d->op;
  for (i = 0; i < op->nslots; i++)
    if (d->slots[i].base != NULL) {
      buf_give(op, d->slots[i].base);
      d->slots[i].base = NULL;
    }
}

static void on_alloc(uvctx_stream_t* s, size_t suggested, uv_buf_t* buf) {
  dir_t* d;
  slot_t* sl;

  (void)suggested;
  d = s->owner_;
  sl = d->free;
  /* No slot: not reached with libuv (reading stops when the slots run
   * out). No buffer: the pool's budget is spent, or the allocator failed
   * (`starved` says which). Either way a zero-length buffer makes the read
   * callback see UV_ENOBUFS. */
  if (sl == NULL) {
    *buf = uv_buf_init(NULL, 0);
    return;
  }
  if (sl->base == NULL) {
    sl->base = buf_take(d->op, &d->starved);
    if (sl->base == NULL) {
      *buf = uv_buf_init(NULL, 0);
      return;
    }
  }
  d->free = sl->next;
  d->nfree--;
  d->lent = sl;
  *buf = uv_buf_init(sl->base, (unsigned)d->rdsize);
}

static void read_pause(dir_t* d) {
  if (!d->reading)
    return;
  d->reading = 0;
  uvctx_stream_read_stop(d->src);
}

/* A burst of full reads starts (TCP_NODELAY off on the destination, so
 * that each write's partial last segment joins the next write), or it is
 * over (on again, which sends what is pending at once): see io.h. */
static void dir_burst(dir_t* d, int on) {
  if (!d->can_coalesce || d->coalescing == (unsigned)on)
    return;
  d->coalescing = (unsigned)on;
  uvctx__stream_coalesce(d->dst, on);
}

static void on_read(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf);

static int read_resume(dir_t* d) {
  int rc;

  if (d->reading || d->eof || d->op->finishing)
    return 0;
  rc = uvctx_stream_read_start(d->src, on_alloc, on_read);
  if (rc == 0) {
    d->reading = 1;
    d->blocked_since = 0;
  }
  return rc;
}

/* A pool buffer came back: try again (on_alloc may find the budget spent
 * again, and then the direction waits again, at the back). */
static void on_pool_wake(uvctx__pool_waiter_t* w) {
  dir_t* d;
  int rc;

  d = UVCTX__CONTAINER_OF(w, dir_t, waiter);
  rc = read_resume(d);
  if (rc != 0)
    op_abort(d->op, rc, OP_END_CLOSE);
}

/* Reading may go on while a free buffer exists and one more full buffer
 * could not push the destination's queue past the high-water mark: that is
 * what keeps the queue at or below the mark at every instant, not just on
 * average. */
static int may_read(dir_t* d) {
  return d->nfree > 0 &&
         uvctx_stream_write_queue_size(d->dst) + d->op->bufsize <= d->op->high;
}

/* The destination refused part of a read: the rest waits in a write,
 * perhaps for as long as the reader takes. With a pool it waits in a copy
 * of its own size and the buffer goes back at once, so a connection held
 * by a reader that stopped reading costs its remainder, not a buffer.
 * Without a pool the slot keeps its buffer anyway (see dir_trim). On
 * failure nothing changes: the buffer carries the write. */
static void dir_shrink(dir_t* d, slot_t* sl, uv_buf_t* b) {
  op_t* op;
  char* c;

  op = d->op;
  if (op->pool == NULL || b->len + SHRINK_MIN_SAVING > op->bufsize)
    return;
  if (b->len == 0) {
    /* An empty write that waits for what the destination kept. */
    buf_give(op, sl->base);
    sl->base = NULL;
    *b = uv_buf_init(NULL, 0);
    return;
  }
  c = uvctx__pool_shrink(op->pool, sl->base, b->base, b->len);
  if (c == NULL)
    return;
  sl->base = NULL;
  sl->shrunk = c;
  b->base = c;
}

/* A write is over (or was never accepted): its copy goes back. */
static void slot_unshrink(dir_t* d, slot_t* sl, size_t len) {
  if (sl->shrunk == NULL)
    return;
  uvctx__pool_give_shrunk(d->op->pool, sl->shrunk, len);
  sl->shrunk = NULL;
}

static size_t first_read(const op_t* op) {
  if (op->pool == NULL)
    return op->bufsize;
  return FIRST_READ < op->bufsize ? FIRST_READ : op->bufsize;
}

static void dir_done(dir_t* d);
static void on_shutdown(uvctx_shutdown_t* req, int status);

/* EOF was read and every write has completed. */
static void dir_drained(dir_t* d) {
  op_t* op;
  int rc;

  op = d->op;
  if (op->flags & UVCTX_COPY_NO_SHUTDOWN) {
    dir_done(d);
    return;
  }
  d->shut.data = d;
  rc = uvctx_stream_shutdown(&d->shut, d->dst, on_shutdown);
  if (rc != 0) {
    op_abort(op, rc, OP_END_CLOSE);
    return;
  }
  d->shutting = 1;
}

static void on_write(uvctx_write_t* req, int status) {
  dir_t* d;
  op_t* op;
  slot_t* sl;
  size_t size;
  int rc;

  d = req->data;
  op = d->op;
  sl = UVCTX__CONTAINER_OF(req, slot_t, req);
  size = uvctx_write_size(req) + sl->held;
  d->inflight--;
  d->queued -= size;
  slot_unshrink(d, sl, uvctx_write_size(req));
  sl->held = 0;
  slot_put(d, sl);
  if (status == 0) {
    if (!d->cut)
      d->bytes += size;
    if (op->idle_ms != 0) /* progress only matters to an idle timeout */
      op->last_progress = uv_hrtime();
  } else {
    op_fail_io(op, status, d->dst, UVCTX_PIPE_AT_WRITE);
  }
  if (op->finishing) {
    op_maybe_complete(op);
    return;
  }
  /* The buffer just written goes back at once (the next read takes one
   * again), so that a direction whose source is idle by the time its
   * queue drains holds none. */
  dir_trim(d);
  if (d->eof) {
    if (d->inflight == 0)
      dir_drained(d);
    return;
  }
  if (d->reading)
    return;
  /* Waiting for a pool buffer while one of ours was in this write: it is
   * back in the pool now, and this direction competes for it anew. */
  if (d->waiter.waiting)
    uvctx__pool_unwait(op->pool, &d->waiter);
  /* Resume below the low-water mark; an empty pipeline always resumes, so
   * a destination whose queue does not drain with its writes (it should)
   * cannot stall the copy forever. */
  if (d->inflight == 0 ||
      (uvctx_stream_write_queue_size(d->dst) <= op->low && may_read(d))) {
    rc = read_resume(d);
    if (rc != 0)
      op_abort_io(op, rc, d->src, UVCTX_PIPE_AT_READ);
  }
}

static void on_read(uvctx_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  dir_t* d;
  op_t* op;
  slot_t* sl;
  uv_buf_t b;
  size_t offered;
  size_t held;
  int first;
  int rc;

  d = s->owner_;
  op = d->op;
  /* The slot lent by on_alloc comes back with this read; a kind that
   * reports an error with a buffer of its own still gives it back. */
  sl = d->lent;
  d->lent = NULL;
  if (sl != NULL && (buf == NULL || buf->base != sl->base)) {
    slot_put(d, sl);
    sl = NULL;
  }
  /* The context's state is set the moment it is cancelled, its watch
   * callback comes a loop turn later: checking here (one atomic load)
   * stops the copy without moving another buffer in that turn. Bytes just
   * read are dropped, so the streams cannot be left open as if idle
   * (KEEP_OPEN_IDLE): not soft then, which closes them; the context's
   * error is still the status. */
  if (op->watching && uvctx_err(op->ctx) != 0) {
    if (sl != NULL)
      slot_put(d, sl);
    op_abort(op, uvctx_err(op->ctx),
             nread <= 0 ? OP_END_LEAVE_IDLE_OPEN : OP_END_CLOSE);
    return;
  }
  if (nread > 0) {
    if (op->idle_ms != 0)
      op->last_progress = uv_hrtime();
    b = uv_buf_init(buf->base, (unsigned)nread);
    offered = d->rdsize;
    held = 0;
    /* A whole buffer read: more is waiting, most likely. Anything less
     * ends the burst before its own write, which then leaves at once. */
    dir_burst(d, (size_t)nread == op->bufsize);
    /* The fast path: straight from the buffer just read to the kernel,
     * when nothing of ours is queued ahead (the stream answers UV_EAGAIN
     * then, to keep the order). Only the rest is queued, and the buffer
     * goes back to the pool at once when nothing is left. */
    if (d->try_write) {
      first = uvctx_stream_writes_pending(d->dst) == 0;
      rc = uvctx_stream_try_write(d->dst, &b, 1);
      if (rc > 0) {
        /* A destination may keep part of what it took, counted in its
         * write queue (a TLS session: the ciphertext its transport
         * refused). The buffer is free all the same; an empty write then
         * waits for those bytes, which count once it completes, as a
         * queued write's do. A libuv stream keeps nothing. */
        held = uvctx_stream_write_queue_size(d->dst);
        if (held > (size_t)rc)
          held = (size_t)rc;
        d->bytes += (uint64_t)rc - held;
        if ((size_t)rc == b.len && held == 0) {
          if (d->rdsize < op->bufsize)
            d->rdsize =
                d->rdsize * 4 < op->bufsize ? d->rdsize * 4 : op->bufsize;
          slot_put(d, sl);
          /* A short read ends libuv's burst: nothing more until the next
           * readiness, so the buffer goes back now. */
          if ((size_t)nread < offered)
            dir_trim(d);
          return;
        }
        b.base += rc;
        b.len -= (size_t)rc;
      } else if (rc == UV_ENOSYS) {
        /* Every read is queued whole now: no reason to read little. */
        d->try_write = 0;
        d->rdsize = op->bufsize;
        first = 0;
      } else if (rc != UV_EAGAIN) {
        slot_put(d, sl);
        op_abort_io(op, rc, d->dst, UVCTX_PIPE_AT_WRITE);
        return;
      }
      /* The transport itself refused (not a queue of ours ahead). */
      if (first) {
        d->rdsize = first_read(op);
        dir_shrink(d, sl, &b);
      }
    }
    sl->req.data = d;
    sl->held = held;
    rc = uvctx_stream_write(&sl->req, d->dst, &b, 1, on_write);
    if (rc != 0) {
      slot_unshrink(d, sl, b.len);
      sl->held = 0;
      slot_put(d, sl);
      op_abort_io(op, rc, d->dst, UVCTX_PIPE_AT_WRITE);
      return;
    }
    d->inflight++;
    d->queued += b.len + held; /* what the queued write holds or waits for */
    if (!may_read(d)) {
      dir_burst(d, 0);
      read_pause(d);
      if (d->blocked_since == 0)
        d->blocked_since = uv_hrtime();
      dir_trim(d);
    }
    return;
  }
  if (sl != NULL)
    slot_put(d, sl);
  /* Nothing more to read for now (libuv: EAGAIN), or the end: the free
   * slots' buffers go back, and the burst is over. */
  dir_trim(d);
  dir_burst(d, 0);
  if (nread == 0)
    return;
  if (nread == UV_ENOBUFS) {
    read_pause(d);
    if (d->starved == UV_ENOMEM) {
      op_abort(op, UV_ENOMEM, OP_END_CLOSE);
    } else if (d->starved == UV_ENOBUFS) {
      /* The pool's budget is spent: read again when a buffer comes back
       * (one is out, since the budget holds at least one). */
      d->starved = 0;
      uvctx__pool_wait(op->pool, &d->waiter);
    }
    return;
  }
  d->reading = 0;
  if (nread == UV_EOF) {
    d->eof = 1;
    if (d->inflight == 0)
      dir_drained(d);
    return;
  }
  op_abort_io(op, (int)nread, d->src, UVCTX_PIPE_AT_READ);
}

static void on_shutdown(uvctx_shutdown_t* req, int status) {
  dir_t* d;
  op_t* op;

  d = req->data;
  op = d->op;
  d->shutting = 0;
  /* In a pipe, a peer that has already closed its whole socket (an HTTPS
   * client that hangs up without waiting for close_notify, say) makes the
   * half-close of the way back fail with ENOTCONN or EPIPE. Every write of
   * this direction had completed, and the peer ended the conversation
   * itself: that direction is finished, not failed. A one-way copy still
   * reports it, as the caller may need to know. */
  if (op->kind == OP_PIPE && (status == UV_ENOTCONN || status == UV_EPIPE))
    status = 0;
  if (!op->finishing && status != 0)
    op_fail_io(op, status, d->dst, UVCTX_PIPE_AT_SHUTDOWN);
  if (op->finishing) {
    op_maybe_complete(op);
    return;
  }
  dir_done(d);
}

/* ---- the operation ------------------------------------------------------- */

static void op_stop_watch(op_t* op) {
  /* Watch callbacks run on this loop's thread, so a 0 from stop means the
   * callback already ran, and then `watching` was cleared by it. */
  if (op->watching) {
    uvctx_watch_stop(op->watch);
    op->watching = 0;
  }
}

static void on_timer_close(uv_handle_t* h) {
  op_t* op;

  op = UVCTX__CONTAINER_OF((uv_timer_t*)h, op_t, timer);
  op->closes--;
  op_maybe_complete(op);
}

static void on_stream_close(uvctx_stream_t* s) {
  op_t* op;

  op = ((dir_t*)s->owner_)->op;
  op->closes--;
  op_maybe_complete(op);
}

static void op_close_timer(op_t* op) {
  if (!op->timer_on)
    return;
  op->timer_on = 0;
  op->closes++;
  uv_close((uv_handle_t*)&op->timer, on_timer_close);
}

/* The streams are about to be closed under writes in flight. A write the
 * close cancels may have been partly taken by the transport, and the peer
 * receives that part: count what the transport took (what the writes in
 * flight hold minus what the destination still has queued), once, here. */
static void dir_count_cut(dir_t* d) {
  uint64_t left = uvctx_stream_write_queue_size(d->dst);

  d->bytes += d->queued > left ? d->queued - left : 0;
  d->cut = 1;
}

/* Leaves the pool's waiting list: nothing more is read. */
static void op_unwait(op_t* op) {
  unsigned i;

  if (op->pool == NULL)
    return;
  for (i = 0; i < op->ndirs; i++)
    uvctx__pool_unwait(op->pool, &op->dir[i].waiter);
}

/* A pipe's first direction has finished: the half-close timeout, if
 * set, replaces the idle timeout from now on (the idle timer machinery
 * re-arms itself from idle_ms and last_progress). */
static void half_closed(op_t* op, unsigned i) {
  if (op->fin_ms[i] == 0)
    return;
  op->idle_ms = op->fin_ms[i];
  op->fin_wait = 1 + (int)(1 - i);
  op->last_progress = uv_hrtime();
  if (!op->timer_on) {
    uv_timer_init(op->loop, &op->timer);
    op->timer_on = 1;
  }
  uv_timer_start(&op->timer, on_timer, op->idle_ms, 0);
}

static void dir_done(dir_t* d) {
  op_t* op;

  op = d->op;
  d->done = 1;
  if (++op->ndone < op->ndirs) {
    if (op->kind == OP_PIPE)
      half_closed(op, (unsigned)(d - op->dir));
    return;
  }
  op->finishing = 1;
  op->status = 0;
  op_stop_watch(op);
  op_close_timer(op);
  op_unwait(op);
  op_maybe_complete(op);
}

/* Ends the operation with `status`: the context's error or the idle
 * timeout (which may leave idle streams open), or an I/O error. A libuv write
 * cannot be recalled, so the streams are closed; their pending write callbacks
 * then run with UV_ECANCELED, and the operation completes after the last close
 * callback. Every close is counted before the first is started, so that a
 * stream kind which completes writes inside its close cannot make us complete
 * early. */
static void op_fail(op_t* op, int status, op_end_t how) {
  unsigned i;
  int idle;

  if (op->finishing)
    return;
  /* A context done before its watch callback had its turn wins over an
   * I/O error or the idle timeout: the caller cancelled first, and an
   * error from the peer noticing that is not news. The watch still holds
   * the context. (`how` decides only whether idle streams stay open.) */
  if (op->watching && uvctx_err(op->ctx) != 0) {
    status = uvctx_err(op->ctx);
    op->err_at = UVCTX_PIPE_AT_NONE;
  }
  op->finishing = 1;
  op->status = status;
  for (i = 0; i < op->ndirs; i++)
    dir_burst(&op->dir[i], 0);
  op_stop_watch(op);
  op_close_timer(op);
  op_unwait(op);
  idle = 1;
  for (i = 0; i < op->ndirs; i++)
    if (op->dir[i].inflight != 0 || op->dir[i].shutting)
      idle = 0;
  if (how == OP_END_LEAVE_IDLE_OPEN && idle &&
      (op->flags & UVCTX_COPY_KEEP_OPEN_IDLE)) {
    for (i = 0; i < op->ndirs; i++)
      read_pause(&op->dir[i]);
  } else {
    for (i = 0; i < op->ndirs; i++)
      dir_count_cut(&op->dir[i]);
    for (i = 0; i < op->nstreams; i++)
      if (!uvctx_stream_is_closing(op->streams[i]))
        op->closes++;
    for (i = 0; i < op->nstreams; i++)
      if (!uvctx_stream_is_closing(op->streams[i]))
        uvctx_stream_close(op->streams[i], on_stream_close);
  }
}

/* op_fail() and, if nothing is left in flight, the completion: the caller
 * must not touch the operation afterwards. */
static void op_abort(op_t* op, int status, op_end_t how) {
  op_fail(op, status, how);
  op_maybe_complete(op);
}

/* An I/O error on `s` while doing `at`: remembered for
 * uvctx_pipe_error_at() when it is the one that ends the operation (not
 * once it is finishing, and not when the context's error wins). */
static void op_fail_io(op_t* op, int status, uvctx_stream_t* s, int at) {
  if (!op->finishing) {
    op->err_at = at;
    op->err_stream = s == op->streams[0] ? 0 : 1;
  }
  op_fail(op, status, OP_END_CLOSE);
}

static void op_abort_io(op_t* op, int status, uvctx_stream_t* s, int at) {
  op_fail_io(op, status, s, at);
  op_maybe_complete(op);
}

static void op_complete(op_t* op) {
  uvctx_copy_t* c;
  uvctx_pipe_t* p;
  uint64_t b0;
  uint64_t b1;
  unsigned i;
  int status;

  status = op->status;
  b0 = op->dir[0].bytes;
  b1 = op->ndirs > 1 ? op->dir[1].bytes : 0;
  for (i = 0; i < op->nstreams; i++)
    op->streams[i]->owner_ = NULL;
  /* Every write has completed: every buffer is in a free slot. Giving one
   * to the pool may wake another copy's direction (it only starts
   * reading); this operation left the waiting list when it finished. */
  for (i = 0; i < op->ndirs; i++)
    dir_release(&op->dir[i]);
  if (op->pool != NULL)
    uvctx__pool_detach(op->pool);
  if (op->kind == OP_COPY) {
    c = op->req;
    c->state_ = NULL;
    c->bytes_ = b0;
    c->send_timed_out_ = op->send_timed_out;
    uvctx__free(op);
    c->cb_(c, status, b0);
  } else {
    p = op->req;
    p->state_ = NULL;
    p->bytes_[0] = b0;
    p->bytes_[1] = b1;
    p->send_timed_out_ = op->send_timed_out;
    p->err_at_ = status != 0 ? op->err_at : UVCTX_PIPE_AT_NONE;
    p->err_side_ = op->err_stream;
    uvctx__free(op);
    p->cb_(p, status, b0, b1);
  }
}

/* Completion waits for every callback the operation caused: writes,
 * shutdowns, and the close callbacks of the streams and the timer. Only
 * callbacks call this, so a completion never runs inside a start. */
static void op_maybe_complete(op_t* op) {
  unsigned i;

  if (!op->finishing || op->closes != 0)
    return;
  for (i = 0; i < op->ndirs; i++)
    if (op->dir[i].inflight != 0 || op->dir[i].shutting)
      return;
  op_complete(op);
}

static void on_watch(uvctx_watch_t* w, int err) {
  op_t* op;

  op = w->data;
  op->watching = 0;
  op_abort(op, err != 0 ? err : UV_ECANCELED, OP_END_LEAVE_IDLE_OPEN);
}

/* One timer serves the idle timeout and the send timeout. Instead of
 * restarting it on every read and write, progress only stamps
 * last_progress (uv_hrtime()), a stalled queue stamps its direction's
 * blocked_since, and the timer, when it fires, re-arms itself for the
 * nearest deadline left. libuv timers count whole cached milliseconds and
 * can fire a fraction of one early by the real clock, so the elapsed time
 * is judged with uv_hrtime(): neither timeout ever fires early. */
static uint64_t timer_first_ms(const op_t* op) {
  if (op->idle_ms == 0)
    return op->send_ms;
  if (op->send_ms == 0)
    return op->idle_ms;
  return op->idle_ms < op->send_ms ? op->idle_ms : op->send_ms;
}

static void on_timer(uv_timer_t* t) {
  op_t* op;
  uint64_t now, el, limit, next;
  unsigned i;

  op = UVCTX__CONTAINER_OF(t, op_t, timer);
  now = uv_hrtime();
  next = UINT64_MAX;
  if (op->idle_ms != 0) {
    el = now - op->last_progress;
    limit = op->idle_ms * 1000000;
    if (el >= limit) {
      if (op->fin_wait != 0) {
        op->err_at = UVCTX_PIPE_AT_HALF_CLOSED;
        op->err_stream = op->fin_wait - 1;
      }
      op_abort(op, UV_ETIMEDOUT, OP_END_LEAVE_IDLE_OPEN);
      return;
    }
    next = limit - el;
  }
  if (op->send_ms != 0) {
    limit = op->send_ms * 1000000;
    for (i = 0; i < op->ndirs; i++) {
      el = op->dir[i].blocked_since ? now - op->dir[i].blocked_since : 0;
      /* A reader that keeps the queue above the mark this long is too
       * slow: it is closed, as nginx's send_timeout does. */
      if (el >= limit) {
        op->send_timed_out = 1;
        op_abort(op, UV_ETIMEDOUT, OP_END_CLOSE);
        return;
      }
      if (limit - el < next)
        next = limit - el;
    }
  }
  /* At least 1 ms: a 0 ms timer started from a timer callback runs again
   * in the same pass in libuv 1.44. */
  uv_timer_start(t, on_timer, (next + 999999) / 1000000, 0);
}

static int op_start(void* req, int kind, uvctx_watch_t* w, uvctx_t* ctx,
                    uvctx_stream_t* a, uvctx_stream_t* b,
                    const uvctx_copy_options_t* opts, op_t** out) {
  /* Zeroed: the compiler cannot see that a refused configuration always
   * returns before cf is read. */
  conf_t cf = {0};
  op_t* op;
  dir_t* d;
  size_t total;
  unsigned ndirs;
  unsigned i;
  unsigned j;
  int rc;

  if (ctx == NULL || a == NULL || b == NULL)
    return UVCTX__EINVAL("the context or a stream is NULL");
  if (kind == OP_PIPE && a == b)
    return UVCTX__EINVAL("a pipe between a stream and itself");
  /* A detached or closing stream would take the copy's writes or close
   * and never call back: refuse it here. */
  if (uvctx__stream_unusable(a) || uvctx__stream_unusable(b))
    return UVCTX__EINVAL("a stream is closing, detached or uninitialized");
  if (uvctx_stream_loop(a) == NULL ||
      uvctx_stream_loop(a) != uvctx_stream_loop(b) ||
      uvctx_loop_uv(uvctx_home(ctx)) != uvctx_stream_loop(a))
    return UVCTX__EINVAL("the streams and the context's home are not on one "
                         "loop");
  if (a->owner_ != NULL || b->owner_ != NULL)
    return UV_EBUSY;
  rc = resolve(opts, &cf);
  if (rc != 0)
    return rc;
  if (cf.pool != NULL && uvctx__pool_loop(cf.pool) != uvctx_stream_loop(a))
    return UVCTX__EINVAL("the buffer pool is on another loop");

  /* One block for the state and the slots; buffers come as data flows. */
  ndirs = kind == OP_PIPE ? 2 : 1;
  total = sizeof(op_t) + (size_t)ndirs * cf.buffers * sizeof(slot_t);
  op = uvctx__malloc(total);
  if (op == NULL)
    return UV_ENOMEM;
  memset(op, 0, sizeof(*op));
  op->kind = kind;
  op->req = req;
  op->watch = w;
  op->ctx = ctx;
  op->loop = uvctx_stream_loop(a);
  op->streams[0] = a;
  op->streams[1] = b;
  op->nstreams = a == b ? 1 : 2;
  op->ndirs = ndirs;
  op->bufsize = cf.bufsize;
  op->nslots = cf.buffers;
  op->high = cf.high;
  op->low = cf.low;
  op->flags = cf.flags;
  op->pool = cf.pool;
  op->idle_ms = cf.idle_ms;
  op->send_ms = cf.send_ms;
  op->fin_ms[0] = kind == OP_PIPE ? cf.fin_ms[0] : 0;
  op->fin_ms[1] = kind == OP_PIPE ? cf.fin_ms[1] : 0;
  op->last_progress = uv_hrtime();
  for (i = 0; i < ndirs; i++) {
    d = &op->dir[i];
    d->op = op;
    d->src = i == 0 ? a : b;
    d->dst = i == 0 ? b : a;
    d->slots = (slot_t*)(op + 1) + (size_t)i * cf.buffers;
    d->rdsize = first_read(op);
    d->try_write = 1;
    d->can_coalesce = (unsigned)uvctx__stream_can_coalesce(d->dst);
    d->waiter.wake = on_pool_wake;
    for (j = cf.buffers; j-- > 0;) {
      d->slots[j].base = NULL;
      d->slots[j].shrunk = NULL;
      d->slots[j].held = 0;
      slot_put(d, &d->slots[j]);
    }
  }

  /* Each stream's owner_ is the direction reading it (the copy's
   * destination belongs to its only direction). */
  a->owner_ = &op->dir[0];
  b->owner_ = ndirs == 2 ? &op->dir[1] : &op->dir[0];
  w->data = op;
  rc = uvctx_watch_start(w, ctx, on_watch);
  if (rc != 0)
    goto fail_watch;
  op->watching = 1;
  /* A context already done gets no byte read: its watch callback, queued
   * for the loop, ends the operation. */
  if (uvctx_err(ctx) == 0) {
    for (i = 0; i < ndirs; i++) {
      rc = read_resume(&op->dir[i]);
      if (rc != 0)
        goto fail_read;
    }
  }
  /* Last, because a timer cannot be released without a loop turn. */
  if (cf.idle_ms != 0 || cf.send_ms != 0) {
    uv_timer_init(op->loop, &op->timer);
    op->timer_on = 1;
    uv_timer_start(&op->timer, on_timer, timer_first_ms(op), 0);
  }
  if (op->pool != NULL)
    uvctx__pool_attach(op->pool);
  *out = op;
  return 0;

fail_read:
  for (i = 0; i < ndirs; i++)
    read_pause(&op->dir[i]);
  uvctx_watch_stop(w);
fail_watch:
  a->owner_ = NULL;
  b->owner_ = NULL;
  uvctx__free(op);
  return rc;
}

int uvctx_copy_start(uvctx_copy_t* c, uvctx_t* ctx, uvctx_stream_t* src,
                     uvctx_stream_t* dst, const uvctx_copy_options_t* opts,
                     uvctx_copy_cb cb) {
  op_t* op;
  int rc;

  if (c == NULL || cb == NULL)
    return UVCTX__EINVAL("the copy or cb is NULL");
  c->cb_ = cb;
  c->bytes_ = 0;
  c->send_timed_out_ = 0;
  c->state_ = NULL;
  rc = op_start(c, OP_COPY, &c->watch_, ctx, src, dst, opts, &op);
  if (rc == 0)
    c->state_ = op;
  return rc;
}

uint64_t uvctx_copy_bytes(const uvctx_copy_t* c) {
  const op_t* op;

  if (c == NULL)
    return 0;
  op = c->state_;
  return op != NULL ? op->dir[0].bytes : c->bytes_;
}

int uvctx_pipe_start(uvctx_pipe_t* p, uvctx_t* ctx, uvctx_stream_t* a,
                     uvctx_stream_t* b, const uvctx_copy_options_t* opts,
                     uvctx_pipe_cb cb) {
  op_t* op;
  int rc;

  if (p == NULL || cb == NULL)
    return UVCTX__EINVAL("the pipe or cb is NULL");
  p->cb_ = cb;
  p->bytes_[0] = 0;
  p->bytes_[1] = 0;
  p->send_timed_out_ = 0;
  p->err_at_ = UVCTX_PIPE_AT_NONE;
  p->err_side_ = 0;
  p->state_ = NULL;
  rc = op_start(p, OP_PIPE, &p->watch_, ctx, a, b, opts, &op);
  if (rc == 0)
    p->state_ = op;
  return rc;
}

int uvctx_pipe_error_at(const uvctx_pipe_t* p, int* side) {
  if (p == NULL || p->state_ != NULL || p->err_at_ == UVCTX_PIPE_AT_NONE)
    return UVCTX_PIPE_AT_NONE;
  if (side != NULL)
    *side = p->err_side_;
  return p->err_at_;
}

void uvctx_pipe_bytes(const uvctx_pipe_t* p, uint64_t* a_to_b,
                      uint64_t* b_to_a) {
  const op_t* op;

  if (p == NULL)
    return;
  op = p->state_;
  if (a_to_b != NULL)
    *a_to_b = op != NULL ? op->dir[0].bytes : p->bytes_[0];
  if (b_to_a != NULL)
    *b_to_a = op != NULL ? op->dir[1].bytes : p->bytes_[1];
}

int uvctx_copy_send_timed_out(const uvctx_copy_t* c) {
  const op_t* op;

  if (c == NULL)
    return 0;
  op = c->state_;
  return op != NULL ? op->send_timed_out : c->send_timed_out_;
}

int uvctx_pipe_send_timed_out(const uvctx_pipe_t* p) {
  const op_t* op;

  if (p == NULL)
    return 0;
  op = p->state_;
  return op != NULL ? op->send_timed_out : p->send_timed_out_;
}
