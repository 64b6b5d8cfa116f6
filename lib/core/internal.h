/* Internals of the core layer (lib/core/): the locks, the context and loop
 * layouts, the timer source, the mailbox and the trace hooks, each section
 * labelled with the file that defines what it declares. Nothing here is
 * part of the public API. */
#ifndef UVCTX_INTERNAL_H
#define UVCTX_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "uvctx.h"

#include "common/alloc.h"
#include "common/debug.h"
#include "common/list.h"

/* ---- locks (core/lock.c: what each guards, and the order) --------------- */

/* A lock word: an atomic exchange to take it, a plain store to release it,
 * a waiter that backs off to sleeping (see core/lock.c). */
typedef struct uvctx__lock_s {
  atomic_int word;
} uvctx__lock_t;

void uvctx__lock_slow(uvctx__lock_t* k);

static inline void uvctx__lock_acquire(uvctx__lock_t* k) {
  if (atomic_exchange_explicit(&k->word, 1, memory_order_acquire))
    uvctx__lock_slow(k);
}

/* The same, telling whether another thread held it (1): how a parent
 * learns that children come to it from more than one thread. */
static inline int uvctx__lock_acquire_seen(uvctx__lock_t* k) {
  if (!atomic_exchange_explicit(&k->word, 1, memory_order_acquire))
    return 0;
  uvctx__lock_slow(k);
  return 1;
}

static inline void uvctx__lock_release(uvctx__lock_t* k) {
  atomic_store_explicit(&k->word, 0, memory_order_release);
}

/* The trace lock: the trace rings and their list, nothing else. Taken
 * last, after any loop lock. */
void uvctx__lock(void);
void uvctx__unlock(void);

/* The cross-loop barrier: `d` contexts taken by a cancel to be cancelled
 * under another loop's lock (d > 0), or done with (d < 0); and the wait,
 * with no lock held, until none is pending anywhere. */
void uvctx__barrier_add(long d);
void uvctx__barrier_wait(void);

/* ---- contexts (core/ctx.c, core/deadline.c, core/value.c) ---------------- */

enum {
  UVCTX__BACKGROUND = 0,
  UVCTX__CANCEL,   /* with_cancel, with_cancel_on */
  UVCTX__DEADLINE, /* with_deadline, with_timeout (and _cause) */
  UVCTX__ANY,      /* uvctx_any */
  UVCTX__VALUE,    /* with_value */
  UVCTX__DETACHED  /* without_cancel */
};

/* In a public function: returns UV_EINVAL, reported under UVCTX_DEBUG with
 * the function's name and `reason`, unless `cond` holds. */
#define UVCTX__REQUIRE(cond, reason) \
  do {                               \
    if (!(cond))                     \
      return UVCTX__EINVAL(reason);  \
  } while (0)

/* What every constructor checks itself, so that a misuse report names the
 * function called. */
#define UVCTX__REQUIRE_PARENT_OUT(parent, out)                       \
  do {                                                               \
    UVCTX__REQUIRE(uvctx__valid(parent), "parent is not a context"); \
    UVCTX__REQUIRE((out) != NULL, "out is NULL");                    \
  } while (0)

/* The kinds that have a done state of their own: only they can be
 * cancelled, only they list children and watches. */
static inline int uvctx__cancellable_kind(int kind) {
  return kind == UVCTX__CANCEL || kind == UVCTX__DEADLINE || kind == UVCTX__ANY;
}

/* Where a context's own link is (uvctx_s.where), and so which lock guards
 * it (core/lock.c). */
enum {
  UVCTX__AT_NONE = 0, /* on no list */
  UVCTX__AT_PARENT,   /* on its parent's children list: the parent's lock */
  UVCTX__AT_ORPHAN,   /* on its home's orphan list: its home's lock */
  UVCTX__AT_TAKEN     /* taken by a cancel, which will make it an orphan */
};

/* Error codes stored in uvctx_s.err, a byte. */
enum { UVCTX__LIVE = 0, UVCTX__ERR_CANCELED = 1, UVCTX__ERR_TIMEDOUT = 2 };

