/* debug.c owns the relay's debug endpoints, served on the --metrics
 * listener next to /metrics (Go's net/http/pprof, for contexts):
 *
 *   /debug/contexts[?format=json]  every live context of every loop, with a
 *                                  count per creation site at the top
 *   /debug/trace?seconds=N         a Chrome trace of every worker, N s long
 *   /debug/heatmap?seconds=N       the same recording as the heatmap SVG
 *   /debug/loops                   each worker's busy time per loop
 *                                  iteration, as a histogram (JSON)
 *   /                              the index page (page.c)
 *
 * A loop's contexts may be listed, and its tracer started and stopped,
 * only on its own thread, so the control loop posts jobs to the workers:
 * each worker has a queue under srv->stats_lock and an unreferenced
 * uv_async_t; it runs its jobs and hands them back on the control loop's
 * own async. A listing of contexts takes no job: the control loop copies
 * the records of every loop in one uvctx_loops_snapshot(), which holds
 * each loop's lock only while it copies what that lock guards, and names
 * the creation sites (dladdr()) and formats afterwards. The longest hold
 * of a worker's lock is the whole stall a listing can cost that worker
 * (it waits only if it touches a context meanwhile), and each listing
 * reports it. A worker leaving takes debug->loops_lock, which a listing
 * holds while it walks, so that no binding closes under the walk.
 *
 * A drain ends a recording early: it is answered with what it holds.
 * A worker that has stopped (drained) takes no job: relay_debug_worker_exit()
 * runs what was queued on the worker's thread after its loop stopped, and
 * later posts complete at once. A recording in progress when a worker
 * stops is stopped there and kept for the control loop. The control side
 * lives from relay_debug_open() to relay_debug_close(), which runs after
 * the last worker is done, so no worker ever wakes a closed async.
 *
 * One recording at a time (409 for another); a recording is kept in
 * memory, at most DEBUG_TRACE_MAX bytes per worker (500 beyond, when the
 * tracer reports the failed write). Traces from several workers are
 * spliced into one document: each tracer's process id (its loop's
 * address) becomes the worker's index, so every worker is one process
 * track. Each worker's time axis starts when its tracer started; the
 * tracers start within one round of jobs, so the tracks line up to
 * within that.
 *
 * The endpoints reveal peer addresses (the `peer` value of connection
 * contexts) and the program's symbols and paths (creation sites): they are
 * only answered on a loopback address, or on the address the listener
 * was bound to when it is a specific one (403 otherwise). */
#define _GNU_SOURCE /* fopencookie() */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvctx/snapshot.h>

#include "heatmap.h"
#include "json.h"
#include "relay.h"

#define DEBUG_TRACE_MAX ((size_t)64 << 20)
#define DEBUG_TRACE_MAX_SECONDS 60
#define DEBUG_HEATMAP_COLUMNS 120

enum { JOB_TRACE_START, JOB_TRACE_STOP };
enum { REQ_CONTEXTS, REQ_TRACE, REQ_HEATMAP };

/* A recording's memory: a stdio sink that refuses to grow past the cap. */
typedef struct relay_debug_buf_s {
  char* p;
  size_t len;
  size_t cap;
  int full;
} relay_debug_buf_t;

typedef struct debug_req_s debug_req_t;

struct relay_debug_job_s {
  relay_debug_job_t* next;
  debug_req_t* req;
  relay_worker_t* w;
  int kind;
  int rc;
  /* JOB_TRACE_STOP */
  relay_debug_buf_t* buf;
  uvctx_trace_counts_t counts;
};

struct debug_req_s {
  debug_req_t* next;
  debug_req_t** pprev;
  relay_debug_t* d;
  void* conn; /* NULL once detached */
  relay_debug_done_cb done;
  int kind;
  unsigned seconds;
  unsigned pending;        /* jobs out */
  int stopping;            /* the recording's stop jobs are out */
  relay_debug_job_t* jobs; /* one per worker */
  uv_timer_t timer;
  int timer_open;
};

struct relay_debug_s {
  relay_server_t* srv;
  uv_async_t async;        /* a worker handed jobs back */
  relay_debug_job_t* done; /* [srv->stats_lock] handed back */
  debug_req_t* reqs;       /* requests in progress */
  debug_req_t* recording;  /* the one trace or heatmap recording */
  int closing;
  int draining; /* the drain has begun: a recording whose starts come back
                 * later is stopped then, not timed */
  /* Held by a listing while it walks the workers' loops; a worker takes
   * it to leave (relay_debug_worker_exit()), before its loop closes. */
  uv_mutex_t loops_lock;
};

/* ---- a capped memory sink for the tracer --------------------------------- */

static ssize_t buf_write(void* cookie, const char* data, size_t n) {
  relay_debug_buf_t* b = cookie;

  if (b->len + n > DEBUG_TRACE_MAX) {
    b->full = 1;
    return -1;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 1 << 16;
    char* p;
    while (cap < b->len + n + 1)
      cap *= 2;
    p = realloc(b->p, cap);
    if (p == NULL)
      return -1;
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, data, n);
  b->len += n;
  b->p[b->len] = '\0';
  return (ssize_t)n;
}

static void buf_free(relay_debug_buf_t* b) {
  if (b != NULL)
    free(b->p);
  free(b);
}

/* ---- the worker's side --------------------------------------------------- */

/* Worker thread (or, for a stopped worker, the control loop with the
 * worker's thread gone: see post()). */
