/* heatmap.c owns the rendering of the cancel-propagation heatmap (see
 * heatmap.h); the programs that use it only gather the points. */
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "heatmap.h"

#define ROWS 24 /* delay buckets: <= 2^(k+7) ns for k < ROWS-1, then more */

static int row_of(double delay_us) {
  double ns = delay_us * 1000.0;
  int k = 0;
  while (k < ROWS - 1 && ns > (double)(1ull << (k + 7)))
    k++;
  return k;
}

static void bound_label(char* buf, size_t n, int k) {
  double ns = (double)(1ull << (k + 7));
  if (k == ROWS - 1)
    snprintf(buf, n, "more");
  else if (ns < 1e3)
    snprintf(buf, n, "%.0f ns", ns);
  else if (ns < 1e6)
    snprintf(buf, n, "%.3g us", ns / 1e3);
  else if (ns < 1e9)
    snprintf(buf, n, "%.3g ms", ns / 1e6);
  else
    snprintf(buf, n, "%.3g s", ns / 1e9);
}

/* Viridis, sampled at five stops and interpolated. */
static void colour(double x, char* buf, size_t n) {
  static const int stops[5][3] = {{68, 1, 84},
                                  {59, 82, 139},
                                  {33, 145, 140},
                                  {94, 201, 98},
                                  {253, 231, 37}};
  double p = x * 4;
  int i = (int)p, c[3], j;
  if (i >= 4)
    i = 3;
  if (i < 0)
    i = 0;
  p -= i;
  for (j = 0; j < 3; j++)
    c[j] = (int)(stops[i][j] + (stops[i + 1][j] - stops[i][j]) * p + 0.5);
  snprintf(buf, n, "#%02x%02x%02x", c[0], c[1], c[2]);
}

int heatmap_write_svg(FILE* f, const heatmap_point_t* pts, size_t npts,
                      int cols) {
  const int left = 80, top = 50, cw_total = 720, rh = 16;
  const int width = left + cw_total + 110, height = top + ROWS * rh + 60;
  double t_min = 0, t_max = 0, span, cw;
  uint64_t* grid;
  uint64_t max = 0;
  size_t i, n = 0;
  int r, c;
  char col[16], label[32];

  for (i = 0; i < npts; i++) {
    if (pts[i].delay_us < 0)
      continue;
    if (n == 0 || pts[i].ts_us < t_min)
      t_min = pts[i].ts_us;
    if (n == 0 || pts[i].ts_us > t_max)
      t_max = pts[i].ts_us;
    n++;
  }
  span = t_max > t_min ? t_max - t_min : 1;
  grid = calloc((size_t)cols * ROWS, sizeof(*grid));
  if (grid == NULL)
    return -1;
  for (i = 0; i < npts; i++) {
    int x;
    if (pts[i].delay_us < 0)
      continue;
    x = (int)((pts[i].ts_us - t_min) / span * cols);
    if (x >= cols)
      x = cols - 1;
    r = row_of(pts[i].delay_us);
    if (++grid[(size_t)r * cols + x] > max)
      max = grid[(size_t)r * cols + x];
  }

  cw = (double)cw_total / cols;
  fprintf(f,
          "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
          "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" "
          "height=\"%d\" viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" "
          "font-size=\"11\">\n",
          width, height, width, height);
  fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
  fprintf(f,
          "<text x=\"%d\" y=\"20\" font-size=\"14\">uvctx cancel "
          "propagation: %zu callbacks over %.3f ms</text>\n",
          left, n, (t_max - t_min) / 1000.0);
  fprintf(f,
          "<text x=\"%d\" y=\"36\" fill=\"#555\">delay from the cancel "
          "to the start of each watch callback; colour: callbacks per "
          "cell (log scale)</text>\n",
          left);
  fprintf(f,
          "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" "
          "fill=\"#f4f4f4\"/>\n",
          left, top, cw_total, ROWS * rh);
  for (r = 0; r < ROWS; r++) {
    int y = top + (ROWS - 1 - r) * rh;
    for (c = 0; c < cols; c++) {
      uint64_t k = grid[(size_t)r * cols + c];
      if (k == 0)
        continue;
      colour(max > 1 ? log((double)k) / log((double)max) : 1.0, col,
             sizeof(col));
      fprintf(f,
              "<rect x=\"%.2f\" y=\"%d\" width=\"%.2f\" height=\"%d\" "
              "fill=\"%s\"><title>%" PRIu64 "</title></rect>\n",
              left + c * cw, y, cw + 0.05, rh, col, k);
    }
    if (r % 2 == 1 || r == ROWS - 1) {
      bound_label(label, sizeof(label), r);
      fprintf(f, "<text x=\"%d\" y=\"%d\" text-anchor=\"end\">%s%s</text>\n",
              left - 6, y + rh - 4, r == ROWS - 1 ? "" : "\xe2\x89\xa4 ",
              label);
    }
  }
  for (c = 0; c <= 4; c++) {
    double x = left + cw_total * c / 4.0;
    fprintf(f,
            "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" "
            "stroke=\"#333\"/>\n",
            x, top + ROWS * rh, x, top + ROWS * rh + 5);
    fprintf(f,
            "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.3f ms"
            "</text>\n",
            x, top + ROWS * rh + 18, (t_min + span * c / 4.0) / 1000.0);
  }
  fprintf(f,
          "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">trace time"
          "</text>\n",
          left + cw_total / 2, top + ROWS * rh + 36);
  for (r = 0; r < 10; r++) {
    colour(r / 9.0, col, sizeof(col));
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"16\" height=\"%d\" "
            "fill=\"%s\"/>\n",
            left + cw_total + 20, top + (9 - r) * 12, 12, col);
  }
  fprintf(f, "<text x=\"%d\" y=\"%d\">%" PRIu64 "</text>\n",
          left + cw_total + 42, top + 10, max);
  fprintf(f, "<text x=\"%d\" y=\"%d\">1</text>\n", left + cw_total + 42,
          top + 118);
  fprintf(f, "</svg>\n");
  free(grid);
  return ferror(f) ? -1 : 0;
}
