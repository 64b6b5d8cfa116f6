/* test_uv_process.c owns the Check suite of uvctx_spawn(): a child that
 * exits by itself, one that exits on SIGTERM, one that ignores it (trap ''
 * TERM) and is killed after the wait delay, a command that does not exist,
 * an already-done context (nothing spawned), process groups reaching
 * grandchildren (and, without a group, not reaching them), bad arguments.
 * Real processes; every one is reaped and every handle closed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "uv_support.h"

typedef struct child_s {
  uvctx_process_t p;
  uvt_op_t op;
  int64_t exit_status;
  int term_signal;
  int pid; /* uvctx_process_pid() right after the spawn */
  int pid_in_cb;
  int open_in_cb;
  uint64_t started, ended;
  /* stdout of the child, read until "ready" */
  uv_pipe_t out;
  char text[512];
  size_t len;
  int out_closed;
} child_t;

static void child_cb(uvctx_process_t* p, int status, int64_t exit_status,
                     int term_signal) {
  child_t* c = p->data;
  c->exit_status = exit_status;
  c->term_signal = term_signal;
  c->pid_in_cb = uvctx_process_pid(p);
  c->open_in_cb = uvt_open_handles_in(p, sizeof(*p));
  c->ended = uv_hrtime();
  uvt_op_record(&c->op, status);
}

static void out_alloc(uv_handle_t* h, size_t n, uv_buf_t* buf) {
  child_t* c = h->data;
  (void)n;
  *buf = uv_buf_init(c->text + c->len, sizeof(c->text) - 1 - c->len);
}

static void out_closed(uv_handle_t* h) {
  child_t* c = h->data;
  c->out_closed = 1;
}

static void out_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  child_t* c = s->data;
  (void)buf;
  if (n > 0) {
    c->len += (size_t)n;
    c->text[c->len] = '\0';
  } else if (n < 0) {
    uv_close((uv_handle_t*)s, out_closed);
  }
}

/* Spawns `argv` under ctx; with `pipe_out` its stdout is read into text. */
static int child_start(child_t* c, uvctx_t* ctx, char** argv,
                       const uvctx_spawn_options_t* opts, int pipe_out) {
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  int rc;
  memset(c, 0, sizeof(*c));
  memset(&o, 0, sizeof(o));
  c->p.data = c;
  o.file = argv[0];
  o.args = argv;
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 2;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  if (pipe_out) {
    ck_assert_int_eq(uv_pipe_init(uvt_loop, &c->out, 0), 0);
    c->out.data = c;
    stdio[1].flags = UV_CREATE_PIPE | UV_WRITABLE_PIPE;
    stdio[1].data.stream = (uv_stream_t*)&c->out;
  }
  o.stdio = stdio;
  o.stdio_count = 3;
  c->started = uv_hrtime();
  rc = (int)UVT_CALL(uvctx_spawn(&c->p, ctx, &o, opts, child_cb));
  c->pid = uvctx_process_pid(&c->p);
  if (pipe_out && rc == 0 && c->p.state_ != 0 && uvctx_process_pid(&c->p) > 0)
    ck_assert_int_eq(uv_read_start((uv_stream_t*)&c->out, out_alloc, out_read),
                     0);
  else if (pipe_out && rc == 0)
    uvt_close_and_wait((uv_handle_t*)&c->out), c->out_closed = 1;
  return rc;
}

static void child_wait(child_t* c, int status) {
  UVT_RUN_UNTIL(c->op.calls == 1);
  UVT_OP_CHECK(&c->op, status);
  ck_assert_int_eq(c->pid_in_cb, 0);
  ck_assert_int_eq(c->open_in_cb, 0); /* process and timer closed */
  if (c->pid > 0) {
    /* Reaped: no zombie of ours is left. */
    int st;
    ck_assert_int_eq(waitpid(c->pid, &st, WNOHANG), -1);
    ck_assert_int_eq(errno, ECHILD);
  }
}

/* The child's stdout reaches EOF once every process holding it is gone. */
static void child_out_wait(child_t* c) {
  UVT_RUN_UNTIL(c->out_closed);
}