static void trace_start(relay_worker_t* w, relay_debug_job_t* j) {
  relay_debug_worker_t* dw = &w->dbg;
  cookie_io_functions_t io = {NULL, buf_write, NULL, NULL};
  uvctx_trace_options_t opts = {0, 0};

  if (!dw->open) {
    j->rc = UV_ECANCELED; /* the loop is about to close */
    return;
  }
  if (dw->recording) {
    j->rc = UV_EBUSY;
    return;
  }
  dw->buf = calloc(1, sizeof(*dw->buf));
  dw->sink = dw->buf != NULL ? fopencookie(dw->buf, "w", io) : NULL;
  if (dw->sink == NULL) {
    free(dw->buf);
    dw->buf = NULL;
    j->rc = UV_ENOMEM;
    return;
  }
  j->rc = uvctx_loop_trace_start(w->l, dw->sink, &opts);
  if (j->rc != 0) {
    fclose(dw->sink);
    buf_free(dw->buf);
    dw->sink = NULL;
    dw->buf = NULL;
    return;
  }
  dw->recording = 1;
}

/* Stops the recording; the buffer goes to the job (or NULL and an
 * error). */
static int trace_stop(relay_worker_t* w, relay_debug_buf_t** out,
                      uvctx_trace_counts_t* counts) {
  relay_debug_worker_t* dw = &w->dbg;
  int rc;

  *out = NULL;
  if (!dw->recording)
    return UV_EINVAL;
  dw->recording = 0;
  rc = uvctx_loop_trace_stop(w->l, counts);
  if (fclose(dw->sink) != 0 && rc == 0)
    rc = UV_EIO;
  if (rc == 0 && dw->buf->full)
    rc = UV_E2BIG;
  dw->sink = NULL;
  if (rc != 0)
    buf_free(dw->buf);
  else
    *out = dw->buf;
  dw->buf = NULL;
  return rc;
}

static void run_job(relay_debug_job_t* j) {
  relay_worker_t* w = j->w;

  switch (j->kind) {
    case JOB_TRACE_START:
      trace_start(w, j);
      break;
    case JOB_TRACE_STOP:
      j->rc = trace_stop(w, &j->buf, &j->counts);
      break;
  }
}

/* Under srv->stats_lock. */
static void hand_back_locked(relay_debug_t* d, relay_debug_job_t* j) {
  j->next = d->done;
  d->done = j;
}

static void run_queue(relay_worker_t* w, relay_debug_job_t* q) {
  relay_server_t* srv = w->srv;

  while (q != NULL) {
    relay_debug_job_t* j = q;
    q = j->next;
    run_job(j);
    uv_mutex_lock(&srv->stats_lock);
    hand_back_locked(srv->debug, j);
    uv_mutex_unlock(&srv->stats_lock);
  }
  uv_async_send(&srv->debug->async);
}

/* Jobs are queued newest first; run them in the order they were posted. */
static relay_debug_job_t* reversed(relay_debug_job_t* q) {
  relay_debug_job_t* r = NULL;
  while (q != NULL) {
    relay_debug_job_t* j = q;
    q = j->next;
    j->next = r;
    r = j;
  }
  return r;
}

static void on_jobs(uv_async_t* a) {
  relay_worker_t* w = a->data;
  relay_debug_job_t* q;

  uv_mutex_lock(&w->srv->stats_lock);
  q = w->dbg.queue;
  w->dbg.queue = NULL;
  uv_mutex_unlock(&w->srv->stats_lock);
  if (q != NULL)
    run_queue(w, reversed(q));
}

/* Busy time: the wall time since the last check callback less what the
 * loop spent waiting in epoll meanwhile (uv_metrics_idle_time()). A
 * worker stalled by a listing, a long callback or a lock shows as a long
 * iteration here, whatever the traffic. */
static void on_probe(uv_check_t* h) {
  relay_worker_t* w = h->data;
  relay_debug_worker_t* dw = &w->dbg;
  uint64_t now = uv_hrtime();
  uint64_t idle = uv_metrics_idle_time(&w->loop);
  uint64_t wall = now - dw->probe_last_ns;
  uint64_t waited = idle - dw->probe_last_idle;

  uvctx_histogram_record(&dw->busy, wall > waited ? wall - waited : 0);
  dw->probe_last_ns = now;
  dw->probe_last_idle = idle;
  if (now - dw->probe_published_ns >= RELAY_PROBE_PUBLISH_MS * 1000000u) {
    uv_mutex_lock(&w->srv->stats_lock);
    dw->busy_pub = dw->busy;
    uv_mutex_unlock(&w->srv->stats_lock);
    dw->probe_published_ns = now;
  }
}

int relay_debug_worker_init(relay_worker_t* w) {
  relay_debug_worker_t* dw = &w->dbg;
  int rc = uv_async_init(&w->loop, &dw->async, on_jobs);
  if (rc != 0)
    return rc;
  dw->async.data = w;
  uv_unref((uv_handle_t*)&dw->async);
  dw->open = 1;
  /* The probe is best effort: without idle-time accounting it is off. */
  if (uv_loop_configure(&w->loop, UV_METRICS_IDLE_TIME) == 0 &&
      uv_check_init(&w->loop, &dw->probe) == 0) {
    dw->probe.data = w;
    dw->probing = 1;
    dw->probe_last_ns = uv_hrtime();
    uv_check_start(&dw->probe, on_probe);
    uv_unref((uv_handle_t*)&dw->probe);
  }
  return 0;
}

