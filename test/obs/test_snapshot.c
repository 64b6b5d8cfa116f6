/* test_snapshot.c pins uvctx_loop_snapshot() and uvctx_site_format() in
 * lib/dump.c: the records agree with the leak report field for field, the
 * walk sees contexts of trees that span loops, and running out of memory
 * is UV_ENOMEM with nothing stored. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uvctx/snapshot.h>

#include "helpers.h"

static const uvctx_key_t key_user = {"user", NULL, NULL};

/* Not static and not inlined: dladdr() names it (the test executable
 * exports its symbols, see test/obs.cmake). */
uvctx_t* make_request(uvctx_t* parent, uvctx_t** val);
__attribute__((noinline)) uvctx_t* make_request(uvctx_t* parent,
                                                uvctx_t** val) {
  uvctx_t* c = NULL;
  static int v;
  ck_assert_int_eq(uvctx_with_timeout(parent, 600000, &c), 0);
  ck_assert_int_eq(uvctx_with_value(c, &key_user, &v, val), 0);
  return c;
}

static const uvctx_ctx_info_t* find(const uvctx_ctx_info_t* v, size_t n,
                                    const void* id) {
  size_t i;
  for (i = 0; i < n; i++)
    if (v[i].id == id)
      return &v[i];
  return NULL;
}

static char* dump_text(uvctx_loop_t* l) {
  char* text = NULL;
  size_t len = 0;
  FILE* f = open_memstream(&text, &len);
  ck_assert_ptr_nonnull(f);
  uvctx_loop_dump(l, f);
  fclose(f);
  return text;
}

START_TEST(records_match_the_dump) {
  uvctx_t *req, *val, *cancelled;
  uvctx_ctx_info_t* v = NULL;
  const uvctx_ctx_info_t* r;
  size_t n = 99;
  uint64_t dl;
  char site[512], line[1024];
  char* text;

  req = make_request(uvt_bg, &val);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &cancelled), 0);
  ck_assert_int_eq(uvctx_cancel(cancelled), 0);
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, &v, &n), 0);
  ck_assert_uint_eq(n, 3);

  r = find(v, n, req);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r->kind, "deadline");
  ck_assert_ptr_eq(r->parent, uvt_bg);
  ck_assert_uint_eq(r->refs, 2); /* ours and the value child's */
  ck_assert_int_eq(r->err, 0);
  ck_assert_int_eq(r->has_deadline, 1);
  ck_assert_int_eq(uvctx_deadline(req, &dl), 1);
  ck_assert_uint_eq(r->deadline_ns, dl);
  ck_assert_ptr_null(r->key);
  ck_assert_int_gt(uvctx_site_format(r->site, site, sizeof(site)), 0);
  ck_assert_msg(strncmp(site, "make_request+0x", 15) == 0, "site %s", site);

  r = find(v, n, val);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r->kind, "value");
  ck_assert_ptr_eq(r->parent, req);
  ck_assert_str_eq(r->key, "user");
  ck_assert_int_eq(r->has_deadline, 0);

  r = find(v, n, cancelled);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r->kind, "cancel");
  ck_assert_int_eq(r->err, UV_ECANCELED);

  /* The dump prints the same site text and fields for the same context. */
  text = dump_text(uvt_l);
  r = find(v, n, req);
  uvctx_site_format(r->site, site, sizeof(site));
  snprintf(line, sizeof(line),
           "  ctx %p kind=deadline parent=%p refs=2 state=live deadline=%llu "
           "created at %s\n",
           r->id, r->parent, (unsigned long long)r->deadline_ns, site);
  ck_assert_msg(strstr(text, line) != NULL, "no line %s in:\n%s", line, text);
  free(text);

  uvctx_snapshot_free(v);
  uvctx_unref(val);
  uvctx_release(req);
  uvctx_unref(cancelled);
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, &v, &n), 0);
  ck_assert_uint_eq(n, 0);
  ck_assert_ptr_null(v);
}
END_TEST

/* A child homed here under a parent homed on another loop is found
 * through the other loop's tree, and only this loop's contexts are listed. */
