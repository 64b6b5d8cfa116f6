/* json.c owns the small JSON reader of uvctx-trace: a recursive-descent
 * parser with a depth limit, strict about the grammar (a trace that other
 * tools would reject should fail here too). */
#include "json.h"

#include "common/text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser_s {
  const char* p;
  const char* end;
  const char* start;
  char* err;
  size_t errlen;
  int failed;
} parser_t;

static void fail(parser_t* ps, const char* what) {
  if (ps->failed)
    return;
  ps->failed = 1;
  if (ps->err != NULL && ps->errlen > 0)
    snprintf(ps->err, ps->errlen, "%s at byte %zu", what,
             (size_t)(ps->p - ps->start));
}

static void skip_ws(parser_t* ps) {
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static int parse_value(parser_t* ps, json_t* v, int depth);

static int hex4(parser_t* ps, unsigned* out) {
  unsigned x = 0;
  int i;
  if (ps->end - ps->p < 4) {
    fail(ps, "short \\u escape");
    return -1;
  }
  for (i = 0; i < 4; i++) {
    char c = *ps->p++;
    x <<= 4;
    if (c >= '0' && c <= '9')
      x |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      x |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      x |= (unsigned)(c - 'A' + 10);
    else {
      fail(ps, "bad \\u escape");
      return -1;
    }
  }
  *out = x;
  return 0;
}

static size_t put_utf8(char* o, unsigned cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xc0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    o[0] = (char)(0xe0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  o[0] = (char)(0xf0 | (cp >> 18));
  o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  o[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* The decoded string is never longer than its source, so one block of the
 * source's size holds it. Strict: raw bytes must be well-formed UTF-8 (the
 * library's own validator, RFC 3629: no overlong forms, no encoded
 * surrogates, nothing past U+10FFFF), and a \u escape of a surrogate must
 * be half of a pair (a lone one has no UTF-8 form; turning it into U+FFFD
 * would change the text silently). */
static char* parse_string(parser_t* ps, size_t* len) {
  const char* q;
  char* out;
  size_t n = 0;
  ps->p++; /* the opening quote */
  for (q = ps->p; q < ps->end && *q != '"'; q++)
    if (*q == '\\')
      q++;
  if (q >= ps->end) {
    fail(ps, "unterminated string");
    return NULL;
  }
  out = malloc((size_t)(q - ps->p) + 1);
  if (out == NULL) {
    fail(ps, "out of memory");
    return NULL;
  }
  while (*ps->p != '"') {
    unsigned char c = (unsigned char)*ps->p++;
    if (c < 0x20) {
      fail(ps, "control character in string");
      free(out);
      return NULL;
    }
    if (c >= 0x80) {
      size_t k = uvctx__utf8_len((const unsigned char*)ps->p - 1,
                                 (size_t)(ps->end - ps->p) + 1);
      if (k == 0) {
        ps->p--;
        fail(ps, "invalid UTF-8 in string");
        free(out);
        return NULL;
      }
      memcpy(out + n, ps->p - 1, k);
      n += k;
      ps->p += k - 1;
      continue;
    }
    if (c != '\\') {
      out[n++] = (char)c;
      continue;
    }
    c = (unsigned char)*ps->p++;
    switch (c) {
      case '"':
      case '\\':
      case '/':
        out[n++] = (char)c;
        break;
      case 'b':
        out[n++] = '\b';
        break;
      case 'f':
        out[n++] = '\f';
        break;
      case 'n':
        out[n++] = '\n';
        break;
      case 'r':
        out[n++] = '\r';
        break;
      case 't':
        out[n++] = '\t';
        break;
      case 'u': {
        unsigned cp, lo;
        if (hex4(ps, &cp) != 0) {
          free(out);
          return NULL;
        }
        if (cp >= 0xd800 && cp < 0xdc00 && ps->end - ps->p >= 6 &&
            ps->p[0] == '\\' && ps->p[1] == 'u') {
          const char* save = ps->p;
          ps->p += 2;
          if (hex4(ps, &lo) != 0) {
            free(out);
            return NULL;
          }
          if (lo >= 0xdc00 && lo < 0xe000)
            cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          else
            ps->p = save;
        }
        if (cp >= 0xd800 && cp < 0xe000) {
          fail(ps, "lone surrogate escape in string");
          free(out);
          return NULL;
        }
        n += put_utf8(out + n, cp);
        break;
      }
      default:
        fail(ps, "bad escape");
        free(out);
        return NULL;
    }
  }
  ps->p++; /* the closing quote */
  out[n] = '\0';
  *len = n;
  return out;
}

static int parse_number(parser_t* ps, json_t* v) {
  const char* s = ps->p;
  char* end;
  size_t n;
  if (ps->p < ps->end && *ps->p == '-')
    ps->p++;
  if (ps->p < ps->end && *ps->p == '0') {
    ps->p++;
  } else if (ps->p < ps->end && *ps->p >= '1' && *ps->p <= '9') {
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
      ps->p++;
  } else {
    fail(ps, "bad number");
    return -1;
  }
  if (ps->p < ps->end && *ps->p == '.') {
    ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
      fail(ps, "bad fraction");
      return -1;
    }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
      ps->p++;
  }
  if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
    ps->p++;
    if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
      ps->p++;
    if (ps->p >= ps->end || *ps->p < '0' || *ps->p > '9') {
      fail(ps, "bad exponent");
      return -1;
    }
    while (ps->p < ps->end && *ps->p >= '0' && *ps->p <= '9')
      ps->p++;
  }
  n = (size_t)(ps->p - s);
  v->str = malloc(n + 1);
  if (v->str == NULL) {
    fail(ps, "out of memory");
    return -1;
  }
  memcpy(v->str, s, n);
  v->str[n] = '\0';
  v->len = n;
  v->num = strtod(v->str, &end);
  v->type = JSON_NUMBER;
  return 0;
}

static int literal(parser_t* ps, const char* word, json_type_t t, json_t* v) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) {
    fail(ps, "unexpected token");
    return -1;
  }
  ps->p += n;
  v->type = t;
  return 0;
}