void relay_debug_worker_exit(relay_worker_t* w) {
  relay_server_t* srv = w->srv;
  relay_debug_worker_t* dw = &w->dbg;
  relay_debug_job_t* q;
  relay_debug_buf_t* left = NULL;
  int left_rc = UV_ECANCELED;
  uvctx_trace_counts_t counts = {0, 0, 0};

  if (srv->debug == NULL || !dw->open)
    return;
  uv_mutex_lock(&srv->debug->loops_lock);
  uv_mutex_lock(&srv->stats_lock);
  dw->open = 0;
  q = dw->queue;
  dw->queue = NULL;
  uv_mutex_unlock(&srv->stats_lock);
  uv_mutex_unlock(&srv->debug->loops_lock);
  /* Queued before the worker stopped: run here, on its thread, with its
   * loop stopped; a start is refused (closed), a stop stops. */
  if (q != NULL)
    run_queue(w, reversed(q));
  /* A recording whose stop has not been posted yet: stop it here, before
   * uvctx_loop_close(), and leave it for that stop. */
  if (dw->recording)
    left_rc = trace_stop(w, &left, &counts);
  uv_mutex_lock(&srv->stats_lock);
  dw->left = left;
  dw->left_rc = left_rc;
  dw->left_counts = counts;
  uv_mutex_unlock(&srv->stats_lock);
  uv_close((uv_handle_t*)&dw->async, NULL);
  if (dw->probing) {
    dw->probing = 0;
    uv_close((uv_handle_t*)&dw->probe, NULL);
  }
}

/* Control loop. A stopped worker's job completes at once: a listing is
 * empty (its contexts are gone), a start is refused, a stop takes what
 * the worker left. */
static void post(relay_debug_t* d, relay_debug_job_t* j) {
  relay_server_t* srv = d->srv;
  relay_worker_t* w = j->w;
  int open;

  uv_mutex_lock(&srv->stats_lock);
  open = w->dbg.open;
  if (open) {
    j->next = w->dbg.queue;
    w->dbg.queue = j;
  } else {
    if (j->kind == JOB_TRACE_START) {
      j->rc = UV_ECANCELED;
    } else if (j->kind == JOB_TRACE_STOP) {
      /* NULL while the worker is still stopping: then it is drained. */
      j->buf = w->dbg.left;
      j->rc = w->dbg.left != NULL ? w->dbg.left_rc : UV_ECANCELED;
      j->counts = w->dbg.left_counts;
      w->dbg.left = NULL;
      w->dbg.left_rc = UV_ECANCELED;
    }
    hand_back_locked(d, j);
  }
  uv_mutex_unlock(&srv->stats_lock);
  uv_async_send(open ? &w->dbg.async : &d->async);
}

/* ---- answers ------------------------------------------------------------- */

static void text_reply(relay_http_reply_t* reply, int code, const char* fmt,
                       ...) __attribute__((format(printf, 3, 4)));

static void text_reply(relay_http_reply_t* reply, int code, const char* fmt,
                       ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof(buf), fmt, ap);
  va_end(ap);
  reply->code = code;
  reply->ctype = "text/plain; charset=utf-8";
  reply->body = strdup(buf);
  reply->len = reply->body != NULL ? strlen(reply->body) : 0;
}

/* A 200 with the text `t` (taken), or a 500 if it ran out of memory. */
static void reply_with(relay_http_reply_t* reply, relay_text_t* t,
                       const char* ctype) {
  if (t->oom) {
    free(t->p);
    text_reply(reply, 500, "out of memory\n");
    return;
  }
  reply->code = 200;
  reply->ctype = ctype;
  reply->body = t->p;
  reply->len = t->len;
}

/* ---- rendering: /debug/contexts ------------------------------------------ */

typedef struct site_count_s {
  const void* site;
  size_t count;
  char* name;
} site_count_t;

static int cmp_site_ptr(const void* a, const void* b) {
  const uvctx_ctx_info_t* x = *(const uvctx_ctx_info_t* const*)a;
  const uvctx_ctx_info_t* y = *(const uvctx_ctx_info_t* const*)b;
  return x->site < y->site ? -1 : x->site > y->site;
}

static int cmp_count(const void* a, const void* b) {
  const site_count_t* x = a;
  const site_count_t* y = b;
  if (x->count != y->count)
    return x->count > y->count ? -1 : 1;
  return strcmp(x->name, y->name);
}

static char* site_name(const void* site) {
  int n = uvctx_site_format(site, NULL, 0);
  char* s = n >= 0 ? malloc((size_t)n + 1) : NULL;
  if (s != NULL)
    uvctx_site_format(site, s, (size_t)n + 1);
  return s;
}

/* The sites of every record of every loop, counted, most first. Each
 * distinct site is named once. NULL (and *n 0) when out of memory or
 * with no record. */
static site_count_t* count_sites(uvctx_ctx_info_t* const* recs,
                                 const size_t* nrecs, size_t nloops,
                                 size_t* n) {
  const uvctx_ctx_info_t** all;
  site_count_t* out = NULL;
  size_t total = 0, i, k, m = 0;

  *n = 0;
  for (i = 0; i < nloops; i++)
    total += nrecs[i];
  if (total == 0 || (all = malloc(total * sizeof(*all))) == NULL)
    return NULL;
  for (i = 0, m = 0; i < nloops; i++)
    for (k = 0; k < nrecs[i]; k++)
      all[m++] = &recs[i][k];
  qsort(all, total, sizeof(*all), cmp_site_ptr);
  out = calloc(total, sizeof(*out));
  if (out == NULL) {
    free(all);
    return NULL;
  }
  for (i = 0, m = 0; i < total; i++) {
    if (m > 0 && out[m - 1].site == all[i]->site) {
      out[m - 1].count++;
      continue;
    }
    out[m].site = all[i]->site;
    out[m].count = 1;
    out[m].name = site_name(all[i]->site);
    if (out[m].name == NULL)
      out[m].name = strdup("?");
    if (out[m].name == NULL)
      break;
    m++;
  }
  free(all);
  qsort(out, m, sizeof(*out), cmp_count);
  *n = m;
  return out;
}

