/* server.c owns the relay's process-level life: the control loop on the
 * main thread (signals, the drain deadline, the server root context), the
 * worker threads with their own loops, and each worker's listening socket
 * and accept loop.
 *
 * Multi-worker design: one listening socket per worker, bound to the same
 * address with SO_REUSEPORT, so the kernel spreads connections over the
 * workers and no socket ever crosses threads. libuv 1.44 cannot set
 * SO_REUSEPORT, so the sockets are made with socket()/setsockopt()/bind()
 * here, and accepted from a uv_poll_t with accept4() rather than
 * uv_listen(): that gives the relay the one thing libuv's accept loop
 * lacks, a pause. Out of descriptors, libuv would keep a spare descriptor
 * to accept and drop connections; the relay instead stops polling for a
 * while (the kernel keeps queueing in the backlog) and tries again.
 *
 * Drain: the first SIGTERM/SIGINT cancels `accepting` (each worker's branch
 * fires on its own thread and closes its listener: new connections are
 * refused) and arms the drain deadline, a context on the control loop
 * whose watch cancels the server root with the cause "drained": every
 * connection, on every worker, ends. A second signal does that at once.
 * The two signals are blocked in every thread before any thread starts
 * and read from a signalfd on the control loop, which raises each one
 * again on its own thread: libuv's handler runs inside that call, and the
 * uv_signal_t handles take it from there. The first signal reaches the
 * drain through uvctx_with_signals(); beside it one plain uv_signal_t per
 * signal counts every arrival, which is how a second signal is seen once
 * the context has closed its handles, and which keeps a handler installed
 * (closing the last handle of a signal would put back the default action,
 * and the raised second SIGTERM would kill the relay instead of cutting
 * its drain short).
 * A worker whose listener is closed and whose last connection is gone
 * leaves uv_run(), closes its loop and tells the control loop; when the
 * last one has, the control loop closes too and the process exits 0.
 *
 * --trace: one trace file per worker loop (FILE with one worker, FILE.N
 * with several), since a tracer owns its sink and two loops must not
 * write into one. Tracing starts on the main thread while nobody runs the
 * worker loops yet, before the workers' contexts exist, so that every
 * context homed on a worker has its creation in the trace; each worker
 * stops its own tracer after its last context is released and before
 * uvctx_loop_close(). The control loop (server root, drain deadline) is
 * not traced: callbacks caused by the drain name its op without an arrow.
 *
 * --metrics: metrics.c and debug.c, on the control loop; closed when the
 * last worker is done. Each worker runs debug.c's jobs (listings, traces)
 * on its own thread, and relay_debug_worker_exit() ends them before the
 * worker's loop closes. */
#define _GNU_SOURCE /* accept4() */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "relay.h"
#include "uvctx/uv.h"

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100
#define LISTEN_BACKLOG 4096

/* ---- listening sockets --------------------------------------------------- */

