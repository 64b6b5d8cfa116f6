/* trace_json.c owns the fuzz target of uvctx-trace's JSON reader
 * (tools/trace/json.c). Invariants at the end of every input: a document
 * the reader accepts holds only well-formed UTF-8 strings; written back out
 * as JSON it parses again to the same tree (nothing the reader accepts is
 * lost or changed on the way in); the reader allocated nothing it did not
 * free (ASan's leak check). */
#include <math.h>
#include <string.h>

#include "common/text.h"
#include "fuzz.h"
#include "json.h"

typedef struct out_s {
  char* p;
  size_t n;
  size_t cap;
} out_t;

static void put(out_t* o, const char* s, size_t n) {
  if (o->n + n + 1 > o->cap) {
    size_t c = o->cap ? o->cap : 256;
    while (c < o->n + n + 1)
      c *= 2;
    o->p = realloc(o->p, c);
    FZ_CHECK(o->p != NULL);
    o->cap = c;
  }
  memcpy(o->p + o->n, s, n);
  o->n += n;
  o->p[o->n] = '\0';
}

static void put_string(out_t* o, const char* s, size_t n) {
  size_t i;
  char esc[8];
  put(o, "\"", 1);
  for (i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      put(o, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      put(o, esc, 6);
    } else {
      put(o, (const char*)&s[i], 1);
    }
  }
  put(o, "\"", 1);
}

static void write_json(out_t* o, const json_t* v) {
  size_t i;
  switch (v->type) {
    case JSON_NULL:
      put(o, "null", 4);
      break;
    case JSON_FALSE:
      put(o, "false", 5);
      break;
    case JSON_TRUE:
      put(o, "true", 4);
      break;
    case JSON_NUMBER:
      put(o, v->str, strlen(v->str)); /* its text, as read */
      break;
    case JSON_STRING:
      put_string(o, v->str, v->len);
      break;
    case JSON_ARRAY:
    case JSON_OBJECT:
      put(o, v->type == JSON_ARRAY ? "[" : "{", 1);
      for (i = 0; i < v->n; i++) {
        if (i > 0)
          put(o, ",", 1);
        if (v->type == JSON_OBJECT) {
          put_string(o, v->keys[i], strlen(v->keys[i]));
          put(o, ":", 1);
        }
        write_json(o, &v->items[i]);
      }
      put(o, v->type == JSON_ARRAY ? "]" : "}", 1);
      break;
  }
}

static void check_utf8(const char* s, size_t n) {
  size_t i = 0;
  while (i < n) {
    size_t k = uvctx__utf8_len((const unsigned char*)s + i, n - i);
    FZ_CHECK(k > 0);
    i += k;
  }
}

static int same(const json_t* a, const json_t* b) {
  size_t i;
  if (a->type != b->type)
    return 0;
  switch (a->type) {
    case JSON_NUMBER:
      return strcmp(a->str, b->str) == 0 &&
             (a->num == b->num || (isnan(a->num) && isnan(b->num)));
    case JSON_STRING:
      return a->len == b->len && memcmp(a->str, b->str, a->len) == 0;
    case JSON_ARRAY:
    case JSON_OBJECT:
      if (a->n != b->n)
        return 0;
      for (i = 0; i < a->n; i++) {
        if (a->type == JSON_OBJECT && strcmp(a->keys[i], b->keys[i]) != 0)
          return 0;
        if (!same(&a->items[i], &b->items[i]))
          return 0;
      }
      return 1;
    default:
      return 1;
  }
}

static void check_strings(const json_t* v) {
  size_t i;
  if (v->type == JSON_STRING)
    check_utf8(v->str, v->len);
  if (v->type == JSON_OBJECT)
    for (i = 0; i < v->n; i++)
      check_utf8(v->keys[i], strlen(v->keys[i]));
  if (v->type == JSON_ARRAY || v->type == JSON_OBJECT)
    for (i = 0; i < v->n; i++)
      check_strings(&v->items[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  char err[160];
  json_t* v = json_parse((const char*)data, size, err, sizeof(err));
  json_t* again;
  out_t o = {NULL, 0, 0};

  if (v == NULL) {
    FZ_CHECK(err[0] != '\0'); /* a refusal says why */
    return 0;
  }
  check_strings(v);
  write_json(&o, v);
  again = json_parse(o.p, o.n, err, sizeof(err));
  if (again == NULL)
    fprintf(stderr, "written back: %s\nrefused: %s\n", o.p, err);
  FZ_CHECK(again != NULL);
  FZ_CHECK(same(v, again));
  json_free(again);
  json_free(v);
  free(o.p);
  return 0;
}