static const char* site_of(const site_count_t* sites, size_t n,
                           const void* site) {
  size_t i;
  for (i = 0; i < n; i++)
    if (sites[i].site == site)
      return sites[i].name;
  return "?";
}

static const char* state_name(int err) {
  return err == UV_ECANCELED   ? "canceled"
         : err == UV_ETIMEDOUT ? "timedout"
                               : "live";
}

/* Site names are looked up through a pointer-sorted copy of the counts,
 * so that listing N contexts costs N log(sites). */
static int cmp_count_ptr(const void* a, const void* b) {
  const site_count_t* x = a;
  const site_count_t* y = b;
  return x->site < y->site ? -1 : x->site > y->site;
}

static const char* lookup(const site_count_t* by_ptr, size_t n,
                          const void* site) {
  site_count_t key;
  const site_count_t* hit;
  key.site = site;
  hit = bsearch(&key, by_ptr, n, sizeof(key), cmp_count_ptr);
  return hit != NULL ? hit->name : site_of(by_ptr, n, site);
}

static void loop_name(char* out, size_t len, relay_server_t* srv, size_t i) {
  if (i < srv->nworkers)
    snprintf(out, len, "worker-%u", (unsigned)i);
  else
    snprintf(out, len, "control");
}

static void render_contexts(relay_server_t* srv, int json,
                            uvctx_ctx_info_t* const* recs, const size_t* nrecs,
                            const uint64_t* copy_ns, const int* rcs,
                            relay_http_reply_t* reply) {
  size_t nloops = srv->nworkers + 1;
  site_count_t* sites;
  site_count_t* by_ptr = NULL;
  size_t nsites, total = 0, i, k;
  uint64_t worst = 0;
  size_t worst_at = 0;
  relay_text_t t = {NULL, 0, 0, 0};
  char name[32];

  for (i = 0; i < nloops; i++) {
    total += nrecs[i];
    if (i < srv->nworkers && copy_ns[i] >= worst) {
      worst = copy_ns[i];
      worst_at = i;
    }
  }
  sites = count_sites(recs, nrecs, nloops, &nsites);
  if (nsites > 0 && (by_ptr = malloc(nsites * sizeof(*by_ptr))) != NULL) {
    memcpy(by_ptr, sites, nsites * sizeof(*by_ptr));
    qsort(by_ptr, nsites, sizeof(*by_ptr), cmp_count_ptr);
  }
  if (total > 0 && by_ptr == NULL)
    t.oom = 1;

  if (json) {
    relay_text_add(&t,
                   "{\"contexts\":%zu,\"longest_copy_us\":%.1f,"
                   "\"longest_copy_loop\":\"worker-%zu\",\"sites\":[",
                   total, worst / 1e3, worst_at);
    for (i = 0; i < nsites; i++) {
      relay_text_add(&t, "%s\n{\"count\":%zu,\"site\":\"", i ? "," : "",
                     sites[i].count);
      relay_text_json(&t, sites[i].name);
      relay_text_add(&t, "\"}");
    }
    relay_text_add(&t, "],\n\"loops\":[");
    for (i = 0; i < nloops; i++) {
      loop_name(name, sizeof(name), srv, i);
      relay_text_add(&t,
                     "%s\n{\"loop\":\"%s\",\"error\":%s%s%s,\"copy_us\":%.1f,"
                     "\"contexts\":[",
                     i ? "," : "", name, rcs[i] ? "\"" : "",
                     rcs[i] ? uv_err_name(rcs[i]) : "null", rcs[i] ? "\"" : "",
                     i < srv->nworkers ? copy_ns[i] / 1e3 : 0.0);
      for (k = 0; k < nrecs[i]; k++) {
        const uvctx_ctx_info_t* c = &recs[i][k];
        relay_text_add(&t,
                       "%s\n{\"ctx\":\"%p\",\"kind\":\"%s\",\"parent\":\"%p\","
                       "\"refs\":%u,\"state\":\"%s\"",
                       k ? "," : "", c->id, c->kind, c->parent, c->refs,
                       state_name(c->err));
        if (c->key != NULL) {
          relay_text_add(&t, ",\"key\":\"");
          relay_text_json(&t, c->key);
          relay_text_add(&t, "\"");
        }
        if (c->has_deadline)
          relay_text_add(&t, ",\"deadline_ns\":%" PRIu64, c->deadline_ns);
        relay_text_add(&t, ",\"site\":\"");
        relay_text_json(&t, lookup(by_ptr, nsites, c->site));
        relay_text_add(&t, "\"}");
      }
      relay_text_add(&t, "]}");
    }
    relay_text_add(&t, "]}\n");
  } else {
    relay_text_add(&t,
                   "uvctx-relay: %zu live context(s) on %u worker(s) and the "
                   "control loop; longest copy %.1f us (worker-%zu)\n\n"
                   "by creation site:\n",
                   total, srv->nworkers, worst / 1e3, worst_at);
    for (i = 0; i < nsites; i++)
      relay_text_add(&t, "%8zu  %s\n", sites[i].count, sites[i].name);
    for (i = 0; i < nloops; i++) {
      loop_name(name, sizeof(name), srv, i);
      relay_text_add(&t, "\n%s: %zu live context(s)", name, nrecs[i]);
      if (i < srv->nworkers)
        relay_text_add(&t, ", copied in %.1f us", copy_ns[i] / 1e3);
      if (rcs[i] != 0)
        relay_text_add(&t, " (%s)", uv_strerror(rcs[i]));
      relay_text_add(&t, "\n");
      /* The lines of uvctx_loop_dump(). */
      for (k = 0; k < nrecs[i]; k++) {
        const uvctx_ctx_info_t* c = &recs[i][k];
        relay_text_add(&t, "  ctx %p kind=%s parent=%p refs=%u state=%s", c->id,
                       c->kind, c->parent, c->refs, state_name(c->err));
        if (c->key != NULL)
          relay_text_add(&t, " key=%s", c->key);
        if (c->has_deadline)
          relay_text_add(&t, " deadline=%" PRIu64, c->deadline_ns);
        relay_text_add(&t, " created at %s\n", lookup(by_ptr, nsites, c->site));
      }
    }
  }
  for (i = 0; i < nsites; i++)
    free(sites[i].name);
  free(sites);
  free(by_ptr);
  reply_with(reply, &t,
             json ? "application/json" : "text/plain; charset=utf-8");
}

