/* pg_state.h: reads the state file that cluster.sh writes for the pg test
 * suite and the pg benchmark (KEY='value' lines). */
#ifndef UVCTX_TEST_PG_STATE_H
#define UVCTX_TEST_PG_STATE_H

#include <stddef.h>

/* Copies the value of the last `key` line of the file at `path` into
 * `out` (truncated to `size`); 1 if found, 0 if not or unreadable. */
int pg_state_get(const char* path, const char* key, char* out, size_t size);

#endif
