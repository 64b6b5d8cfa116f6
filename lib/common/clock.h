/* The clock of the propagation histogram's stamps, defined in
 * common/clock.c: a reading when a watch is posted (uvctx__stamp()) and the
 * nanoseconds since it when the watch is delivered (uvctx__stamp_since()),
 * on whichever thread each happens. Nothing here is part of the public
 * API.
 *
 * On x86-64 Linux, when the TSC is invariant and is the kernel's
 * clocksource (so the kernel keeps it in step across CPUs), a stamp is the
 * cycle counter, about a third of the cost of a uv_hrtime() here, and a
 * difference is turned into nanoseconds by a rate calibrated against
 * uv_hrtime() (CLOCK_MONOTONIC): provisional, from a first pair of readings
 * taken by uvctx__stamp_init() and one taken at each conversion, until
 * the pair is far enough apart to be final. Elsewhere a stamp is a
 * uv_hrtime(). A stamp means nothing on its own: only a difference of two
 * is a duration. */
#ifndef UVCTX_COMMON_CLOCK_H
#define UVCTX_COMMON_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#if defined(__x86_64__) && defined(__linux__)
#include <x86intrin.h>
#define UVCTX__STAMP_TSC 1
#else
#define UVCTX__STAMP_TSC 0
#endif

typedef struct uvctx__stamp_clock_s {
  int tsc;          /* stamps are TSC ticks, else uv_hrtime() nanoseconds */
  uint64_t base_ts; /* the first calibration pair: ticks, and */
  uint64_t base_ns; /* uv_hrtime() then */
  /* Nanoseconds per tick, fixed point with 32 fraction bits; 0 while the
   * rate is provisional. */
  atomic_uint_fast64_t rate;
} uvctx__stamp_clock_t;

extern uvctx__stamp_clock_t uvctx__stamp_clock;

/* Picks the clock and takes the first calibration pair, once per process;
 * any thread, before the first stamp (each loop binding calls it). */
void uvctx__stamp_init(void);

/* The provisional conversion of uvctx__stamp_since(). */
uint64_t uvctx__stamp_since_slow(uint64_t then, uint64_t now);

static inline uint64_t uvctx__stamp(void) {
#if UVCTX__STAMP_TSC
  if (uvctx__stamp_clock.tsc)
    return __rdtsc();
#endif
  return uv_hrtime();
}

/* The nanoseconds from the stamp `then` to now. The cycle counter is read
 * without a fence, so a stamp taken on another CPU just before may read a
 * few cycles later than this reading: such a difference counts as 0. */
static inline uint64_t uvctx__stamp_since(uint64_t then) {
#if UVCTX__STAMP_TSC
  if (uvctx__stamp_clock.tsc) {
    uint64_t now = __rdtsc();
    uint64_t rate =
        atomic_load_explicit(&uvctx__stamp_clock.rate, memory_order_relaxed);
    if (now <= then)
      return 0;
    if (rate == 0)
      return uvctx__stamp_since_slow(then, now);
    return (uint64_t)(((unsigned __int128)(now - then) * rate) >> 32);
  }
#endif
  return uv_hrtime() - then;
}

#endif