/* GET /debug/contexts, answered at once on the control loop: the records
 * of every worker still running and of the control loop, in one walk. */
static void list_contexts(relay_server_t* srv, int json,
                          relay_http_reply_t* reply) {
  relay_debug_t* d = srv->debug;
  size_t nloops = srv->nworkers + 1, k = 0, i;
  const uvctx_loop_t** loops = calloc(nloops, sizeof(*loops));
  size_t* at = calloc(nloops, sizeof(*at)); /* slot of loops[j] */
  uvctx_ctx_info_t** recs = calloc(nloops, sizeof(*recs));
  uvctx_ctx_info_t** got = calloc(nloops, sizeof(*got));
  size_t* nrecs = calloc(nloops, sizeof(*nrecs));
  size_t* ngot = calloc(nloops, sizeof(*ngot));
  uint64_t* hold = calloc(nloops, sizeof(*hold));
  uint64_t* held = calloc(nloops, sizeof(*held));
  int* rcs = calloc(nloops, sizeof(*rcs));
  int rc;

  if (loops == NULL || at == NULL || recs == NULL || got == NULL ||
      nrecs == NULL || ngot == NULL || hold == NULL || held == NULL ||
      rcs == NULL) {
    text_reply(reply, 500, "out of memory\n");
    goto done;
  }
  uv_mutex_lock(&d->loops_lock);
  uv_mutex_lock(&srv->stats_lock);
  for (i = 0; i < srv->nworkers; i++) {
    if (srv->workers[i].dbg.open) {
      at[k] = i;
      loops[k++] = srv->workers[i].l;
    } else {
      rcs[i] = UV_ECANCELED; /* stopped: its loop is closing */
    }
  }
  uv_mutex_unlock(&srv->stats_lock);
  at[k] = nloops - 1;
  loops[k++] = srv->l;
  rc = uvctx_loops_snapshot(loops, k, got, ngot, held);
  uv_mutex_unlock(&d->loops_lock);
  if (rc != 0) {
    text_reply(reply, 500, "listing the contexts failed: %s\n",
               uv_strerror(rc));
    goto done;
  }
  for (i = 0; i < k; i++) {
    recs[at[i]] = got[i];
    nrecs[at[i]] = ngot[i];
    hold[at[i]] = held[i];
  }
  render_contexts(srv, json, recs, nrecs, hold, rcs, reply);
  for (i = 0; i < nloops; i++)
    uvctx_snapshot_free(recs[i]);
done:
  free(loops);
  free(at);
  free(recs);
  free(got);
  free(nrecs);
  free(ngot);
  free(hold);
  free(held);
  free(rcs);
}

/* ---- rendering: /debug/trace and /debug/heatmap -------------------------- */

/* The part of a tracer's document between `from` and `to` (exclusive), or
 * NULL. */
static const char* between(const char* text, const char* from, const char* to,
                           size_t* n) {
  const char* a = strstr(text, from);
  const char* b;
  if (a == NULL)
    return NULL;
  a += strlen(from);
  b = strstr(a, to);
  if (b == NULL)
    return NULL;
  *n = (size_t)(b - a);
  return a;
}

/* Appends text[0..n) with every `from` replaced by `to`. */
static void add_replacing(relay_text_t* t, const char* text, size_t n,
                          const char* from, const char* to) {
  size_t flen = strlen(from), tlen = strlen(to);
  const char* end = text + n;
  const char* p = text;

  while (p < end) {
    const char* hit = memmem(p, (size_t)(end - p), from, flen);
    if (hit == NULL) {
      relay_text_raw(t, p, (size_t)(end - p));
      break;
    }
    relay_text_raw(t, p, (size_t)(hit - p));
    relay_text_raw(t, to, tlen);
    p = hit + flen;
  }
}

