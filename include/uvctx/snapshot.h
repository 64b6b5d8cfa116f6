/* uvctx snapshots: the live contexts of a loop as records, for programs
 * that present the leak report themselves (a debug endpoint, a health
 * check) instead of printing uvctx_loop_dump()'s text.
 *
 * Include <uvctx/snapshot.h>; it includes <uvctx.h>.
 *
 * uvctx_loop_snapshot() and uvctx_loops_snapshot() hold each loop's lock in
 * turn only while they copy the records that lock guards; naming creation
 * sites (uvctx_site_format(), which calls dladdr()) and formatting happen
 * afterwards, on the caller's time.
 */
#ifndef UVCTX_SNAPSHOT_H
#define UVCTX_SNAPSHOT_H

#include <uvctx.h>

#ifdef __cplusplus
extern "C" {
#endif

/* One live context as uvctx_loop_dump() describes it. The pointers `id`
 * and `parent` identify contexts in the report only: the contexts may be
 * gone by the time the record is read, so they must not be dereferenced. */
typedef struct uvctx_ctx_info_s {
  const void* id;       /* the context's address */
  const void* parent;   /* its parent's address (parents[0] for a merge) */
  const char* kind;     /* "background", "cancel", "deadline", "any", "value",
                           "without_cancel": static strings */
  unsigned refs;        /* reference count when copied */
  int err;              /* 0 (live), UV_ECANCELED or UV_ETIMEDOUT */
  int has_deadline;     /* 1 for deadline contexts: deadline_ns is set */
  uint64_t deadline_ns; /* absolute, on the uv_hrtime() clock */
  const char* key;      /* value contexts: the key's name (borrowed from the
                           key object, NULL if it has none); else NULL */
  const void* site;     /* the return address into the code that created it */
} uvctx_ctx_info_t;

/* Copies a record of every live context homed on `l`, in the order
 * uvctx_loop_dump() lists them, into a new array: *out (free it with
 * uvctx_snapshot_free()) and *n. With no live context, *out is NULL and *n
 * is 0. Loop thread only, like uvctx_loop_dump(). Returns 0, UV_EINVAL for a
 * NULL argument, or UV_ENOMEM (nothing is stored then). */
UVCTX_EXTERN int uvctx_loop_snapshot(const uvctx_loop_t* l,
                                     uvctx_ctx_info_t** out, size_t* n);

/* The same for several loops in one walk: out[i] and counts[i] are what
 * uvctx_loop_snapshot(loops[i], ...) gives (each array freed with
 * uvctx_snapshot_free()). Calling uvctx_loop_snapshot() once per loop walks
 * every loop's lists each time; this walks them once, and holds each
 * loop's lock only while it copies what that lock guards, so that a loop
 * is stopped for the copy of its own part only. With `hold_ns` (n slots),
 * hold_ns[i] is the longest the walk held loops[i]'s lock, in ns. Any
 * thread; the bindings must stay open during the call. Returns 0,
 * UV_EINVAL (loops NULL, n 0, a NULL binding, out or counts NULL) or
 * UV_ENOMEM, when no array is stored (hold_ns is then undefined). */
UVCTX_EXTERN int uvctx_loops_snapshot(const uvctx_loop_t* const* loops,
                                      size_t n, uvctx_ctx_info_t** out,
                                      size_t* counts, uint64_t* hold_ns);
/* Frees an array from uvctx_loop_snapshot() or uvctx_loops_snapshot().
 * NULL is ignored. */
UVCTX_EXTERN void uvctx_snapshot_free(uvctx_ctx_info_t* records);

/* Names a creation site as uvctx_loop_dump() does: "function+0xOFF in
 * MODULE" when the symbol is exported (link programs with -rdynamic),
 * "0xOFF in MODULE" (an offset for addr2line) otherwise, or the bare
 * address. snprintf-style: writes at most `size` bytes with the NUL (buf
 * may be NULL when size is 0) and returns the length of the whole name.
 * Any thread. */
UVCTX_EXTERN int uvctx_site_format(const void* site, char* buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif /* UVCTX_SNAPSHOT_H */