/* A link in an intrusive singly-headed doubly-linked list (Linux hlist):
 * `pprev` points at the previous link's `next` (or the list head), so a link
 * unlinks itself without knowing which list it is on. `owner` is the context
 * the link belongs to: a merge has one link per parent. */
struct uvctx__link_s {
  struct uvctx__link_s* next;
  struct uvctx__link_s** pprev;
  uvctx_t* owner;
};

/* ---- stripes (core/lock.c: the rules; core/ctx.c: the lists) ----------- *
 *
 * A binding's lock is split into UVCTX__DOMAINS stripes: stripe 0 is the
 * loop lock itself, stripes 1.. are uvctx__dom_t's of the binding, each
 * with its own lock word, orphan list and counts on cache lines of its
 * own. Every context belongs to one stripe of its home (its `lay`), whose
 * lock guards what the loop lock guards for it; only a with_cancel child
 * of a parent whose children come from several threads gets another
 * stripe than its parent's: the creating thread's. */
#define UVCTX__DOMAINS 8
/* Whether a parent found shared gets striped (define it to 0 to keep every
 * context on stripe 0, as before stripes; the test hook still stripes). */
#ifndef UVCTX__STRIPES_ON
#define UVCTX__STRIPES_ON 1
#endif
#define UVCTX__DOM(c) (((c)->lay >> 3) & 7)
#define UVCTX__DOM_BITS 0x38 /* UVCTX__DOM's bits of `lay` */
#define UVCTX__SREF 0x40     /* its reference to its parent is its stripe's */
#define UVCTX__MERGE 0x80    /* a uvctx_any() context (of stripe 0) */
#define UVCTX__LAY(shift, dom, sref) \
  ((uint8_t)((shift) / 8 | (dom) << 3 | ((sref) ? UVCTX__SREF : 0)))

/* The reference count of a context: bits 0-26 count references; a parent
 * whose children are striped also has UVCTX__REF_STRIPED set, and one
 * UVCTX__REF_UNIT per stripe that holds it for its children. */
#define UVCTX__REF_STRIPED (1u << 31)
#define UVCTX__REF_UNIT (1u << 27)
#define UVCTX__REF_LOW (UVCTX__REF_UNIT - 1)

typedef struct uvctx__link_s uvctx__link_t;

/* A striped parent's lists, allocated the first time its lock is found
 * taken by another thread when a child is made, and kept until the
 * parent is freed. Its u1 then points here for good (children list and
 * cause alike). */
typedef struct uvctx__stripes_s {
  struct {
    /* [the stripe's lock] Children made by threads of this stripe (the
     * parent's own children list, in the parent's stripe), how many of
     * them hold the stripe's reference, and whether it holds one. */
    uvctx__link_t* head;
    uint32_t nref;
    uint32_t holding;
  } __attribute__((aligned(64))) s[UVCTX__DOMAINS];
  intptr_t cause; /* once done: written before err is published */
  struct uvctx__stripes_s* pending; /* owned by the cancel that walks it */
  uvctx_t* owner;
  void* block; /* what to free */
} uvctx__stripes_t;

/* A cause message shared by every context a cancel reached. */
typedef struct uvctx__msg_s {
  atomic_uint refs;
  char text[];
} uvctx__msg_t;

/* The common head of every context. Cancel contexts are exactly this struct
 * (72 bytes); the other kinds extend it. Fields marked [lock] change only
 * under the loop lock named in core/lock.c. */
struct uvctx_s {
  atomic_uint refs;
  atomic_uchar err; /* UVCTX__LIVE until done; published last (release) */
  uint8_t kind;
  atomic_uchar where; /* UVCTX__AT_*: written under the lock it names */
  /* Set at creation, never changed: bits 0-2, the bytes from the
   * allocated block to the context, in 8s; bits 3-5, the context's stripe
   * of its home (UVCTX__DOM); bit 6, UVCTX__SREF; bit 7, UVCTX__MERGE. */
  uint8_t lay;
  uvctx_t* parent; /* parents[0] for a merge; NULL for background */
  uvctx_loop_t* home;
  /* [lock] Where this context is listed: in the children list of the
   * nearest cancellable ancestor while both are live, else in its home's
   * orphan list (done contexts, values, children of never-done contexts).
   * `where` says which. */
  uvctx__link_t link;
  /* While live: [lock] the children list. Once done: the cause, written
   * before `err` is published and never again. */
  union {
    uvctx__link_t* children;
    intptr_t cause;
  } u1;
  /* While live: [lock] the watch list. Once done: the cause message. */
  union {
    uvctx_watch_t* watches;
    uvctx__msg_t* msg;
  } u2;
  void* site; /* the caller of the constructor, for uvctx_loop_dump() */
};