/* Is `pid` gone (or a zombie nobody reaps: PID 1 of a container may not)? */
static int pid_gone(int pid) {
  char path[64], buf[256];
  FILE* f;
  const char* p;
  if (kill(pid, 0) != 0)
    return 1;
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  f = fopen(path, "r");
  if (f == NULL)
    return 1;
  p = fgets(buf, sizeof(buf), f);
  fclose(f);
  p = p != NULL ? strrchr(buf, ')') : NULL;
  return p != NULL && p[1] == ' ' && p[2] == 'Z';
}

START_TEST(spawn_exits_by_itself) {
  char* argv[] = {"/bin/sh", "-c", "exit 3", NULL};
  child_t c;
  ck_assert_int_eq(child_start(&c, uvt_bg, argv, NULL, 0), 0);
  ck_assert_int_gt(uvctx_process_pid(&c.p), 0);
  child_wait(&c, 0);
  ck_assert_int_eq(c.exit_status, 3);
  ck_assert_int_eq(c.term_signal, 0);
}
END_TEST

START_TEST(spawn_sigterm_on_cancel) {
  char* argv[] = {"/bin/sleep", "30", NULL};
  child_t c;
  uvctx_t* ctx;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  ck_assert_int_eq(child_start(&c, ctx, argv, NULL, 0), 0);
  uvt_run_for(20);
  uvt_cancel(ctx);
  child_wait(&c, UV_ECANCELED);
  ck_assert_int_eq(c.term_signal, SIGTERM);
  uvctx_release(ctx);
}
END_TEST

START_TEST(spawn_sigkill_after_wait_delay) {
  char* argv[] = {"/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 30",
                  NULL};
  uvctx_spawn_options_t o = {0, 100, 0};
  child_t c;
  uvctx_t* ctx;
  uint64_t cancelled;
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 60000, &ctx), 0);
  ck_assert_int_eq(child_start(&c, ctx, argv, &o, 1), 0);
  UVT_RUN_UNTIL(strstr(c.text, "ready") != NULL); /* the trap is set */
  cancelled = uv_hrtime();
  uvt_cancel(ctx);
  child_wait(&c, UV_ECANCELED);
  ck_assert_int_eq(c.term_signal, SIGKILL);
  ck_assert_uint_ge(c.ended - cancelled, 100 * 1000000ull);
  child_out_wait(&c);
  uvctx_release(ctx);
}
END_TEST

START_TEST(spawn_custom_signal_and_exit_0_after_it) {
  /* The child exits 0 on SIGUSR1: still ctx's err, since uvctx signalled
   * it; exit_status says how it ended. */
  char* argv[] = {"/bin/sh", "-c",
                  "trap 'exit 0' USR1; echo ready; while :; do sleep 0.02; "
                  "done",
                  NULL};
  uvctx_spawn_options_t o = {SIGUSR1, UINT64_MAX, 0};
  child_t c;
  uvctx_t* ctx;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  ck_assert_int_eq(child_start(&c, ctx, argv, &o, 1), 0);
  UVT_RUN_UNTIL(strstr(c.text, "ready") != NULL);
  uvt_cancel(ctx);
  child_wait(&c, UV_ECANCELED);
  ck_assert_int_eq(c.exit_status, 0);
  ck_assert_int_eq(c.term_signal, 0);
  child_out_wait(&c);
  uvctx_release(ctx);
}
END_TEST

START_TEST(spawn_not_found) {
  char* argv[] = {"/nonexistent/uvctx-no-such-command", NULL};
  child_t c;
  ck_assert_int_eq(child_start(&c, uvt_bg, argv, NULL, 0), 0);
  child_wait(&c, UV_ENOENT);
}
END_TEST

START_TEST(spawn_already_done) {
  char path[256];
  char* argv[] = {"/usr/bin/touch", path, NULL};
  child_t c;
  uvctx_t* ctx;
  struct stat st;
  snprintf(path, sizeof(path), "%s/uvctx-spawn-%d", uvt_tmpdir(),
           (int)getpid());
  unlink(path);
  ck_assert_int_eq(uvctx_with_timeout(uvt_bg, 0, &ctx), 0);
  ck_assert_int_eq(child_start(&c, ctx, argv, NULL, 0), 0);
  ck_assert_int_eq(uvctx_process_pid(&c.p), 0);
  child_wait(&c, UV_ETIMEDOUT);
  ck_assert_int_eq(c.exit_status, 0);
  ck_assert_int_eq(c.term_signal, 0);
  uvt_run_for(50);
  ck_assert_int_ne(stat(path, &st), 0); /* nothing ran */
  uvctx_release(ctx);
}
END_TEST