START_TEST(trees_spanning_loops) {
  uv_loop_t other;
  uvctx_loop_t* ol;
  uvctx_t *top, *mine;
  uvctx_ctx_info_t* v = NULL;
  size_t n = 0;

  ck_assert_int_eq(uv_loop_init(&other), 0);
  ck_assert_int_eq(uvctx_loop_init(&other, &ol), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvctx_background(ol), &top), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(top, uvt_l, &mine), 0);
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, &v, &n), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_ptr_eq(v[0].id, mine);
  ck_assert_ptr_eq(v[0].parent, top);
  uvctx_snapshot_free(v);
  ck_assert_int_eq(uvctx_loop_snapshot(ol, &v, &n), 0);
  ck_assert_uint_eq(n, 1);
  ck_assert_ptr_eq(v[0].id, top);
  uvctx_snapshot_free(v);
  uvctx_release(mine);
  uvctx_release(top);
  ck_assert_int_eq(uvctx_loop_close(ol), 0);
  uvt_loop_finish(&other);
}
END_TEST

typedef struct multi_s {
  const uvctx_loop_t* loops[2];
  uvctx_ctx_info_t* out[2];
  size_t counts[2];
  uint64_t holds[2];
  int rc;
} multi_t;

static void multi_thread(void* arg) {
  multi_t* m = arg;
  m->rc = uvctx_loops_snapshot(m->loops, 2, m->out, m->counts, m->holds);
}

/* Whether `id` is among the records. */
static int has_id(const uvctx_ctx_info_t* v, size_t n, const void* id) {
  size_t i;
  for (i = 0; i < n; i++)
    if (v[i].id == id)
      return 1;
  return 0;
}

/* One walk for two loops, from a thread that runs neither, gives each loop
 * what its own snapshot gives, and how long it held each loop's lock. */
START_TEST(loops_in_one_walk) {
  uv_loop_t other;
  uvctx_loop_t* ol;
  uvctx_t *top, *mine, *here, *theirs;
  uvctx_ctx_info_t* v = NULL;
  size_t n = 0, k;
  multi_t m;
  uv_thread_t t;

  ck_assert_int_eq(uv_loop_init(&other), 0);
  ck_assert_int_eq(uvctx_loop_init(&other, &ol), 0);
  ck_assert_int_eq(uvctx_with_cancel(uvctx_background(ol), &top), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(top, uvt_l, &mine), 0);
  ck_assert_int_eq(uvctx_with_timeout(mine, 60000, &here), 0);
  ck_assert_int_eq(uvctx_with_cancel_on(mine, ol, &theirs), 0);
  memset(&m, 0, sizeof(m));
  m.loops[0] = uvt_l;
  m.loops[1] = ol;
  ck_assert_int_eq(uv_thread_create(&t, multi_thread, &m), 0);
  ck_assert_int_eq(uv_thread_join(&t), 0);
  ck_assert_int_eq(m.rc, 0);
  ck_assert_uint_eq(m.counts[0], 2);
  ck_assert(has_id(m.out[0], 2, mine) && has_id(m.out[0], 2, here));
  ck_assert_uint_eq(m.counts[1], 2);
  ck_assert(has_id(m.out[1], 2, top) && has_id(m.out[1], 2, theirs));
  ck_assert_uint_gt(m.holds[0], 0);
  ck_assert_uint_gt(m.holds[1], 0);
  /* The same records as the loop's own snapshot, in the same order. */
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, &v, &n), 0);
  ck_assert_uint_eq(n, m.counts[0]);
  for (k = 0; k < n; k++) {
    ck_assert_ptr_eq(v[k].id, m.out[0][k].id);
    ck_assert_ptr_eq(v[k].parent, m.out[0][k].parent);
    ck_assert_int_eq(v[k].has_deadline, m.out[0][k].has_deadline);
  }
  uvctx_snapshot_free(v);
  uvctx_snapshot_free(m.out[0]);
  uvctx_snapshot_free(m.out[1]);
  /* No hold times asked; a loop with nothing live gives NULL and 0. */
  uvctx_release(theirs);
  uvctx_release(here);
  uvctx_release(mine);
  m.out[0] = m.out[1] = (uvctx_ctx_info_t*)&m;
  ck_assert_int_eq(uvctx_loops_snapshot(m.loops, 2, m.out, m.counts, NULL), 0);
  ck_assert_ptr_null(m.out[0]);
  ck_assert_uint_eq(m.counts[0], 0);
  ck_assert_uint_eq(m.counts[1], 1);
  ck_assert_ptr_eq(m.out[1][0].id, top);
  uvctx_snapshot_free(m.out[1]);
  uvctx_release(top);
  ck_assert_int_eq(uvctx_loop_close(ol), 0);
  uvt_loop_finish(&other);
}
END_TEST