/* uvctx_with_deadline() and friends. */
typedef struct uvctx__deadline_s {
  uvctx_t base;
  uint64_t deadline;   /* the earliest deadline in force, own or inherited */
  uint32_t heap_index; /* [lock] UINT32_MAX when not in the heap */
  int32_t dl_cause;    /* cause recorded when the deadline fires */
  uvctx__msg_t* dl_msg;
} uvctx__deadline_t;

/* uvctx_with_value(). */
typedef struct uvctx__value_s {
  uvctx_t base;
  uvctx_t* anc; /* nearest ancestor that is not a value context */
  const uvctx_key_t* key;
  void* value;
} uvctx__value_t;

/* uvctx_any(). base.link and base.parent serve parents[0]. */
typedef struct uvctx__any_s {
  uvctx_t base;
  uint64_t deadline; /* UINT64_MAX when no parent has one */
  size_t n;
  struct {
    uvctx__link_t link;
    uvctx_t* parent;
  } extra[]; /* parents 1..n-1 */
} uvctx__any_t;

#define UVCTX__NO_DEADLINE UINT64_MAX
#define UVCTX__NO_HEAP UINT32_MAX

/* ---- the loop binding (core/loop.c, core/timer.c, core/mailbox.c) ------ */

typedef struct uvctx__cancel_op_s uvctx__cancel_op_t;

/* A stripe of a binding: its lock (stripe 0's is the loop lock), its
 * orphan list and counts. The counts are written under `lock` and read
 * without it, hence relaxed atomics (plain loads and stores on the
 * machines uvctx runs on). The binding is allocated with malloc()'s
 * alignment, so rather than aligned, each stripe is followed by a cache
 * line's worth of padding: no two stripes share a line. */
typedef struct uvctx__dom_s {
  uvctx__lock_t lock;
  uvctx__link_t* orphans; /* [lock] */
  atomic_uint_fast64_t n_kind[UVCTX__DETACHED + 1];
  atomic_uint_fast64_t created;
  atomic_uint_fast64_t cancels;
  /* To 256 bytes: a stripe is found with a shift, not a multiply. */
  char pad[256 - 80];
} uvctx__dom_t;
_Static_assert(sizeof(uvctx__dom_t) == 256, "a stripe is 256 bytes");

