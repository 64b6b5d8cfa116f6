/* clock.c owns the clock of the propagation stamps (common/clock.h): the
 * choice of the cycle counter and its calibration against uv_hrtime(). */
#include "common/clock.h"

#include <pthread.h>

#if UVCTX__STAMP_TSC
#include <cpuid.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#endif

uvctx__stamp_clock_t uvctx__stamp_clock;

#if UVCTX__STAMP_TSC

/* The rate is final once its two pairs are at least FINAL_NS apart and
 * the widths of their brackets (below; about 0.1 us each here, far more
 * under valgrind) add up to at most 1/FINAL_PART of that span: the rate is
 * then right to FINAL_PART^-1 (20 parts per million). Before that, a
 * conversion takes a pair of its own (TRIES brackets, two uv_hrtime()
 * each), and the duration it returns, never longer than the span of the
 * two pairs, is off by no more than about their widths. */
enum { FINAL_NS = 50 * 1000 * 1000, FINAL_PART = 50000, TRIES = 4 };

static uint64_t base_width; /* the first pair's, written once */

/* A reading of the counter bracketed by two of uv_hrtime(), the narrowest
 * of a few: a thread preempted between them makes a wide bracket. Returns
 * the width in nanoseconds. */
static uint64_t pair(uint64_t* ts, uint64_t* ns) {
  uint64_t best = UINT64_MAX;
  int i;
  *ts = *ns = 0;
  for (i = 0; i < TRIES; i++) {
    uint64_t a = uv_hrtime();
    uint64_t t = __rdtsc();
    uint64_t b = uv_hrtime();
    if (b - a < best) {
      best = b - a;
      *ts = t;
      *ns = a + (b - a) / 2;
    }
  }
  return best;
}

/* The kernel checks that the counter is in step across CPUs before it
 * makes it the clocksource, and switches away from it if it drifts: a
 * clocksource of "tsc" is what makes differences across threads sound. */
static int tsc_usable(void) {
  static const char path[] =
      "/sys/devices/system/clocksource/clocksource0/current_clocksource";
  unsigned a, b, c, d;
  char buf[16];
  ssize_t n;
  int fd;
  if (!__get_cpuid(0x80000007, &a, &b, &c, &d) || !(d & (1u << 8)))
    return 0; /* not invariant: its rate follows the CPU's frequency */
  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n < 0)
    return 0;
  buf[n] = '\0';
  return strcmp(buf, "tsc\n") == 0 || strcmp(buf, "tsc") == 0;
}

uint64_t uvctx__stamp_since_slow(uint64_t then, uint64_t now) {
  const uvctx__stamp_clock_t* k = &uvctx__stamp_clock;
  uint64_t ts, ns, width, rate;
  width = pair(&ts, &ns);
  if (ts <= k->base_ts || ns <= k->base_ns)
    return 0;
  rate = (uint64_t)((((unsigned __int128)(ns - k->base_ns)) << 32) /
                    (ts - k->base_ts));
  if (ns - k->base_ns >= FINAL_NS &&
      (base_width + width) <= (ns - k->base_ns) / FINAL_PART) {
    /* Any thread's final rate is as good as another's: the first stays. */
    uint_fast64_t none = 0;
    atomic_compare_exchange_strong_explicit(&uvctx__stamp_clock.rate, &none,
                                            rate, memory_order_relaxed,
                                            memory_order_relaxed);
  }
  return (uint64_t)(((unsigned __int128)(now - then) * rate) >> 32);
}

static void init_once(void) {
  if (!tsc_usable())
    return;
  base_width = pair(&uvctx__stamp_clock.base_ts, &uvctx__stamp_clock.base_ns);
  uvctx__stamp_clock.tsc = 1;
}

#else

uint64_t uvctx__stamp_since_slow(uint64_t then, uint64_t now) {
  return now - then;
}

static void init_once(void) {
}

#endif

void uvctx__stamp_init(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, init_once);
}