static int make_listener(const relay_config_t* cfg, const struct sockaddr* addr,
                         socklen_t len, int* out) {
  int fd;
  int one = 1;
  int err;

  fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
    goto fail;
  /* Only with several workers: with one, a second relay (or anything else)
   * on the port must be a clear "address already in use". */
  if (cfg->workers > 1 &&
      setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
    goto fail;
  if (bind(fd, addr, len) != 0)
    goto fail;
  if (listen(fd, LISTEN_BACKLOG) != 0)
    goto fail;
  *out = fd;
  return 0;

fail:
  err = -errno;
  close(fd);
  return err;
}

/* ---- accepting ----------------------------------------------------------- */

static void on_acceptable(uv_poll_t* p, int status, int events);

static void on_pause_over(uv_timer_t* t) {
  relay_worker_t* w = t->data;
  if (w->listening)
    uv_poll_start(&w->poll, UV_READABLE, on_acceptable);
}

/* Starts a log line about worker `w`: its index is a number (in JSON
 * too), like every count the relay logs. */
static void worker_line(relay_log_line_t* ln, const char* event,
                        const relay_worker_t* w) {
  relay_log_begin(ln, event);
  relay_log_u64(ln, "worker", w->index);
}

static void pause_accepting(relay_worker_t* w, int err) {
  relay_log_line_t ln;

  uv_poll_stop(&w->poll);
  uv_timer_start(&w->pause_timer, on_pause_over, ACCEPT_PAUSE_MS, 0);
  if (!w->paused) {
    w->paused = 1;
    worker_line(&ln, "accept-paused", w);
    relay_log_str(&ln, "error", uv_err_name(err));
    relay_log_end(&ln);
  }
}

static void on_acceptable(uv_poll_t* p, int status, int events) {
  relay_worker_t* w = p->data;
  relay_server_t* srv = w->srv;
  struct sockaddr_storage ss;
  socklen_t len;
  relay_log_line_t ln;
  int i;
  int fd;
  (void)events;

  if (status != 0) {
    pause_accepting(w, status);
    return;
  }
  for (i = 0; i < ACCEPT_BATCH && w->listening; i++) {
    len = sizeof(ss);
    fd = accept4(w->listen_fd, (struct sockaddr*)&ss, &len,
                 SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return;
      /* EMFILE, ENFILE, ENOBUFS, ENOMEM: polling again at once would spin
       * on a readable socket we cannot accept from. */
      pause_accepting(w, -errno);
      return;
    }
    if (w->paused) {
      w->paused = 0;
      worker_line(&ln, "accept-resumed", w);
      relay_log_end(&ln);
    }
    if (atomic_fetch_add(&srv->active, 1) >= srv->cfg->max_connections) {
      atomic_fetch_sub(&srv->active, 1);
      atomic_fetch_add_explicit(&w->counters.refused, 1, memory_order_relaxed);
      close(fd);
      relay_log_refused(w, (struct sockaddr*)&ss, "max-connections");
      continue;
    }
    relay_conn_start(w, fd, (struct sockaddr*)&ss);
  }
}

static void on_listener_closed(uv_handle_t* h) {
  relay_worker_t* w = h->data;
  close(w->listen_fd);
  w->listen_fd = -1;
}

/* The worker's branch of `accepting` is done: draining has begun. */
static void on_stop_accepting(uvctx_watch_t* watch, int err) {
  relay_worker_t* w = watch->data;
  (void)err;

  if (!w->listening)
    return;
  w->listening = 0;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t*)&w->poll, on_listener_closed);
  uv_close((uv_handle_t*)&w->pause_timer, NULL);
}

void relay_worker_conn_done(relay_worker_t* w) {
  w->nconns--;
}

static void on_sample(uv_timer_t* t) {
  relay_conn_sample(t->data);
}

/* ---- traces -------------------------------------------------------------- */

static void trace_path(const relay_config_t* cfg, unsigned index, char* out,
                       size_t len) {
  if (cfg->workers == 1)
    snprintf(out, len, "%s", cfg->trace);
  else
    snprintf(out, len, "%s.%u", cfg->trace, index);
}

/* Main thread, before any worker context exists and before the workers
 * run (a tracer is started on its loop's thread, or while nobody runs the
 * loop). Returns 0 or -1 after one line on stderr. */
static int open_traces(relay_server_t* srv) {
  char path[4096];
  unsigned i;
  int rc;

  for (i = 0; i < srv->nworkers; i++) {
    relay_worker_t* w = &srv->workers[i];
    trace_path(srv->cfg, i, path, sizeof(path));
    rc = uvctx_loop_trace_open(w->l, path, NULL);
    if (rc != 0) {
      fprintf(stderr, RELAY_NAME ": cannot write --trace %s: %s\n", path,
              uv_strerror(rc));
      return -1;
    }
    w->tracing = 1;
  }
  return 0;
}

/* Worker thread, after its last context is released (so that their frees
 * are in the trace) and before uvctx_loop_close(). */