/* Grows the element arrays of an array or object by doubling. */
static int grow(parser_t* ps, json_t* v, size_t* cap, int with_keys) {
  size_t ncap = *cap ? *cap * 2 : 8;
  json_t* items;
  if (v->n < *cap)
    return 0;
  items = realloc(v->items, ncap * sizeof(*items));
  if (items == NULL) {
    fail(ps, "out of memory");
    return -1;
  }
  v->items = items;
  if (with_keys) {
    char** keys = realloc(v->keys, ncap * sizeof(*keys));
    if (keys == NULL) {
      fail(ps, "out of memory");
      return -1;
    }
    v->keys = keys;
  }
  *cap = ncap;
  return 0;
}

/* After a member of an array or object: 1 on ',' (another follows), 0 on
 * the closing bracket, -1 (with the error recorded) otherwise. */
static int after_member(parser_t* ps, char close) {
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ',') {
    ps->p++;
    return 1;
  }
  if (ps->p < ps->end && *ps->p == close) {
    ps->p++;
    return 0;
  }
  fail(ps, close == ']' ? "expected ',' or ']'" : "expected ',' or '}'");
  return -1;
}

static int parse_array(parser_t* ps, json_t* v, int depth) {
  size_t cap = 0;
  v->type = JSON_ARRAY;
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    return 0;
  }
  for (;;) {
    if (grow(ps, v, &cap, 0) != 0)
      return -1;
    memset(&v->items[v->n], 0, sizeof(v->items[0]));
    v->n++;
    if (parse_value(ps, &v->items[v->n - 1], depth + 1) != 0)
      return -1;
    switch (after_member(ps, ']')) {
      case 1:
        continue;
      case 0:
        return 0;
      default:
        return -1;
    }
  }
}