struct uvctx_loop_s {
  /* The stripes; dom[0].lock is the loop lock (core/lock.c), also named
   * `lock`. First, so that a stripe's lock is found without a branch. */
  union {
    uvctx__dom_t dom[UVCTX__DOMAINS];
    uvctx__lock_t lock;
  };
  uv_loop_t* uv;
  uvctx_t background;
  /* The mailbox (core/mailbox.c): an unreferenced uv_async_t for posts
   * from other threads; for posts from the loop's own thread a check
   * handle that drains the queue after the poll and an idle handle that
   * drains it before the poll and keeps the poll from blocking (and
   * uv_run() alive), both started only while such callbacks are due. */
  uv_async_t mailbox;
  uv_check_t local_check;
  uv_idle_t local_idle;
  uv_timer_t timer;     /* the deadline source (core/timer.c) */
  uv_prepare_t prepare; /* records the thread running the loop */
  /* UVCTX_LOOP_HIRES_DEADLINES: a timerfd under a uv_poll_t replaces the
   * uv_timer_t as the deadline source (hires_fd is -1 otherwise). */
  int hires_fd;
  uv_poll_t hires;
  atomic_uintptr_t thread; /* uv_thread_t of the loop's thread */
  int closing;
  int handles_open;
  int local_armed; /* loop thread only: local_check and local_idle run */
  /* What the two mechanisms call instead of calling up into the layers
   * that use them, set by uvctx_loop_init(): the timer source hands each
   * expired deadline to `expire`, which must take it out of the heap; the
   * mailbox calls `wake_locked` (under the lock) when it wakes up, and
   * `deliver` (without it) for each watch it takes off its queue. */
  void (*expire)(uvctx__deadline_t* d, uint64_t now, uint64_t late);
  void (*expired)(uvctx_loop_t* l); /* after the expiries, without the lock */
  void (*wake_locked)(uvctx_loop_t* l);
  void (*deliver)(uvctx_watch_t* w, int err);
  /* [registry lock] The registry of loops, for dumps. */
  uvctx_loop_t* next_loop;
  uvctx_loop_t** pprev_loop;
  /* [lock] everything below */
  /* Contexts of other loops (or merges) that deadlines expiring here took
   * to cancel once the lock is released, each with a reference. */
  uvctx__link_t* deferred;
  uvctx_watch_t* queue_head; /* watches whose callbacks are due */
  uvctx_watch_t** queue_tail;
  uint64_t queued;
  uvctx__deadline_t** heap;
  uint32_t heap_len;
  uint32_t heap_cap;
  /* When the armed source fires, 0 if none is armed: loop-time ms for the
   * uv_timer_t, uv_hrtime() ns for the timerfd. */
  uint64_t timer_due;
  /* uv_timer_t source: the deadline the armed timer was last checked
   * against; it fires no later than (about) that deadline. */
  uint64_t timer_top;
  int timer_dirty; /* the loop thread must re-sync the timer */
  int timer_refd;
  uint64_t remote_wakeups;
  uint64_t callbacks;
  uint64_t deadlines_fired;
  uvctx_histogram_t propagation;
  uvctx_histogram_t lateness;
  /* Contexts homed on other loops whose parent is this loop's background:
   * the background is not reference counted, so they are counted here to
   * keep the binding from closing under them. */
  uint64_t n_foreign;
  uint64_t n_watches;  /* watches homed here that have not fired */
  uint64_t dl_watches; /* of those, watching a context with a deadline */
  /* Striped parents that deadlines expiring here cancelled, each with a
   * reference, whose other stripes are walked once the lock is released;
   * and how many deadline contexts of other stripes expired, each with a
   * reference, to cancel then: they wait at the top of the heap array,
   * in the slots their removal freed (heap[heap_cap - 1 - i]), so that
   * the expiry never allocates. */
  uvctx__stripes_t* pending;
  uint32_t n_stray;
};

/* One cancel operation, as seen by the watches it makes due: its id links
 * a trace's cancel event to the callbacks it caused, its time measures the
 * propagation delay. */
struct uvctx__cancel_op_s {
  uint64_t id;
  uint64_t time; /* 0, then the mailbox's stamp (common/clock.h) */
};

/* Watch states (uvctx_watch_t.state_): written under the home's loop lock
 * with release ordering, so that uvctx_watch_stop() can tell an idle watch
 * (never started, fired, stopped) without touching its home, which may be
 * gone by then. */
#define UVCTX__W_STATE(w) __atomic_load_n(&(w)->state_, __ATOMIC_ACQUIRE)
#define UVCTX__W_SET_STATE(w, s) \
  __atomic_store_n(&(w)->state_, (s), __ATOMIC_RELEASE)
enum {
  UVCTX__W_IDLE = 0,
  UVCTX__W_ARMED, /* on a context's watch list (or never-firing) */
  UVCTX__W_QUEUED /* on its home's dispatch queue */
};

/* ---- defined in core/loop.c ---------------------------------------------- */
/* The registry of bindings and its lock (core/lock.c for the order). */
void uvctx__registry_lock(void);
void uvctx__registry_unlock(void);
uvctx_loop_t* uvctx__registry_locked(void);
/* [lock] Contexts homed on `l` still referenced: the sum of n_kind over
 * the stripes (those of stripes 1.. read without their locks). */
