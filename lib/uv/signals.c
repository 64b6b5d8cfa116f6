/* signals.c owns uvctx_with_signals(): signal.NotifyContext on uv_signal_t
 * handles. Three contexts: W, a cancel child of the parent that a signal
 * cancels (cause UV_EINTR) and whose watch closes the handles; V, a value
 * child of the parent whose value's destructor tells when the caller's
 * context is freed; and the caller's context, a merge of V and W (done
 * with either, cancellable by itself). Nothing holds the caller's context
 * but the caller, so freeing it frees V, which cancels W, whose watch
 * closes the handles on the loop thread. */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>

#include "uv_internal.h"

typedef struct sigstate_s {
  atomic_int refs; /* the handles' close, and V's value destructor */
  uvctx_t* w;      /* referenced until V's destructor */
  uvctx_watch_t watch;
  size_t n, open;
  int fired;
  uv_signal_t handles[];
} sigstate_t;

static const struct {
  int signum;
  const char* name;
} names[] = {
    {SIGHUP, "SIGHUP"},     {SIGINT, "SIGINT"},       {SIGQUIT, "SIGQUIT"},
    {SIGTERM, "SIGTERM"},   {SIGUSR1, "SIGUSR1"},     {SIGUSR2, "SIGUSR2"},
    {SIGPIPE, "SIGPIPE"},   {SIGALRM, "SIGALRM"},     {SIGCHLD, "SIGCHLD"},
    {SIGWINCH, "SIGWINCH"}, {SIGTSTP, "SIGTSTP"},     {SIGCONT, "SIGCONT"},
    {SIGTTIN, "SIGTTIN"},   {SIGTTOU, "SIGTTOU"},     {SIGXCPU, "SIGXCPU"},
    {SIGXFSZ, "SIGXFSZ"},   {SIGVTALRM, "SIGVTALRM"}, {SIGPROF, "SIGPROF"},
    {SIGURG, "SIGURG"},     {SIGSYS, "SIGSYS"},       {SIGTRAP, "SIGTRAP"},
    {SIGABRT, "SIGABRT"},   {SIGBUS, "SIGBUS"},       {SIGFPE, "SIGFPE"},
    {SIGILL, "SIGILL"},     {SIGSEGV, "SIGSEGV"}};

const char* uvctx__signal_name(int signum, char* buf, size_t size) {
  size_t i;

  for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
    if (names[i].signum == signum)
      return names[i].name;
#ifdef SIGRTMIN
  if (signum >= SIGRTMIN && signum <= SIGRTMAX) {
    snprintf(buf, size, "SIGRTMIN+%d", signum - SIGRTMIN);
    return buf;
  }
#endif
  snprintf(buf, size, "signal %d", signum);
  return buf;
}

static void sig_put(sigstate_t* st) {
  if (atomic_fetch_sub(&st->refs, 1) == 1)
    uvctx_free(st);
}

static void sig_closed(uv_handle_t* h) {
  sigstate_t* st = h->data;

  if (--st->open == 0)
    sig_put(st);
}

/* W is done (a signal, the parent, or the caller's context freed): close
 * the handles, on the loop thread. */
static void sig_watch_cb(uvctx_watch_t* w, int err) {
  sigstate_t* st = UVCTX__UV_CONTAINER_OF(w, sigstate_t, watch);
  size_t i;

  (void)err;
  st->open = st->n;
  for (i = 0; i < st->n; i++)
    uv_close((uv_handle_t*)&st->handles[i], sig_closed);
}

static void sig_cb(uv_signal_t* h, int signum) {
  sigstate_t* st = h->data;
  char buf[32];

  if (st->fired)
    return;
  st->fired = 1;
  uvctx_cancel_cause(st->w, UV_EINTR,
                     uvctx__signal_name(signum, buf, sizeof(buf)));
}

/* V's value destructor: the caller's context is gone. Any thread. */
static void sig_value_free(void* value) {
  sigstate_t* st = value;

  uvctx_cancel(st->w);
  uvctx_unref(st->w);
  sig_put(st);
}

static const uvctx_key_t sig_key = {"uvctx.signals", sig_value_free, NULL};

int uvctx_with_signals(uvctx_t* parent, const int* signums, size_t n,
                       uvctx_t** out) {
  uv_loop_t* loop;
  sigstate_t* st;
  uvctx_t* v = NULL;
  uvctx_t* pair[2];
  size_t i, started = 0;
  int rc;

  if (parent == NULL || signums == NULL || out == NULL || n == 0)
    return UV_EINVAL;
  for (i = 0; i < n; i++)
    if (signums[i] <= 0 || signums[i] >= NSIG || signums[i] == SIGKILL ||
        signums[i] == SIGSTOP)
      return UV_EINVAL;
  if (uvctx_err(parent) != 0)
    return uvctx_with_cancel(parent, out); /* born done, no handle */
  loop = uvctx__uv_home(parent);
  st = uvctx_malloc(sizeof(*st) + n * sizeof(st->handles[0]));
  if (st == NULL)
    return UV_ENOMEM;
  atomic_init(&st->refs, 2);
  st->n = n;
  st->fired = 0;
  rc = uvctx_with_cancel(parent, &st->w);
  if (rc != 0)
    goto fail_w;
  for (i = 0; i < n; i++) {
    uv_signal_init(loop, &st->handles[i]);
    st->handles[i].data = st;
  }
  for (started = 0; started < n; started++) {
    rc = uv_signal_start(&st->handles[started], sig_cb, signums[started]);
    if (rc != 0)
      goto fail_handles;
  }
  rc = uvctx_with_value(parent, &sig_key, st, &v);
  if (rc != 0)
    goto fail_handles;
  pair[0] = v; /* values and home: the parent's */
  pair[1] = st->w;
  rc = uvctx_any(pair, 2, out);
  if (rc != 0)
    goto fail_any;
  uvctx_unref(v); /* *out holds it; its destructor frees st's half */
  uvctx_watch_start(&st->watch, st->w, sig_watch_cb);
  return 0;

fail_any:
  /* V's destructor would cancel and unref W: take its half back first. */
  atomic_fetch_add(&st->refs, 1);
  uvctx_ref(st->w);
  uvctx_unref(v);
fail_handles:
  uvctx_release(st->w);
  /* The handles were initialized: close them; the last close frees st. */
  atomic_store(&st->refs, 1);
  st->open = n;
  for (i = 0; i < n; i++)
    uv_close((uv_handle_t*)&st->handles[i], sig_closed);
  return rc;
fail_w:
  uvctx_free(st);
  return rc;
}