static void render_trace(debug_req_t* r, relay_http_reply_t* reply) {
  relay_server_t* srv = r->d->srv;
  relay_text_t t = {NULL, 0, 0, 0};
  uint64_t emitted = 0, written = 0, dropped = 0;
  unsigned i;
  int first = 1;

  for (i = 0; i < srv->nworkers; i++) {
    emitted += r->jobs[i].counts.emitted;
    written += r->jobs[i].counts.written;
    dropped += r->jobs[i].counts.dropped;
  }
  relay_text_add(&t, "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n");
  for (i = 0; i < srv->nworkers; i++) {
    relay_debug_buf_t* b = r->jobs[i].buf;
    const char* ev;
    size_t n;
    char pid[64], name[64], as_pid[32], as_name[64];
    if (b == NULL || b->p == NULL)
      continue;
    ev = between(b->p, "\"traceEvents\":[\n", "\n],\n\"metadata\":", &n);
    if (ev == NULL || n == 0)
      continue;
    snprintf(pid, sizeof(pid), "\"pid\":\"0x%" PRIxPTR "\"",
             (uintptr_t)srv->workers[i].l);
    snprintf(as_pid, sizeof(as_pid), "\"pid\":%u", i);
    snprintf(name, sizeof(name), "\"uvctx loop 0x%" PRIxPTR "\"",
             (uintptr_t)srv->workers[i].l);
    snprintf(as_name, sizeof(as_name), "\"uvctx-relay worker %u\"", i);
    if (!first)
      relay_text_add(&t, ",\n");
    first = 0;
    /* The process name first, then the pids. */
    {
      relay_text_t one = {NULL, 0, 0, 0};
      add_replacing(&one, ev, n, name, as_name);
      if (one.p != NULL)
        add_replacing(&t, one.p, one.len, pid, as_pid);
      t.oom |= one.oom;
      free(one.p);
    }
  }
  relay_text_add(&t,
                 "\n],\n\"metadata\":{\"uvctx-relay-seconds\":%u,"
                 "\"uvctx-relay-workers\":%u,"
                 "\"uvctx-events-emitted\":%" PRIu64 ","
                 "\"uvctx-events-written\":%" PRIu64 ","
                 "\"uvctx-events-dropped\":%" PRIu64 "}}\n",
                 r->seconds, srv->nworkers, emitted, written, dropped);
  reply_with(reply, &t, "application/json");
}

/* The watch callbacks of every worker's trace, as heatmap points. */
static void render_heatmap(debug_req_t* r, relay_http_reply_t* reply) {
  relay_server_t* srv = r->d->srv;
  heatmap_point_t* pts = NULL;
  size_t n = 0, cap = 0, k;
  unsigned i;
  char* svg = NULL;
  size_t svg_len = 0;
  FILE* f;
  int rc = 0;

  for (i = 0; i < srv->nworkers && rc == 0; i++) {
    relay_debug_buf_t* b = r->jobs[i].buf;
    json_t* doc;
    const json_t* evs;
    if (b == NULL || b->p == NULL)
      continue;
    doc = json_parse(b->p, b->len, NULL, 0);
    evs = json_get(doc, "traceEvents");
    for (k = 0; evs != NULL && evs->type == JSON_ARRAY && k < evs->n; k++) {
      const json_t* e = &evs->items[k];
      const char* name = json_get_str(e, "name");
      const char* ph = json_get_str(e, "ph");
      if (name == NULL || ph == NULL || strcmp(name, "callback") != 0 ||
          strcmp(ph, "X") != 0)
        continue;
      if (n == cap) {
        heatmap_point_t* p;
        cap = cap ? cap * 2 : 1024;
        p = realloc(pts, cap * sizeof(*p));
        if (p == NULL) {
          rc = -1;
          break;
        }
        pts = p;
      }
      pts[n].ts_us = json_get_num(e, "ts", 0);
      pts[n].delay_us = json_get_num(json_get(e, "args"), "delay_us", -1);
      n++;
    }
    json_free(doc);
  }
  f = rc == 0 ? open_memstream(&svg, &svg_len) : NULL;
  if (f == NULL || heatmap_write_svg(f, pts, n, DEBUG_HEATMAP_COLUMNS) != 0)
    rc = -1;
  if (f != NULL && fclose(f) != 0)
    rc = -1;
  free(pts);
  {
    relay_text_t t = {svg, svg_len, svg_len, rc != 0};
    reply_with(reply, &t, "image/svg+xml");
  }
}

/* ---- rendering: /debug/loops --------------------------------------------- */

/* The recording's state: "none"; "starting" while the workers' tracers
 * start; "on" while they record; "stopping" once its stops are out. */
static const char* recording_state(const relay_debug_t* d) {
  const debug_req_t* r = d != NULL ? d->recording : NULL;

  if (r == NULL)
    return "none";
  if (r->stopping)
    return "stopping";
  return r->pending > 0 ? "starting" : "on";
}

static void render_loops(relay_server_t* srv, relay_http_reply_t* reply) {
  relay_text_t t = {NULL, 0, 0, 0};
  uvctx_histogram_t* h = calloc(srv->nworkers ? srv->nworkers : 1, sizeof(*h));
  unsigned i, b;

  if (h == NULL) {
    text_reply(reply, 500, "out of memory\n");
    return;
  }
  uv_mutex_lock(&srv->stats_lock);
  for (i = 0; i < srv->nworkers; i++)
    h[i] = srv->workers[i].dbg.busy_pub;
  uv_mutex_unlock(&srv->stats_lock);
  relay_text_add(&t,
                 "{\"recording\":\"%s\",\"published_every_ms\":%d,"
                 "\"bounds_ns\":[",
                 recording_state(srv->debug), RELAY_PROBE_PUBLISH_MS);
  for (b = 0; b + 1 < UVCTX_HISTOGRAM_BUCKETS; b++)
    relay_text_add(&t, "%s%" PRIu64, b ? "," : "", uvctx_histogram_bound(b));
  relay_text_add(&t, "],\n\"loops\":[");
  for (i = 0; i < srv->nworkers; i++) {
    relay_text_add(&t,
                   "%s\n{\"loop\":\"worker-%u\",\"iterations\":%" PRIu64
                   ",\"busy_ns\":%" PRIu64 ",\"p50_ns\":%" PRIu64
                   ",\"p99_ns\":%" PRIu64 ",\"max_ns\":%" PRIu64
                   ",\"buckets\":[",
                   i ? "," : "", i, h[i].count, h[i].sum_ns,
                   uvctx_histogram_quantile(&h[i], 0.5),
                   uvctx_histogram_quantile(&h[i], 0.99), h[i].max_ns);
    for (b = 0; b < UVCTX_HISTOGRAM_BUCKETS; b++)
      relay_text_add(&t, "%s%" PRIu64, b ? "," : "", h[i].buckets[b]);
    relay_text_add(&t, "]}");
  }
  relay_text_add(&t, "]}\n");
  free(h);
  reply_with(reply, &t, "application/json");
}

