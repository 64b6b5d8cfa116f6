/* dial.c owns uvctx_dial(): resolve with the library's lookup, then two
 * racers (the first address's family, and the other family after the
 * fallback delay, RFC 8305) that each try their addresses in turn on a
 * uv_tcp_t of the request. The winner's socket moves into the caller's
 * storage (a duplicated descriptor under uv_tcp_open()), since a libuv
 * handle cannot move; every attempt is closed before the callback. Under a
 * deadline each attempt also runs a timer of its racer for its share of
 * the time left (Go's partialDeadline). */
#define _GNU_SOURCE /* dup3() */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uv_internal.h"

enum { RACER_IDLE = 0, RACER_CONNECTING, RACER_CLOSING, RACER_EXHAUSTED };

static void dial_finish(uvctx_dial_t* req) {
  int status = req->status_;

  /* Idempotent: 0 when the watch fired (we may be in its callback). */
  uvctx_watch_stop(&req->watch_);
  if (req->res_ != NULL)
    uv_freeaddrinfo(req->res_);
  uvctx_free(req->order_);
  req->res_ = NULL;
  req->order_ = NULL;
  UVCTX__UV_FINISH(req, req->cb_(req, status, status == 0 ? req->tcp_ : NULL));
}

static void dial_timer_closed(uv_handle_t* h) {
  uvctx_dial_t* req = h->data;

  if (--req->closing_ == 0)
    dial_finish(req);
}

static void racer_closed(uv_handle_t* h);
static void racer_next(uvctx_dial_t* req, int i);

/* Ends the dial with `status`: closes every attempt still open and the
 * fallback timer; the callback runs after the last close. */
static void dial_close_all(uvctx_dial_t* req, int status) {
  int i;

  req->state_ = UVCTX__UV_CLOSING;
  req->status_ = status;
  req->closing_++; /* held until every close has been started */
  for (i = 0; i < 2; i++) {
    uvctx_dial_racer_t* r = &req->racer_[i];
    if (r->state == RACER_CONNECTING) {
      r->state = RACER_CLOSING;
      r->tcp.data = req;
      uv_close((uv_handle_t*)&r->tcp, racer_closed);
    }
    if (r->state == RACER_CLOSING)
      req->closing_++;
    if (r->timer_open) {
      r->timer_open = 0;
      r->timer.data = req;
      req->closing_++;
      uv_close((uv_handle_t*)&r->timer, dial_timer_closed);
    }
  }
  if (req->timer_open_) {
    req->timer_open_ = 0;
    req->closing_++;
    uv_close((uv_handle_t*)&req->fallback_timer_, dial_timer_closed);
  }
  if (--req->closing_ == 0)
    dial_finish(req);
}

static void racer_closed(uv_handle_t* h) {
  uvctx_dial_t* req = h->data;
  int i = (uv_tcp_t*)h == &req->racer_[1].tcp;

  req->racer_[i].state = RACER_IDLE;
  if (req->state_ == UVCTX__UV_CLOSING) {
    if (--req->closing_ == 0)
      dial_finish(req);
    return;
  }
  racer_next(req, i);
}

static void racer_fail(uvctx_dial_t* req, int i, int err) {
  uvctx_dial_racer_t* r = &req->racer_[i];

  if (r->timer_open)
    uv_timer_stop(&r->timer);
  if (r->err == 0)
    r->err = err;
  r->state = RACER_CLOSING;
  r->tcp.data = req;
  uv_close((uv_handle_t*)&r->tcp, racer_closed);
}

