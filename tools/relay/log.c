/* log.c owns the relay's log: one line per event on stderr, in logfmt
 * (`ts=... event=close conn=7 ...`) or JSON (`{"ts":"...","event":...}`).
 * Each line is built in a stack buffer and written with a single write(2),
 * so that lines from several worker threads never interleave (stderr is
 * usually a pipe or a file opened O_APPEND, and our lines are shorter than
 * PIPE_BUF). A line that does not fit is cut, never split. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"

static int log_format = RELAY_LOG_LOGFMT;
static int log_level = RELAY_LEVEL_CLOSE;
static uint64_t log_sample = 1;

void relay_log_init(int format, int level, uint64_t sample) {
  log_format = format;
  log_level = level;
  log_sample = sample;
}

uint64_t relay_log_sample(void) {
  return log_sample;
}

/* Whether a close `reason` is one of the ends the relay was configured to
 * make (NULL: an open line, no end yet). */
static int expected_end(const char* reason) {
  static const char* const expected[] = {"eof", "idle-timeout", "lifetime",
                                         "drained", "half-close-timeout"};
  size_t i;
  if (reason == NULL)
    return 1;
  for (i = 0; i < sizeof(expected) / sizeof(expected[0]); i++)
    if (strcmp(reason, expected[i]) == 0)
      return 1;
  return 0;
}

int relay_log_wants(int kind, const char* reason, uint64_t conn) {
  int error_close = kind == RELAY_LOG_CLOSE && !expected_end(reason);

  switch (log_level) {
    case RELAY_LEVEL_OPEN:
    case RELAY_LEVEL_CLOSE:
      if (log_level == RELAY_LEVEL_CLOSE && kind != RELAY_LOG_CLOSE)
        return 0;
      /* Sampling never hides a failure: only the lines the error level
       * would leave out are sampled, by connection number, so that a
       * sampled connection keeps both its lines. */
      return error_close || conn % log_sample == 0;
    case RELAY_LEVEL_ERROR:
      return error_close;
    default:
      return 0;
  }
}

/* Room kept for the closing "}\n". */
#define LOG_RESERVE 3

static void put(relay_log_line_t* ln, const char* s, size_t n) {
  size_t room = sizeof(ln->buf) - LOG_RESERVE - ln->len;
  if (ln->len + LOG_RESERVE >= sizeof(ln->buf))
    return;
  if (n > room)
    n = room;
  memcpy(ln->buf + ln->len, s, n);
  ln->len += n;
}

static void putc_(relay_log_line_t* ln, char c) {
  put(ln, &c, 1);
}

static int needs_quotes(const char* v) {
  if (*v == '\0')
    return 1;
  for (; *v; v++)
    if (*v <= ' ' || *v == '=' || *v == '"' || *v == '\\' || *v == 0x7f)
      return 1;
  return 0;
}

/* Quotes and escapes as JSON does; logfmt readers accept the same. */
static void put_quoted(relay_log_line_t* ln, const char* v) {
  putc_(ln, '"');
  for (; *v; v++) {
    unsigned char c = (unsigned char)*v;
    char esc[8];
    if (c == '"' || c == '\\') {
      putc_(ln, '\\');
      putc_(ln, (char)c);
    } else if (c == '\n') {
      put(ln, "\\n", 2);
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      put(ln, esc, 6);
    } else {
      putc_(ln, (char)c);
    }
  }
  putc_(ln, '"');
}

static void put_key(relay_log_line_t* ln, const char* key) {
  if (log_format == RELAY_LOG_JSON) {
    if (ln->len > 1)
      putc_(ln, ',');
    putc_(ln, '"');
    put(ln, key, strlen(key));
    put(ln, "\":", 2);
  } else {
    if (ln->len > 0)
      putc_(ln, ' ');
    put(ln, key, strlen(key));
    putc_(ln, '=');
  }
}

void relay_log_str(relay_log_line_t* ln, const char* key, const char* val) {
  if (val == NULL)
    val = "";
  put_key(ln, key);
  if (log_format == RELAY_LOG_JSON || needs_quotes(val))
    put_quoted(ln, val);
  else
    put(ln, val, strlen(val));
}

void relay_log_u64(relay_log_line_t* ln, const char* key, uint64_t val) {
  char num[24];
  int n = snprintf(num, sizeof(num), "%" PRIu64, val);
  put_key(ln, key);
  put(ln, num, (size_t)n);
}

/* uvctx_log_fields() writes the same quoting and escaping as put_key() and
 * relay_log_str() (logfmt: quoted only when needed; JSON: "k":"v" without
 * braces), so its text is spliced in as it comes. It is formatted straight
 * into the line; if it does not fit in what is left, the separator is
 * taken back and the fields are left out rather than cut mid-value. */
void relay_log_ctx(relay_log_line_t* ln, const uvctx_t* c) {
  size_t mark = ln->len;
  size_t room;
  int n;

  if (c == NULL || ln->len + LOG_RESERVE + 1 >= sizeof(ln->buf))
    return;
  putc_(ln, log_format == RELAY_LOG_JSON ? ',' : ' ');
  room = sizeof(ln->buf) - LOG_RESERVE - ln->len;
  n = uvctx_log_fields(
      c, log_format == RELAY_LOG_JSON ? UVCTX_LOG_JSON : UVCTX_LOG_LOGFMT,
      ln->buf + ln->len, room);
  if (n <= 0 || (size_t)n >= room) {
    ln->len = mark; /* nothing loggable, an error, or too long */
    return;
  }
  ln->len += (size_t)n;
}

void relay_log_begin(relay_log_line_t* ln, const char* event) {
  struct timespec ts;
  struct tm tm;
  char when[64];

  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
           tm.tm_sec, (long)(ts.tv_nsec / 1000000) % 1000);
  ln->len = 0;
  if (log_format == RELAY_LOG_JSON)
    putc_(ln, '{');
  relay_log_str(ln, "ts", when);
  relay_log_str(ln, "event", event);
}

void relay_log_end(relay_log_line_t* ln) {
  const char* p;
  size_t left;

  /* put() keeps LOG_RESERVE bytes free for this. */
  if (log_format == RELAY_LOG_JSON)
    ln->buf[ln->len++] = '}';
  ln->buf[ln->len++] = '\n';
  p = ln->buf;
  left = ln->len;
  while (left > 0) {
    ssize_t n = write(STDERR_FILENO, p, left);
    if (n <= 0)
      break; /* nowhere to report it */
    p += n;
    left -= (size_t)n;
  }
}

void relay_log_event(const char* event, ...) {
  relay_log_line_t ln;
  va_list ap;
  const char* k;

  relay_log_begin(&ln, event);
  va_start(ap, event);
  while ((k = va_arg(ap, const char*)) != NULL)
    relay_log_str(&ln, k, va_arg(ap, const char*));
  va_end(ap);
  relay_log_end(&ln);
}
