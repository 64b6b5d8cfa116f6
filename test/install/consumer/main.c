/* A consumer of an installed uvctx: proves that the installed headers
 * compile cleanly and that the installed library links and runs, through
 * find_package() and through pkg-config. It prints "consumer ok" and exits
 * 0 only if a timeout and a cancel behave as documented and nothing leaks. */
#include <stdio.h>
#include <stdlib.h>

#include <uvctx.h>

#define CHECK(expr)                                                        \
  do {                                                                     \
    if (!(expr)) {                                                         \
      fprintf(stderr, "consumer: %s:%d: %s\n", __FILE__, __LINE__, #expr); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

static int fired;
static int fired_err;

static void on_done(uvctx_watch_t* w, int err) {
  (void)w;
  fired++;
  fired_err = err;
}

int main(void) {
  uv_loop_t loop;
  uvctx_loop_t* l;
  uvctx_t* req;
  uvctx_t* child;
  uvctx_watch_t w;

  CHECK(uv_loop_init(&loop) == 0);
  CHECK(uvctx_loop_init(&loop, &l) == 0);

  /* A 10 ms timeout fires with UV_ETIMEDOUT; its watch keeps uv_run()
   * alive until then. */
  CHECK(uvctx_with_timeout(uvctx_background(l), 10, &req) == 0);
  CHECK(uvctx_watch_start(&w, req, on_done) == 0);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(fired == 1 && fired_err == UV_ETIMEDOUT);
  CHECK(uvctx_err(req) == UV_ETIMEDOUT);

  /* A child of a done context is born done. */
  CHECK(uvctx_with_cancel(req, &child) == 0);
  CHECK(uvctx_err(child) == UV_ETIMEDOUT);
  uvctx_release(child);
  uvctx_release(req);

  CHECK(uvctx_loop_close(l) == 0);
  CHECK(uv_run(&loop, UV_RUN_DEFAULT) == 0);
  CHECK(uv_loop_close(&loop) == 0);
  CHECK(uvctx_live_allocations() == 0);
#ifdef UVCTX_WITH_TLS
  printf("consumer ok (uvctx %d.%d.%d, with TLS)\n", UVCTX_VERSION_MAJOR,
         UVCTX_VERSION_MINOR, UVCTX_VERSION_PATCH);
#else
  printf("consumer ok (uvctx %d.%d.%d)\n", UVCTX_VERSION_MAJOR,
         UVCTX_VERSION_MINOR, UVCTX_VERSION_PATCH);
#endif
  return 0;
}
