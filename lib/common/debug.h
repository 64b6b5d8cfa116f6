/* Misuse reports, defined in common/debug.c. Nothing here is part of the
 * public API. */
#ifndef UVCTX_COMMON_DEBUG_H
#define UVCTX_COMMON_DEBUG_H

/* Returns UV_EINVAL for a broken precondition of the public function `fn`.
 * When the environment variable UVCTX_DEBUG is set to a non-empty value
 * other than "0" (read once, at the first misuse), it also writes one line
 * to stderr naming the function and the precondition:
 *
 *   uvctx: uvctx_cancel: the context cannot be cancelled (background)
 *
 * Costs nothing on the paths that succeed. */
int uvctx__misuse(const char* fn, const char* reason);

/* `return UVCTX__EINVAL("buffer size is 0");` inside a public function. */
#define UVCTX__EINVAL(reason) uvctx__misuse(__func__, (reason))

#endif /* UVCTX_COMMON_DEBUG_H */
