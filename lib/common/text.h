/* Text helpers shared by every writer of the library (log fields, the
 * Prometheus exposition, traces), defined in common/text.c. Nothing here is
 * part of the public API. */
#ifndef UVCTX_COMMON_TEXT_H
#define UVCTX_COMMON_TEXT_H

#include <stddef.h>

/* The length of the valid UTF-8 sequence at s (n > 0 bytes left), or 0:
 * overlong forms, surrogates and code points above U+10FFFF are invalid. */
size_t uvctx__utf8_len(const unsigned char* s, size_t n);

/* Where escaped text goes: `put` receives it in pieces. */
typedef void (*uvctx__text_put_fn)(void* sink, const char* s, size_t n);

typedef enum uvctx__text_style_e {
  /* The inside of a double-quoted JSON (or logfmt) string: '"' and '\\'
   * escaped, \n \r \t as such, other control characters as \u00XX. */
  UVCTX__TEXT_JSON,
  /* A Prometheus label value: '\\', '"' and newline escaped, nothing
   * else (the exposition format's rule). */
  UVCTX__TEXT_PROM_LABEL,
  /* A logfmt key: space, control characters, '=', '"' and DEL become
   * '_' (an empty name is the caller's to handle). */
  UVCTX__TEXT_LOGFMT_NAME
} uvctx__text_style_t;

/* Writes s[0..n) to `put` in `style`. In every style valid UTF-8 is kept
 * and each byte that is not part of it becomes U+FFFD. */
void uvctx__text_escape(uvctx__text_style_t style, const char* s, size_t n,
                        uvctx__text_put_fn put, void* sink);

#endif /* UVCTX_COMMON_TEXT_H */
