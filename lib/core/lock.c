/* lock.c owns the core's locks and the rules for taking them: the stripe
 * locks every loop binding carries, the registry lock, the trace lock, and
 * the barrier that a cancel racing another cancel across locks waits at.
 *
 * What each lock guards
 *
 *   stripe lock: a binding has UVCTX__DOMAINS of them. Stripe 0 is the
 *     loop lock (uvctx_loop_t.lock); stripes 1.. are in uvctx_loop_t.dom,
 *     each with its own orphan list and counts. Every context belongs to
 *     one stripe of its home (uvctx_s.lay), and that stripe's lock guards,
 *     for a cancellable context: its passage from live to done (err is
 *     written under it and read without it), its children list (the
 *     list head and every link on it, whatever lock guards the child) and
 *     its watch list; for every context, the `where` of its link while on
 *     its stripe's orphan list, and its place in the stripe's counts. A
 *     context inherits its parent's stripe; only a with_cancel child of a
 *     striped parent (below) takes its creating thread's.
 *   loop lock, besides stripe 0: the binding's dispatch queue, deadline
 *     heap and timer state, watch counts and stats, n_foreign, and the
 *     lists of what a timer pass left for after it (deferred, pending,
 *     stray).
 *   a striped parent's stripe lists (uvctx__stripes_t): list d, its count
 *     of children holding the stripe's reference and whether the stripe
 *     holds one, under the lock of stripe d of the parent's home. The
 *     parent's own list is its own stripe's.
 *   registry lock: the list of loop bindings (core/loop.c). The leak
 *     report holds it while it visits loops, so that none is freed under it.
 *   trace lock (uvctx__lock()): the trace rings and their list
 *     (core/trace_hooks.c, obs/trace.c). Nothing else.
 *
 * Order: registry, then one stripe lock, then (if that was not stripe 0)
 * its binding's loop lock, then the trace lock. No thread ever holds two
 * stripe locks, and none takes a stripe lock while it holds a loop lock:
 * a timer pass (which holds the loop lock) hands deadlines of other
 * stripes on (uvctx_loop_s.n_stray) and cancels them once it has let it
 * go. An operation that spans locks (a child guarded by another lock than
 * its parent's list: homed on another loop, or of another stripe; a
 * merge; a cancel that reaches such a child; a striped parent's other
 * stripes) takes them one after the other, and what it carries from one
 * to the next is held by a reference, never by a lock. No lock is held
 * while user code runs (callbacks, value destructors) or while memory is
 * allocated for another loop's benefit.
 *
 * Where a link is (uvctx_s.where) says which lock guards it: on its
 * parent's children list (the lock of that list: its parent's stripe, or
 * for a striped child its own), on its stripe's orphan list (its own), taken
 * by a cancel (owned by that cancel, which holds a reference and will put
 * it on the orphan list), or nowhere. A cancel takes a child off a list
 * only under that list's lock, and the one who takes it owns it: so a
 * concurrent cancel of a parent and free of its child meet under the lock
 * of the list the child is on, where the child is either still listed
 * (the free unlinks it; the cancel no longer sees it), or already taken
 * (with a reference, if it was live: the free cannot have started;
 * without, if its count had reached zero: the cancel leaves it to the
 * free). A cancel that reaches a child guarded by another lock, or a
 * merge, takes a reference under the list's lock, lets the lock go, and
 * cancels it under its own lock afterwards: nobody waits for a stripe
 * lock while holding one, so nothing can deadlock, and a context's done
 * state is published under the same lock its watches and children are
 * listed under, so that none can be added after the walk went past it
 * (no lost wake-up).
 *
 * A striped parent. A with_cancel context whose lock is found held by
 * another thread when a child of it is made (that is, children come from
 * several threads) gets a list per stripe, each on a cache line of its
 * own, allocated then with no lock held and kept until it is freed. A
 * with_cancel child made from then on by a thread of stripe d goes on list
 * d and belongs to stripe d: creating it, cancelling it and freeing it
 * take that one lock and write no line another stripe writes. The parent
 * is held per stripe: the stripe's first counted child adds one
 * UVCTX__REF_UNIT to the parent's count, which the stripe keeps (even with
 * no child) until the parent's own references are all gone; then the last
 * of them, or the stripe's last child, gives it back under the stripe's
 * lock, whichever comes second. A cancel of the parent publishes its done
 * state under the parent's own lock, then walks each other stripe's list
 * under that stripe's lock, one at a time: a child made under a stripe
 * lock taken after the walk went past it finds the parent done and is
 * born done; one made before is on the list the walk takes. So no child
 * is lost and the first cancel still wins.
 *
 * The lock itself is a test-and-test-and-set word whose release is a plain
 * store: the single-thread paths pay one atomic exchange per critical
 * section. A waiter spins briefly, then yields, then sleeps with a growing
 * pause, so that on an oversubscribed machine it stops taking the CPU its
 * preempted holder needs. */
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