/* Moves the connected socket of racer i into the caller's storage. */
static int dial_adopt(uvctx_dial_t* req, int i) {
  uv_os_fd_t fd;
  int nfd, rc;

  rc = uv_fileno((uv_handle_t*)&req->racer_[i].tcp, &fd);
  if (rc != 0)
    return rc;
  /* The copy is made over a placeholder socket with dup3(): atomically
   * close-on-exec, and seen by ThreadSanitizer as a descriptor this
   * thread created. TSan learns of descriptors from the calls that make
   * them but misses the closes libuv makes with a raw system call, so a
   * plain dup() (or fcntl) that reuses a number another thread's accept()
   * once had looks to it like a race on that old descriptor. */
  nfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (nfd < 0)
    return uv_translate_sys_error(errno);
  if (dup3(fd, nfd, O_CLOEXEC) < 0) {
    rc = uv_translate_sys_error(errno);
    close(nfd);
    return rc;
  }
  rc = uv_tcp_init(uvctx__uv_home(req->ctx_), req->tcp_);
  if (rc != 0) {
    close(nfd);
    return rc;
  }
  rc = uv_tcp_open(req->tcp_, nfd);
  if (rc != 0) {
    /* Rare (the descriptor is a connected socket of ours). The storage
     * was initialized: it is closed with the rest, before the callback. */
    close(nfd);
    req->closing_++;
    req->tcp_->data = req;
    uv_close((uv_handle_t*)req->tcp_, dial_timer_closed);
    return rc;
  }
  return 0;
}

static void racer_connected(uv_connect_t* c, int status) {
  uvctx_dial_t* req = c->data;
  int i = c == &req->racer_[1].req;
  int err;

  /* Closing (the dial, or this attempt when its share of the deadline
   * ran out): UV_ECANCELED from uv_close(). */
  if (req->state_ != UVCTX__UV_RUNNING ||
      req->racer_[i].state != RACER_CONNECTING)
    return;
  if (status != 0) {
    racer_fail(req, i, status);
    return;
  }
  err = uvctx_err(req->ctx_);
  if (err == 0)
    err = dial_adopt(req, i);
  dial_close_all(req, err);
}

/* Starts `t` so that it fires no sooner than `ms` after now on the
 * uv_hrtime() clock: libuv counts whole milliseconds of a cached loop time,
 * which alone can fire up to a millisecond early, so the loop's time is
 * brought up to date and one more millisecond is waited. */
static void timer_start_after(uv_timer_t* t, uv_timer_cb cb, uint64_t ms) {
  uv_update_time(t->loop);
  uv_timer_start(t, cb, ms < UINT64_MAX ? ms + 1 : ms, 0);
}

/* Racer i's attempt has run out of its share of the deadline. */
static void attempt_timeout_cb(uv_timer_t* t) {
  uvctx_dial_t* req = t->data;
  int i = t == &req->racer_[1].timer;

  if (req->state_ == UVCTX__UV_RUNNING &&
      req->racer_[i].state == RACER_CONNECTING)
    racer_fail(req, i, UV_ETIMEDOUT);
}

/* Go's partialDeadline: the time left until ctx's deadline, divided among
 * the `left` addresses still to try (this one included), but at least
 * UVCTX_DIAL_MIN_ATTEMPT_MS or all of it. Arms racer i's timer when that
 * share ends before the deadline (which ends the attempt anyway). */
static void attempt_arm(uvctx_dial_t* req, int i, size_t left) {
  uvctx_dial_racer_t* r = &req->racer_[i];
  uint64_t deadline, now, remaining, share;

  if (left < 2 || uvctx_deadline(req->ctx_, &deadline) != 1)
    return;
  now = uv_hrtime();
  if (deadline <= now)
    return;
  remaining = deadline - now;
  share = remaining / left;
  if (share < (uint64_t)UVCTX_DIAL_MIN_ATTEMPT_MS * 1000000)
    share = (uint64_t)UVCTX_DIAL_MIN_ATTEMPT_MS * 1000000;
  if (share >= remaining)
    return;
  if (!r->timer_open) {
    uv_timer_init(uvctx__uv_home(req->ctx_), &r->timer);
    r->timer.data = req;
    r->timer_open = 1;
  }
  /* Whole milliseconds, rounded up: an attempt is never cut early. */
  timer_start_after(&r->timer, attempt_timeout_cb, (share + 999999) / 1000000);
}

