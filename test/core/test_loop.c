/* test_loop.c pins lib/core/loop.c and lib/obs/dump.c: the binding's life
 * cycle, the background context, uvctx_loop_close() refusing (and closing
 * nothing) while contexts or watches live, the leak report naming each
 * context, and a loop set up on one thread and run on another. */
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>

#include "helpers.h"

static const uvctx_key_t key_req = {.name = "request.id"};

static void never_cb(uvctx_watch_t* w, int err) {
  (void)w;
  ck_abort_msg("this watch must not fire (err %d)", err);
}

static uvctx_loop_counts_t counts(void) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(uvt_l, &n);
  return n;
}

/* Everything uvctx_loop_dump() writes, as a string to free(). */
static char* dump_text(uvctx_loop_t* l) {
  char* buf = NULL;
  size_t len = 0;
  FILE* f = open_memstream(&buf, &len);
  ck_assert_ptr_nonnull(f);
  uvctx_loop_dump(l, f);
  ck_assert_int_eq(fclose(f), 0);
  ck_assert_ptr_nonnull(buf);
  return buf;
}

static int count_lines_with(const char* text, const char* needle) {
  int n = 0;
  const char* line = text;
  while (line != NULL && *line != '\0') {
    const char* end = strchr(line, '\n');
    size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
    char* copy = strndup(line, len);
    ck_assert_ptr_nonnull(copy);
    if (strstr(copy, needle) != NULL)
      n++;
    free(copy);
    line = end != NULL ? end + 1 : NULL;
  }
  return n;
}

/* A report written to a stream that blocks (a full pipe, unbuffered) does
 * not hold the library lock while it waits: another thread can still
 * create and cancel contexts. */
static int set_blocking(int fd, int blocking) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0)
    return -1;
  fl = blocking ? fl & ~O_NONBLOCK : fl | O_NONBLOCK;
  return fcntl(fd, F_SETFL, fl) < 0 ? -1 : 0;
}

typedef struct {
  uvctx_loop_t* l;
  FILE* f;
  atomic_long tid; /* the kernel's id of the dumper thread */
  atomic_int started;
  atomic_int returned;
} dumper_t;

static void dumper_main(void* arg) {
  dumper_t* d = arg;
  atomic_store(&d->tid, (long)syscall(SYS_gettid));
  atomic_store(&d->started, 1);
  uvctx_loop_dump(d->l, d->f);
  atomic_store(&d->returned, 1);
}

typedef struct {
  uvctx_loop_t* l;
  atomic_int done;
} canceller_t;

static void canceller_main(void* arg) {
  canceller_t* c = arg;
  uvctx_t* ctx;
  ck_assert_int_eq(uvctx_with_cancel(uvctx_background(c->l), &ctx), 0);
  ck_assert_int_eq(uvctx_cancel(ctx), 0);
  uvctx_unref(ctx);
  atomic_store(&c->done, 1);
}

/* Bytes waiting in the pipe whose read end is `fd`, or -1. */
static long pipe_unread(int fd) {
  int n = 0;
  return ioctl(fd, FIONREAD, &n) == 0 ? (long)n : -1;
}

/* Is thread `tid` blocked writing to `fd`? From /proc/self/task/<tid>:
 * `syscall` names the call the thread is blocked in (1: write(fd, ...));
 * where that file cannot be read, the thread sleeping (state S) is taken
 * as blocked, the caller having checked that the pipe is still full.
 * Returns 1 or 0. */
static int blocked_in_write(long tid, int fd) {
  char path[96];
  char state = '?';
  FILE* f;
  snprintf(path, sizeof(path), "/proc/self/task/%ld/syscall", tid);
  f = fopen(path, "r");
  if (f != NULL) {
    long nr = -1;
    unsigned long arg0 = 0;
    int n = fscanf(f, "%ld %lx", &nr, &arg0);
    fclose(f);
    /* "running" (n == 0) is not blocked; EOF: unreadable, fall back. */
    if (n != EOF)
      return n == 2 && nr == SYS_write && arg0 == (unsigned long)fd;
  }
  snprintf(path, sizeof(path), "/proc/self/task/%ld/stat", tid);
  f = fopen(path, "r");
  if (f == NULL)
    return 0;
  /* pid (comm) state ...: comm may hold spaces and parentheses. */
  {
    char buf[512];
    size_t len = fread(buf, 1, sizeof(buf) - 1, f);
    char* paren;
    buf[len] = '\0';
    paren = strrchr(buf, ')');
    if (paren != NULL && paren[1] == ' ')
      state = paren[2];
  }
  fclose(f);
  return state == 'S';
}