uint64_t uvctx__kind_count(const uvctx_loop_t* l, int kind);
uint64_t uvctx__live_locked(const uvctx_loop_t* l);

/* A relaxed add by the only writer (the holder of the stripe's lock). */
static inline void uvctx__dom_add(atomic_uint_fast64_t* v, int64_t d) {
  atomic_store_explicit(
      v, atomic_load_explicit(v, memory_order_relaxed) + (uint64_t)d,
      memory_order_relaxed);
}

/* c's stripe of its home. A path that takes its lock works it out once,
 * before the lock: c's fields are read again after an acquire. */
static inline uvctx__dom_t* uvctx__dom_of(const uvctx_t* c) {
  return &c->home->dom[UVCTX__DOM(c)];
}

/* The lock of c's stripe of its home: what guards c as the loop lock
 * guards contexts of stripe 0. */
static inline uvctx__lock_t* uvctx__lock_of(const uvctx_t* c) {
  return &uvctx__dom_of(c)->lock;
}

/* [dm's lock] A new context of `kind`, of stripe `dm`, is counted. */
static inline void uvctx__count_new_locked(uvctx__dom_t* dm, int kind) {
  uvctx__dom_add(&dm->n_kind[kind], 1);
  uvctx__dom_add(&dm->created, 1);
}

/* [dm's lock] Puts `c`, of stripe `dm`, on that stripe's orphan list. */
static inline void uvctx__orphan_in_locked(uvctx_t* c, uvctx__dom_t* dm) {
  UVCTX__LIST_INSERT_HEAD(&dm->orphans, &c->link, next, pprev);
  atomic_store_explicit(&c->where, UVCTX__AT_ORPHAN, memory_order_relaxed);
}

/* [dm's lock] A context of `kind`, of stripe `dm`, goes: uncounted by
 * kind (uvctx__count_new_locked() counts one in). */
static inline void uvctx__count_gone_locked(uvctx__dom_t* dm, int kind) {
  uvctx__dom_add(&dm->n_kind[kind], -1);
}

/* [c's stripe's lock] The loop lock, taken after a stripe's lock (never
 * before one) to reach what only it guards: the dispatch queue, the
 * heap, the watch counts. Nothing when c is of stripe 0. */
static inline void uvctx__main_enter(const uvctx_t* c) {
  if (UVCTX__DOM(c) != 0)
    uvctx__lock_acquire(&c->home->lock);
}

static inline void uvctx__main_leave(const uvctx_t* c) {
  if (UVCTX__DOM(c) != 0)
    uvctx__lock_release(&c->home->lock);
}
int uvctx__on_loop_thread(const uvctx_loop_t* l);

/* ---- defined in core/timer.c: the deadline source ------------------------ */
/* Starts and closes the source's handles: the uv_timer_t, and the poll
 * handle over `hires_fd` if it is not -1 (the timerfd is closed with it).
 * Each closed handle calls close_cb, whose `data` is the binding. */
int uvctx__timer_init(uvctx_loop_t* l, int hires_fd);
void uvctx__timer_close(uvctx_loop_t* l, uv_close_cb close_cb);
int uvctx__timer_is_hires_handle(const uvctx_loop_t* l, const uv_handle_t* h);
int uvctx__hires_open(void); /* a non-blocking timerfd, or a UV_ error */
/* [lock] The heap of armed deadlines, earliest first. */
int uvctx__heap_insert_locked(uvctx_loop_t* l, uvctx__deadline_t* d);
void uvctx__heap_remove_locked(uvctx_loop_t* l, uvctx__deadline_t* d);
/* [lock] The source needs re-syncing (heap top or watch count changed):
 * done now on the loop's thread, else through the mailbox. */
void uvctx__timer_touch_locked(uvctx_loop_t* l);
/* [lock, loop thread] Re-arms the source for the heap's top and references
 * it only while a watch could be fired by a deadline; also the mailbox's
 * wake_locked hook. */
void uvctx__timer_sync_locked(uvctx_loop_t* l);