static int stop_trace(relay_worker_t* w) {
  uvctx_trace_counts_t n = {0, 0, 0};
  char path[4096];
  relay_log_line_t ln;
  int rc;

  w->tracing = 0;
  rc = uvctx_loop_trace_stop(w->l, &n);
  trace_path(w->srv->cfg, w->index, path, sizeof(path));
  worker_line(&ln, rc != 0 ? "trace-error" : "trace", w);
  relay_log_str(&ln, "file", path);
  if (rc != 0) {
    relay_log_str(&ln, "error", uv_err_name(rc));
  } else {
    relay_log_u64(&ln, "events", n.written);
    relay_log_u64(&ln, "dropped", n.dropped);
  }
  relay_log_end(&ln);
  return rc;
}

/* ---- workers ------------------------------------------------------------- */

static void worker_main(void* arg) {
  relay_worker_t* w = arg;
  relay_server_t* srv = w->srv;

  uv_run(&w->loop, UV_RUN_DEFAULT);
  /* Here the listener is closed and every connection is gone (or setup
   * failed before the listener was polled); the unreferenced sampling
   * timer is all that may be left. */
  if (w->sampling) {
    w->sampling = 0;
    uv_close((uv_handle_t*)&w->sample_timer, NULL);
  }
  if (!w->listening && w->listen_fd >= 0 && w->poll.data == NULL) {
    close(w->listen_fd);
    w->listen_fd = -1;
  }
  if (w->watching)
    uvctx_watch_stop(&w->stop_watch);
  uvctx_release(w->accepting);
  uvctx_release(w->root);
  w->accepting = NULL;
  w->root = NULL;
  relay_debug_worker_exit(w);
  if (w->tracing && stop_trace(w) != 0)
    w->exit_status = RELAY_EXIT_FAILURE;
  /* Every pipe has run its callback: nothing uses the pool any more. */
  if (uvctx_copy_pool_close(w->pool) != 0)
    w->exit_status = RELAY_EXIT_FAILURE;
  w->pool = NULL;
  /* From here on a scrape reads these stats instead of the binding. */
  uv_mutex_lock(&srv->stats_lock);
  uvctx_loop_stats(w->l, &w->final_stats);
  w->closed = 1;
  uv_mutex_unlock(&srv->stats_lock);
  if (uvctx_loop_close(w->l) != 0) {
    fprintf(stderr, RELAY_NAME ": worker %u: contexts still live:\n", w->index);
    uvctx_loop_dump(w->l, stderr);
    w->exit_status = RELAY_EXIT_FAILURE;
  } else {
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0)
      w->exit_status = RELAY_EXIT_FAILURE;
  }
  atomic_fetch_add(&srv->workers_done, 1);
  uv_async_send(&srv->worker_done);
}

/* ---- the control loop ---------------------------------------------------- */

static void cancel_root(relay_server_t* srv) {
  uvctx_cancel_cause(srv->accepting, UV_ECANCELED, "draining");
  uvctx_cancel_cause(srv->root, UV_ECANCELED, "drained");
}

static void on_drain_deadline(uvctx_watch_t* watch, int err) {
  relay_server_t* srv = watch->data;
  (void)err;

  srv->drain_watching = 0;
  relay_log_event("drain-deadline", NULL);
  cancel_root(srv);
}

static const char* signal_name(int signum) {
  return signum == SIGTERM ? "SIGTERM" : "SIGINT";
}

/* The first signal: new connections are refused, the drain deadline
 * starts. */
static void start_drain(relay_server_t* srv, const char* name) {
  relay_log_line_t ln;
  int rc;

  srv->signals++;
  relay_log_begin(&ln, "draining");
  relay_log_str(&ln, "signal", name);
  relay_log_u64(&ln, "drain_timeout_ms", srv->cfg->drain_timeout_ms);
  relay_log_end(&ln);
  uvctx_cancel_cause(srv->accepting, UV_ECANCELED, "draining");
  relay_metrics_stop_accepting(srv);
  if (srv->cfg->drain_timeout_ms == 0) {
    cancel_root(srv);
    return;
  }
  rc = uvctx_with_timeout(uvctx_background(srv->l), srv->cfg->drain_timeout_ms,
                          &srv->drain);
  if (rc == 0) {
    srv->drain_watch.data = srv;
    rc = uvctx_watch_start(&srv->drain_watch, srv->drain, on_drain_deadline);
    if (rc == 0)
      srv->drain_watching = 1;
  }
  if (rc != 0)
    cancel_root(srv); /* no deadline to be had: do not wait forever */
}