START_TEST(dump_to_a_blocked_stream_holds_no_lock) {
  int fds[2];
  char junk[4096];
  dumper_t d;
  canceller_t c;
  uv_thread_t td, tc;
  uvctx_t* live;
  long filled = 0;
  uint64_t until;
  ssize_t w;
  int i, blocked = 0;
  ck_assert_int_eq(pipe(fds), 0);
  /* Fill the pipe, so that the report's first write blocks. */
  ck_assert_int_eq(set_blocking(fds[1], 0), 0);
  memset(junk, 'j', sizeof(junk));
  while ((w = write(fds[1], junk, sizeof(junk))) > 0)
    filled += (long)w;
  ck_assert_int_eq(set_blocking(fds[1], 1), 0);
  ck_assert_int_gt(filled, 0);
  ck_assert_int_eq(pipe_unread(fds[0]), filled);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &live), 0);
  memset(&d, 0, sizeof(d));
  d.l = uvt_l;
  d.f = fdopen(fds[1], "w");
  ck_assert_ptr_nonnull(d.f);
  setvbuf(d.f, NULL, _IONBF, 0);
  ck_assert_int_eq(uv_thread_create(&td, dumper_main, &d), 0);
  while (!atomic_load(&d.started))
    uv_sleep(1);
  /* Wait (bounded: the loop does not run, so neither does the watchdog)
   * until the dumper is known to be blocked in its write to the full pipe,
   * the pipe still as full as we left it. */
  until = uv_hrtime() + UVT_SCALE(10000, 30000) * (uint64_t)1000000;
  while (!atomic_load(&d.returned) && uv_hrtime() < until) {
    if (pipe_unread(fds[0]) == filled &&
        blocked_in_write(atomic_load(&d.tid), fds[1])) {
      blocked = 1;
      break;
    }
    uv_sleep(1);
  }
  if (!blocked) {
    int returned = atomic_load(&d.returned);
    /* Unblock the report before failing, so that the thread can end. */
    ck_assert_int_eq(set_blocking(fds[0], 0), 0);
    while (!atomic_load(&d.returned))
      if (read(fds[0], junk, sizeof(junk)) <= 0)
        uv_sleep(1);
    ck_assert_int_eq(uv_thread_join(&td), 0);
    ck_abort_msg("the dumper never blocked on the full pipe (%s)",
                 returned ? "it returned" : "timed out");
  }
  memset(&c, 0, sizeof(c));
  c.l = uvt_l;
  ck_assert_int_eq(uv_thread_create(&tc, canceller_main, &c), 0);
  for (i = 0; i < 2000 && !atomic_load(&c.done); i++)
    uv_sleep(1);
  /* Whatever happened, unblock the report before asserting. */
  {
    int canceled_while_blocked =
        atomic_load(&c.done) && !atomic_load(&d.returned);
    ck_assert_int_eq(set_blocking(fds[0], 0), 0);
    while (!atomic_load(&d.returned)) {
      if (read(fds[0], junk, sizeof(junk)) <= 0)
        uv_sleep(1);
    }
    ck_assert_int_eq(uv_thread_join(&td), 0);
    ck_assert_int_eq(uv_thread_join(&tc), 0);
    ck_assert_msg(canceled_while_blocked,
                  "a cancel waited for a report to a blocked stream");
  }
  fclose(d.f);
  close(fds[0]);
  uvctx_release(live);
}
END_TEST