/* ---- requests ------------------------------------------------------------ */

static void on_timer_closed(uv_handle_t* h);

static void req_free(debug_req_t* r) {
  unsigned i;

  *r->pprev = r->next;
  if (r->next != NULL)
    r->next->pprev = r->pprev;
  if (r->d->recording == r)
    r->d->recording = NULL;
  for (i = 0; i < r->d->srv->nworkers; i++)
    buf_free(r->jobs[i].buf);
  free(r->jobs);
  if (r->timer_open) {
    r->timer_open = 0;
    uv_close((uv_handle_t*)&r->timer, on_timer_closed);
    return;
  }
  free(r);
}

static void on_timer_closed(uv_handle_t* h) {
  free(h->data);
}

static void finish(debug_req_t* r, relay_http_reply_t* reply) {
  if (r->conn != NULL)
    r->done(r->conn, reply);
  else
    free(reply->body);
  req_free(r);
}

static void post_all(debug_req_t* r, int kind) {
  relay_server_t* srv = r->d->srv;
  unsigned i;

  r->pending = srv->nworkers;
  for (i = 0; i < srv->nworkers; i++) {
    r->jobs[i].kind = kind;
    r->jobs[i].rc = 0;
    post(r->d, &r->jobs[i]);
  }
}

static void on_recorded(uv_timer_t* t) {
  debug_req_t* r = t->data;
  r->stopping = 1;
  post_all(r, JOB_TRACE_STOP);
}

/* Every job of `r` is back. */
static void jobs_back(debug_req_t* r) {
  relay_server_t* srv = r->d->srv;
  relay_http_reply_t reply = {0, NULL, NULL, 0};
  unsigned i;
  int failed = 0;

  if (!r->stopping) {
    /* The starts are back. With any refused, stop those that started. */
    for (i = 0; i < srv->nworkers; i++)
      if (r->jobs[i].rc != 0)
        failed = r->jobs[i].rc;
    if (failed == 0 && !r->d->closing) {
      /* A drain that began while the starts were out found nothing to
       * stop (relay_debug_draining()): the recording ends now, answered
       * with what it holds, as it would have then. */
      if (r->d->draining)
        on_recorded(&r->timer);
      else
        uv_timer_start(&r->timer, on_recorded, (uint64_t)r->seconds * 1000, 0);
      return;
    }
    r->stopping = 1;
    r->pending = 0;
    for (i = 0; i < srv->nworkers; i++) {
      if (r->jobs[i].rc == 0) {
        r->jobs[i].kind = JOB_TRACE_STOP;
        r->pending++;
        post(r->d, &r->jobs[i]);
      } else {
        r->jobs[i].kind = -1; /* stays failed: the answer says why */
      }
    }
    r->seconds = 0;
    if (r->pending > 0)
      return;
  }
  for (i = 0; i < srv->nworkers; i++)
    if (r->jobs[i].rc != 0 && failed == 0)
      failed = r->jobs[i].rc;
  if (r->seconds == 0 || failed != 0) {
    if (failed == UV_EBUSY)
      text_reply(&reply, 409, "a worker loop is already traced (--trace)\n");
    else if (failed == UV_E2BIG)
      text_reply(&reply, 500,
                 "the trace of a worker exceeded %zu MiB; ask for fewer "
                 "seconds\n",
                 DEBUG_TRACE_MAX >> 20);
    else if (failed == UV_ECANCELED || failed == 0)
      text_reply(&reply, 503, "the relay is draining\n");
    else
      text_reply(&reply, 500, "tracing failed: %s\n", uv_strerror(failed));
  } else if (r->kind == REQ_TRACE) {
    render_trace(r, &reply);
  } else {
    render_heatmap(r, &reply);
  }
  finish(r, &reply);
}

/* Completes the jobs handed back so far; returns how many there were. */
static unsigned take_done(relay_debug_t* d) {
  relay_server_t* srv = d->srv;
  relay_debug_job_t* q;
  unsigned n = 0;

  uv_mutex_lock(&srv->stats_lock);
  q = d->done;
  d->done = NULL;
  uv_mutex_unlock(&srv->stats_lock);
  while (q != NULL) {
    relay_debug_job_t* j = q;
    q = j->next;
    n++;
    if (--j->req->pending == 0)
      jobs_back(j->req);
  }
  return n;
}

static void on_done(uv_async_t* a) {
  take_done(a->data);
}

/* "seconds=N" in the query, 1..DEBUG_TRACE_MAX_SECONDS; default 5. */
static int parse_seconds(const char* query, unsigned* out) {
  const char* p = query;
  *out = 5;
  while (p != NULL && *p != '\0') {
    if (strncmp(p, "seconds=", 8) == 0) {
      char* end;
      long v = strtol(p + 8, &end, 10);
      if (end == p + 8 || (*end != '\0' && *end != '&') || v < 1 ||
          v > DEBUG_TRACE_MAX_SECONDS)
        return -1;
      *out = (unsigned)v;
      return 0;
    }
    p = strchr(p, '&');
    if (p != NULL)
      p++;
  }
  return 0;
}

static int has_param(const char* query, const char* kv) {
  size_t n = strlen(kv);
  const char* p = query;
  while (p != NULL && *p != '\0') {
    if (strncmp(p, kv, n) == 0 && (p[n] == '\0' || p[n] == '&'))
      return 1;
    p = strchr(p, '&');
    if (p != NULL)
      p++;
  }
  return 0;
}

