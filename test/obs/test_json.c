/* test_json.c owns the Check suite of uvctx-trace's JSON reader
 * (tools/trace/json.c): that it is as strict as RFC 8259 and its UTF-8 rule,
 * so that a trace another tool would reject fails here too, and that what
 * it accepts it decodes exactly. */
#include "helpers.h"
#include "json.h"

/* Parses `text` (n bytes); returns the tree or NULL, with the error. */
static json_t* parse(const char* text, size_t n, char* err, size_t errlen) {
  err[0] = '\0';
  return json_parse(text, n, err, errlen);
}

#define REJECTS(lit) rejects(lit, sizeof(lit) - 1)
#define ACCEPTS(lit, want) accepts(lit, sizeof(lit) - 1, want, sizeof(want) - 1)

static void rejects(const char* text, size_t n) {
  char err[128];
  json_t* v = parse(text, n, err, sizeof(err));
  if (v != NULL) {
    json_free(v);
    ck_abort_msg("accepted %zu bytes that a strict reader refuses", n);
  }
  ck_assert_msg(err[0] != '\0', "refused without a message");
}

/* `text` is an array holding one string, whose decoded bytes are `want`. */
static void accepts(const char* text, size_t n, const char* want, size_t wlen) {
  char err[128];
  json_t* v = parse(text, n, err, sizeof(err));
  ck_assert_msg(v != NULL, "refused: %s", err);
  ck_assert_int_eq(v->type, JSON_ARRAY);
  ck_assert_uint_eq(v->n, 1);
  ck_assert_int_eq(v->items[0].type, JSON_STRING);
  ck_assert_uint_eq(v->items[0].len, wlen);
  ck_assert_int_eq(memcmp(v->items[0].str, want, wlen), 0);
  json_free(v);
}

/* Raw bytes in a string must be well-formed UTF-8 (RFC 8259 8.1, RFC 3629
 * section 4): each of these used to be accepted and passed through. */
START_TEST(test_json_rejects_invalid_utf8) {
  REJECTS("[\"\xff\"]");             /* never in UTF-8 */
  REJECTS("[\"\x80\"]");             /* a stray continuation byte */
  REJECTS("[\"\xc0\x80\"]");         /* overlong NUL */
  REJECTS("[\"\xc1\xbf\"]");         /* overlong U+007F */
  REJECTS("[\"\xe0\x80\xaf\"]");     /* overlong '/' */
  REJECTS("[\"\xf0\x80\x80\xaf\"]"); /* overlong '/' */
  REJECTS("[\"\xed\xa0\x80\"]");     /* an encoded high surrogate */
  REJECTS("[\"\xed\xbf\xbf\"]");     /* an encoded low surrogate */
  REJECTS("[\"\xf4\x90\x80\x80\"]"); /* U+110000 */
  REJECTS("[\"\xf5\x80\x80\x80\"]"); /* past U+10FFFF */
  REJECTS("[\"\xe2\x82\"]");         /* cut short by the quote */
  REJECTS("[\"\xc3");                /* cut short by the end */
  REJECTS("{\"k\xff\":1}");          /* keys too */
}
END_TEST

/* A \u escape of a lone surrogate has no UTF-8 form: it used to become
 * U+FFFD, a silent change of the text. A pair is one code point. */
START_TEST(test_json_lone_surrogate_escape) {
  REJECTS("[\"\\ud800\"]");
  REJECTS("[\"\\udc00\"]");
  REJECTS("[\"\\ud800x\"]");
  REJECTS("[\"\\ud800\\u0041\"]");
  REJECTS("[\"\\ud800\\ud800\"]");
  ACCEPTS("[\"\\ud83d\\ude00\"]", "\xf0\x9f\x98\x80");
  ACCEPTS("[\"\\uD834\\uDD1E\"]", "\xf0\x9d\x84\x9e");
}
END_TEST

/* The edges of each UTF-8 length are accepted and kept byte for byte. */
START_TEST(test_json_accepts_valid_utf8) {
  ACCEPTS("[\"\xc2\x80\"]", "\xc2\x80");
  ACCEPTS("[\"\xdf\xbf\"]", "\xdf\xbf");
  ACCEPTS("[\"\xe0\xa0\x80\"]", "\xe0\xa0\x80");
  ACCEPTS("[\"\xed\x9f\xbf\"]", "\xed\x9f\xbf"); /* U+D7FF */
  ACCEPTS("[\"\xee\x80\x80\"]", "\xee\x80\x80"); /* U+E000 */
  ACCEPTS("[\"\xef\xbf\xbf\"]", "\xef\xbf\xbf");
  ACCEPTS("[\"\xf0\x90\x80\x80\"]", "\xf0\x90\x80\x80");
  ACCEPTS("[\"\xf4\x8f\xbf\xbf\"]", "\xf4\x8f\xbf\xbf"); /* U+10FFFF */
  ACCEPTS("[\"a\xc3\xa9z\\u00e9\"]", "a\xc3\xa9z\xc3\xa9");
  ACCEPTS("[\"\\u0000\"]", "\0");
}
END_TEST

/* The grammar's own edges, which the reader already refused. */
START_TEST(test_json_grammar) {
  REJECTS("");
  REJECTS("[");
  REJECTS("[1,]");
  REJECTS("[01]");
  REJECTS("[\"\t\"]");
  REJECTS("[\"\\x\"]");
  REJECTS("[] []");
  REJECTS("[\xff]");
  ACCEPTS(" [\"\"] ", "");
}
END_TEST

static Suite* json_suite(void) {
  Suite* s = suite_create("json");
  TCase* tc = tcase_create("strict");
  tcase_add_checked_fixture(tc, uvt_setup, uvt_teardown);
  tcase_add_test(tc, test_json_rejects_invalid_utf8);
  tcase_add_test(tc, test_json_lone_surrogate_escape);
  tcase_add_test(tc, test_json_accepts_valid_utf8);
  tcase_add_test(tc, test_json_grammar);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  return uvt_main(json_suite());
}
