/* uvctx-trace-demo [TRACE.json] [REQUESTS]: a small traced workload for
 * docs/observability.md. Every 2 ms the loop starts a "request": a root
 * context with a fan-out of 1 to 256 watched children, some of them with
 * a deadline of 1 to 4 ms. A second thread cancels most roots after a short
 * random pause (so their callbacks are remote wake-ups); of the others, one
 * in ten has a root deadline of its own and one in ten is cancelled by the
 * loop itself. The trace shows
 * propagation delays growing with the fan-out and with cross-thread hops.
 * Built on the public API only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvctx.h>
#include <uvctx/trace.h>

#define MAX_FAN 256

typedef struct request_s {
  uvctx_t* root;
  uvctx_t* kids[MAX_FAN];
  uvctx_watch_t watches[MAX_FAN];
  int n;
  int pending;
  struct request_s* next; /* the canceller's queue */
} request_t;

static uv_loop_t loop;
static uvctx_loop_t* ul;
static uv_timer_t tick;
static uv_mutex_t mu;
static uv_cond_t cv;
static request_t* queue;
static int stopping;
static int started, finished, total = 300;
static unsigned seed = 12345;

static unsigned rnd(unsigned n) {
  seed = seed * 1103515245u + 12345u;
  return (seed >> 8) % n;
}

static void watch_cb(uvctx_watch_t* w, int err) {
  request_t* r = w->data;
  (void)err;
  if (--r->pending == 0) {
    int i;
    for (i = 0; i < r->n; i++)
      uvctx_release(r->kids[i]);
    uvctx_release(r->root);
    free(r);
    finished++;
  }
}

static void canceller(void* arg) {
  unsigned s = 777;
  (void)arg;
  uv_mutex_lock(&mu);
  for (;;) {
    request_t* r;
    while (queue == NULL && !stopping)
      uv_cond_wait(&cv, &mu);
    if (queue == NULL)
      break;
    r = queue;
    queue = r->next;
    uv_mutex_unlock(&mu);
    s = s * 1103515245u + 12345u;
    uv_sleep((s >> 8) % 2); /* 0 or 1 ms */
    uvctx_cancel(r->root);
    uv_mutex_lock(&mu);
  }
  uv_mutex_unlock(&mu);
}

/* Keeps running until the end so that the loop never blocks for long while
 * cross-thread cancels are due (their wake-ups do not keep it alive). */
static void tick_cb(uv_timer_t* t) {
  request_t* r;
  int i, mode, rc;
  (void)t;
  if (started == total)
    return;
  started++;
  r = calloc(1, sizeof(*r));
  if (r == NULL)
    abort();
  mode = (int)rnd(10);
  /* One request in ten runs out of time: its root has a 1-4 ms deadline. */
  rc = mode == 1
           ? uvctx_with_timeout(uvctx_background(ul), 1 + rnd(4), &r->root)
           : uvctx_with_cancel(uvctx_background(ul), &r->root);
  if (rc != 0)
    abort();
  r->n = 1 + (int)rnd(rnd(4) == 0 ? MAX_FAN : 16);
  for (i = 0; i < r->n; i++) {
    rc = rnd(8) == 0 ? uvctx_with_timeout(r->root, 1 + rnd(4), &r->kids[i])
                     : uvctx_with_cancel(r->root, &r->kids[i]);
    if (rc != 0)
      abort();
    r->watches[i].data = r;
    if (uvctx_watch_start(&r->watches[i], r->kids[i], watch_cb) != 0)
      abort();
  }
  r->pending = r->n;
  if (mode == 0) {
    uvctx_cancel(r->root); /* on the loop */
  } else if (mode >= 2) {
    uv_mutex_lock(&mu);
    r->next = queue;
    queue = r;
    uv_cond_signal(&cv);
    uv_mutex_unlock(&mu);
  }
}

int main(int argc, char** argv) {
  const char* path = argc > 1 ? argv[1] : "uvctx-demo-trace.json";
  uvctx_trace_counts_t c;
  uv_thread_t th;
  int rc;

  if (argc > 2)
    total = atoi(argv[2]);
  if (total < 1)
    total = 1;
  if (uv_loop_init(&loop) != 0 || uvctx_loop_init(&loop, &ul) != 0)
    return 1;
  rc = uvctx_loop_trace_open(ul, path, NULL);
  if (rc != 0) {
    fprintf(stderr, "trace-demo: %s: %s\n", path, uv_strerror(rc));
    return 1;
  }
  uv_mutex_init(&mu);
  uv_cond_init(&cv);
  uv_thread_create(&th, canceller, NULL);
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, tick_cb, 2, 2);
  /* The timer keeps the loop alive while requests start; watches with
   * deadlines keep it alive after; cross-thread cancels need a poll. */
  while (finished < total)
    uv_run(&loop, UV_RUN_ONCE);
  uv_timer_stop(&tick);
  uv_mutex_lock(&mu);
  stopping = 1;
  uv_cond_signal(&cv);
  uv_mutex_unlock(&mu);
  uv_thread_join(&th);
  rc = uvctx_loop_trace_stop(ul, &c);
  printf("trace-demo: %d requests; events emitted %llu, written %llu, "
         "dropped %llu -> %s\n",
         total, (unsigned long long)c.emitted, (unsigned long long)c.written,
         (unsigned long long)c.dropped, path);
  uv_close((uv_handle_t*)&tick, NULL);
  if (uvctx_loop_close(ul) != 0)
    return 1;
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_mutex_destroy(&mu);
  uv_cond_destroy(&cv);
  return rc != 0 || uv_loop_close(&loop) != 0;
}