START_TEST(loops_bad_input_and_out_of_memory) {
  const uvctx_loop_t* loops[2] = {NULL, NULL};
  uvctx_ctx_info_t* out[2] = {NULL, NULL};
  size_t counts[2] = {7, 7};
  uvctx_t* c;
  int i, rc;

  loops[0] = uvt_l;
  ck_assert_int_eq(uvctx_loops_snapshot(NULL, 1, out, counts, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_loops_snapshot(loops, 0, out, counts, NULL),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_loops_snapshot(loops, 2, out, counts, NULL),
                   UV_EINVAL); /* loops[1] is NULL */
  ck_assert_int_eq(uvctx_loops_snapshot(loops, 1, NULL, counts, NULL),
                   UV_EINVAL);
  ck_assert_int_eq(uvctx_loops_snapshot(loops, 1, out, NULL, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  /* Each allocation in turn fails: nothing stored, nothing leaked (the
   * teardown counts live allocations). */
  uvt_alloc_install();
  for (i = 1; i <= 3; i++) { /* the array of arrays, one array, the walk */
    uvt_alloc_fail_nth(i);
    rc = uvctx_loops_snapshot(loops, 1, out, counts, NULL);
    uvt_alloc_disarm();
    ck_assert_int_eq(rc, UV_ENOMEM);
    ck_assert_ptr_null(out[0]);
    ck_assert_uint_eq(counts[0], 7);
  }
  uvctx_release(c);
}
END_TEST

START_TEST(bad_input_and_out_of_memory) {
  uvctx_t* c;
  uvctx_ctx_info_t* v = (uvctx_ctx_info_t*)&c;
  size_t n = 7;
  char small[4];

  ck_assert_int_eq(uvctx_loop_snapshot(NULL, &v, &n), UV_EINVAL);
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, NULL, &n), UV_EINVAL);
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, &v, NULL), UV_EINVAL);
  ck_assert_int_eq(uvctx_with_cancel(uvt_bg, &c), 0);
  uvt_alloc_install();
  uvt_alloc_fail_nth(1);
  ck_assert_int_eq(uvctx_loop_snapshot(uvt_l, &v, &n), UV_ENOMEM);
  uvt_alloc_disarm();
  ck_assert_ptr_eq(v, (uvctx_ctx_info_t*)&c); /* untouched */
  ck_assert_uint_eq(n, 7);
  uvctx_snapshot_free(NULL);
  /* snprintf-style: the length of the whole name, cut to the buffer. */
  ck_assert_int_gt(uvctx_site_format(NULL, NULL, 0), 0);
  ck_assert_int_gt(uvctx_site_format(&c, small, sizeof(small)), 3);
  ck_assert_uint_eq(strlen(small), 3);
  uvctx_release(c);
}
END_TEST

static Suite* snapshot_suite(void) {
  Suite* s = suite_create("snapshot");
  TCase* tc = tcase_create("snapshot");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, records_match_the_dump);
  tcase_add_test(tc, trees_spanning_loops);
  tcase_add_test(tc, bad_input_and_out_of_memory);
  tcase_add_test(tc, loops_in_one_walk);
  tcase_add_test(tc, loops_bad_input_and_out_of_memory);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(snapshot_suite());
}
