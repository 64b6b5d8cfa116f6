/* alloc.c owns the allocator hook (uvctx_replace_allocator) and the count of
 * live blocks behind uvctx_live_allocations(). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "uvctx.h"

static struct {
  uvctx_malloc_func malloc_fn;
  uvctx_realloc_func realloc_fn;
  uvctx_calloc_func calloc_fn;
  uvctx_free_func free_fn;
} allocator = {malloc, realloc, calloc, free};

/* The count is striped: each thread adds and subtracts on a counter of its
 * own cache line (threads beyond STRIPES share), so that threads making
 * and freeing contexts on their own loops write no line in common; the
 * total is the sum (a block freed by another thread than the one that
 * made it moves one unit between stripes, which wrap like the total).
 * Relaxed is enough: the count is a statistic, read by tests after the
 * threads that changed it were joined. */
#define STRIPES 64
static struct {
  atomic_uint_fast64_t n;
  char pad[64 - sizeof(atomic_uint_fast64_t)];
} live_blocks[STRIPES];
static atomic_uint next_stripe;
static _Thread_local atomic_uint_fast64_t* my_stripe;

static atomic_uint_fast64_t* stripe(void) {
  if (UVCTX__UNLIKELY(my_stripe == NULL)) {
    unsigned i =
        atomic_fetch_add_explicit(&next_stripe, 1, memory_order_relaxed);
    my_stripe = &live_blocks[i % STRIPES].n;
  }
  return my_stripe;
}

int uvctx_replace_allocator(uvctx_malloc_func malloc_func,
                            uvctx_realloc_func realloc_func,
                            uvctx_calloc_func calloc_func,
                            uvctx_free_func free_func) {
  if (malloc_func == NULL || realloc_func == NULL || calloc_func == NULL ||
      free_func == NULL)
    return UV_EINVAL;
  allocator.malloc_fn = malloc_func;
  allocator.realloc_fn = realloc_func;
  allocator.calloc_fn = calloc_func;
  allocator.free_fn = free_func;
  return 0;
}

uint64_t uvctx_live_allocations(void) {
  uint64_t n = 0;
  int i;
  for (i = 0; i < STRIPES; i++)
    n += atomic_load_explicit(&live_blocks[i].n, memory_order_relaxed);
  return n;
}

void* uvctx__malloc(size_t size) {
  void* p = allocator.malloc_fn(size ? size : 1);
  if (p != NULL)
    atomic_fetch_add_explicit(stripe(), 1, memory_order_relaxed);
  return p;
}

void* uvctx__calloc(size_t count, size_t size) {
  void* p;
  if (count == 0 || size == 0)
    count = size = 1;
  p = allocator.calloc_fn(count, size);
  if (p != NULL)
    atomic_fetch_add_explicit(stripe(), 1, memory_order_relaxed);
  return p;
}

void* uvctx__realloc(void* ptr, size_t size) {
  void* p;
  if (ptr == NULL)
    return uvctx__malloc(size);
  p = allocator.realloc_fn(ptr, size ? size : 1);
  /* On failure the old block is still live and still counted. */
  return p;
}

void uvctx__free(void* ptr) {
  if (ptr == NULL)
    return;
  atomic_fetch_sub_explicit(stripe(), 1, memory_order_relaxed);
  allocator.free_fn(ptr);
}

char* uvctx__strdup(const char* s) {
  size_t n = strlen(s) + 1;
  char* p = uvctx__malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}
