/* stats.c owns uvctx_loop_stats(): the snapshot of a loop binding's
 * always-on counters and latency histograms (the histogram maths lives in
 * common/histogram.c). */
#include <string.h>

#include "core/internal.h"

int uvctx_loop_stats(const uvctx_loop_t* l, uvctx_loop_stats_t* out) {
  if (l == NULL)
    return UVCTX__EINVAL("loop is NULL");
  if (out == NULL)
    return UVCTX__EINVAL("out is NULL");
  memset(out, 0, sizeof(*out));
  uvctx__lock_acquire(&((uvctx_loop_t*)l)->lock);
  out->contexts = uvctx__live_locked(l);
  out->contexts_cancel = l->n_kind[UVCTX__CANCEL];
  out->contexts_deadline = l->n_kind[UVCTX__DEADLINE];
  out->contexts_any = l->n_kind[UVCTX__ANY];
  out->contexts_value = l->n_kind[UVCTX__VALUE];
  out->contexts_without_cancel = l->n_kind[UVCTX__DETACHED];
  out->watches = l->n_watches;
  out->deadlines = l->heap_len;
  out->created = l->created;
  out->cancels = l->cancels;
  out->remote_wakeups = l->remote_wakeups;
  out->callbacks = l->callbacks;
  out->deadlines_fired = l->deadlines_fired;
  out->propagation = l->propagation;
  out->lateness = l->lateness;
  uvctx__lock_release(&((uvctx_loop_t*)l)->lock);
  return 0;
}