/* srv->signalled is done: a signal came (its cause message names it), or
 * the relay is closing, in which case the watch was stopped first. */
static void on_signalled(uvctx_watch_t* watch, int err) {
  relay_server_t* srv = watch->data;
  const char* name = NULL;
  (void)err;

  srv->signal_watching = 0;
  if (uvctx_cause(srv->signalled, &name) != UV_EINTR || name == NULL)
    name = signal_name(srv->first_signal);
  if (srv->signals == 0)
    start_drain(srv, name);
}

/* Every SIGTERM and SIGINT, the first one included (which the signalled
 * context handles). From the second on, the drain is cut short; if the
 * second is dispatched before the context's watch, it starts the drain
 * first, so the log reads "draining" then "drain-abort" either way. */
static void on_signal_arrival(uv_signal_t* h, int signum) {
  relay_server_t* srv = h->data;

  if (++srv->arrivals == 1) {
    srv->first_signal = signum;
    return;
  }
  if (srv->signals == 0)
    start_drain(srv, signal_name(srv->first_signal));
  srv->signals++;
  relay_log_event("drain-abort", "signal", signal_name(signum), NULL);
  cancel_root(srv);
}

/* The signalfd has something: each signal it took is raised again on this
 * thread, unblocked for the call only, so that libuv's handler runs before
 * raise() returns and the uv_signal_t handles (ours and the signalled
 * context's) see it on the next pass of this loop. */
