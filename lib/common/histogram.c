/* histogram.c owns the maths of uvctx_histogram_t: the bucket bounds,
 * recording a value and reading a quantile. */
#include <stdint.h>

#include "uvctx.h"

/* Two buckets per power of two, starting at 128 ns: bound(2k) = 2^(k+7),
 * bound(2k+1) = 1.5 * 2^(k+7). */
uint64_t uvctx_histogram_bound(unsigned i) {
  uint64_t base;
  if (i >= UVCTX_HISTOGRAM_BUCKETS - 1)
    return UINT64_MAX;
  base = (uint64_t)1 << (i / 2 + 7);
  return (i & 1) ? base + base / 2 : base;
}

/* The first bucket whose bound is >= v, in closed form: every watch
 * callback records one value, and a binary search over the bounds cost
 * some 170 instructions of a same-thread cancel's 2,200. For v > 128,
 * 2^k < v <= 2^(k+1) with k = log2(v - 1), and v falls in the lower half
 * of that interval (bound 1.5 * 2^k) or the upper one (bound 2^(k+1)). */
static unsigned bucket_of(uint64_t v) {
  unsigned k, i;
  if (v <= 128)
    return 0;
  k = 63 - (unsigned)__builtin_clzll(v - 1);
  i = 2 * (k - 7) +
      (v - 1 - ((uint64_t)1 << k) < ((uint64_t)1 << (k - 1)) ? 1 : 2);
  return i < UVCTX_HISTOGRAM_BUCKETS - 1 ? i : UVCTX_HISTOGRAM_BUCKETS - 1;
}

void uvctx_histogram_record(uvctx_histogram_t* h, uint64_t ns) {
  h->count++;
  h->sum_ns += ns;
  if (ns > h->max_ns)
    h->max_ns = ns;
  h->buckets[bucket_of(ns)]++;
}

uint64_t uvctx_histogram_quantile(const uvctx_histogram_t* h, double q) {
  uint64_t rank, seen = 0;
  unsigned i;
  if (h == NULL || h->count == 0)
    return 0;
  if (!(q > 0)) /* NaN as 0: the conversion below would be undefined */
    q = 0;
  if (q > 1)
    q = 1;
  rank = (uint64_t)(q * (double)h->count + 0.5);
  if (rank == 0)
    rank = 1;
  for (i = 0; i < UVCTX_HISTOGRAM_BUCKETS; i++) {
    seen += h->buckets[i];
    if (seen >= rank) {
      uint64_t b = uvctx_histogram_bound(i);
      return b < h->max_ns ? b : h->max_ns;
    }
  }
  return h->max_ns;
}
