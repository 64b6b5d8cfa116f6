/* text.c owns text escaping: UTF-8 validation and the escapes of the
 * formats the library writes (JSON strings, Prometheus label values, logfmt
 * keys), one loop for all of them. */
#include <stdio.h>

#include "common/text.h"

size_t uvctx__utf8_len(const unsigned char* s, size_t n) {
  unsigned char c = s[0];
  unsigned char lo = 0x80, hi = 0xbf;
  size_t len, i;
  if (c < 0x80)
    return 1;
  if (c >= 0xc2 && c <= 0xdf)
    len = 2;
  else if (c >= 0xe0 && c <= 0xef)
    len = 3;
  else if (c >= 0xf0 && c <= 0xf4)
    len = 4;
  else
    return 0;
  if (n < len)
    return 0;
  /* Overlong forms, surrogates and code points above U+10FFFF are
   * excluded by narrowing the range of the second byte. */
  if (c == 0xe0)
    lo = 0xa0;
  else if (c == 0xed)
    hi = 0x9f;
  else if (c == 0xf0)
    lo = 0x90;
  else if (c == 0xf4)
    hi = 0x8f;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (i = 2; i < len; i++)
    if (s[i] < 0x80 || s[i] > 0xbf)
      return 0;
  return len;
}

/* The escape for an ASCII byte in `style`, written to tmp, or NULL if the
 * byte stands for itself. */
static const char* escape_of(uvctx__text_style_t style, unsigned char c,
                             char tmp[8]) {
  switch (style) {
    case UVCTX__TEXT_JSON:
      switch (c) {
        case '"':
          return "\\\"";
        case '\\':
          return "\\\\";
        case '\n':
          return "\\n";
        case '\r':
          return "\\r";
        case '\t':
          return "\\t";
        default:
          break;
      }
      if (c < 0x20 || c == 0x7f) {
        snprintf(tmp, 8, "\\u%04x", c);
        return tmp;
      }
      return NULL;
    case UVCTX__TEXT_PROM_LABEL:
      if (c == '\\')
        return "\\\\";
      if (c == '"')
        return "\\\"";
      if (c == '\n')
        return "\\n";
      return NULL;
    case UVCTX__TEXT_LOGFMT_NAME:
      return c <= ' ' || c == '=' || c == '"' || c == 0x7f ? "_" : NULL;
  }
  return NULL;
}

void uvctx__text_escape(uvctx__text_style_t style, const char* s, size_t n,
                        uvctx__text_put_fn put, void* sink) {
  static const char replacement[] = "\xef\xbf\xbd"; /* U+FFFD */
  const unsigned char* p = (const unsigned char*)s;
  size_t i = 0, len;
  char tmp[8];
  while (i < n) {
    const char* esc = p[i] < 0x80 ? escape_of(style, p[i], tmp) : NULL;
    if (esc != NULL) {
      size_t k = 0;
      while (esc[k] != '\0')
        k++;
      put(sink, esc, k);
      i++;
    } else if ((len = uvctx__utf8_len(p + i, n - i)) == 0) {
      put(sink, replacement, 3);
      i++;
    } else {
      put(sink, s + i, len);
      i += len;
    }
  }
}
