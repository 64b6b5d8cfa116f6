/* lock.c owns the core's locks and the rules for taking them: the lock
 * word every loop binding carries, the registry lock, the trace lock, and
 * the barrier that a cancel racing another cancel across loops waits at.
 *
 * What each lock guards
 *
 *   loop lock (uvctx_loop_t.lock), one per binding: everything homed on
 *     that loop. For each cancellable context homed there: its passage
 *     from live to done (err is written under it and read without it), its
 *     children list (the list head and every link on it, whatever loop the
 *     child is homed on) and its watch list. The loop's orphan list and the
 *     `where` of every link on it; its dispatch queue, deadline heap and
 *     timer state; its counts and stats.
 *   registry lock: the list of loop bindings (core/loop.c). The leak
 *     report holds it while it visits loops, so that none is freed under it.
 *   trace lock (uvctx__lock()): the trace rings and their list
 *     (core/trace_hooks.c, obs/trace.c). Nothing else.
 *
 * Order: registry, then one loop lock, then the trace lock. No thread ever
 * holds two loop locks: an operation that spans loops (a child homed on
 * another loop than its parent, a merge, a cancel that reaches such a
 * child) takes them one after the other, and what it carries from one to
 * the next is held by a reference, never by a lock. No lock is held while
 * user code runs (callbacks, value destructors) or while memory is
 * allocated for another loop's benefit.
 *
 * Where a link is (uvctx_s.where) says which lock guards it: on its
 * parent's children list (the parent's loop lock), on its home's orphan
 * list (its home's loop lock), taken by a cancel (owned by that cancel,
 * which holds a reference and will put it on the orphan list), or nowhere.
 * A cancel takes a child off a list only under that list's lock, and the
 * one who takes it owns it: so a concurrent cancel of a parent and free of
 * its child meet under the parent's lock, where the child is either still
 * listed (the free unlinks it; the cancel no longer sees it), or already
 * taken (with a reference, if it was live: the free cannot have started;
 * without, if its count had reached zero: the cancel leaves it to the
 * free). A cancel that reaches a child homed on another loop, or a merge,
 * takes a reference under the parent's lock, lets the lock go, and cancels
 * it under its own home's lock afterwards: nobody waits for a lock while
 * holding one, so nothing can deadlock, and the child's done state is
 * published under the same lock its watches are listed under, so that no
 * watch can be added after the walk went past it (no lost wake-up).
 *
 * The lock itself is a test-and-test-and-set word whose release is a plain
 * store: the single-thread paths pay one atomic exchange per critical
 * section, as before. A waiter spins briefly, then yields, then sleeps with
 * a growing pause, so that on an oversubscribed machine it stops taking
 * the CPU its preempted holder needs. */
#include <sched.h>
#include <time.h>

#include "core/internal.h"

void uvctx__lock_slow(uvctx__lock_t* k) {
  unsigned spins = 0;
  unsigned yields = 0;
  long pause_ns = 1000;
  for (;;) {
    while (atomic_load_explicit(&k->word, memory_order_relaxed)) {
      if (++spins < 64) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else if (yields < 8) {
        yields++;
        spins = 0;
        sched_yield();
      } else {
        struct timespec ts = {0, pause_ns};
        nanosleep(&ts, NULL);
        if (pause_ns < 64000)
          pause_ns *= 2;
        spins = 0;
      }
    }
    if (!atomic_exchange_explicit(&k->word, 1, memory_order_acquire))
      return;
  }
}

/* ---- the trace lock ------------------------------------------------------ */

static uvctx__lock_t trace_lock;

void uvctx__lock(void) {
  uvctx__lock_acquire(&trace_lock);
}

void uvctx__unlock(void) {
  uvctx__lock_release(&trace_lock);
}

/* ---- the cross-loop barrier ---------------------------------------------- */

/* Contexts taken by cancels and not yet cancelled under their own loop's
 * lock, over all cancels in the process. A cancel that finds one of the
 * contexts it took already done by another cancel cannot see that other
 * cancel's progress below it; it waits until none is pending anywhere, so
 * that when it returns its whole subtree is done. Cancels that span no
 * loop and meet no merge never touch it. */
static atomic_long pending;
static atomic_int waiters;
static uv_once_t barrier_once = UV_ONCE_INIT;
static uv_mutex_t barrier_mutex;
static uv_cond_t barrier_cond;

static void barrier_init(void) {
  if (uv_mutex_init(&barrier_mutex) != 0 || uv_cond_init(&barrier_cond) != 0)
    abort(); /* cannot fail on Linux; nothing sensible to fall back to */
}

void uvctx__barrier_add(long d) {
  long now = atomic_fetch_add(&pending, d) + d;
  if (now == 0 && atomic_load(&waiters) != 0) {
    uv_once(&barrier_once, barrier_init);
    uv_mutex_lock(&barrier_mutex);
    uv_cond_broadcast(&barrier_cond);
    uv_mutex_unlock(&barrier_mutex);
  }
}

void uvctx__barrier_wait(void) {
  uv_once(&barrier_once, barrier_init);
  atomic_fetch_add(&waiters, 1);
  uv_mutex_lock(&barrier_mutex);
  while (atomic_load(&pending) != 0)
    uv_cond_wait(&barrier_cond, &barrier_mutex);
  uv_mutex_unlock(&barrier_mutex);
  atomic_fetch_sub(&waiters, 1);
}
