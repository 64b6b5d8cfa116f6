/* test_ctx_misuse.c pins the misuse reports of the core: every broken
 * precondition of a core public function returns UV_EINVAL, and with
 * UVCTX_DEBUG=1 in the environment also writes one line to stderr naming
 * the function called (not an internal helper) and the precondition;
 * without it, nothing is written. Each case runs in a child process of its
 * own with stderr on a pipe, since the library reads UVCTX_DEBUG once. */
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "helpers.h"

/* Runs every misuse below in a forked child with UVCTX_DEBUG set to
 * `debug` (NULL: unset) and stderr on a pipe; returns what the child wrote
 * (malloc'd, NUL-terminated) and checks that each call returned
 * UV_EINVAL (the child's exit status counts the calls that did not). */
static char* run_misuses(const char* debug) {
  int fds[2];
  pid_t pid;
  char* text = NULL;
  size_t len = 0;
  int status;

  ck_assert_int_eq(pipe(fds), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    uv_loop_t loop;
    uvctx_loop_t* l;
    uvctx_t *c, *v, *bg;
    uvctx_watch_t w;
    static const uvctx_key_t key = {.name = "k"};
    int bad = 0;

    close(fds[0]);
    dup2(fds[1], 2);
    if (debug != NULL)
      setenv("UVCTX_DEBUG", debug, 1);
    else
      unsetenv("UVCTX_DEBUG");
    if (uv_loop_init(&loop) != 0 || uvctx_loop_init(&loop, &l) != 0)
      _exit(100);
    bg = uvctx_background(l);
    if (uvctx_with_value(bg, &key, NULL, &v) != 0)
      _exit(101);
    bad += uvctx_cancel(bg) != UV_EINVAL;
    bad += uvctx_cancel_cause(v, UV_ECONNRESET, NULL) != UV_EINVAL;
    bad += uvctx_with_cancel(NULL, &c) != UV_EINVAL;
    bad += uvctx_with_timeout_cause(bg, 10, 1, NULL, &c) != UV_EINVAL;
    bad += uvctx_with_deadline(bg, 1, NULL) != UV_EINVAL;
    bad += uvctx_any(NULL, 0, &c) != UV_EINVAL;
    bad += uvctx_watch_start(&w, bg, NULL) != UV_EINVAL;
    bad += uvctx_loop_init_ex(&loop, 0x100, &l) != UV_EINVAL;
    uvctx_unref(v);
    if (uvctx_loop_close(l) != 0)
      _exit(102);
    uv_run(&loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&loop) != 0)
      _exit(103);
    _exit(bad);
  }
  close(fds[1]);
  for (;;) {
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    text = realloc(text, len + (size_t)n + 1);
    ck_assert_ptr_nonnull(text);
    memcpy(text + len, buf, (size_t)n);
    len += (size_t)n;
  }
  close(fds[0]);
  ck_assert_int_eq(waitpid(pid, &status, 0), pid);
  ck_assert(WIFEXITED(status));
  ck_assert_int_eq(WEXITSTATUS(status), 0);
  if (text == NULL)
    text = calloc(1, 1);
  ck_assert_ptr_nonnull(text);
  text[len] = '\0';
  return text;
}

START_TEST(debug_names_function_and_precondition) {
  static const char* const expected[] = {
      "uvctx: uvctx_cancel: the context cannot be cancelled (background, "
      "value or without_cancel)\n",
      "uvctx: uvctx_cancel_cause: the context cannot be cancelled "
      "(background, value or without_cancel)\n",
      "uvctx: uvctx_with_cancel: parent is not a context\n",
      "uvctx: uvctx_with_timeout_cause: cause is not a negative error code\n",
      "uvctx: uvctx_with_deadline: out is NULL\n",
      "uvctx: uvctx_any: no parents\n",
      "uvctx: uvctx_watch_start: cb is NULL\n",
      "uvctx: uvctx_loop_init_ex: unknown flags\n",
  };
  char* text = run_misuses("1");
  const char* p = text;
  size_t i;
  /* Exactly these lines, in this order, and nothing else. */
  for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++) {
    size_t n = strlen(expected[i]);
    if (strncmp(p, expected[i], n) != 0)
      ck_abort_msg("line %zu: expected \"%s\", got \"%s\"", i + 1, expected[i],
                   p);
    p += n;
  }
  ck_assert_str_eq(p, "");
  free(text);
}
END_TEST

START_TEST(nothing_printed_without_debug) {
  char* text = run_misuses(NULL);
  ck_assert_str_eq(text, "");
  free(text);
  text = run_misuses("0");
  ck_assert_str_eq(text, "");
  free(text);
}
END_TEST

static Suite* misuse_suite(void) {
  Suite* s = suite_create("misuse");
  TCase* tc = tcase_create("misuse");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, debug_names_function_and_precondition);
  tcase_add_test(tc, nothing_printed_without_debug);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(misuse_suite());
}