/* The child prints two grandchildren's pids, then "ready", and waits. */
static void group_case(int process_group, int ignore_term) {
  char script[256];
  char* argv[] = {"/bin/sh", "-c", script, NULL};
  uvctx_spawn_options_t o = {0, 100, process_group};
  child_t c;
  uvctx_t* ctx;
  int g1 = 0, g2 = 0;
  /* With a group, a pipeline too (its first command's pid is not
   * printed: the group signal must reach it anyway). Without one, only
   * processes this test can clean up after by pid. */
  snprintf(script, sizeof(script),
           "%s sleep 30 & echo $!; %s & echo $!; echo ready; wait",
           ignore_term ? "trap '' TERM;" : "",
           process_group ? "sleep 30 | sleep 30" : "sleep 30");
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &ctx), 0);
  ck_assert_int_eq(child_start(&c, ctx, argv, &o, 1), 0);
  UVT_RUN_UNTIL(strstr(c.text, "ready") != NULL);
  ck_assert_int_eq(sscanf(c.text, "%d %d", &g1, &g2), 2);
  ck_assert_int_eq(pid_gone(g1), 0);
  uvt_cancel(ctx);
  child_wait(&c, UV_ECANCELED);
  if (process_group) {
    /* Both signals reach the whole tree. */
    UVT_RUN_UNTIL(pid_gone(g1) && pid_gone(g2));
    ck_assert_int_eq(c.term_signal, ignore_term ? SIGKILL : SIGTERM);
  } else {
    /* Only the child was signalled: its children live on. */
    uvt_run_for(50);
    ck_assert_int_eq(pid_gone(g1), 0);
    ck_assert_int_eq(pid_gone(g2), 0);
    kill(g1, SIGKILL);
    kill(g2, SIGKILL);
  }
  child_out_wait(&c);
  uvctx_release(ctx);
}

START_TEST(spawn_process_group_reaches_grandchildren) {
  group_case(1, 0);
  group_case(1, 1);
}
END_TEST

START_TEST(spawn_without_group_signals_the_child_only) {
  group_case(0, 0);
}
END_TEST

static void never_cb(uv_process_t* p, int64_t s, int t) {
  (void)p;
  (void)s;
  (void)t;
}

START_TEST(spawn_bad_args) {
  char* argv[] = {"/bin/true", NULL};
  uv_process_options_t o;
  uvctx_spawn_options_t so = {NSIG + 5, 0, 0};
  child_t c;
  uint64_t before = uvctx_live_allocations();
  int open = uvt_open_handles();
  memset(&c, 0, sizeof(c));
  memset(&o, 0, sizeof(o));
  o.file = argv[0];
  o.args = argv;
  ck_assert_int_eq(uvctx_spawn(NULL, uvt_bg, &o, NULL, child_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_spawn(&c.p, NULL, &o, NULL, child_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_spawn(&c.p, uvt_bg, NULL, NULL, child_cb), UV_EINVAL);
  ck_assert_int_eq(uvctx_spawn(&c.p, uvt_bg, &o, NULL, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_spawn(&c.p, uvt_bg, &o, &so, child_cb), UV_EINVAL);
  o.exit_cb = never_cb;
  ck_assert_int_eq(uvctx_spawn(&c.p, uvt_bg, &o, NULL, child_cb), UV_EINVAL);
  o.exit_cb = NULL;
  o.file = NULL;
  ck_assert_int_eq(uvctx_spawn(&c.p, uvt_bg, &o, NULL, child_cb), UV_EINVAL);
  ck_assert_int_eq(uvt_open_handles(), open);
  uvt_check_nothing(before, &c.op);
}
END_TEST

static Suite* uv_process_suite(void) {
  const TTest* const tests[] = {spawn_exits_by_itself,
                                spawn_sigterm_on_cancel,
                                spawn_sigkill_after_wait_delay,
                                spawn_custom_signal_and_exit_0_after_it,
                                spawn_not_found,
                                spawn_already_done,
                                spawn_process_group_reaches_grandchildren,
                                spawn_without_group_signals_the_child_only,
                                spawn_bad_args,
                                NULL};
  Suite* s = suite_create("uv_process");
  uvt_add_tcase(s, "spawn", uvt_setup, tests);
  return s;
}

int main(void) {
  return uvt_main(uv_process_suite());
}
