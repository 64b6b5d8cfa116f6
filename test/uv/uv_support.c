/* uv_support.c owns the helpers of the uv suites declared in
 * uv_support.h, built on the fixture of the test-support library. */
#include <pthread.h>
#include <signal.h>

#include "uv_support.h"

#include <sys/socket.h>
#include <unistd.h>

int uvt_in_call;

long uvt_call_end__(long v) {
  uvt_in_call = 0;
  return v;
}

void uvt_op_record(uvt_op_t* op, long status) {
  op->calls++;
  op->status = status;
  if (!uvt_on_main_thread())
    op->off_thread++;
  if (uvt_in_call)
    op->in_call++;
}

void uvt_check_nothing(uint64_t allocs_before, const uvt_op_t* op) {
  ck_assert_uint_eq(uvctx_live_allocations(), allocs_before);
  uvt_run_for(5);
  ck_assert_int_eq(op->calls, 0);
}

void uvt_cancel(uvctx_t* c) {
  ck_assert_int_eq(UVT_CALL(uvctx_cancel(c)), 0);
}

void uvt_listener_conn_cb__(uv_stream_t* s, int status) {
  uvt_listener_t* L = s->data;
  if (status != 0 || L->no_accept || L->naccepted == UVT_MAX_ACCEPTED)
    return;
  ck_assert_int_eq(uv_tcp_init(s->loop, &L->accepted[L->naccepted]), 0);
  ck_assert_int_eq(uv_accept(s, (uv_stream_t*)&L->accepted[L->naccepted]), 0);
  L->naccepted++;
}

int uvt_listener_start(uvt_listener_t* L, const char* ip, int backlog) {
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  memset(L, 0, sizeof(*L));
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &L->server), 0);
  L->server.data = L;
  if (strchr(ip, ':') != NULL) {
    struct sockaddr_in6 a6;
    ck_assert_int_eq(uv_ip6_addr(ip, 0, &a6), 0);
    ck_assert_int_eq(uv_tcp_bind(&L->server, (struct sockaddr*)&a6, 0), 0);
  } else {
    struct sockaddr_in a4;
    ck_assert_int_eq(uv_ip4_addr(ip, 0, &a4), 0);
    ck_assert_int_eq(uv_tcp_bind(&L->server, (struct sockaddr*)&a4, 0), 0);
  }
  ck_assert_int_eq(
      uv_listen((uv_stream_t*)&L->server, backlog, uvt_listener_conn_cb__), 0);
  ck_assert_int_eq(uv_tcp_getsockname(&L->server, (struct sockaddr*)&ss, &len),
                   0);
  L->port =
      ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&ss)->sin6_port
                                     : ((struct sockaddr_in*)&ss)->sin_port);
  return L->port;
}

void uvt_listener_closed__(uv_handle_t* h) {
  uvt_listener_t* L = h->data;
  L->closes--;
}

void uvt_listener_close(uvt_listener_t* L) {
  int i;
  L->closes = 1 + L->naccepted;
  for (i = 0; i < L->naccepted; i++) {
    L->accepted[i].data = L;
    uv_close((uv_handle_t*)&L->accepted[i], uvt_listener_closed__);
  }
  uv_close((uv_handle_t*)&L->server, uvt_listener_closed__);
  UVT_RUN_UNTIL(L->closes == 0);
}

int uvt_refused_port(const char* ip) {
  uvt_listener_t L;
  int port = uvt_listener_start(&L, ip, 1);
  uvt_listener_close(&L);
  return port;
}

void uvt_addr(const char* ip, int port, struct sockaddr_storage* ss) {
  memset(ss, 0, sizeof(*ss));
  if (strchr(ip, ':') != NULL)
    ck_assert_int_eq(uv_ip6_addr(ip, port, (struct sockaddr_in6*)ss), 0);
  else
    ck_assert_int_eq(uv_ip4_addr(ip, port, (struct sockaddr_in*)ss), 0);
}

void uvt_hanging_connected__(uv_connect_t* c, int status) {
  uvt_hanging_t* h = c->data;
  ck_assert_int_eq(status, 0);
  h->connected = 1;
}

int uvt_hanging_start(uvt_hanging_t* h, const char* ip) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  uvt_addr(ip, 0, &ss);
  h->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(h->fd, 0);
  ck_assert_int_eq(bind(h->fd, (struct sockaddr*)&ss,
                        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in)),
                   0);
  ck_assert_int_eq(listen(h->fd, 0), 0);
  ck_assert_int_eq(getsockname(h->fd, (struct sockaddr*)&ss, &len), 0);
  h->port =
      ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6*)&ss)->sin6_port
                                     : ((struct sockaddr_in*)&ss)->sin_port);
  h->connected = 0;
  ck_assert_int_eq(uv_tcp_init(uvt_loop, &h->filler), 0);
  h->creq.data = h;
  ck_assert_int_eq(uv_tcp_connect(&h->creq, &h->filler, (struct sockaddr*)&ss,
                                  uvt_hanging_connected__),
                   0);
  UVT_RUN_UNTIL(h->connected);
  return h->port;
}

