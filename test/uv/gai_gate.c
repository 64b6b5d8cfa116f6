/* gai_gate.c owns the interposed getaddrinfo() of the uv suites: libuv's
 * thread pool calls getaddrinfo() through the dynamic linker, which finds
 * this definition in the executable first; it serves the test names of
 * gai_gate.h from real lookups of numeric loopback addresses and passes
 * everything else to the next definition (libc's, or a sanitizer's
 * interceptor). */
#define _GNU_SOURCE
#include "gai_gate.h"

#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

typedef int (*gai_fn)(const char*, const char*, const struct addrinfo*,
                      struct addrinfo**);

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static int gate_closed;
static atomic_int gate_waiting;
static atomic_int test_calls;

void uvt_gai_gate_close(void) {
  pthread_mutex_lock(&gate_mu);
  gate_closed = 1;
  pthread_mutex_unlock(&gate_mu);
}

void uvt_gai_gate_open(void) {
  pthread_mutex_lock(&gate_mu);
  gate_closed = 0;
  pthread_cond_broadcast(&gate_cv);
  pthread_mutex_unlock(&gate_mu);
}

int uvt_gai_gate_waiting(void) {
  return atomic_load(&gate_waiting);
}

int uvt_gai_calls(void) {
  return atomic_load(&test_calls);
}

static gai_fn next_gai(void) {
  static _Atomic(gai_fn) fn;
  gai_fn f = atomic_load(&fn);
  if (f == NULL) {
    f = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    atomic_store(&fn, f);
  }
  return f;
}

/* Resolves the numeric `a` then `b` (either may be NULL) with `hints`, and
 * chains the results: glibc's freeaddrinfo() frees node by node. */
static int chain(const char* a, const char* b, const char* service,
                 const struct addrinfo* hints, struct addrinfo** res) {
  struct addrinfo h, *ra = NULL, *rb = NULL, *p;
  int rc;

  memset(&h, 0, sizeof(h));
  if (hints != NULL)
    h = *hints;
  h.ai_flags |= AI_NUMERICHOST;
  if (a != NULL && next_gai()(a, service, &h, &ra) != 0)
    ra = NULL;
  if (b != NULL && next_gai()(b, service, &h, &rb) != 0)
    rb = NULL;
  if (ra == NULL && rb == NULL)
    return EAI_NONAME;
  if (ra == NULL) {
    *res = rb;
    return 0;
  }
  for (p = ra; p->ai_next != NULL; p = p->ai_next)
    ;
  p->ai_next = rb;
  *res = ra;
  rc = 0;
  return rc;
}

int getaddrinfo(const char* node, const char* service,
                const struct addrinfo* hints, struct addrinfo** res) {
  if (node == NULL || strstr(node, ".test") == NULL)
    return next_gai()(node, service, hints, res);
  /* As the real one: a name is never numeric, and never looked up then. */
  if (hints != NULL && (hints->ai_flags & AI_NUMERICHOST))
    return EAI_NONAME;
  atomic_fetch_add(&test_calls, 1);
  if (strcmp(node, "gate.test") == 0) {
    pthread_mutex_lock(&gate_mu);
    atomic_fetch_add(&gate_waiting, 1);
    while (gate_closed)
      pthread_cond_wait(&gate_cv, &gate_mu);
    atomic_fetch_sub(&gate_waiting, 1);
    pthread_mutex_unlock(&gate_mu);
    return chain("127.0.0.1", NULL, service, hints, res);
  }
  if (strcmp(node, "dual.test") == 0)
    return chain("::1", "127.0.0.1", service, hints, res);
  if (strcmp(node, "dual4.test") == 0)
    return chain("127.0.0.1", "::1", service, hints, res);
  return EAI_NONAME;
}
