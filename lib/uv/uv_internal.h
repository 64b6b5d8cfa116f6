/* uv_internal.h owns what the operations of lib/uv/ share: the request
 * states, the home loop of a context, the handle check, due times on the
 * uv_hrtime() clock, and the declarations of the lookup that may outlive
 * its request (getaddrinfo.c) and of signal names (signals.c). Built on the
 * public API only (and the stream's owner_ slot, see recv.c). */
#ifndef UVCTX_UV_INTERNAL_H
#define UVCTX_UV_INTERNAL_H

#include <stddef.h>

#include "uvctx.h"
#include "uvctx/uv.h"

#define UVCTX__UV_CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

/* Ends request `req` with `call`, its callback's invocation: the request
 * is idle before the callback runs (which may start it again), and the
 * reference it held on its context, read before, is dropped after. */
#define UVCTX__UV_FINISH(req, call)      \
  do {                                   \
    uvctx_t* finish_ctx__ = (req)->ctx_; \
    (req)->state_ = UVCTX__UV_IDLE;      \
    call;                                \
    uvctx_unref(finish_ctx__);           \
  } while (0)

/* The states a request goes through. IDLE is 0: the state of a request
 * whose callback has run (or that never started). */
enum {
  UVCTX__UV_IDLE = 0,
  UVCTX__UV_NOT_STARTED, /* ctx was done at the start: only the watch runs */
  UVCTX__UV_RESOLVING,   /* a dial's lookup is in flight */
  UVCTX__UV_RUNNING,     /* the libuv operation is in flight */
  UVCTX__UV_UNWATCHED,   /* in flight with no watch (a 0 ms sleep) */
  UVCTX__UV_STOPPING,    /* ctx ended it: waiting for libuv to let go */
  UVCTX__UV_CLOSING      /* closing handles before the callback */
};

/* The uv_loop_t of ctx's home loop. */
static inline uv_loop_t* uvctx__uv_home(uvctx_t* ctx) {
  return uvctx_loop_uv(uvctx_home(ctx));
}

/* uv_hrtime() `ms` milliseconds from now, UINT64_MAX if that overflows. */
static inline uint64_t uvctx__uv_due_ns(uint64_t ms) {
  uint64_t now = uv_hrtime();
  return ms > (UINT64_MAX - now) / 1000000 ? UINT64_MAX : now + ms * 1000000;
}

/* Is handle `h` usable by an operation under ctx: on ctx's home loop and
 * not closing? */
static inline int uvctx__uv_handle_ok(uvctx_t* ctx, const void* h) {
  const uv_handle_t* handle = h;
  return uv_handle_get_loop(handle) == uvctx__uv_home(ctx) &&
         !uv_is_closing(handle);
}

/* ---- lookups (getaddrinfo.c) --------------------------------------------- */

/* A uv_getaddrinfo() whose result goes to done(owner, status, res), unless
 * it was abandoned first: then the library frees the late result. The
 * block is the library's and outlives the request that started it. */
typedef void (*uvctx__lookup_cb)(void* owner, int status, struct addrinfo* res);
typedef struct uvctx__lookup_s uvctx__lookup_t;

/* Starts a lookup on `loop`. 0, UV_ENOMEM or uv_getaddrinfo()'s error
 * (nothing is left then). done never runs inside this call. */
int uvctx__lookup_start(uv_loop_t* loop, uvctx__lookup_t** out,
                        uvctx__lookup_cb done, void* owner, const char* node,
                        const char* service, const struct addrinfo* hints);

/* done will not run: a queued lookup is cancelled, a running one is left
 * to finish and its result freed. Loop thread. */
void uvctx__lookup_abandon(uvctx__lookup_t* lk);

/* ---- signal names (signals.c) -------------------------------------------- */

/* "SIGTERM" for SIGTERM, ...; "signal 42" style text for others, written
 * into buf. Returns buf or a static string. */
const char* uvctx__signal_name(int signum, char* buf, size_t size);

#endif /* UVCTX_UV_INTERNAL_H */
