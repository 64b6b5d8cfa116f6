/* json.h: a small JSON reader (RFC 8259) for uvctx-trace and the trace
 * tests: parses a whole document into a tree. Strict: what RFC 8259's
 * grammar and its UTF-8 rule (section 8.1) refuse is an error, ill-formed
 * UTF-8 in a string (overlong forms, encoded surrogates, stray bytes) and
 * a \u escape of a lone surrogate included. Strings are decoded to UTF-8;
 * numbers keep their text next to their double value, so that 64-bit
 * integers can be read exactly. Nesting is limited to JSON_MAX_DEPTH. */
#ifndef UVCTX_TRACE_JSON_H
#define UVCTX_TRACE_JSON_H

#include <stddef.h>
#include <stdint.h>

#define JSON_MAX_DEPTH 128

typedef enum {
  JSON_NULL,
  JSON_FALSE,
  JSON_TRUE,
  JSON_NUMBER,
  JSON_STRING,
  JSON_ARRAY,
  JSON_OBJECT
} json_type_t;

typedef struct json_s {
  json_type_t type;
  double num;           /* JSON_NUMBER */
  char* str;            /* JSON_STRING: decoded; JSON_NUMBER: its text */
  size_t len;           /* JSON_STRING: bytes (may hold NULs) */
  size_t n;             /* JSON_ARRAY, JSON_OBJECT: elements */
  struct json_s* items; /* n values */
  char** keys;          /* JSON_OBJECT: n keys */
} json_t;

/* Parses text[0..len). Returns a tree to free with json_free(), or NULL
 * with a message in err (which may be NULL). */
json_t* json_parse(const char* text, size_t len, char* err, size_t errlen);
void json_free(json_t* v);

/* The member `key` of an object (the last one if repeated), or NULL. */
const json_t* json_get(const json_t* obj, const char* key);
/* Member shortcuts: the string (or NULL), the number (or `def`). */
const char* json_get_str(const json_t* obj, const char* key);
double json_get_num(const json_t* obj, const char* key, double def);
/* A member that is a hex ("0x...") or decimal string or an integer number,
 * as uint64; `def` when absent or malformed. */
uint64_t json_get_u64(const json_t* obj, const char* key, uint64_t def);

#endif /* UVCTX_TRACE_JSON_H */