/* Starts racer i's next address, or marks it exhausted and, when both
 * are, ends the dial with the first address's error. */
static void racer_next(uvctx_dial_t* req, int i) {
  uvctx_dial_racer_t* r = &req->racer_[i];
  uv_loop_t* loop = uvctx__uv_home(req->ctx_);
  int rc;

  if (r->next < r->count) {
    const struct addrinfo* ai = r->addrs[r->next++];
    uv_tcp_init(loop, &r->tcp);
    r->req.data = req;
    r->state = RACER_CONNECTING;
    rc = uv_tcp_connect(&r->req, &r->tcp, ai->ai_addr, racer_connected);
    if (rc != 0)
      racer_fail(req, i, rc); /* the next address after the close */
    else
      attempt_arm(req, i, r->count - r->next + 1);
    return;
  }
  r->state = RACER_EXHAUSTED;
  if (i == 0 && req->racer_[1].count > 0 &&
      req->racer_[1].state == RACER_IDLE && req->racer_[1].next == 0) {
    /* The primary gave up before the delay: the fallback starts now. */
    uv_timer_stop(&req->fallback_timer_);
    racer_next(req, 1);
    return;
  }
  if (req->racer_[0].state == RACER_EXHAUSTED &&
      (req->racer_[1].count == 0 || req->racer_[1].state == RACER_EXHAUSTED))
    dial_close_all(req, req->racer_[0].err != 0 ? req->racer_[0].err
                                                : req->racer_[1].err);
}

static void dial_fallback_cb(uv_timer_t* t) {
  uvctx_dial_t* req = t->data;

  if (req->racer_[1].next == 0 && req->racer_[1].state == RACER_IDLE)
    racer_next(req, 1);
}

/* Takes the resolver's `res` and starts the racers: 0, or UV_EAI_NONAME
 * (no TCP address) or UV_ENOMEM with nothing started (res is then the
 * request's, freed by dial_finish()). Never calls back. */
static int dial_start_racers(uvctx_dial_t* req, struct addrinfo* res) {
  struct addrinfo* ai;
  size_t n = 0, k0 = 0, k1 = 0;
  int primary;

  req->res_ = res;
  for (ai = res; ai != NULL; ai = ai->ai_next)
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
      n++;
  if (n == 0)
    return UV_EAI_NONAME;
  req->order_ = uvctx_malloc(n * sizeof(*req->order_));
  if (req->order_ == NULL)
    return UV_ENOMEM;
  /* Split by family: the first address's family races first, the other
   * one after the delay; in order within each. One at a time: all in the
   * primary racer, in the resolver's order. */
  primary = AF_UNSPEC;
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    if (primary == AF_UNSPEC)
      primary = ai->ai_family;
    if (ai->ai_family == primary || req->fallback_delay_ms_ == UINT64_MAX)
      k0++;
  }
  k1 = n - k0;
  req->racer_[0].addrs = req->order_;
  req->racer_[1].addrs = req->order_ + k0;
  req->racer_[0].count = req->racer_[1].count = 0;
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
      continue;
    if (ai->ai_family == primary || req->fallback_delay_ms_ == UINT64_MAX)
      req->racer_[0].addrs[req->racer_[0].count++] = ai;
    else
      req->racer_[1].addrs[req->racer_[1].count++] = ai;
  }
  req->state_ = UVCTX__UV_RUNNING;
  if (k1 > 0) {
    uv_timer_init(uvctx__uv_home(req->ctx_), &req->fallback_timer_);
    req->fallback_timer_.data = req;
    req->timer_open_ = 1;
    timer_start_after(&req->fallback_timer_, dial_fallback_cb,
                      req->fallback_delay_ms_);
  }
  racer_next(req, 0);
  return 0;
}

