/* The allocator every part of the library uses, and small macros of the
 * same level, defined in common/alloc.c. Nothing here is part of the
 * public API. */
#ifndef UVCTX_COMMON_ALLOC_H
#define UVCTX_COMMON_ALLOC_H

#include <stddef.h>

#if defined(__GNUC__)
#define UVCTX__LIKELY(x) __builtin_expect(!!(x), 1)
#define UVCTX__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define UVCTX__LIKELY(x) (x)
#define UVCTX__UNLIKELY(x) (x)
#endif

#define UVCTX__CONTAINER_OF(ptr, type, member) \
  ((type*)((char*)(ptr)-offsetof(type, member)))

/* ---- allocation (common/alloc.c) ----------------------------------------- */

/* Every block the library allocates goes through these; they honour
 * uvctx_replace_allocator() and count live blocks for
 * uvctx_live_allocations(). uvctx__free(NULL) is a no-op. */
void* uvctx__malloc(size_t size);
void* uvctx__calloc(size_t count, size_t size);
void* uvctx__realloc(void* ptr, size_t size); /* counts ptr==NULL as new */
void uvctx__free(void* ptr);
char* uvctx__strdup(const char* s);

#endif /* UVCTX_COMMON_ALLOC_H */