START_TEST(init_bad_input) {
  uv_loop_t loop;
  uvctx_loop_t* l = NULL;
  uint64_t before = uvctx_live_allocations();
  ck_assert_int_eq(uvctx_loop_init(NULL, &l), UV_EINVAL);
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  ck_assert_int_eq(uvctx_loop_init(&loop, NULL), UV_EINVAL);
  ck_assert_ptr_null(l);
  ck_assert_uint_eq(uvctx_live_allocations(), before);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

START_TEST(background) {
  uvctx_t* bg = uvctx_background(uvt_l);
  const char* msg = "x";
  uint64_t dl;
  ck_assert_ptr_nonnull(bg);
  ck_assert_ptr_eq(uvctx_background(uvt_l), bg);
  ck_assert_ptr_eq(uvctx_loop_uv(uvt_l), uvt_loop);
  ck_assert_ptr_eq(uvctx_home(bg), uvt_l);
  ck_assert_int_eq(uvctx_err(bg), 0);
  ck_assert_int_eq(uvctx_cause(bg, &msg), 0);
  ck_assert_int_eq(uvctx_deadline(bg, &dl), 0);
  ck_assert_ptr_null(uvctx_value(bg, &key_req));
  ck_assert_ptr_eq(uvctx_ref(bg), bg);
  uvctx_unref(bg);
  uvctx_unref(bg);
  uvctx_release(bg);
  ck_assert_int_eq(uvctx_cancel(bg), UV_EINVAL);
  ck_assert_int_eq(uvctx_err(bg), 0);
  ck_assert_uint_eq(counts().contexts, 0);
  ck_assert_uint_eq(counts().watches, 0);
  ck_assert_uint_eq(counts().deadlines, 0);
}
END_TEST

/* The binding's handles are unreferenced: a loop with nothing else (or
 * only a watch on a context no deadline can reach) returns at once. */
START_TEST(binding_does_not_hold_the_loop) {
  uvctx_t* c;
  uvctx_watch_t w;
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_watch_start(&w, c, never_cb), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uvctx_watch_stop(&w), 1);
  uvctx_release(c);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
}
END_TEST

START_TEST(counts_follow_contexts) {
  uvctx_t *a, *b, *d;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &a), 0);
  ck_assert_int_eq(uvctx_with_value(a, &key_req, NULL, &b), 0);
  ck_assert_int_eq(uvctx_with_timeout(b, 100000, &d), 0);
  ck_assert_uint_eq(counts().contexts, 3);
  ck_assert_uint_eq(counts().deadlines, 1);
  uvctx_release(d);
  ck_assert_uint_eq(counts().contexts, 2);
  ck_assert_uint_eq(counts().deadlines, 0);
  uvctx_release(b);
  uvctx_release(a);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

/* Not static and not inlined: dladdr() names it in the leak report (the
 * test executable exports its symbols, see test/core.cmake). */
uvctx_t* forgotten_request(uvctx_t* parent, int value);
__attribute__((noinline)) uvctx_t* forgotten_request(uvctx_t* parent,
                                                     int value) {
  uvctx_t* c = NULL;
  static int v;
  v = value;
  if (value)
    ck_assert_int_eq(uvctx_with_value(parent, &key_req, &v, &c), 0);
  else
    ck_assert_int_eq(uvctx_with_cancel(parent, &c), 0);
  return c;
}

START_TEST(close_refuses_while_contexts_live) {
  uvctx_t *req, *val;
  char* text;
  char want[64];
  uvctx_watch_t w;

  req = forgotten_request(uvt_bg, 0);
  val = forgotten_request(req, 1);
  uvctx_ref(req);
  ck_assert_int_eq(uvctx_watch_start(&w, uvt_bg, never_cb), 0);
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);

  text = dump_text(uvt_l);
  fprintf(stderr, "%s", text);
  ck_assert_ptr_nonnull(strstr(text, "2 live context"));
  ck_assert_ptr_nonnull(strstr(text, "1 pending watch"));
  ck_assert_int_eq(count_lines_with(text, "  ctx "), 2);
  ck_assert_int_eq(count_lines_with(text, "kind=cancel"), 1);
  ck_assert_int_eq(count_lines_with(text, "kind=value"), 1);
  ck_assert_int_eq(count_lines_with(text, "request.id"), 1);
  ck_assert_int_eq(count_lines_with(text, "created at forgotten_request"), 2);
  /* The cancel context: its parent is the background, it has 3 references
   * (ours twice, the value child's); the value's parent is it. */
  snprintf(want, sizeof(want), "parent=%p refs=3", (void*)uvt_bg);
  ck_assert_int_eq(count_lines_with(text, want), 1);
  snprintf(want, sizeof(want), "parent=%p refs=1", (void*)req);
  ck_assert_int_eq(count_lines_with(text, want), 1);
  free(text);

  ck_assert_int_eq(uvctx_watch_stop(&w), 1);
  uvctx_unref(val);
  uvctx_unref(req);
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);
  uvctx_release(req);
  text = dump_text(uvt_l);
  ck_assert_ptr_nonnull(strstr(text, "0 live context"));
  ck_assert_int_eq(count_lines_with(text, "  ctx "), 0);
  free(text);
}
END_TEST

/* A deadline and a watch after a refused close. */
static void set_flag(uvctx_watch_t* w, int err) {
  *(int*)w->data = err;
}

