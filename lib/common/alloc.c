/* alloc.c owns the allocator hook (uvctx_replace_allocator) and the count of
 * live blocks behind uvctx_live_allocations(). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
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
 * own cache line, so that threads making and freeing contexts on their
 * own loops write no line in common; the total is the sum (a block freed
 * by another thread than the one that made it moves one unit between
 * stripes, which wrap like the total). Relaxed is enough: the count is a
 * statistic, read by tests after the threads that changed it were joined.
 *
 * A stripe a thread owns alone is changed with a plain load and store, not
 * an atomic read-modify-write: on the single-thread paths that is two
 * locked instructions fewer per context made and freed. A thread claims a
 * free stripe on its first allocation and gives it back when it exits (a
 * thread-specific key's destructor), with its count in it for the next
 * owner to go on from (release, then acquire when claimed). Threads that
 * find none free, or cannot register the destructor, share stripe 0 with
 * atomic updates. Stripes are 128 bytes apart: the adjacent-line
 * prefetcher pairs 64-byte lines. */
#define STRIPES 64
#define SHARED 0
static struct { _Alignas(128) atomic_uint_fast64_t n; } live_blocks[STRIPES];
static atomic_uchar stripe_taken[STRIPES];
/* Initial-exec: in the shared library the default model would call
 * __tls_get_addr() on every allocation and free; eight bytes of static
 * TLS are within what glibc keeps for libraries, even dlopen()ed ones. */
#if defined(__GNUC__)
#define STRIPE_TLS __attribute__((tls_model("initial-exec")))
#else
#define STRIPE_TLS
#endif
static _Thread_local atomic_uint_fast64_t* my_stripe STRIPE_TLS;
static pthread_once_t stripe_once = PTHREAD_ONCE_INIT;
static pthread_key_t stripe_key;
static atomic_int stripe_key_ok;

static void stripe_release(void* p) {
  size_t i = (size_t)((uintptr_t)p - 1);
  /* Whatever this thread frees from here on goes to the shared stripe. */
  my_stripe = &live_blocks[SHARED].n;
  atomic_store_explicit(&stripe_taken[i], 0, memory_order_release);
}

static void stripe_key_init(void) {
  stripe_key_ok = pthread_key_create(&stripe_key, stripe_release) == 0;
}

/* A library unloaded with dlclose() must not leave threads a destructor
 * to call in unmapped code when they exit. */
#if defined(__GNUC__)
__attribute__((destructor)) static void stripe_key_fini(void) {
  if (stripe_key_ok)
    pthread_key_delete(stripe_key);
  stripe_key_ok = 0;
}
#endif

#if defined(__GNUC__)
__attribute__((noinline))
#endif
static atomic_uint_fast64_t*
stripe_claim(void) {
  size_t i;
  pthread_once(&stripe_once, stripe_key_init);
  my_stripe = &live_blocks[SHARED].n;
  if (!stripe_key_ok)
    return my_stripe;
  for (i = SHARED + 1; i < STRIPES; i++) {
    unsigned char free_ = 0;
    if (atomic_compare_exchange_strong_explicit(&stripe_taken[i], &free_, 1,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
      if (pthread_setspecific(stripe_key, (void*)(i + 1)) != 0) {
        atomic_store_explicit(&stripe_taken[i], 0, memory_order_release);
        break;
      }
      my_stripe = &live_blocks[i].n;
      break;
    }
  }
  return my_stripe;
}

/* Adds `d` (1 or -1 as unsigned) to the calling thread's stripe. */
static inline void count_block(uint_fast64_t d) {
  atomic_uint_fast64_t* s = my_stripe;
  if (UVCTX__UNLIKELY(s == NULL))
    s = stripe_claim();
  if (UVCTX__LIKELY(s != &live_blocks[SHARED].n))
    atomic_store_explicit(s, atomic_load_explicit(s, memory_order_relaxed) + d,
                          memory_order_relaxed);
  else
    atomic_fetch_add_explicit(s, d, memory_order_relaxed);
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
    count_block(1);
  return p;
}

void* uvctx__calloc(size_t count, size_t size) {
  void* p;
  if (count == 0 || size == 0)
    count = size = 1;
  p = allocator.calloc_fn(count, size);
  if (p != NULL)
    count_block(1);
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
  count_block((uint_fast64_t)-1);
  allocator.free_fn(ptr);
}

char* uvctx__strdup(const char* s) {
  size_t n = strlen(s) + 1;
  char* p = uvctx__malloc(n);
  if (p != NULL)
    memcpy(p, s, n);
  return p;
}

void* uvctx_malloc(size_t size) {
  return uvctx__malloc(size);
}

void uvctx_free(void* ptr) {
  uvctx__free(ptr);
}
