/* test_misuse.c pins the misuse reports of lib/common/debug.c: with
 * UVCTX_DEBUG set, a call that breaks a precondition still returns
 * UV_EINVAL and also writes one line naming the function and the broken
 * precondition to stderr; without it, nothing is written. Check forks each
 * test, so every test starts with the setting unread. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "uvctx/metrics.h"
#include "uvctx/trace.h"

/* stderr goes to a scratch file while a test runs its misuses. */
static int saved_stderr = -1;
static char path[512];

static void capture_begin(void) {
  int fd;
  snprintf(path, sizeof(path), "%s/uvctx-misuse-XXXXXX", uvt_tmpdir());
  fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  fflush(stderr);
  saved_stderr = dup(2);
  ck_assert_int_ge(saved_stderr, 0);
  ck_assert_int_eq(dup2(fd, 2), 2);
  close(fd);
}

/* Restores stderr and returns what was written (free it). */
static char* capture_end(void) {
  FILE* f;
  char* text;
  long n;
  fflush(stderr);
  ck_assert_int_eq(dup2(saved_stderr, 2), 2);
  close(saved_stderr);
  f = fopen(path, "rb");
  ck_assert_ptr_nonnull(f);
  fseek(f, 0, SEEK_END);
  n = ftell(f);
  rewind(f);
  text = calloc(1, (size_t)n + 1);
  ck_assert_ptr_nonnull(text);
  ck_assert_uint_eq(fread(text, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  unlink(path);
  return text;
}

/* Runs the same four misuses in every test. */
static void misuse(void) {
  uvctx_loop_counts_t counts;
  char* text = NULL;
  ck_assert_int_eq(uvctx_loop_trace_stop(uvt_l, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_loop_counts(uvt_l, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_loop_counts(NULL, &counts), UV_EINVAL);
  ck_assert_int_eq(uvctx_metrics_format(NULL, NULL, 1, &text, NULL), UV_EINVAL);
  ck_assert_ptr_null(text);
}

START_TEST(test_debug_names_function_and_precondition) {
  char* text;
  ck_assert_int_eq(setenv("UVCTX_DEBUG", "1", 1), 0);
  capture_begin();
  misuse();
  text = capture_end();
  ck_assert_str_eq(text,
                   "uvctx: uvctx_loop_trace_stop: the loop is not traced\n"
                   "uvctx: uvctx_loop_counts: out is NULL\n"
                   "uvctx: uvctx_loop_counts: the loop binding is NULL\n"
                   "uvctx: uvctx_metrics_format: stats is NULL but n is not "
                   "0\n");
  free(text);
}
END_TEST

START_TEST(test_silent_without_debug) {
  char* text;
  ck_assert_int_eq(unsetenv("UVCTX_DEBUG"), 0);
  capture_begin();
  misuse();
  text = capture_end();
  ck_assert_str_eq(text, "");
  free(text);
}
END_TEST

START_TEST(test_debug_zero_is_off) {
  char* text;
  ck_assert_int_eq(setenv("UVCTX_DEBUG", "0", 1), 0);
  capture_begin();
  misuse();
  text = capture_end();
  ck_assert_str_eq(text, "");
  free(text);
}
END_TEST

static Suite* misuse_suite(void) {
  Suite* s = suite_create("misuse");
  TCase* tc = tcase_create("debug");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, test_debug_names_function_and_precondition);
  tcase_add_test(tc, test_silent_without_debug);
  tcase_add_test(tc, test_debug_zero_is_off);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(misuse_suite());
}