int relay_debug_request(relay_server_t* srv, const char* path,
                        const char* query, int loopback, void* conn,
                        relay_debug_done_cb done, relay_http_reply_t* reply) {
  relay_debug_t* d = srv->debug;
  debug_req_t* r;
  int kind;
  unsigned seconds = 0;
  unsigned i;

  if (strcmp(path, "/debug/contexts") == 0)
    kind = REQ_CONTEXTS;
  else if (strcmp(path, "/debug/trace") == 0)
    kind = REQ_TRACE;
  else if (strcmp(path, "/debug/heatmap") == 0)
    kind = REQ_HEATMAP;
  else if (strcmp(path, "/") == 0)
    kind = -1;
  else if (strcmp(path, "/debug/loops") == 0)
    kind = -2;
  else
    return -1;
  if (d == NULL || d->closing) {
    text_reply(reply, 503, "the relay is stopping\n");
    return 0;
  }
  if (!loopback) {
    text_reply(reply, 403,
               "the debug endpoints answer on loopback only, or on the "
               "address --metrics names\n");
    return 0;
  }
  if (kind == -1) {
    if (relay_page_index(srv, reply) != 0)
      text_reply(reply, 500, "out of memory\n");
    return 0;
  }
  if (kind == -2) {
    render_loops(srv, reply);
    return 0;
  }
  if (kind != REQ_CONTEXTS) {
    if (parse_seconds(query, &seconds) != 0) {
      text_reply(reply, 400, "seconds must be a whole number from 1 to %d\n",
                 DEBUG_TRACE_MAX_SECONDS);
      return 0;
    }
    if (d->recording != NULL) {
      text_reply(reply, 409, "a recording is already in progress\n");
      return 0;
    }
  }
  if (srv->signals > 0) {
    text_reply(reply, 503, "the relay is draining\n");
    return 0;
  }
  if (kind == REQ_CONTEXTS) {
    list_contexts(srv, has_param(query, "format=json"), reply);
    return 0;
  }
  r = calloc(1, sizeof(*r));
  if (r != NULL)
    r->jobs = calloc(srv->nworkers, sizeof(*r->jobs));
  if (r == NULL || r->jobs == NULL) {
    free(r);
    text_reply(reply, 500, "out of memory\n");
    return 0;
  }
  r->d = d;
  r->conn = conn;
  r->done = done;
  r->kind = kind;
  r->seconds = seconds;
  r->next = d->reqs;
  r->pprev = &d->reqs;
  if (d->reqs != NULL)
    d->reqs->pprev = &r->next;
  d->reqs = r;
  for (i = 0; i < srv->nworkers; i++) {
    r->jobs[i].req = r;
    r->jobs[i].w = &srv->workers[i];
  }
  uv_timer_init(&srv->loop, &r->timer);
  r->timer.data = r;
  r->timer_open = 1;
  d->recording = r;
  post_all(r, JOB_TRACE_START);
  return 1;
}

void relay_debug_draining(relay_server_t* srv) {
  debug_req_t* r = srv->debug != NULL ? srv->debug->recording : NULL;

  if (srv->debug != NULL)
    srv->debug->draining = 1;
  /* Starts still out: jobs_back() stops the recording when they are in. */
  if (r == NULL || r->stopping || r->pending > 0)
    return;
  uv_timer_stop(&r->timer);
  on_recorded(&r->timer);
}

void relay_debug_detach(relay_server_t* srv, void* conn) {
  debug_req_t* r;

  if (srv->debug == NULL)
    return;
  for (r = srv->debug->reqs; r != NULL; r = r->next)
    if (r->conn == conn)
      r->conn = NULL;
}

/* ---- life ---------------------------------------------------------------- */

int relay_debug_open(relay_server_t* srv) {
  relay_debug_t* d = calloc(1, sizeof(*d));
  int rc;

  if (d == NULL)
    return UV_ENOMEM;
  d->srv = srv;
  rc = uv_mutex_init(&d->loops_lock);
  if (rc != 0) {
    free(d);
    return rc;
  }
  rc = uv_async_init(&srv->loop, &d->async, on_done);
  if (rc != 0) {
    uv_mutex_destroy(&d->loops_lock);
    free(d);
    return rc;
  }
  d->async.data = d;
  uv_unref((uv_handle_t*)&d->async);
  srv->debug = d;
  return 0;
}

static void on_async_closed(uv_handle_t* h) {
  relay_debug_t* d = h->data;
  uv_mutex_destroy(&d->loops_lock);
  free(d);
}

/* Every worker has stopped (or never ran): the jobs still out are in the
 * done list; answer nobody, free everything. */
void relay_debug_close(relay_server_t* srv) {
  relay_debug_t* d = srv->debug;
  debug_req_t* r;
  unsigned i;

  if (d == NULL || d->closing)
    return;
  /* The workers are done, and every job they took is handed back, but
   * the control loop may not have seen it yet: a recording the drain
   * ended is answered here, on its connection, still open (the
   * listener's connections close after this). A stop posted meanwhile
   * to a stopped worker is handed back at once, hence the loop. */
  while (take_done(d) > 0) {
  }
  d->closing = 1;
  for (r = d->reqs; r != NULL; r = r->next)
    r->conn = NULL; /* the listener's connections are closing */
  take_done(d);     /* completes what is left, answering no one */
  while (d->reqs != NULL)
    req_free(d->reqs);
  for (i = 0; i < srv->nworkers; i++) {
    buf_free(srv->workers[i].dbg.left);
    srv->workers[i].dbg.left = NULL;
  }
  srv->debug = NULL;
  uv_close((uv_handle_t*)&d->async, on_async_closed);
}