static void dial_resolved(void* owner, int status, struct addrinfo* res) {
  uvctx_dial_t* req = owner;
  int err;

  req->lookup_ = NULL;
  err = uvctx_err(req->ctx_);
  if (err != 0 || status != 0) {
    if (res != NULL)
      uv_freeaddrinfo(res);
    req->status_ = err != 0 ? err : status;
    dial_finish(req);
    return;
  }
  req->status_ = dial_start_racers(req, res);
  if (req->status_ != 0)
    dial_finish(req);
}

/* A numeric host and port need no resolver, hence no trip through the
 * thread pool: getaddrinfo() with AI_NUMERICHOST | AI_NUMERICSERV does no
 * lookup and does not block. NULL when either is not numeric (or for any
 * other failure: the asynchronous path then reports it). */
static struct addrinfo* dial_numeric(const char* host, const char* port,
                                     const struct addrinfo* hints) {
  struct addrinfo h = *hints;
  struct addrinfo* res = NULL;

  h.ai_flags |= AI_NUMERICHOST | AI_NUMERICSERV;
  if (getaddrinfo(host, port, &h, &res) != 0)
    return NULL;
  return res;
}

static void dial_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_dial_t* req = UVCTX__UV_CONTAINER_OF(w, uvctx_dial_t, watch_);

  if (req->state_ == UVCTX__UV_CLOSING)
    return; /* already ending: its status stands */
  if (req->state_ == UVCTX__UV_RUNNING) {
    dial_close_all(req, err);
    return;
  }
  /* Not started, or resolving: nothing open; a running lookup is left to
   * finish and its result freed. */
  if (req->lookup_ != NULL)
    uvctx__lookup_abandon(req->lookup_);
  req->lookup_ = NULL;
  req->status_ = err;
  dial_finish(req);
}

int uvctx_dial(uvctx_dial_t* req, uvctx_t* ctx, const char* host,
               const char* port, const uvctx_dial_options_t* opts,
               uv_tcp_t* tcp, uvctx_dial_cb cb) {
  struct addrinfo hints;
  struct addrinfo* numeric = NULL;
  uvctx__lookup_t* lk = NULL;
  int family = opts != NULL ? opts->family : AF_UNSPEC;
  int rc;

  if (req == NULL || ctx == NULL || host == NULL || port == NULL ||
      tcp == NULL || cb == NULL)
    return UV_EINVAL;
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)
    return UV_EINVAL;
  memset(&req->racer_, 0, sizeof(req->racer_));
  req->fallback_delay_ms_ = opts != NULL && opts->fallback_delay_ms != 0
                                ? opts->fallback_delay_ms
                                : UVCTX_DIAL_DEFAULT_FALLBACK_DELAY_MS;
  if (uvctx_err(ctx) == 0) {
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = family;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    numeric = dial_numeric(host, port, &hints);
    if (numeric == NULL) {
      rc = uvctx__lookup_start(uvctx__uv_home(ctx), &lk, dial_resolved, req,
                               host, port, &hints);
      if (rc != 0)
        return rc;
    }
  }
  req->ctx_ = uvctx_ref(ctx);
  req->cb_ = cb;
  req->tcp_ = tcp;
  req->lookup_ = lk;
  req->res_ = NULL;
  req->order_ = NULL;
  req->status_ = 0;
  req->closing_ = 0;
  req->timer_open_ = 0;
  req->state_ = lk != NULL ? UVCTX__UV_RESOLVING : UVCTX__UV_NOT_STARTED;
  if (numeric != NULL) {
    rc = dial_start_racers(req, numeric);
    if (rc != 0) { /* nothing started: take it all back */
      uv_freeaddrinfo(req->res_);
      uvctx_free(req->order_);
      req->res_ = NULL;
      req->order_ = NULL;
      req->state_ = UVCTX__UV_IDLE;
      uvctx_unref(ctx);
      return rc;
    }
  }
  uvctx_watch_start(&req->watch_, ctx, dial_watch_cb);
  return 0;
}
