/* helpers.c: the definitions behind helpers.h (see there). */
#include "helpers.h"

uvt_fixture_t uvt_fx__;
void uvt_watchdog_cb__(uv_timer_t* t) {
  (void)t;
  ck_abort_msg("watchdog: the test ran longer than its budget");
}

void uvt_watchdog_set(uint64_t ms) {
  uv_update_time(&uvt_fx__.loop);
  ck_assert_int_eq(uv_timer_start(&uvt_fx__.watchdog, uvt_watchdog_cb__, ms, 0),
                   0);
}

void uvt_setup(void) {
  memset(&uvt_fx__, 0, sizeof(uvt_fx__));
  uvt_fx__.main_thread = uv_thread_self();
  ck_assert_int_eq(uv_loop_init(&uvt_fx__.loop), 0);
  /* UVCTX_TEST_LOOP_FLAGS runs a suite again with uvctx_loop_init_ex()
   * flags, e.g. 1 for UVCTX_LOOP_HIRES_DEADLINES. */
  ck_assert_int_eq(
      uvctx_loop_init_ex(&uvt_fx__.loop,
                         getenv("UVCTX_TEST_LOOP_FLAGS") != NULL
                             ? (unsigned)atoi(getenv("UVCTX_TEST_LOOP_FLAGS"))
                             : 0,
                         &uvt_fx__.l),
      0);
  ck_assert_ptr_nonnull(uvt_fx__.l);
  ck_assert_int_eq(uv_timer_init(&uvt_fx__.loop, &uvt_fx__.watchdog), 0);
  ck_assert_int_eq(uv_timer_init(&uvt_fx__.loop, &uvt_fx__.tick), 0);
  uv_unref((uv_handle_t*)&uvt_fx__.watchdog);
  uvt_watchdog_set(UVT_WATCHDOG_MS);
  uvt_fx__.ready = 1;
}

void uvt_dump(uvctx_loop_t* l, const char* why) {
  uvctx_loop_counts_t n;
  uvctx_loop_counts(l, &n);
  fprintf(stderr,
          "%s: contexts=%" PRIu64 " watches=%" PRIu64 " deadlines=%" PRIu64
          " live_allocations=%" PRIu64 "\n",
          why, n.contexts, n.watches, n.deadlines, uvctx_live_allocations());
  uvctx_loop_dump(l, stderr);
}

void uvt_close_walk_cb__(uv_handle_t* h, void* arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

void uvt_loop_finish(uv_loop_t* loop) {
  uv_walk(loop, uvt_close_walk_cb__, NULL);
  ck_assert_int_eq(uv_run(loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(loop), 0);
}

void uvt_teardown(void) {
  int rc;
  if (!uvt_fx__.ready)
    return;
  uv_timer_stop(&uvt_fx__.tick);
  rc = uvctx_loop_close(uvt_fx__.l);
  if (rc != 0)
    uvt_dump(uvt_fx__.l, "teardown: uvctx_loop_close failed");
  ck_assert_int_eq(rc, 0);
  uvt_fx__.l = NULL;
  uvt_loop_finish(&uvt_fx__.loop);
  ck_assert_uint_eq(uvctx_live_allocations(), 0);
  uvt_fx__.ready = 0;
}

const char* uvt_tmpdir(void) {
  const char* d = getenv("TMPDIR");
  return d != NULL && d[0] != '\0' ? d : P_tmpdir;
}

void uvt_tick_cb__(uv_timer_t* t) {
  (void)t;
  if (uv_hrtime() >= uvt_fx__.wait_until)
    uvt_fx__.wait_expired = 1;
}

void uvt_wait_begin__(uint64_t ms) {
  uvt_fx__.wait_until = uv_hrtime() + ms * 1000000u;
  uvt_fx__.wait_expired = 0;
  ck_assert_int_eq(uv_timer_start(&uvt_fx__.tick, uvt_tick_cb__, 1, 1), 0);
}

int uvt_wait_step__(void) {
  uv_run(&uvt_fx__.loop, UV_RUN_ONCE);
  return !uvt_fx__.wait_expired;
}

void uvt_wait_end__(int ok, const char* what, const char* file, int line,
                    uint64_t ms) {
  uv_timer_stop(&uvt_fx__.tick);
  if (!ok)
    ck_abort_msg("%s:%d: waited %" PRIu64 " ms for: %s", file, line, ms, what);
}

void uvt_run_for(uint64_t ms) {
  uvt_wait_begin__(ms);
  while (uvt_wait_step__())
    ;
  uv_timer_stop(&uvt_fx__.tick);
}

void uvt_closed_cb__(uv_handle_t* h) {
  *(int*)h->data = 1;
}

void uvt_close_and_wait(uv_handle_t* h) {
  int closed = 0;
  h->data = &closed;
  uv_close(h, uvt_closed_cb__);
  UVT_RUN_UNTIL(closed);
}

int uvt_on_main_thread(void) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &uvt_fx__.main_thread);
}

uint64_t uvt_seed(const char* test) {
  const char* s = getenv("UVCTX_TEST_SEED");
  uint64_t seed;
  if (s != NULL && *s != '\0')
    seed = strtoull(s, NULL, 0);
  else
    seed = uv_hrtime() ^ ((uint64_t)getpid() << 32);
  fprintf(stderr,
          "%s: seed %" PRIu64 " (replay: UVCTX_TEST_SEED=%" PRIu64 ")\n", test,
          seed, seed);
  return seed;
}