/* ---- defined in core/mailbox.c: the mailbox ------------------------------ */
int uvctx__mailbox_init(uvctx_loop_t* l);
void uvctx__mailbox_close(uvctx_loop_t* l, uv_close_cb close_cb);
/* [lock] Wakes the loop's thread. From that thread itself with
 * `keep_alive`, no wake-up is sent: the queue is drained later in this
 * loop iteration (or the next) and uv_run() kept alive until it is. */
void uvctx__mailbox_wake_locked(uvctx_loop_t* l, int keep_alive);
/* [lock] Queues a watch whose context is done, with its error, and wakes
 * the home loop, which will pass it to its deliver hook. */
void uvctx__mailbox_post_locked(uvctx_watch_t* w, int err,
                                uvctx__cancel_op_t* op);
/* [lock] Takes a queued watch off the queue (a stop that prevents it). */
void uvctx__mailbox_unpost_locked(uvctx_watch_t* w);

/* ---- defined in core/ctx.c ----------------------------------------------- */
/* Marks `c` and its whole subtree done, iteratively, with `err` (stored
 * form) and the cause; first cancel wins. Called with no lock held;
 * returns once every descendant, on every loop, is done. `now` is the
 * current uv_hrtime() if the caller has it, else 0. */
void uvctx__cancel(uvctx_t* c, int err, intptr_t cause, uvctx__msg_t* msg,
                   uint64_t now);
/* [c's home lock, loop thread] The same for a deadline context whose
 * parent's list is guarded by that lock too; contexts of other loops and
 * merges it reaches are left on the loop's deferred list, for
 * uvctx__cancel_deferred() once the lock is released. */
void uvctx__cancel_locked(uvctx_t* c, int err, intptr_t cause,
                          uvctx__msg_t* msg, uint64_t now);
void uvctx__cancel_deferred(uvctx_loop_t* l);
/* Gives a cancel operation its id, once. */
void uvctx__cancel_op_id(uvctx__cancel_op_t* op);
uvctx__msg_t* uvctx__msg_new(const char* text);
void uvctx__msg_unref(uvctx__msg_t* m);
/* The context whose done state `c` shares: itself for cancellable kinds,
 * the nearest non-value ancestor for values. */
static inline uvctx_t* uvctx__state_of(const uvctx_t* c) {
  if (c->kind == UVCTX__VALUE)
    return ((const uvctx__value_t*)c)->anc;
  return (uvctx_t*)c;
}

/* c's cause once done (c->u1 is a striped parent's lists for good). */
static inline intptr_t uvctx__cause_of(const uvctx_t* c) {
  if (atomic_load_explicit(&((uvctx_t*)c)->refs, memory_order_relaxed) &
      UVCTX__REF_STRIPED)
    return ((const uvctx__stripes_t*)c->u1.children)->cause;
  return c->u1.cause;
}

/* [c's stripe's lock] The head of the children list that lock guards. */
static inline uvctx__link_t** uvctx__own_list(uvctx_t* c) {
  if (atomic_load_explicit(&c->refs, memory_order_relaxed) & UVCTX__REF_STRIPED)
    return &((uvctx__stripes_t*)c->u1.children)->s[UVCTX__DOM(c)].head;
  return &c->u1.children;
}

/* The references counted in c (for reports). */
static inline unsigned uvctx__refs_of(const uvctx_t* c) {
  return atomic_load_explicit(&((uvctx_t*)c)->refs, memory_order_relaxed) &
         UVCTX__REF_LOW;
}

/* A striped parent's lists, or NULL. */
static inline uvctx__stripes_t* uvctx__stripes_of(const uvctx_t* c) {
  if (atomic_load_explicit(&((uvctx_t*)c)->refs, memory_order_acquire) &
      UVCTX__REF_STRIPED)
    return (uvctx__stripes_t*)c->u1.children;
  return NULL;
}

/* Test hook: makes c's children striped as if another thread had met its
 * lock (0), or says why not (UV_EINVAL: not a live with_cancel context;
 * UV_ENOMEM). */
int uvctx__stripe_now(uvctx_t* c);

