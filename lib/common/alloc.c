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

/* Relaxed is enough: the count is a statistic, read by tests after the
 * threads that changed it were joined. */
static atomic_uint_fast64_t live_blocks;

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
  return atomic_load_explicit(&live_blocks, memory_order_relaxed);
}

void* uvctx__malloc(size_t size) {
  void* p = allocator.malloc_fn(size ? size : 1);
  if (p != NULL)
    atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
  return p;
}

void* uvctx__calloc(size_t count, size_t size) {
  void* p;
  if (count == 0 || size == 0)
    count = size = 1;
  p = allocator.calloc_fn(count, size);
  if (p != NULL)
    atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
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
  atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
  allocator.free_fn(ptr);
}

char* uvctx__strdup(const char* s) {
  size_t n = strlen(s) + 1;
  char* p = uvctx__malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}