uint64_t uvt_rand(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15u);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
  return z ^ (z >> 31);
}

uint64_t uvt_rand_below(uint64_t* state, uint64_t n) {
  return n ? uvt_rand(state) % n : 0;
}

void uvt_loop_thread_stop_cb__(uv_async_t* a) {
  uvt_loop_thread_t* t = a->data;
  if (t->on_stop != NULL)
    t->on_stop(t);
  t->close_rc = uvctx_loop_close(t->l);
  if (t->close_rc != 0)
    uvt_dump(t->l, "loop thread: uvctx_loop_close failed");
  uv_close((uv_handle_t*)a, NULL);
}

void uvt_loop_thread_main__(void* arg) {
  uvt_loop_thread_t* t = arg;
  t->self = uv_thread_self();
  uv_sem_post(&t->started);
  uv_run(&t->loop, UV_RUN_DEFAULT);
}

void uvt_loop_thread_start(uvt_loop_thread_t* t) {
  memset(t, 0, sizeof(*t));
  ck_assert_int_eq(uv_loop_init(&t->loop), 0);
  ck_assert_int_eq(uvctx_loop_init(&t->loop, &t->l), 0);
  ck_assert_int_eq(uv_async_init(&t->loop, &t->stop, uvt_loop_thread_stop_cb__),
                   0);
  t->stop.data = t;
  ck_assert_int_eq(uv_sem_init(&t->started, 0), 0);
  ck_assert_int_eq(uv_thread_create(&t->thread, uvt_loop_thread_main__, t), 0);
  uv_sem_wait(&t->started);
}

int uvt_on_loop_thread(const uvt_loop_thread_t* t) {
  uv_thread_t self = uv_thread_self();
  return uv_thread_equal(&self, &t->self);
}

void uvt_loop_thread_stop(uvt_loop_thread_t* t) {
  int rc;
  ck_assert_int_eq(uv_async_send(&t->stop), 0);
  ck_assert_int_eq(uv_thread_join(&t->thread), 0);
  uv_sem_destroy(&t->started);
  rc = t->close_rc;
  if (rc != 0) {
    /* Leave the loop as is: the test fails on the next line. */
    ck_assert_int_eq(rc, 0);
  }
  uvt_loop_finish(&t->loop);
}

void uvt_run_on_small_stack(void (*fn)(void*), void* arg, size_t stack_kib) {
  uv_thread_t t;
  uv_thread_options_t opt;
  opt.flags = UV_THREAD_HAS_STACK_SIZE;
  opt.stack_size = stack_kib * 1024;
  ck_assert_int_eq(uv_thread_create_ex(&t, &opt, fn, arg), 0);
  ck_assert_int_eq(uv_thread_join(&t), 0);
}

uint64_t uvt_rss_kib(void) {
  unsigned long size = 0, resident = 0;
  FILE* f = fopen("/proc/self/statm", "r");
  if (f == NULL)
    return 0;
  if (fscanf(f, "%lu %lu", &size, &resident) != 2)
    resident = 0;
  fclose(f);
  return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE) / 1024;
}

_Thread_local int uvt_alloc_armed__;
atomic_long uvt_alloc_calls__;
atomic_long uvt_alloc_fail_at__;
atomic_long uvt_alloc_failures__;
int uvt_alloc_should_fail__(void) {
  long at, n;
  if (!uvt_alloc_armed__)
    return 0;
  at = atomic_load(&uvt_alloc_fail_at__);
  n = atomic_fetch_add(&uvt_alloc_calls__, 1) + 1;
  if (at > 0 && n == at) {
    atomic_fetch_add(&uvt_alloc_failures__, 1);
    return 1;
  }
  return 0;
}

void* uvt_malloc__(size_t size) {
  return uvt_alloc_should_fail__() ? NULL : malloc(size);
}

void* uvt_realloc__(void* p, size_t size) {
  return uvt_alloc_should_fail__() ? NULL : realloc(p, size);
}

void* uvt_calloc__(size_t n, size_t size) {
  return uvt_alloc_should_fail__() ? NULL : calloc(n, size);
}

void uvt_free__(void* p) {
  free(p);
}

void uvt_alloc_install(void) {
  ck_assert_int_eq(uvctx_replace_allocator(uvt_malloc__, uvt_realloc__,
                                           uvt_calloc__, uvt_free__),
                   0);
}

void uvt_alloc_fail_nth(long n) {
  uvt_alloc_armed__ = 1;
  atomic_store(&uvt_alloc_fail_at__, 0);
  atomic_store(&uvt_alloc_calls__, 0);
  atomic_store(&uvt_alloc_failures__, 0);
  atomic_store(&uvt_alloc_fail_at__, n);
}

void uvt_alloc_disarm(void) {
  atomic_store(&uvt_alloc_fail_at__, 0);
  uvt_alloc_armed__ = 0;
}

long uvt_alloc_calls(void) {
  return atomic_load(&uvt_alloc_calls__);
}

int uvt_alloc_failed(void) {
  return atomic_load(&uvt_alloc_failures__) != 0;
}

int uvt_main(Suite* s) {
  SRunner* sr = srunner_create(s);
  int failed;
  srunner_run_all(sr, CK_ENV);
  failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