/* The libuv code for a stored error byte (0 while live). */
static inline int uvctx__err_code(int stored) {
  switch (stored) {
    case UVCTX__ERR_CANCELED:
      return UV_ECANCELED;
    case UVCTX__ERR_TIMEDOUT:
      return UV_ETIMEDOUT;
    default:
      return 0;
  }
}
/* What uvctx__register_child_locked() did with a new child's link. */
typedef enum {
  UVCTX__LINKED,           /* listed under the nearest cancellable ancestor */
  UVCTX__PARENT_DONE,      /* not listed: that ancestor is already done */
  UVCTX__PARENT_NEVER_DONE /* not listed: no ancestor can ever be done */
} uvctx__attach_t;
/* [the lock of parent's home] Lists `l`, a link of a new child, under the
 * nearest cancellable ancestor of `parent` if that one is live. */
uvctx__attach_t uvctx__register_child_locked(uvctx__link_t* l, uvctx_t* parent);
/* Links a new single-parent child into the tree, born done if its parent
 * is, and counts it; takes the locks it needs. */
void uvctx__attach(uvctx_t* c, uvctx_t* parent);
/* [c's stripe's lock] Puts `c` on its stripe's orphan list. */
void uvctx__orphan_locked(uvctx_t* c);
void uvctx__unlink(uvctx__link_t* link);
/* A reference unless the count already reached zero (a free has begun). */
int uvctx__try_ref(uvctx_t* c);
/* A new context's fields, at `shift` bytes into the block allocated for
 * it: live, counted once, on no list. */
static inline uvctx_t* uvctx__init_ctx(void* block, size_t shift, int kind,
                                       uvctx_t* parent, uvctx_loop_t* home,
                                       void* site, uint8_t lay) {
  uvctx_t* c = (uvctx_t*)((char*)block + shift);
  atomic_init(&c->refs, 1);
  atomic_init(&c->err, UVCTX__LIVE);
  c->kind = (uint8_t)kind;
  atomic_init(&c->where, UVCTX__AT_NONE);
  c->lay = lay;
  c->parent = parent;
  c->home = home;
  c->link.next = NULL;
  c->link.pprev = NULL;
  c->link.owner = c;
  c->u1.children = NULL;
  c->u2.watches = NULL;
  c->site = site;
  return c;
}

/* A new context of `kind` homed with `parent`, of its parent's stripe (so
 * that the list it goes on and its own state are guarded by one lock),
 * except a merge, whose parents may be of any stripe: it takes 0 (and
 * UVCTX__MERGE). Inline: every constructor makes one. */
static inline __attribute__((always_inline)) uvctx_t*
uvctx__alloc_ctx(size_t size, int kind, uvctx_t* parent, void* site) {
  void* block = uvctx__malloc(size);
  if (block == NULL)
    return NULL;
  return uvctx__init_ctx(block, 0, kind, parent, parent->home, site,
                         kind == UVCTX__ANY
                             ? UVCTX__MERGE
                             : (uint8_t)(parent->lay & UVCTX__DOM_BITS));
}
/* [c's home lock] A new child of a done context copies its error and
 * cause and becomes an orphan. */
void uvctx__born_done_locked(uvctx_t* c, const uvctx_t* from);
/* Counts (d = 1) or uncounts (d = -1) child `c`'s reference to a parent
 * that is another loop's background, under that loop's lock. */
void uvctx__foreign(const uvctx_t* c, const uvctx_t* parent, int d);

/* uvctx_ref() of a context known not to be NULL, inline: a constructor's
 * reference to its parent. */
