/* fuzz_time.c owns the fixed clock of the TLS fuzz targets: OpenSSL reads
 * time() for session times and certificate checks, so, as in OpenSSL's
 * own fuzzers, the binary defines time() and an input behaves the same on
 * every run. Linked only into the TLS targets. */
#include <time.h>

#define FZ_TIME ((time_t)1764720000) /* 2025-12-03T00:00:00Z */

time_t time(time_t* t) {
  if (t != NULL)
    *t = FZ_TIME;
  return FZ_TIME;
}
