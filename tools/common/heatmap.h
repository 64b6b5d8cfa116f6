/* heatmap.h: the cancel-propagation heatmap, an SVG of watch-callback
 * delays (trace time on x, log-spaced delay buckets on y, colour by count),
 * shared by `uvctx-trace heatmap` and the relay's /debug/heatmap. */
#ifndef UVCTX_TOOLS_HEATMAP_H
#define UVCTX_TOOLS_HEATMAP_H

#include <stddef.h>
#include <stdio.h>

/* One watch callback of a trace: when it started (trace time) and how long
 * after the cancel that caused it. */
typedef struct heatmap_point_s {
  double ts_us;
  double delay_us; /* < 0: unknown, the point is left out */
} heatmap_point_t;

/* Writes the heatmap of `n` points in `cols` time columns (1..4096) to
 * `f`. Returns 0, or -1 when out of memory (nothing written) or when `f`
 * reports a write error. */
int heatmap_write_svg(FILE* f, const heatmap_point_t* pts, size_t n, int cols);

#endif /* UVCTX_TOOLS_HEATMAP_H */