static void on_signalfd(uv_poll_t* h, int status, int events) {
  relay_server_t* srv = h->data;
  struct signalfd_siginfo si;
  sigset_t one;
  (void)events;

  if (status != 0)
    return;
  while (read(srv->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
    sigemptyset(&one);
    sigaddset(&one, (int)si.ssi_signo);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    raise((int)si.ssi_signo);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
  }
}

static void on_signalfd_closed(uv_handle_t* h) {
  relay_server_t* srv = h->data;

  close(srv->sigfd);
  srv->sigfd = -1;
}

/* The relay is done with signals. They stay blocked: one that arrives
 * during the final teardown, once the last handler is gone, must not kill
 * a process that is about to exit 0. */
static void signals_close(relay_server_t* srv) {
  if (srv->signal_watching && uvctx_watch_stop(&srv->signal_watch) == 1)
    srv->signal_watching = 0;
  if (srv->signalled != NULL)
    uvctx_release(srv->signalled);
  srv->signalled = NULL;
  uv_close((uv_handle_t*)&srv->sigcount[0], NULL);
  uv_close((uv_handle_t*)&srv->sigcount[1], NULL);
  if (srv->sigfd >= 0)
    uv_close((uv_handle_t*)&srv->sigpoll, on_signalfd_closed);
}

/* Blocks SIGTERM and SIGINT in this thread, so in every thread started
 * after it, makes the signalfd that receives them, and installs the
 * handlers that on_signalfd() hands them to.
 *
 * Why not let libuv's handler take them from the kernel directly: under
 * ThreadSanitizer (GCC 12's) that lost about one signal in 150 to 300
 * (relay_drain's SIGINT): the process caught it, nothing was pending in
 * any thread, libuv's handler never ran, and the control loop slept on.
 * The sanitizer defers an asynchronous signal to a point of its choosing;
 * a signal a thread raises to itself it runs at once, and a signalfd
 * keeps one in the kernel until it is read. Blocked everywhere, no
 * thread's state decides whether a signal is seen either. */
static int signals_open(relay_server_t* srv) {
  static const int signums[2] = {SIGTERM, SIGINT};
  sigset_t set;
  int i;
  int rc;

  srv->sigfd = -1;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  rc = -pthread_sigmask(SIG_BLOCK, &set, NULL);
  if (rc != 0)
    return rc;
  /* libuv's handler replaces whatever action was inherited: a shell
   * starts background jobs with SIGINT ignored, and a blocked signal that
   * is ignored may be discarded. */
  for (i = 0; i < 2; i++) {
    uv_signal_init(&srv->loop, &srv->sigcount[i]);
    srv->sigcount[i].data = srv;
    uv_signal_start(&srv->sigcount[i], on_signal_arrival, signums[i]);
  }
  srv->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
  if (srv->sigfd < 0) {
    rc = -errno;
  } else {
    rc = uv_poll_init(&srv->loop, &srv->sigpoll, srv->sigfd);
    if (rc != 0) {
      close(srv->sigfd);
      srv->sigfd = -1;
    }
  }
  if (rc == 0) {
    srv->sigpoll.data = srv;
    rc = uv_poll_start(&srv->sigpoll, UV_READABLE, on_signalfd);
  }
  if (rc == 0)
    rc = uvctx_with_signals(uvctx_background(srv->l), signums, 2,
                            &srv->signalled);
  if (rc == 0) {
    srv->signal_watch.data = srv;
    srv->signal_watching = uvctx_watch_start(&srv->signal_watch, srv->signalled,
                                             on_signalled) == 0;
  }
  if (rc != 0)
    signals_close(srv);
  return rc;
}

static void on_worker_done(uv_async_t* a) {
  relay_server_t* srv = a->data;

  if (atomic_load(&srv->workers_done) < srv->nworkers)
    return;
  if (srv->drain_watching && uvctx_watch_stop(&srv->drain_watch) == 1)
    srv->drain_watching = 0;
  uvctx_release(srv->drain);
  uvctx_release(srv->accepting);
  uvctx_release(srv->root);
  srv->drain = srv->accepting = srv->root = NULL;
  signals_close(srv);
  uv_close((uv_handle_t*)&srv->worker_done, NULL);
  relay_summary_stop(srv);
  relay_metrics_close(srv);
}

/* ---- setup and teardown -------------------------------------------------- */

/* Undoes the loops and sockets of a setup that failed before any context
 * or thread existed. */
static void close_loops(relay_server_t* srv) {
  unsigned i;

  relay_metrics_close(srv);
  for (i = 0; i < srv->nworkers; i++) {
    relay_worker_t* w = &srv->workers[i];
    if (w->listen_fd >= 0)
      close(w->listen_fd);
    if (w->tracing) {
      uvctx_loop_trace_stop(w->l, NULL);
      w->tracing = 0;
    }
    if (w->pool != NULL)
      uvctx_copy_pool_close(w->pool);
    if (w->l != NULL && uvctx_loop_close(w->l) == 0)
      uv_run(&w->loop, UV_RUN_DEFAULT);
    if (w->l != NULL)
      uv_loop_close(&w->loop);
  }
  if (srv->l != NULL && uvctx_loop_close(srv->l) == 0)
    uv_run(&srv->loop, UV_RUN_DEFAULT);
  uv_loop_close(&srv->loop);
  free(srv->workers);
}

static int setup_workers(relay_server_t* srv) {
  relay_config_t* cfg = srv->cfg;
  struct sockaddr_storage bound = cfg->listen.ss;
  socklen_t blen = cfg->listen.len;
  unsigned i;
  int rc;

  for (i = 0; i < srv->nworkers; i++) {
    relay_worker_t* w = &srv->workers[i];
    w->srv = srv;
    w->index = i;
    w->listen_fd = -1;
    rc = uv_loop_init(&w->loop);
    if (rc != 0) {
      fprintf(stderr, RELAY_NAME ": uv_loop_init: %s\n", uv_strerror(rc));
      return -1;
    }
    rc = uvctx_loop_init(&w->loop, &w->l);
    if (rc != 0) {
      uv_loop_close(&w->loop);
      fprintf(stderr, RELAY_NAME ": uvctx_loop_init: %s\n", uv_strerror(rc));
      return -1;
    }
    /* A pool is bound to one loop: each worker gets its share of the
     * budget. */
    rc = uvctx_copy_pool_init(&w->pool, &w->loop, RELAY_BUFFER,
                              cfg->max_buffer_memory / srv->nworkers);
    if (rc != 0) {
      fprintf(stderr, RELAY_NAME ": buffer pool: %s\n", uv_strerror(rc));
      return -1;
    }
    /* Port 0: the first bind picks the port, the others share it. */
    rc = make_listener(cfg, (struct sockaddr*)&bound, blen, &w->listen_fd);
    if (rc != 0) {
      fprintf(stderr, RELAY_NAME ": cannot listen on %s: %s\n",
              cfg->listen.text, uv_strerror(rc));
      return -1;
    }
    if (i == 0) {
      blen = sizeof(bound);
      getsockname(w->listen_fd, (struct sockaddr*)&bound, &blen);
    }
  }
  return 0;
}

/* Contexts, watches and handles; cannot fail in practice (ENOMEM aside),
 * and is unwound by the normal drain if it does. */
static int start_workers(relay_server_t* srv) {
  unsigned i;
  int rc;

  for (i = 0; i < srv->nworkers; i++) {
    relay_worker_t* w = &srv->workers[i];
    rc = uvctx_with_cancel_on(srv->root, w->l, &w->root);
    if (rc == 0)
      rc = uvctx_with_cancel_on(srv->accepting, w->l, &w->accepting);
    if (rc == 0) {
      w->stop_watch.data = w;
      rc = uvctx_watch_start(&w->stop_watch, w->accepting, on_stop_accepting);
      w->watching = rc == 0;
    }
    if (rc == 0)
      rc = uv_poll_init(&w->loop, &w->poll, w->listen_fd);
    if (rc != 0)
      return rc;
    w->poll.data = w;
    uv_timer_init(&w->loop, &w->pause_timer);
    w->pause_timer.data = w;
    w->listening = 1;
    if (srv->cfg->has_metrics) {
      uv_timer_init(&w->loop, &w->sample_timer);
      w->sample_timer.data = w;
      w->sampling = 1;
      uv_timer_start(&w->sample_timer, on_sample, RELAY_SAMPLE_MS,
                     RELAY_SAMPLE_MS);
      uv_unref((uv_handle_t*)&w->sample_timer);
      rc = relay_debug_worker_init(w);
      if (rc != 0)
        return rc;
    }
    rc = uv_poll_start(&w->poll, UV_READABLE, on_acceptable);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Everything after the mutex: relay_server_run() owns that one. */
static int run(relay_server_t* srv, relay_config_t* cfg) {
  struct sockaddr_storage bound;
  socklen_t blen = sizeof(bound);
  char where[96];
  char maddr[96];
  relay_log_line_t ln;
  unsigned i;
  int status = RELAY_EXIT_OK;
  int rc;

  srv->cfg = cfg;
  srv->nworkers = cfg->workers;
  atomic_init(&srv->workers_done, 0);
  atomic_init(&srv->active, 0);
  atomic_init(&srv->next_id, 0);

  rc = uv_loop_init(&srv->loop);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": uv_loop_init: %s\n", uv_strerror(rc));
    return RELAY_EXIT_FAILURE;
  }
  srv->workers = calloc(srv->nworkers, sizeof(*srv->workers));
  rc = srv->workers == NULL ? UV_ENOMEM : uvctx_loop_init(&srv->loop, &srv->l);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": %s\n", uv_strerror(rc));
    srv->nworkers = 0;
    close_loops(srv);
    return RELAY_EXIT_FAILURE;
  }
  for (i = 0; i < srv->nworkers; i++)
    srv->workers[i].listen_fd = -1;
  /* Every configuration mistake that needs a socket or a file is found
   * here, before anything is served: exit 2. */
  if (setup_workers(srv) != 0 ||
      (cfg->has_metrics && relay_metrics_listen(srv) != 0) ||
      (cfg->trace != NULL && open_traces(srv) != 0)) {
    close_loops(srv);
    return RELAY_EXIT_CONFIG;
  }

  /* From here on everything is unwound by a drain. */
  rc = uvctx_with_cancel(uvctx_background(srv->l), &srv->root);
  if (rc == 0)
    rc = uvctx_with_cancel(uvctx_background(srv->l), &srv->accepting);
  if (rc == 0)
    rc = signals_open(srv);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": %s\n", uv_strerror(rc));
    uvctx_release(srv->accepting);
    uvctx_release(srv->root);
    close_loops(srv);
    return RELAY_EXIT_FAILURE;
  }
  uv_async_init(&srv->loop, &srv->worker_done, on_worker_done);
  srv->worker_done.data = srv;

  rc = start_workers(srv);
  if (rc == 0)
    rc = relay_summary_start(srv);
  if (rc != 0) {
    fprintf(stderr, RELAY_NAME ": starting workers: %s\n", uv_strerror(rc));
    status = RELAY_EXIT_FAILURE;
    cancel_root(srv);
  }

  getsockname(srv->workers[0].listen_fd, (struct sockaddr*)&bound, &blen);
  relay_format_addr((struct sockaddr*)&bound, where, sizeof(where));
  relay_metrics_addr(srv, maddr, sizeof(maddr));
  if (status == RELAY_EXIT_OK) {
    /* Scripts read these two lines for the ports: keep their order. */
    printf("listening on %s\n", where);
    if (srv->metrics != NULL)
      printf("metrics on %s\n", maddr);
    fflush(stdout);
  }
  relay_log_begin(&ln, "start");
  relay_log_str(&ln, "listen", where);
  relay_log_str(&ln, "connect", cfg->connect.text);
  relay_log_u64(&ln, "workers", srv->nworkers);
  relay_log_str(&ln, "tls", cfg->server_tls ? "on" : "off");
  relay_log_str(&ln, "connect_tls", cfg->client_tls ? "on" : "off");
  if (srv->metrics != NULL)
    relay_log_str(&ln, "metrics", maddr);
  if (cfg->trace != NULL)
    relay_log_str(&ln, "trace", cfg->trace);
  relay_log_end(&ln);

  for (i = 0; i < srv->nworkers; i++) {
    rc = uv_thread_create(&srv->workers[i].thread, worker_main,
                          &srv->workers[i]);
    srv->workers[i].started = rc == 0;
    if (rc != 0) {
      /* Stop everything, and run this worker's loop down right here: its
       * listener closes as soon as its stop watch fires. */
      fprintf(stderr, RELAY_NAME ": uv_thread_create: %s\n", uv_strerror(rc));
      status = RELAY_EXIT_FAILURE;
      cancel_root(srv);
      worker_main(&srv->workers[i]);
    }
  }

  uv_run(&srv->loop, UV_RUN_DEFAULT);
  for (i = 0; i < srv->nworkers; i++) {
    if (srv->workers[i].started)
      uv_thread_join(&srv->workers[i].thread);
    if (srv->workers[i].exit_status != RELAY_EXIT_OK)
      status = srv->workers[i].exit_status;
  }
  if (uvctx_loop_close(srv->l) != 0) {
    fprintf(stderr, RELAY_NAME ": contexts still live on the control "
                               "loop:\n");
    uvctx_loop_dump(srv->l, stderr);
    status = RELAY_EXIT_FAILURE;
  } else {
    uv_run(&srv->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&srv->loop) != 0)
      status = RELAY_EXIT_FAILURE;
  }
  relay_log_begin(&ln, "exit");
  relay_log_u64(&ln, "status", (uint64_t)status);
  relay_log_end(&ln);
  free(srv->workers);
  return status;
}

int relay_server_run(relay_config_t* cfg) {
  relay_server_t srv;
  int status;

  memset(&srv, 0, sizeof(srv));
  if (uv_mutex_init(&srv.stats_lock) != 0) {
    fprintf(stderr, RELAY_NAME ": uv_mutex_init failed\n");
    return RELAY_EXIT_FAILURE;
  }
  status = run(&srv, cfg);
  uv_mutex_destroy(&srv.stats_lock);
  return status;
}
