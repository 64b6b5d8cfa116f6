/* debug.c owns misuse reports: the UV_EINVAL every public function returns
 * for a broken precondition, and the one line per misuse that UVCTX_DEBUG
 * asks for (as glibc's MALLOC_CHECK_ does for the heap). */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "common/debug.h"

/* 0: not read yet, 1: off, 2: on. Racing first readers agree. */
static atomic_int debug_state;

static int debug_on(void) {
  int s = atomic_load_explicit(&debug_state, memory_order_relaxed);
  if (s == 0) {
    const char* v = getenv("UVCTX_DEBUG");
    s = v != NULL && v[0] != '\0' && strcmp(v, "0") != 0 ? 2 : 1;
    atomic_store_explicit(&debug_state, s, memory_order_relaxed);
  }
  return s == 2;
}

int uvctx__misuse(const char* fn, const char* reason) {
  if (debug_on()) {
    /* One fprintf call: stderr is unbuffered, and a single write keeps
     * lines from several threads whole. */
    fprintf(stderr, "uvctx: %s: %s\n", fn, reason);
  }
  return UV_EINVAL;
}