void uvt_hanging_close(uvt_hanging_t* h) {
  uvt_close_and_wait((uv_handle_t*)&h->filler);
  close(h->fd);
}

void uvt_count_open__(uv_handle_t* h, void* arg) {
  if (!uv_is_closing(h))
    (*(int*)arg)++;
}

int uvt_open_handles(void) {
  int n = 0;
  uv_walk(uvt_loop, uvt_count_open__, &n);
  return n;
}

void uvt_count_in__(uv_handle_t* h, void* arg) {
  uvt_range_t* r = arg;
  if (!uv_is_closing(h) && (const char*)h >= r->lo && (const char*)h < r->hi)
    r->n++;
}

int uvt_open_handles_in(const void* p, size_t size) {
  uvt_range_t r = {(const char*)p, (const char*)p + size, 0};
  uv_walk(uvt_loop, uvt_count_in__, &r);
  return r.n;
}

void uvt_pair_connected__(uv_connect_t* c, int status) {
  ck_assert_int_eq(status, 0);
  *(int*)c->data = 1;
}

void uvt_tcp_pair(uvt_listener_t* L, uv_tcp_t* a, uv_tcp_t* b) {
  struct sockaddr_storage ss;
  uv_connect_t creq;
  uv_os_fd_t fd;
  int connected = 0;
  uvt_listener_start(L, "127.0.0.1", 4);
  uvt_addr("127.0.0.1", L->port, &ss);
  ck_assert_int_eq(uv_tcp_init(uvt_loop, a), 0);
  creq.data = &connected;
  ck_assert_int_eq(
      uv_tcp_connect(&creq, a, (struct sockaddr*)&ss, uvt_pair_connected__), 0);
  UVT_RUN_UNTIL(connected && L->naccepted == 1);
  ck_assert_int_eq(uv_fileno((uv_handle_t*)&L->accepted[0], &fd), 0);
  ck_assert_int_eq(uv_tcp_init(uvt_loop, b), 0);
  ck_assert_int_eq(uv_tcp_open(b, dup(fd)), 0);
}

void uvt_canceller_main__(void* arg) {
  uvt_canceller_t* c = arg;
  uint64_t until;
  sigset_t all;
  /* Process signals go to the loop's thread, not to this one. Under TSan a
   * SIGCHLD that landed here (a thread that spins, cancels and exits) was
   * at times never handled, its handler deferred by the sanitizer, so a
   * spawn's exit went unseen and sleep_gai_spawn_random_cancel hung (7
   * runs in 66, with the mailbox of this branch and of the one before it
   * alike; none in 25 runs with the mask). */
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  until = uv_hrtime() + c->delay_ns;
  while (uv_hrtime() < until)
    ;
  uvctx_cancel(c->ctx);
  atomic_store(&c->done, 1);
}

void uvt_canceller_start(uvt_canceller_t* c, uvctx_t* ctx, uint64_t delay_ns) {
  c->ctx = ctx;
  c->delay_ns = delay_ns;
  atomic_store(&c->done, 0);
  ck_assert_int_eq(uv_thread_create(&c->thread, uvt_canceller_main__, c), 0);
}

void uvt_canceller_join(uvt_canceller_t* c) {
  ck_assert_int_eq(uv_thread_join(&c->thread), 0);
}

void uvt_blocker_work__(uv_work_t* w) {
  uvt_blocker_t* b = w->data;
  atomic_store(&b->running, 1);
  uv_sem_wait(&b->go);
}

void uvt_blocker_after__(uv_work_t* w, int status) {
  uvt_blocker_t* b = w->data;
  (void)status;
  b->after = 1;
}

void uvt_blocker_start(uvt_blocker_t* b) {
  memset(b, 0, sizeof(*b));
  ck_assert_int_eq(uv_sem_init(&b->go, 0), 0);
  b->req.data = b;
  ck_assert_int_eq(
      uv_queue_work(uvt_loop, &b->req, uvt_blocker_work__, uvt_blocker_after__),
      0);
  UVT_RUN_UNTIL(atomic_load(&b->running));
}

void uvt_blocker_release(uvt_blocker_t* b) {
  uv_sem_post(&b->go);
  UVT_RUN_UNTIL(b->after);
  uv_sem_destroy(&b->go);
}

void uvt_add_tcase(Suite* s, const char* name, void (*setup)(void),
                   const TTest* const* tests) {
  TCase* tc = tcase_create(name);
  tcase_add_checked_fixture(tc, setup, uvt_teardown);
  for (; *tests != NULL; tests++)
    tcase_add_test(tc, *tests);
  suite_add_tcase(s, tc);
}

void uvt_alloc_setup(void) {
  uvt_alloc_install();
  uvt_setup();
}