static int parse_object(parser_t* ps, json_t* v, int depth) {
  size_t cap = 0, klen;
  v->type = JSON_OBJECT;
  ps->p++;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    return 0;
  }
  for (;;) {
    char* key;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') {
      fail(ps, "expected a key");
      return -1;
    }
    key = parse_string(ps, &klen);
    if (key == NULL)
      return -1;
    if (grow(ps, v, &cap, 1) != 0) {
      free(key);
      return -1;
    }
    v->keys[v->n] = key;
    memset(&v->items[v->n], 0, sizeof(v->items[0]));
    v->n++;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
      fail(ps, "expected ':'");
      return -1;
    }
    ps->p++;
    if (parse_value(ps, &v->items[v->n - 1], depth + 1) != 0)
      return -1;
    switch (after_member(ps, '}')) {
      case 1:
        continue;
      case 0:
        return 0;
      default:
        return -1;
    }
  }
}

static int parse_value(parser_t* ps, json_t* v, int depth) {
  if (depth > JSON_MAX_DEPTH) {
    fail(ps, "nested too deeply");
    return -1;
  }
  skip_ws(ps);
  if (ps->p >= ps->end) {
    fail(ps, "unexpected end");
    return -1;
  }
  switch (*ps->p) {
    case '{':
      return parse_object(ps, v, depth);
    case '[':
      return parse_array(ps, v, depth);
    case '"':
      v->str = parse_string(ps, &v->len);
      if (v->str == NULL)
        return -1;
      v->type = JSON_STRING;
      return 0;
    case 't':
      return literal(ps, "true", JSON_TRUE, v);
    case 'f':
      return literal(ps, "false", JSON_FALSE, v);
    case 'n':
      return literal(ps, "null", JSON_NULL, v);
    default:
      return parse_number(ps, v);
  }
}

static void free_inner(json_t* v) {
  size_t i;
  for (i = 0; i < v->n; i++) {
    free_inner(&v->items[i]);
    if (v->keys != NULL)
      free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->str);
}

void json_free(json_t* v) {
  if (v == NULL)
    return;
  free_inner(v);
  free(v);
}

json_t* json_parse(const char* text, size_t len, char* err, size_t errlen) {
  parser_t ps;
  json_t* v = calloc(1, sizeof(*v));
  if (err != NULL && errlen > 0)
    err[0] = '\0';
  if (v == NULL) {
    if (err != NULL && errlen > 0)
      snprintf(err, errlen, "out of memory");
    return NULL;
  }
  ps.p = ps.start = text;
  ps.end = text + len;
  ps.err = err;
  ps.errlen = errlen;
  ps.failed = 0;
  if (parse_value(&ps, v, 0) == 0) {
    skip_ws(&ps);
    if (ps.p != ps.end)
      fail(&ps, "trailing data");
  }
  if (ps.failed) {
    json_free(v);
    return NULL;
  }
  return v;
}

const json_t* json_get(const json_t* obj, const char* key) {
  size_t i;
  if (obj == NULL || obj->type != JSON_OBJECT)
    return NULL;
  for (i = obj->n; i-- > 0;)
    if (strcmp(obj->keys[i], key) == 0)
      return &obj->items[i];
  return NULL;
}

const char* json_get_str(const json_t* obj, const char* key) {
  const json_t* v = json_get(obj, key);
  return v != NULL && v->type == JSON_STRING ? v->str : NULL;
}

double json_get_num(const json_t* obj, const char* key, double def) {
  const json_t* v = json_get(obj, key);
  return v != NULL && v->type == JSON_NUMBER ? v->num : def;
}

uint64_t json_get_u64(const json_t* obj, const char* key, uint64_t def) {
  const json_t* v = json_get(obj, key);
  char* end;
  unsigned long long x;
  if (v == NULL || (v->type != JSON_STRING && v->type != JSON_NUMBER))
    return def;
  if (v->str[0] == '-' || v->str[0] == '\0')
    return def;
  errno = 0;
  x = strtoull(v->str, &end, 0);
  if (errno != 0 || *end != '\0')
    return def;
  return (uint64_t)x;
}
