/* summary.c owns --log-level summary: instead of a line per connection,
 * one `summary` line per worker every --log-interval, with the
 * connections it accepted and closed in that period (by reason) and the
 * relay's open connections, for connection rates at which a line each
 * would be the load. It runs on the control loop and reads the workers'
 * counters (relaxed atomics, as a scrape does), so the workers do nothing
 * for it. A worker with nothing new is not logged; the last period is
 * logged when the relay exits. */
#include <stdlib.h>
#include <string.h>

#include "relay.h"

typedef struct relay_summary_s {
  relay_server_t* srv;
  uv_timer_t timer;
  uint64_t (*last)[RELAY_REASONS + 1]; /* per worker: accepted, closed[] */
} relay_summary_t;

static void log_period(relay_summary_t* s) {
  relay_server_t* srv = s->srv;
  unsigned i, r;

  for (i = 0; i < srv->nworkers; i++) {
    relay_counters_t* n = &srv->workers[i].counters;
    uint64_t now[RELAY_REASONS + 1];
    uint64_t closed = 0;
    relay_log_line_t ln;
    int moved = 0;

    now[0] = atomic_load_explicit(&n->accepted, memory_order_relaxed);
    for (r = 0; r < RELAY_REASONS; r++)
      now[r + 1] = atomic_load_explicit(&n->closed[r], memory_order_relaxed);
    for (r = 0; r <= RELAY_REASONS; r++)
      moved |= now[r] != s->last[i][r];
    if (!moved)
      continue;
    for (r = 0; r < RELAY_REASONS; r++)
      closed += now[r + 1] - s->last[i][r + 1];
    relay_log_begin(&ln, "summary");
    relay_log_u64(&ln, "worker", i);
    relay_log_u64(&ln, "interval_ms", srv->cfg->log_interval_ms);
    relay_log_u64(&ln, "accepted", now[0] - s->last[i][0]);
    relay_log_u64(&ln, "closed", closed);
    for (r = 0; r < RELAY_REASONS; r++)
      if (now[r + 1] != s->last[i][r + 1])
        relay_log_u64(&ln, relay_reasons[r], now[r + 1] - s->last[i][r + 1]);
    relay_log_u64(&ln, "active", atomic_load(&srv->active));
    relay_log_end(&ln);
    memcpy(s->last[i], now, sizeof(now));
  }
}

static void on_period(uv_timer_t* t) {
  log_period(t->data);
}

int relay_summary_start(relay_server_t* srv) {
  relay_summary_t* s;

  if (srv->cfg->log_level != RELAY_LEVEL_SUMMARY)
    return 0;
  s = calloc(1, sizeof(*s));
  if (s == NULL ||
      (s->last = calloc(srv->nworkers, sizeof(*s->last))) == NULL) {
    free(s);
    return UV_ENOMEM;
  }
  s->srv = srv;
  uv_timer_init(&srv->loop, &s->timer);
  s->timer.data = s;
  uv_timer_start(&s->timer, on_period, srv->cfg->log_interval_ms,
                 srv->cfg->log_interval_ms);
  uv_unref((uv_handle_t*)&s->timer);
  srv->summary = s;
  return 0;
}

static void on_closed(uv_handle_t* h) {
  relay_summary_t* s = h->data;
  free(s->last);
  free(s);
}

void relay_summary_stop(relay_server_t* srv) {
  relay_summary_t* s = srv->summary;

  if (s == NULL)
    return;
  srv->summary = NULL;
  log_period(s);
  uv_close((uv_handle_t*)&s->timer, on_closed);
}