static inline void uvctx__ref_parent(uvctx_t* c) {
  if (c->kind != UVCTX__BACKGROUND)
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

static inline int uvctx__valid(const uvctx_t* c) {
  return c != NULL && c->kind <= UVCTX__DETACHED;
}

/* ---- defined in core/deadline.c ------------------------------------------ */
uint64_t uvctx__deadline_of(const uvctx_t* c);
/* [lock, loop thread] The timer source's expire hook: cancels `d`. */
void uvctx__deadline_expire_locked(uvctx__deadline_t* d, uint64_t now,
                                   uint64_t late);
/* [loop thread] Its expired hook: finishes what the expiries left for
 * after the lock. */
void uvctx__deadline_expired(uvctx_loop_t* l);

/* ---- defined in core/watch.c --------------------------------------------- */
/* [lock] Makes every watch of done context `c` due. */
void uvctx__watches_fire_locked(uvctx_t* c, int err, uvctx__cancel_op_t* op);
/* The mailbox's deliver hook: runs the callback of a watch taken off the
 * queue and drops the watch's reference. Loop thread, without the lock. */
void uvctx__watch_deliver(uvctx_watch_t* w, int err);

/* ---- trace hooks (core/trace_hooks.c) ----------------------------------- */

/* The core calls the hooks only while uvctx__tracing is non-zero (some loop
 * has a trace ring attached), so that they cost one relaxed load when
 * tracing is off. Those marked [lock] are called under a loop lock; every
 * hook takes the trace lock (core/lock.c) to push, and none calls back
 * into the library. Rings are attached and drained by the trace writer
 * (obs/trace.c), under the trace lock. */
extern atomic_int uvctx__tracing;
#define UVCTX__TRACING() \
  UVCTX__UNLIKELY(atomic_load_explicit(&uvctx__tracing, memory_order_relaxed))
void uvctx__trace_create(const uvctx_t* c); /* after creation */
void uvctx__trace_free(const uvctx_t* c);   /* [lock] */
void uvctx__trace_cancel(const uvctx_t* root, int err, intptr_t cause,
                         const uvctx__cancel_op_t* op);             /* [lock] */
void uvctx__trace_deadline(const uvctx_t* c, uint64_t lateness_ns); /*[lock]*/
void uvctx__trace_callback(const uvctx_watch_t* w, int err); /* loop thread */
int uvctx__trace_attached_locked(const uvctx_loop_t* l);     /* [lock] */

enum {
  UVCTX__EV_CREATE = 1,
  UVCTX__EV_FREE,
  UVCTX__EV_CANCEL,
  UVCTX__EV_DEADLINE,
  UVCTX__EV_CALLBACK
};

/* Thread numbers in traces; later threads share the last one. */
#define UVCTX__TRACE_TIDS 256

/* One event as recorded by a hook: fixed size, no pointers the writer must
 * follow (contexts may be gone when it runs), except creation sites, which
 * are code addresses. */
typedef struct uvctx__trace_ev_s {
  uint64_t ts;      /* uv_hrtime() */
  uintptr_t ctx;    /* the context; 0 if unknown */
  uintptr_t parent; /* create: parent; callback: the watch */
  uint64_t a;       /* create: deadline; cancel/callback: op; deadline: due */
  uint64_t b;       /* callback: queued at; deadline: lateness */
  void* site;       /* create */
  int32_t code;     /* cancel: cause; callback: err */
  uint16_t tid;
  uint8_t type;
  uint8_t kind; /* create/free: context kind; cancel: stored err */
  uint32_t depth;
} uvctx__trace_ev_t;

/* A loop's event ring: the hooks push (under the lock), the writer on the
 * loop thread pops. */
typedef struct uvctx__trace_ring_s {
  uvctx_loop_t* loop;
  /* [lock] the list of rings (common/list.h) */
  struct uvctx__trace_ring_s* next;
  struct uvctx__trace_ring_s** pprev;
  uvctx__trace_ev_t* ring;
  uint64_t mask;
  atomic_uint_fast64_t head; /* next record to write (loop thread) */
  atomic_uint_fast64_t tail; /* next free slot ([lock]) */
  uint64_t emitted;          /* [lock] */
  uint64_t dropped;          /* [lock] */
  atomic_uint_fast64_t written;
} uvctx__trace_ring_t;

/* The calling thread's number in traces (1 .. UVCTX__TRACE_TIDS-1). */
uint16_t uvctx__trace_thread(void);
/* [lock] Attach a ring (one per loop), find a loop's, detach it. */
void uvctx__trace_ring_attach_locked(uvctx__trace_ring_t* r);
uvctx__trace_ring_t* uvctx__trace_ring_find_locked(const uvctx_loop_t* l);
uvctx__trace_ring_t* uvctx__trace_ring_detach_locked(const uvctx_loop_t* l);

#endif /* UVCTX_INTERNAL_H */
