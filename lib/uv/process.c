/* process.c owns uvctx_spawn(): a uv_process_t and a kill timer in the
 * request. When the context is done the child gets the cancel signal, and
 * SIGKILL after the wait delay; the callback waits for the exit and for
 * both handles to close, so there is never a zombie or a leaked handle. */
#include <signal.h>

#include "uv_internal.h"

static void proc_finish(uvctx_process_t* p) {
  p->pid_ = 0;
  UVCTX__UV_FINISH(p, p->cb_(p, p->status_, p->exit_status_, p->term_signal_));
}

static void proc_closed(uv_handle_t* h) {
  uvctx_process_t* p = h->data;

  if (--p->closing_ == 0)
    proc_finish(p);
}

static void proc_close(uvctx_process_t* p, int status) {
  p->status_ = status;
  p->state_ = UVCTX__UV_CLOSING;
  p->closing_ = 2;
  p->process_.data = p;
  p->kill_timer_.data = p;
  uv_close((uv_handle_t*)&p->process_, proc_closed);
  uv_close((uv_handle_t*)&p->kill_timer_, proc_closed);
}

static void proc_signal(uvctx_process_t* p, int signum) {
  /* Never kill(0) or kill(-0): that would be our own process group. */
  if (p->pid_ <= 0)
    return;
  /* ESRCH (gone meanwhile) is fine: the exit callback is on its way. */
  if (p->group_)
    uv_kill(-p->pid_, signum);
  else
    uv_process_kill(&p->process_, signum);
}

static void proc_exit_cb(uv_process_t* h, int64_t exit_status,
                         int term_signal) {
  uvctx_process_t* p = UVCTX__UV_CONTAINER_OF(h, uvctx_process_t, process_);

  p->exit_status_ = exit_status;
  p->term_signal_ = term_signal;
  p->pid_ = 0;
  uv_timer_stop(&p->kill_timer_); /* no signal after the exit */
  uvctx_watch_stop(&p->watch_);
  /* An exit seen once ctx is done (signalled by us or not) reports ctx's
   * err; exit_status and term_signal still say how it ended. */
  proc_close(p, uvctx_err(p->ctx_));
}

static void proc_kill_cb(uv_timer_t* t) {
  uvctx_process_t* p = UVCTX__UV_CONTAINER_OF(t, uvctx_process_t, kill_timer_);
  uint64_t now = uv_hrtime();

  /* As the sleep: never before the wait delay on the uv_hrtime() clock. */
  if (now < p->kill_due_ns_) {
    uv_timer_start(t, proc_kill_cb, (p->kill_due_ns_ - now + 999999) / 1000000,
                   0);
    return;
  }
  if (p->pid_ != 0)
    proc_signal(p, SIGKILL);
}

static void proc_watch_cb(uvctx_watch_t* w, int err) {
  uvctx_process_t* p = UVCTX__UV_CONTAINER_OF(w, uvctx_process_t, watch_);

  if (p->state_ == UVCTX__UV_NOT_STARTED) {
    p->status_ = err;
    proc_finish(p);
    return;
  }
  p->state_ = UVCTX__UV_STOPPING;
  proc_signal(p, p->cancel_signal_);
  if (p->wait_delay_ms_ != UINT64_MAX) {
    p->kill_due_ns_ = uvctx__uv_due_ns(p->wait_delay_ms_);
    uv_timer_start(&p->kill_timer_, proc_kill_cb, p->wait_delay_ms_, 0);
  }
}

int uvctx_spawn(uvctx_process_t* p, uvctx_t* ctx,
                const uv_process_options_t* options,
                const uvctx_spawn_options_t* opts, uvctx_exit_cb cb) {
  uv_process_options_t o;
  uv_loop_t* loop;
  int sig =
      opts != NULL && opts->cancel_signal != 0 ? opts->cancel_signal : SIGTERM;
  int rc;

  if (p == NULL || ctx == NULL || options == NULL || options->file == NULL ||
      options->exit_cb != NULL || cb == NULL || sig <= 0 || sig >= NSIG)
    return UV_EINVAL;
  loop = uvctx__uv_home(ctx);
  p->ctx_ = uvctx_ref(ctx);
  p->cb_ = cb;
  p->cancel_signal_ = sig;
  p->wait_delay_ms_ = opts != NULL && opts->wait_delay_ms != 0
                          ? opts->wait_delay_ms
                          : UVCTX_SPAWN_DEFAULT_WAIT_DELAY_MS;
  p->group_ = opts != NULL && opts->process_group != 0;
  p->exit_status_ = 0;
  p->term_signal_ = 0;
  p->pid_ = 0;
  p->status_ = 0;
  p->closing_ = 0;
  if (uvctx_err(ctx) != 0) {
    p->state_ = UVCTX__UV_NOT_STARTED; /* nothing spawned */
    uvctx_watch_start(&p->watch_, ctx, proc_watch_cb);
    return 0;
  }
  uv_timer_init(loop, &p->kill_timer_);
  o = *options;
  o.exit_cb = proc_exit_cb;
  if (p->group_)
    o.flags |= UV_PROCESS_DETACHED; /* setsid(): it leads a new group */
  rc = uv_spawn(loop, &p->process_, &o);
  if (rc != 0) {
    /* A failed exec is reported through cb, like an exit: the handle was
     * initialized and must be closed either way. */
    proc_close(p, rc);
    return 0;
  }
  p->pid_ = p->process_.pid;
  p->state_ = UVCTX__UV_RUNNING;
  uvctx_watch_start(&p->watch_, ctx, proc_watch_cb);
  return 0;
}

int uvctx_process_pid(const uvctx_process_t* p) {
  return p != NULL && p->state_ != UVCTX__UV_IDLE ? p->pid_ : 0;
}
