/* trace.c owns tracing: Chrome Trace Event output of context creation,
 * cancellation and callback dispatch. Placeholder hooks until the tracer
 * lands: tracing cannot be switched on yet, so uvctx__tracing stays 0. */
#include "internal.h"

atomic_int uvctx__tracing;

void uvctx__trace_create(const uvctx_t* c) { (void)c; }
void uvctx__trace_free(const uvctx_t* c) { (void)c; }
void uvctx__trace_cancel(const uvctx_t* root, int err, intptr_t cause,
                         const uvctx__cancel_op_t* op) {
  (void)root;
  (void)err;
  (void)cause;
  (void)op;
}
void uvctx__trace_deadline(const uvctx_t* c, uint64_t lateness_ns) {
  (void)c;
  (void)lateness_ns;
}
void uvctx__trace_callback(const uvctx_watch_t* w, int err) {
  (void)w;
  (void)err;
}