START_TEST(refused_close_keeps_everything_working) {
  uvctx_t *c, *d;
  uvctx_watch_t w;
  int err = 0;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);
  ck_assert_int_eq(uvctx_with_timeout(c, 5, &d), 0);
  w.data = &err;
  ck_assert_int_eq(uvctx_watch_start(&w, d, set_flag), 0);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(err, UV_ETIMEDOUT);
  uvctx_unref(d);
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);
  uvctx_release(c);
}
END_TEST

START_TEST(close_refuses_while_watch_pending) {
  uvctx_t* c;
  uvctx_watch_t w;
  int err = 0;
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  w.data = &err;
  ck_assert_int_eq(uvctx_watch_start(&w, c, set_flag), 0);
  uvctx_release(c); /* cancelled: the callback is due, not run */
  ck_assert_uint_eq(counts().watches, 1);
  ck_assert_int_eq(uvctx_loop_close(uvt_l), UV_EBUSY);
  ck_assert_int_eq(uv_run(uvt_loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(err, UV_ECANCELED);
  ck_assert_uint_eq(counts().watches, 0);
  ck_assert_uint_eq(counts().contexts, 0);
}
END_TEST

/* The binding of a second loop on the same thread, closed by hand. */
START_TEST(two_bindings_one_thread) {
  uv_loop_t loop2;
  uvctx_loop_t* l2;
  uvctx_t *c, *x;
  ck_assert_int_eq(uv_loop_init(&loop2), 0);
  ck_assert_int_eq(uvctx_loop_init(&loop2, &l2), 0);
  ck_assert_ptr_ne(l2, uvt_l);
  ck_assert_ptr_ne(uvctx_background(l2), uvt_bg);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(c, l2, &x), 0);
  ck_assert_ptr_eq(uvctx_home(x), l2);
  ck_assert_int_eq(uvctx_loop_close(l2), UV_EBUSY);
  uvctx_release(c);
  ck_assert_int_eq(uvctx_err(x), UV_ECANCELED);
  ck_assert_int_eq(uvctx_loop_close(l2), UV_EBUSY);
  uvctx_unref(x);
  ck_assert_int_eq(uvctx_loop_close(l2), 0);
  uvt_loop_finish(&loop2);
}
END_TEST

/* Set up on this thread, run on another: callbacks run on the runner. */
typedef struct runner_probe_s {
  uvctx_watch_t w;
  uvt_loop_thread_t* t;
  atomic_int calls;
  atomic_int on_runner;
} runner_probe_t;

static void runner_cb(uvctx_watch_t* w, int err) {
  runner_probe_t* p = (runner_probe_t*)w;
  (void)err;
  atomic_store(&p->on_runner, uvt_on_loop_thread(p->t));
  atomic_fetch_add(&p->calls, 1);
}

START_TEST(set_up_here_run_there) {
  uvt_loop_thread_t t;
  runner_probe_t p[2];
  uvctx_t *c, *d;
  memset(p, 0, sizeof(p));
  uvt_loop_thread_start(&t);
  p[0].t = p[1].t = &t;
  ck_assert_int_eq(uvctx_with_cancel(uvctx_background(t.l), &c), 0);
  ck_assert_int_eq(uvctx_with_timeout(c, 10, &d), 0);
  ck_assert_int_eq(uvctx_watch_start(&p[0].w, c, runner_cb), 0);
  ck_assert_int_eq(uvctx_watch_start(&p[1].w, d, runner_cb), 0);
  uvctx_unref(d);
  UVT_RUN_UNTIL(atomic_load(&p[1].calls) == 1);
  ck_assert_int_eq(atomic_load(&p[0].calls), 0);
  uvctx_release(c);
  UVT_RUN_UNTIL(atomic_load(&p[0].calls) == 1);
  ck_assert_int_eq(atomic_load(&p[0].on_runner), 1);
  ck_assert_int_eq(atomic_load(&p[1].on_runner), 1);
  uvt_loop_thread_stop(&t);
}
END_TEST

static Suite* loop_suite(void) {
  Suite* s = suite_create("loop");
  TCase* tc = tcase_create("loop");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, init_bad_input);
  tcase_add_test(tc, background);
  tcase_add_test(tc, binding_does_not_hold_the_loop);
  tcase_add_test(tc, counts_follow_contexts);
  tcase_add_test(tc, close_refuses_while_contexts_live);
  tcase_add_test(tc, refused_close_keeps_everything_working);
  tcase_add_test(tc, close_refuses_while_watch_pending);
  tcase_add_test(tc, two_bindings_one_thread);
  tcase_add_test(tc, set_up_here_run_there);
  tcase_add_test(tc, dump_to_a_blocked_stream_holds_no_lock);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(loop_suite());
}
