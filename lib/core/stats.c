/* stats.c owns uvctx_loop_stats(): the snapshot of a loop binding's
 * always-on counters and latency histograms (the histogram maths lives in
 * common/histogram.c). */
#include <string.h>

#include "core/internal.h"

int uvctx_loop_stats(const uvctx_loop_t* l, uvctx_loop_stats_t* out) {
  int d;
  if (l == NULL)
    return UVCTX__EINVAL("loop is NULL");
  if (out == NULL)
    return UVCTX__EINVAL("out is NULL");
  memset(out, 0, sizeof(*out));
  uvctx__lock_acquire(&((uvctx_loop_t*)l)->lock);
  out->contexts = uvctx__live_locked(l);
  out->contexts_cancel = uvctx__kind_count(l, UVCTX__CANCEL);
  out->contexts_deadline = uvctx__kind_count(l, UVCTX__DEADLINE);
  out->contexts_any = uvctx__kind_count(l, UVCTX__ANY);
  out->contexts_value = uvctx__kind_count(l, UVCTX__VALUE);
  out->contexts_without_cancel = uvctx__kind_count(l, UVCTX__DETACHED);
  out->watches = l->n_watches;
  out->deadlines = l->heap_len;
  for (d = 0; d < UVCTX__DOMAINS; d++) {
    uvctx_loop_t* m = (uvctx_loop_t*)l;
    out->created +=
        atomic_load_explicit(&m->dom[d].created, memory_order_relaxed);
    out->cancels +=
        atomic_load_explicit(&m->dom[d].cancels, memory_order_relaxed);
  }
  out->remote_wakeups = l->remote_wakeups;
  out->callbacks = l->callbacks;
  out->deadlines_fired = l->deadlines_fired;
  out->propagation = l->propagation;
  out->lateness = l->lateness;
  uvctx__lock_release(&((uvctx_loop_t*)l)->lock);
  return 0;
}
