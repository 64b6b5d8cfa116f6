/* ctx.c owns the context tree: cancellable contexts (with_cancel,
 * with_cancel_on, any), cancellation and its propagation, linking children
 * in and out, striped children lists, reference counting and freeing, and
 * the lock-free readers (err, cause, home). The locks it takes, what each
 * guards and the order are core/lock.c's; deadlines live in deadline.c,
 * values in value.c, watches in watch.c.
 *
 * A cancel walks the part of the subtree that its root's stripe lock
 * guards under that lock alone. A child guarded by another lock (homed on
 * another loop, or on another stripe), and any merge, is taken off its
 * parent's list with a reference and cancelled afterwards under its own
 * lock (deferred); a striped parent's other stripes are walked after its
 * done state is published, one stripe's lock at a time. So no thread ever
 * holds two stripe locks and a walk never stops a loop it does not reach. */
#include <stddef.h>
#include <string.h>

#include "core/internal.h"

/* ---- small helpers ------------------------------------------------------- */

void uvctx__unlink(uvctx__link_t* l) {
  UVCTX__LIST_REMOVE(l, next, pprev);
}

static int where(const uvctx_t* c) {
  return atomic_load_explicit(&((uvctx_t*)c)->where, memory_order_relaxed);
}

static void set_where(uvctx_t* c, int w) {
  atomic_store_explicit(&c->where, (unsigned char)w, memory_order_relaxed);
}

static int is_live(const uvctx_t* c) {
  return atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_relaxed) ==
         UVCTX__LIVE;
}

static int striped(const uvctx_t* c) {
  return (atomic_load_explicit(&((uvctx_t*)c)->refs, memory_order_relaxed) &
          UVCTX__REF_STRIPED) != 0;
}

static uvctx__stripes_t* stripes(const uvctx_t* c) {
  return (uvctx__stripes_t*)c->u1.children;
}

/* A reference taken by a cancel under the lock of the list it found `c`
 * on: fails (0) if the count already reached zero, that is if a free has
 * begun and waits for that lock to unlink `c`. */
int uvctx__try_ref(uvctx_t* c) {
  unsigned n = atomic_load_explicit(&c->refs, memory_order_relaxed);
  while ((n & ~UVCTX__REF_STRIPED) != 0)
    if (atomic_compare_exchange_weak_explicit(
            &c->refs, &n, n + 1, memory_order_relaxed, memory_order_relaxed))
      return 1;
  return 0;
}

/* [c's lock] Drops a reference a cancel took, unless it is the last one
 * (1 if dropped). Dropped under the lock that the watches it queued are
 * delivered under, it is gone before their callbacks can drop the
 * caller's: a loop closed right after such a callback finds nothing of
 * the cancel still holding its contexts. The last reference is left to
 * uvctx_unref() after the lock, since freeing takes locks (and so does
 * the last counted reference of a striped parent: see put()). */
static int unref_locked(uvctx_t* c) {
  unsigned n = atomic_load_explicit(&c->refs, memory_order_relaxed);
  while ((n & UVCTX__REF_LOW) > 1)
    if (atomic_compare_exchange_weak_explicit(
            &c->refs, &n, n - 1, memory_order_acq_rel, memory_order_relaxed))
      return 1;
  return 0;
}

/* The stripe of the calling thread (1 .. UVCTX__DOMAINS-1), given out in
 * turn on its first striped child: threads beyond that share. */
static int my_stripe(void) {
  static _Thread_local int mine;
  static atomic_uint next;
  if (mine == 0)
    mine = 1 + (int)(atomic_fetch_add_explicit(&next, 1, memory_order_relaxed) %
                     (UVCTX__DOMAINS - 1));
  return mine;
}

/* The lock that guards the children list `parent`'s children are listed
 * on (its nearest cancellable ancestor's stripe lock), or NULL when they
 * are listed on none. */
static uvctx__lock_t* parent_lock(const uvctx_t* parent) {
  const uvctx_t* t;
  if (parent == NULL)
    return NULL;
  t = uvctx__state_of(parent);
  return uvctx__cancellable_kind(t->kind) ? uvctx__lock_of(t) : NULL;
}

/* The lock of the list c's own link goes on while c and its parent are
 * live: a striped child is on its own stripe's list of its parent. */
static uvctx__lock_t* link_lock(const uvctx_t* c) {
  if (c->lay & UVCTX__SREF)
    return uvctx__lock_of(c);
  return parent_lock(c->parent);
}

uvctx__msg_t* uvctx__msg_new(const char* text) {
  size_t n = strlen(text) + 1;
  uvctx__msg_t* m = uvctx__malloc(sizeof(*m) + n);
  if (m == NULL)
    return NULL;
  atomic_init(&m->refs, 1);
  memcpy(m->text, text, n);
  return m;
}

void uvctx__msg_unref(uvctx__msg_t* m) {
  if (m != NULL &&
      atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
    uvctx__free(m);
}

static void msg_ref(uvctx__msg_t* m) {
  if (m != NULL)
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}

/* A child's stripe, unless it is a striped child: its parent's when both
 * share a home (so that the list it goes on and its own state are guarded
 * by one lock), else 0. Merges, with parents of any stripe, take 0. */
static int inherit_dom(int kind, const uvctx_t* parent,
                       const uvctx_loop_t* home) {
  if (parent == NULL || kind == UVCTX__ANY || parent->home != home)
    return 0;
  return UVCTX__DOM(parent);
}

/* A context that threads other than its creator's will write, as the
 * parent of their own contexts: a loop's root (a child of a background)
 * or a branch made for another loop. Such contexts are made one after the
 * other by one thread (a server's setup), so malloc() puts them side by
 * side, and the count and children list that each child's creation and
 * free write would share a cache line with the next one's, written by
 * another loop. Each gets whole cache lines of its own instead: the block
 * is over-allocated, the context aligned in it and `lay` records where
 * the block began (blocks are 8-aligned, so the shift is a multiple of 8). */
#define LINE 64
static void* alloc_aligned(size_t size, void** block) {
  size_t span = (size + LINE - 1) / LINE * LINE;
  char* b = uvctx__malloc(span + LINE - 1);
  *block = b;
  if (b == NULL)
    return NULL;
  return b + (LINE - (uintptr_t)b % LINE) % LINE;
}

static uvctx_t* alloc_apart(size_t size, int kind, uvctx_t* parent,
                            uvctx_loop_t* home, void* site, int dom, int sref) {
  void* block;
  char* at = alloc_aligned(size, &block);
  size_t shift;
  if (at == NULL)
    return NULL;
  shift = (size_t)(at - (char*)block);
  return uvctx__init_ctx(block, shift, kind, parent, home, site,
                         UVCTX__LAY(shift, dom, sref));
}

void uvctx__orphan_locked(uvctx_t* c) {
  uvctx__orphan_in_locked(c, uvctx__dom_of(c));
}

static inline __attribute__((always_inline)) uvctx__attach_t
register_locked(uvctx__link_t* l, uvctx_t* parent) {
  uvctx_t* t = uvctx__state_of(parent);
  if (!uvctx__cancellable_kind(t->kind))
    return UVCTX__PARENT_NEVER_DONE;
  if (!is_live(t))
    return UVCTX__PARENT_DONE;
  UVCTX__LIST_INSERT_HEAD(uvctx__own_list(t), l, next, pprev);
  if (l == &l->owner->link)
    set_where(l->owner, UVCTX__AT_PARENT);
  return UVCTX__LINKED;
}

uvctx__attach_t uvctx__register_child_locked(uvctx__link_t* l,
                                             uvctx_t* parent) {
  return register_locked(l, parent);
}

void uvctx__born_done_locked(uvctx_t* c, const uvctx_t* from) {
  const uvctx_t* t = uvctx__state_of(from);
  int err = atomic_load_explicit(&((uvctx_t*)t)->err, memory_order_acquire);
  c->u1.cause = uvctx__cause_of(t);
  c->u2.msg = t->u2.msg;
  msg_ref(c->u2.msg);
  atomic_store_explicit(&c->err, (unsigned char)err, memory_order_release);
  uvctx__orphan_locked(c);
}

void uvctx__foreign(const uvctx_t* c, const uvctx_t* parent, int d) {
  if (parent->kind == UVCTX__BACKGROUND && parent->home != c->home) {
    uvctx_loop_t* p = parent->home;
    uvctx__lock_acquire(&p->lock);
    p->n_foreign += (uint64_t)(int64_t)d;
    uvctx__lock_release(&p->lock);
  }
}

/* [c's lock] What a new context does once its parent has said where it
 * goes. */
static inline __attribute__((always_inline)) void
place_locked(uvctx_t* c, uvctx__attach_t a, uvctx_t* parent) {
  switch (a) {
    case UVCTX__LINKED:
      break;
    case UVCTX__PARENT_DONE:
      uvctx__born_done_locked(c, parent);
      break;
    case UVCTX__PARENT_NEVER_DONE:
      uvctx__orphan_locked(c);
      break;
  }
  uvctx__count_new_locked(uvctx__dom_of(c), c->kind);
}

/* Links `c` in; returns 1 if the lock of the list it went on was found
 * held by another thread. */
static inline __attribute__((always_inline)) int attach(uvctx_t* c,
                                                        uvctx_t* parent) {
  uvctx__lock_t* h = uvctx__lock_of(c);
  uvctx__lock_t* p = parent_lock(parent);
  uvctx__attach_t a = UVCTX__PARENT_NEVER_DONE;
  int seen = 0;
  if (p != NULL) {
    seen = uvctx__lock_acquire_seen(p);
    a = register_locked(&c->link, parent);
    if (p == h) {
      place_locked(c, a, parent);
      uvctx__lock_release(p);
      return seen;
    }
    uvctx__lock_release(p);
  } else {
    uvctx__foreign(c, parent, 1);
  }
  uvctx__lock_acquire(h);
  place_locked(c, a, parent);
  uvctx__lock_release(h);
  return seen;
}

void uvctx__attach(uvctx_t* c, uvctx_t* parent) {
  (void)attach(c, parent);
}

/* ---- striped parents ----------------------------------------------------- */

/* Gives live with_cancel context `t` its stripes' lists: its own children
 * list moves to its own stripe's, and children made from now on by a
 * thread of another stripe go on that stripe's list, guarded by that
 * stripe's lock, with their own state. The memory is allocated with no
 * lock held; the lists are put in place under t's lock, and the flag that
 * says they are there is published after them (release), for the
 * creators that look without that lock. */
static int stripe(uvctx_t* t) {
  void* block;
  uvctx__stripes_t* b = alloc_aligned(sizeof(*b), &block);
  uvctx__lock_t* k = uvctx__lock_of(t);
  int d = UVCTX__DOM(t);
  if (b == NULL)
    return UV_ENOMEM;
  memset(b, 0, sizeof(*b));
  b->owner = t;
  b->block = block;
  uvctx__lock_acquire(k);
  if (is_live(t) && !striped(t)) {
    b->s[d].head = t->u1.children;
    if (b->s[d].head != NULL)
      b->s[d].head->pprev = &b->s[d].head;
    t->u1.children = (uvctx__link_t*)b;
    atomic_fetch_or_explicit(&t->refs, UVCTX__REF_STRIPED,
                             memory_order_release);
    block = NULL;
  }
  uvctx__lock_release(k);
  uvctx__free(block);
  return 0;
}

int uvctx__stripe_now(uvctx_t* c) {
  if (!uvctx__valid(c) || c->kind != UVCTX__CANCEL ||
      atomic_load_explicit(&c->err, memory_order_acquire) != UVCTX__LIVE)
    return UV_EINVAL;
  return stripe(c);
}

/* [dm's lock, the lock of `head`] New with_cancel child `c` of `t` is
 * listed on `head` if `t` is live, else born done; and counted in its
 * stripe `dm`. */
static inline __attribute__((always_inline)) void
place_cancel_child_locked(uvctx_t* c, uvctx_t* t, uvctx__link_t** head,
                          uvctx__dom_t* dm) {
  if (atomic_load_explicit(&t->err, memory_order_acquire) == UVCTX__LIVE) {
    UVCTX__LIST_INSERT_HEAD(head, &c->link, next, pprev);
    set_where(c, UVCTX__AT_PARENT);
  } else {
    uvctx__born_done_locked(c, t);
  }
  uvctx__count_new_locked(dm, UVCTX__CANCEL);
}

static inline __attribute__((always_inline)) int created(uvctx_t* c,
                                                         uvctx_t** out) {
  if (UVCTX__TRACING())
    uvctx__trace_create(c);
  *out = c;
  return 0;
}

/* A with_cancel child of striped parent `t` made by this thread: listed
 * on (or born done under) this thread's stripe of t, in that stripe of
 * t's home, all under that stripe's one lock. It holds t through its
 * stripe: the first child a stripe counts takes one UVCTX__REF_UNIT on t
 * for the stripe (the only write to t's line), which stays until t's
 * last counted reference is gone and no child of the stripe remains (see
 * put()), so that churn under a shared parent writes no shared line. */
static int with_cancel_striped(uvctx_t* t, uvctx__stripes_t* b, uvctx_t** out,
                               void* site) {
  int d = my_stripe();
  uvctx_loop_t* h = t->home;
  uvctx__dom_t* dm = &h->dom[d];
  uvctx_t* c = uvctx__alloc_ctx(sizeof(*c), UVCTX__CANCEL, t, site);
  if (c == NULL)
    return UV_ENOMEM;
  c->lay = UVCTX__LAY(0, d, 1);
  uvctx__lock_acquire(&dm->lock);
  place_cancel_child_locked(c, t, &b->s[d].head, dm);
  if (b->s[d].nref++ == 0 && !b->s[d].holding) {
    b->s[d].holding = 1;
    atomic_fetch_add_explicit(&t->refs, UVCTX__REF_UNIT, memory_order_relaxed);
  }
  uvctx__lock_release(&dm->lock);
  return created(c, out);
}

/* A with_cancel child of with_cancel context `t` of its own home, not
 * striped when last looked at: what attach() does for it, with what it
 * works out known already (the child is of t's stripe, its list is t's
 * own, under that stripe's lock). */
static inline __attribute__((always_inline)) int
with_cancel_plain(uvctx_t* t, uvctx_t** out, void* site) {
  int d = UVCTX__DOM(t);
  uvctx__dom_t* dm = &t->home->dom[d];
  void* block = uvctx__malloc(sizeof(uvctx_t));
  uvctx_t* c;
  int seen;
  if (block == NULL)
    return UV_ENOMEM;
  c = uvctx__init_ctx(block, 0, UVCTX__CANCEL, t, t->home, site,
                      UVCTX__LAY(0, d, 0));
  atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
  seen = uvctx__lock_acquire_seen(&dm->lock);
  /* Striped meanwhile or not, t's own list is the one its lock guards. */
  place_cancel_child_locked(c, t, uvctx__own_list(t), dm);
  uvctx__lock_release(&dm->lock);
  /* Another thread met on the parent's lock: from now on each thread's
   * children of this parent go on a stripe of their own. */
  if (seen && UVCTX__STRIPES_ON)
    (void)stripe(t);
  return created(c, out);
}

/* ---- cancellation -------------------------------------------------------- */

void uvctx__cancel_op_id(uvctx__cancel_op_t* op) {
  static atomic_uint_fast64_t last_op;
  if (op->id == 0)
    op->id = atomic_fetch_add_explicit(&last_op, 1, memory_order_relaxed) + 1;
}

/* One cancel: its error and cause, the operation its watches name, the
 * links of contexts it took to cancel under another lock (each with a
 * reference, threaded through the links' `next`), and the striped parents
 * it made done whose other stripes are still to walk (each with a
 * reference, threaded through their lists' `pending`). */
typedef struct walk_s {
  int err;
  intptr_t cause;
  uvctx__msg_t* msg;
  uvctx__cancel_op_t op;
  uvctx__link_t** deferred;
  uvctx__link_t* own_deferred;
  uvctx__stripes_t** pending;
  uvctx__stripes_t* own_pending;
  int must_wait; /* met a taken context that another cancel had done */
} walk_t;

/* [n's lock] Everything a context needs once its children have been
 * taken off it: its watches made due and its deadline entry gone (under
 * the loop lock too, for a context of another stripe), its cause (in
 * its lists if `is_striped`) and error published. */
static inline __attribute__((always_inline)) void
finish_as_locked(uvctx_t* n, int err, intptr_t cause, uvctx__msg_t* msg,
                 uvctx__cancel_op_t* op, int is_striped) {
  /* heap_index is the loop lock's: the heap moves other entries. */
  int dl = n->kind == UVCTX__DEADLINE;
  if (n->u2.watches != NULL || dl) {
    uvctx__main_enter(n);
    if (n->u2.watches != NULL)
      uvctx__watches_fire_locked(n, uvctx__err_code(err), op);
    if (dl && ((uvctx__deadline_t*)n)->heap_index != UVCTX__NO_HEAP)
      uvctx__heap_remove_locked(n->home, (uvctx__deadline_t*)n);
    uvctx__main_leave(n);
  }
  if (is_striped)
    stripes(n)->cause = cause;
  else
    n->u1.cause = cause;
  n->u2.msg = msg;
  msg_ref(msg);
  atomic_store_explicit(&n->err, (unsigned char)err, memory_order_release);
}

static inline void finish_locked(uvctx_t* n, int err, intptr_t cause,
                                 uvctx__msg_t* msg, uvctx__cancel_op_t* op) {
  finish_as_locked(n, err, cause, msg, op, striped(n));
}

/* [the lock of the list `l` was on] A child found by a walk that must be
 * cancelled under another lock: taken with a reference, or, if its count
 * already reached zero, left to the free that is waiting for this lock
 * (it has no children and no watches: both would hold references). */
__attribute__((noinline)) static void defer(walk_t* w, uvctx__link_t* l,
                                            uvctx_t* k) {
  int base = l == &k->link;
  if (!uvctx__try_ref(k)) {
    if (base)
      set_where(k, UVCTX__AT_NONE);
    return;
  }
  if (base)
    set_where(k, UVCTX__AT_TAKEN);
  l->next = *w->deferred;
  *w->deferred = l;
  uvctx__barrier_add(1);
}

/* [n's lock; n just made done] A striped parent's other stripes are
 * walked once that lock is let go. A parent whose count already reached
 * zero has no children left on any stripe (each would hold it). */
__attribute__((noinline)) static void pend(walk_t* w, uvctx_t* n) {
  uvctx__stripes_t* b = stripes(n);
  if (!uvctx__try_ref(n))
    return;
  b->pending = *w->pending;
  *w->pending = b;
}

static void count_cancels(uvctx_t* c, uint64_t n) {
  uvctx__dom_add(&c->home->dom[UVCTX__DOM(c)].cancels, (int64_t)n);
}

/* The context whose own link is `l`: what the walk's stack holds. */
static inline uvctx_t* owner_of_link(uvctx__link_t* l) {
  return (uvctx_t*)(void*)((char*)l - offsetof(uvctx_t, link));
}

/* [the walk's lock] Takes every child off list `head` (of a context being
 * cancelled), which the caller then drops whole: a leaf is finished and
 * made an orphan at once, a context with children of its own pushed on
 * the stack, and one of another lock deferred. Returns the new top of the
 * stack, threaded through the `next` of the pushed contexts' own links. */
static inline __attribute__((always_inline)) uvctx__link_t*
take_children_locked(walk_t* w, uvctx__link_t* head, uvctx_loop_t* h,
                     uvctx__dom_t* dm, uvctx__link_t* stack, uint64_t* cancels,
                     int err, intptr_t cause, uvctx__msg_t* msg) {
  uvctx__link_t* l;
  uvctx__link_t* next;
  for (l = head; l != NULL; l = next) {
    uvctx_t* k = l->owner;
    next = l->next;
    /* The list being walked is dropped whole, and the `next` of the links
     * already walked now threads the stack: each link is detached by hand
     * (its pprev cleared when deferred or pushed, rewritten when it goes
     * on the orphan list), never through pprev (that would write into a
     * link already reused). */
    /* Of another home, or a merge. A child homed with its list's owner is
     * of the owner's stripe unless it is a merge: it inherited it
     * (uvctx__alloc_ctx(), through any value contexts between), or it is
     * a striped child on its own stripe's list, whose owner's walk is of
     * that stripe. So the stripe needs no test. */
    if (k->home != h || (k->lay & UVCTX__MERGE)) {
      l->pprev = NULL;
      defer(w, l, k);
      continue;
    }
    /* Guarded by this lock: this walk holds the only lock that could see
     * it taken, until it makes it an orphan. (A striped parent's u1 is
     * never NULL: it goes on the stack.) */
    if (UVCTX__LIKELY(k->u1.children == NULL)) {
      finish_as_locked(k, err, cause, msg, &w->op, 0);
      uvctx__orphan_in_locked(k, dm);
      (*cancels)++;
      continue;
    }
    /* Not a merge, so `l` is k's own link. */
    l->pprev = NULL;
    l->next = stack;
    stack = l;
  }
  return stack;
}

/* What the walk of a striped parent's own stripe leaves: the stack's new
 * top and the leaves it finished, in two registers. */
typedef struct {
  uvctx__link_t* stack;
  uint64_t leaves;
} walk_step_t;

/* [the walk's lock] The same for striped parent `n`, its own stripe's
 * list, then `n` itself finished and pended. Out of line and by value, so
 * that the rare case takes no register from the walk's loop and the
 * loop's stack and count never have their address taken. */
__attribute__((noinline, cold)) static walk_step_t
take_striped_locked(walk_t* w, uvctx_t* n, uvctx__dom_t* dm,
                    uvctx__link_t* stack) {
  uvctx__link_t** head = &stripes(n)->s[UVCTX__DOM(n)].head;
  walk_step_t r;
  r.leaves = 0;
  r.stack = take_children_locked(w, *head, n->home, dm, stack, &r.leaves,
                                 w->err, w->cause, w->msg);
  *head = NULL;
  finish_as_locked(n, w->err, w->cause, w->msg, &w->op, 1);
  pend(w, n);
  return r;
}

/* [the walk's lock] One context of the walk: its children taken, itself
 * finished (not yet an orphan). A plain context's children list needs no
 * clearing: finishing it writes the cause over it. */
static inline __attribute__((always_inline)) uvctx__link_t*
walk_one_locked(walk_t* w, uvctx_t* n, uvctx_loop_t* h, uvctx__dom_t* dm,
                uvctx__link_t* stack, uint64_t* cancels, int err,
                intptr_t cause, uvctx__msg_t* msg) {
  (*cancels)++;
  /* n's lists are this lock's, and so is its flag. */
  if (UVCTX__UNLIKELY(striped(n))) {
    walk_step_t r = take_striped_locked(w, n, dm, stack);
    *cancels += r.leaves;
    return r.stack;
  }
  stack = take_children_locked(w, n->u1.children, h, dm, stack, cancels, err,
                               cause, msg);
  finish_as_locked(n, err, cause, msg, &w->op, 0);
  return stack;
}

/* [c's lock; c live] Marks `c` and the part of its subtree that lock
 * guards done, with an explicit stack threaded through the links of the
 * contexts being cancelled: a context taken off its parent's list has a
 * free `link.next` until it is put on the orphan list, so the walk needs
 * no memory and no recursion, whatever the depth. Leaves (the common case
 * of a wide fan-out) are finished as they are met, so that each is touched
 * once. `c`'s own link is its caller's business, so `c` is walked before
 * the loop, which then never compares with it. */
static void walk_locked(walk_t* w, uvctx_t* c) {
  /* Guarded by this walk's lock: the same home and stripe. */
  uvctx_loop_t* const h = c->home;
  uvctx__dom_t* const dm = &h->dom[UVCTX__DOM(c)];
  uvctx__link_t* stack;
  uint64_t cancels = 0;
  /* In registers for the whole walk, not re-read through `w`. */
  const int err = w->err;
  const intptr_t cause = w->cause;
  uvctx__msg_t* const msg = w->msg;

  stack = walk_one_locked(w, c, h, dm, NULL, &cancels, err, cause, msg);
  while (stack != NULL) {
    uvctx_t* n = owner_of_link(stack);
    /* Popped: its link's `next` is rewritten when it becomes an orphan. */
    stack = stack->next;
    stack = walk_one_locked(w, n, h, dm, stack, &cancels, err, cause, msg);
    uvctx__orphan_in_locked(n, dm);
  }
  count_cancels(c, cancels);
}

/* [no lock] The second half of a striped parent's cancel: its done state
 * is published, so a child made on a stripe whose lock is taken after
 * this walk went past it is born done, and one made before is on the
 * list. Each other stripe is walked under its own lock, one at a time;
 * every child there is a with_cancel child of that stripe, guarded by
 * that lock with its subtree. */
static void run_pending(walk_t* w) {
  while (*w->pending != NULL) {
    uvctx__stripes_t* b = *w->pending;
    uvctx_t* n = b->owner;
    uvctx_loop_t* h = n->home;
    int d;
    *w->pending = b->pending;
    b->pending = NULL;
    w->err = atomic_load_explicit(&n->err, memory_order_acquire);
    w->cause = b->cause;
    w->msg = n->u2.msg;
    for (d = 1; d < UVCTX__DOMAINS; d++) {
      uvctx__lock_t* lk = &h->dom[d].lock;
      uvctx__link_t* l;
      uvctx__link_t* next;
      if (d == UVCTX__DOM(n))
        continue;
      uvctx__lock_acquire(lk);
      l = b->s[d].head;
      b->s[d].head = NULL;
      for (; l != NULL; l = next) {
        uvctx_t* k = l->owner;
        next = l->next;
        l->pprev = NULL;
        l->next = NULL;
        walk_locked(w, k);
        uvctx__orphan_locked(k);
      }
      uvctx__lock_release(lk);
    }
    uvctx_unref(n);
  }
}

/* [the lock of c's parent's list] Takes `c`'s own link off that list if it
 * is still there: 1 if this call took it (the caller will make `c` an
 * orphan), 0 if it was elsewhere. */
static inline __attribute__((always_inline)) int
take_from_parent_locked(uvctx_t* c) {
  if (where(c) != UVCTX__AT_PARENT)
    return 0;
  uvctx__unlink(&c->link);
  set_where(c, UVCTX__AT_TAKEN);
  return 1;
}

/* Takes every link of merge `m` but `via` (which the caller holds) off its
 * parent's list, one lock at a time, and makes `m` an orphan if its own
 * link is now the caller's or was never listed; then drops the caller's
 * reference to `m` as unref_locked() does. Returns 1 if the caller must
 * still uvctx_unref(m). */
static int take_links(uvctx_t* m, const uvctx__link_t* via) {
  uvctx__any_t* a = (uvctx__any_t*)m;
  uvctx__lock_t* p;
  int own = via == &m->link;
  size_t i;

  if (!own && (p = parent_lock(m->parent)) != NULL) {
    uvctx__lock_acquire(p);
    own = take_from_parent_locked(m);
    uvctx__lock_release(p);
  }
  for (i = 0; i + 1 < a->n; i++) {
    uvctx__link_t* l = &a->extra[i].link;
    if (l == via || (p = parent_lock(a->extra[i].parent)) == NULL)
      continue;
    uvctx__lock_acquire(p);
    uvctx__unlink(l);
    uvctx__lock_release(p);
  }
  p = uvctx__lock_of(m);
  uvctx__lock_acquire(p);
  if (own || where(m) == UVCTX__AT_NONE)
    uvctx__orphan_locked(m);
  own = unref_locked(m);
  uvctx__lock_release(p);
  return !own;
}

/* The state a deferred link hung from: done by the walk that took it. */
static const uvctx_t* list_owner(const uvctx__link_t* l) {
  const uvctx_t* k = l->owner;
  if (l != &k->link) {
    const uvctx__any_t* a = (const uvctx__any_t*)k;
    size_t i = (size_t)((const char*)l - (const char*)&a->extra[0].link) /
               sizeof(a->extra[0]);
    return uvctx__state_of(a->extra[i].parent);
  }
  return uvctx__state_of(k->parent);
}

/* [no lock] Cancels the contexts a walk took, each under its own lock,
 * with the error and cause of the context it hung from (the walk's own,
 * or, for the expiries of a timer pass, each deadline's). */
static void run_deferred(walk_t* w) {
  while (*w->deferred != NULL) {
    uvctx__link_t* l = *w->deferred;
    uvctx_t* k = l->owner;
    const uvctx_t* from = list_owner(l);
    uvctx__lock_t* lk = uvctx__lock_of(k);
    *w->deferred = l->next;
    l->next = NULL;
    w->err = atomic_load_explicit(&((uvctx_t*)from)->err, memory_order_acquire);
    w->cause = uvctx__cause_of(from);
    w->msg = from->u2.msg;
    int merge = k->kind == UVCTX__ANY;
    int owed = 1;
    uvctx__lock_acquire(lk);
    if (is_live(k))
      walk_locked(w, k);
    else
      w->must_wait = 1;
    if (!merge) {
      uvctx__orphan_locked(k); /* its link was taken by this walk */
      owed = !unref_locked(k);
    }
    uvctx__lock_release(lk);
    /* Once the reference is dropped, `k` may be gone: touch it no more. */
    if (merge)
      owed = take_links(k, l);
    uvctx__barrier_add(-1);
    if (owed)
      uvctx_unref(k);
  }
}

/* [no lock] What a walk left for after its lock: taken contexts and
 * striped parents' other stripes, each of which may leave more. */
__attribute__((noinline)) static void run_after_slow(walk_t* w) {
  while (*w->deferred != NULL || *w->pending != NULL) {
    run_deferred(w);
    run_pending(w);
  }
  if (w->must_wait)
    uvctx__barrier_wait();
}

/* For a walk of its own lists (not a timer pass's, which are the loop's). */
static inline void run_after(walk_t* w) {
  if (UVCTX__UNLIKELY(w->own_deferred != NULL || w->own_pending != NULL ||
                      w->must_wait))
    run_after_slow(w);
}

/* [c's lock] The cancel event of a cancel's root, once per cancel. */
static void trace_root(walk_t* w, const uvctx_t* c) {
  if (UVCTX__TRACING()) {
    uvctx__cancel_op_id(&w->op);
    uvctx__trace_cancel(c, w->err, w->cause, &w->op);
  }
}

/* What every cancel needs: its error, cause and operation. */
static inline __attribute__((always_inline)) void
walk_init(walk_t* w, int err, intptr_t cause, uvctx__msg_t* msg, uint64_t now) {
  w->err = err;
  w->cause = cause;
  w->msg = msg;
  w->op.id = 0;
  w->op.time = now;
}

/* What only a walk needs: lists of its own for what it leaves for after
 * its lock (a timer pass's walks use the loop's instead). */
static inline __attribute__((always_inline)) void walk_own_lists(walk_t* w) {
  w->own_deferred = NULL;
  w->deferred = &w->own_deferred;
  w->own_pending = NULL;
  w->pending = &w->own_pending;
  w->must_wait = 0;
}

/* [c's lock] The root of a cancel: walked if still live (first cancel
 * wins), made an orphan if the caller took its link. `dm` is c's stripe
 * (worked out before the lock, not read again after it). A walk is given
 * lists of its own first if `own_lists` (else the caller has set them).
 * 1 if it walked: only then can it have left anything for after. */
static inline __attribute__((always_inline)) int
cancel_root_locked(walk_t* w, uvctx_t* c, int own, uvctx__dom_t* dm,
                   int own_lists) {
  int walked = 0;
  if (is_live(c)) {
    trace_root(w, c);
    if (c->u1.children == NULL) {
      /* A leaf, the common case: nothing to walk, nothing to defer. */
      finish_locked(c, w->err, w->cause, w->msg, &w->op);
      uvctx__dom_add(&dm->cancels, 1);
    } else {
      if (own_lists)
        walk_own_lists(w);
      walk_locked(w, c);
      walked = 1;
    }
  }
  if (own)
    uvctx__orphan_in_locked(c, dm);
  return walked;
}

/* uvctx__cancel(), inlined into uvctx_cancel(). */
static inline __attribute__((always_inline)) void
cancel(uvctx_t* c, int err, intptr_t cause, uvctx__msg_t* msg, uint64_t now) {
  uvctx__dom_t* dm = &c->home->dom[UVCTX__DOM(c)];
  uvctx__lock_t* h = &dm->lock;
  int merge = c->kind == UVCTX__ANY;
  uvctx__lock_t* p = merge ? NULL : link_lock(c);
  /* What is left to do with `c` once its lock is released: its watches
   * are queued by then, and their callbacks may drop the last reference
   * the caller relied on, so that work holds one of its own. */
  int more = merge || (p != NULL && p != h);
  walk_t w;
  int own = 0;
  int walked;

  /* The id and the time are taken lazily, by the tracer or the first watch
   * made due: a cancel nobody watches pays for neither. */
  walk_init(&w, err, cause, msg, now);
  uvctx__lock_acquire(h);
  own = p == h && take_from_parent_locked(c);
  walked = cancel_root_locked(&w, c, own, dm, 1);
  if (more)
    uvctx_ref(c);
  uvctx__lock_release(h);
  /* From here on, `c` is touched only if `more`. */

  if (merge) {
    more = take_links(c, NULL);
  } else if (more) {
    /* Listed under another lock than its own: taken off the parent's list
     * after it is done, so that a cancel of the parent meanwhile still
     * meets it (and waits at the barrier if this walk has work left
     * elsewhere). */
    uvctx__lock_acquire(p);
    own = take_from_parent_locked(c);
    uvctx__lock_release(p);
    uvctx__lock_acquire(h);
    if (own)
      uvctx__orphan_in_locked(c, dm);
    more = !unref_locked(c);
    uvctx__lock_release(h);
  }
  if (more)
    uvctx_unref(c);
  if (walked)
    run_after(&w);
}

void uvctx__cancel(uvctx_t* c, int err, intptr_t cause, uvctx__msg_t* msg,
                   uint64_t now) {
  cancel(c, err, cause, msg, now);
}

void uvctx__cancel_locked(uvctx_t* c, int err, intptr_t cause,
                          uvctx__msg_t* msg, uint64_t now) {
  walk_t w;
  walk_init(&w, err, cause, msg, now);
  walk_own_lists(&w);
  w.deferred = &c->home->deferred;
  w.pending = &c->home->pending;
  (void)cancel_root_locked(&w, c, take_from_parent_locked(c),
                           &c->home->dom[UVCTX__DOM(c)], 0);
}

void uvctx__cancel_deferred(uvctx_loop_t* l) {
  walk_t w;
  walk_init(&w, 0, 0, NULL, 0);
  walk_own_lists(&w);
  uvctx__lock_acquire(&l->lock);
  w.own_deferred = l->deferred;
  l->deferred = NULL;
  w.own_pending = l->pending;
  l->pending = NULL;
  uvctx__lock_release(&l->lock);
  run_after(&w);
}

/* The preconditions uvctx_cancel() and uvctx_cancel_cause() share,
 * checked in each so that a misuse report names the function called. */
#define REQUIRE_CANCELLABLE(c)                                           \
  do {                                                                   \
    UVCTX__REQUIRE(uvctx__valid(c), "c is not a context");               \
    UVCTX__REQUIRE(uvctx__cancellable_kind((c)->kind),                   \
                   "the context cannot be cancelled (background, value " \
                   "or without_cancel)");                                \
  } while (0)

int uvctx_cancel(uvctx_t* c) {
  REQUIRE_CANCELLABLE(c);
  if (atomic_load_explicit(&c->err, memory_order_acquire) != UVCTX__LIVE)
    return 0;
  cancel(c, UVCTX__ERR_CANCELED, UV_ECANCELED, NULL, 0);
  return 0;
}

int uvctx_cancel_cause(uvctx_t* c, int cause, const char* msg) {
  uvctx__msg_t* m = NULL;
  int rc = 0;
  REQUIRE_CANCELLABLE(c);
  UVCTX__REQUIRE(cause < 0, "cause is not a negative error code");
  if (atomic_load_explicit(&c->err, memory_order_acquire) != UVCTX__LIVE)
    return 0;
  if (msg != NULL) {
    m = uvctx__msg_new(msg);
    if (m == NULL)
      rc = UV_ENOMEM; /* cancelled all the same, without the message */
  }
  uvctx__cancel(c, UVCTX__ERR_CANCELED, cause, m, 0);
  uvctx__msg_unref(m);
  return rc;
}

/* ---- readers ------------------------------------------------------------- */

int uvctx_err(const uvctx_t* c) {
  UVCTX__REQUIRE(c != NULL, "c is NULL");
  c = uvctx__state_of(c);
  return uvctx__err_code(
      atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_acquire));
}

int uvctx_cause(const uvctx_t* c, const char** msg) {
  int e;
  if (msg != NULL)
    *msg = NULL;
  UVCTX__REQUIRE(c != NULL, "c is NULL");
  c = uvctx__state_of(c);
  e = atomic_load_explicit(&((uvctx_t*)c)->err, memory_order_acquire);
  if (e == UVCTX__LIVE)
    return 0;
  if (msg != NULL && c->u2.msg != NULL)
    *msg = c->u2.msg->text;
  return (int)uvctx__cause_of(c);
}

uvctx_loop_t* uvctx_home(const uvctx_t* c) {
  return c != NULL ? c->home : NULL;
}

/* ---- constructors -------------------------------------------------------- */

static int with_cancel(uvctx_t* parent, uvctx_loop_t* home, uvctx_t** out,
                       void* site) {
  uvctx_t* c;
  uvctx__stripes_t* b;
  int same = home == parent->home;
  if (same && parent->kind == UVCTX__CANCEL) {
    if (UVCTX__UNLIKELY((b = uvctx__stripes_of(parent)) != NULL))
      return with_cancel_striped(parent, b, out, site);
    return with_cancel_plain(parent, out, site);
  }
  if (parent->kind == UVCTX__BACKGROUND || !same)
    c = alloc_apart(sizeof(*c), UVCTX__CANCEL, parent, home, site,
                    inherit_dom(UVCTX__CANCEL, parent, home), 0);
  else
    c = uvctx__alloc_ctx(sizeof(*c), UVCTX__CANCEL, parent, site);
  if (c == NULL)
    return UV_ENOMEM;
  uvctx__ref_parent(parent);
  (void)attach(c, parent);
  return created(c, out);
}

int uvctx_with_cancel(uvctx_t* parent, uvctx_t** out) {
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  return with_cancel(parent, parent->home, out, __builtin_return_address(0));
}

int uvctx_with_cancel_on(uvctx_t* parent, uvctx_loop_t* home, uvctx_t** out) {
  UVCTX__REQUIRE_PARENT_OUT(parent, out);
  UVCTX__REQUIRE(home != NULL, "home is NULL");
  return with_cancel(parent, home, out, __builtin_return_address(0));
}

int uvctx_any(uvctx_t* const* parents, size_t n, uvctx_t** out) {
  uvctx__any_t* a;
  uvctx_loop_t* h;
  const uvctx_t* done_from = NULL;
  const uvctx_t* became = NULL;
  size_t i, j;
  int linked = 0;

  UVCTX__REQUIRE(parents != NULL && n > 0, "no parents");
  UVCTX__REQUIRE(out != NULL, "out is NULL");
  for (i = 0; i < n; i++)
    UVCTX__REQUIRE(uvctx__valid(parents[i]), "a parent is not a context");
  if (n > (SIZE_MAX - sizeof(*a)) / sizeof(a->extra[0]))
    return UV_ENOMEM;

  a = (uvctx__any_t*)uvctx__alloc_ctx(
      sizeof(*a) + (n - 1) * sizeof(a->extra[0]), UVCTX__ANY, parents[0],
      __builtin_return_address(0));
  if (a == NULL)
    return UV_ENOMEM;
  h = a->base.home;
  a->n = n;
  a->deadline = UVCTX__NO_DEADLINE;
  for (i = 0; i < n; i++) {
    uint64_t d = uvctx__deadline_of(parents[i]);
    if (d < a->deadline)
      a->deadline = d;
    uvctx_ref(parents[i]);
    if (i > 0) {
      a->extra[i - 1].parent = parents[i];
      a->extra[i - 1].link.next = NULL;
      a->extra[i - 1].link.pprev = NULL;
      a->extra[i - 1].link.owner = &a->base;
    }
  }

  /* Born done from the first parent, in argument order, already done. */
  for (i = 0; i < n && done_from == NULL; i++) {
    const uvctx_t* t = uvctx__state_of(parents[i]);
    if (uvctx__cancellable_kind(t->kind) &&
        atomic_load_explicit(&((uvctx_t*)t)->err, memory_order_acquire) !=
            UVCTX__LIVE)
      done_from = t;
  }
  if (done_from == NULL) {
    /* Listed under each parent in turn, each under its own loop's lock,
     * once per distinct state: two parents that share one (two values over
     * the same context) would otherwise list it twice. A parent done
     * meanwhile cancels the merge once it is listed everywhere else. */
    for (i = 0; i < n; i++) {
      uvctx__link_t* l = i == 0 ? &a->base.link : &a->extra[i - 1].link;
      const uvctx_t* t = uvctx__state_of(parents[i]);
      uvctx__lock_t* p = parent_lock(parents[i]);
      int dup = 0;
      for (j = 0; j < i; j++)
        if (uvctx__state_of(parents[j]) == t)
          dup = 1;
      if (dup || p == NULL)
        continue;
      uvctx__lock_acquire(p);
      if (uvctx__register_child_locked(l, parents[i]) == UVCTX__LINKED)
        linked = 1;
      else if (became == NULL)
        became = t;
      uvctx__lock_release(p);
    }
  }
  uvctx__lock_acquire(&h->lock);
  if (done_from != NULL)
    uvctx__born_done_locked(&a->base, done_from);
  else if (!linked && became == NULL)
    uvctx__orphan_locked(&a->base);
  uvctx__count_new_locked(uvctx__dom_of(&a->base), a->base.kind);
  uvctx__lock_release(&h->lock);
  for (i = 0; i < n; i++)
    uvctx__foreign(&a->base, parents[i], 1);
  if (became != NULL)
    uvctx__cancel(
        &a->base,
        atomic_load_explicit(&((uvctx_t*)became)->err, memory_order_acquire),
        uvctx__cause_of(became), became->u2.msg, 0);
  if (UVCTX__TRACING())
    uvctx__trace_create(&a->base);
  *out = &a->base;
  return 0;
}

/* ---- references and freeing ---------------------------------------------- */

uvctx_t* uvctx_ref(uvctx_t* c) {
  if (c != NULL)
    uvctx__ref_parent(c);
  return c;
}

/* What a retired striped child owes its parent (uvctx_s.where, free to
 * carry it once the context is on no list): nothing (its stripe keeps
 * holding the parent), or its stripe's UVCTX__REF_UNIT. Any other context
 * owes its one reference. */
enum { OWE_NOTHING = 8, OWE_UNIT = 9 };

/* [no lock] The last counted reference of striped parent `p` is gone,
 * and the caller added a guard unit with it, so that `p` stays until the
 * pass is over whoever else lets go meanwhile. Each stripe that holds `p`
 * with no child left gives back its unit, under its lock. A stripe with
 * children left keeps its unit: the free of its last child, under the same
 * lock, sees the count at zero and gives it back then. 1 if `p` is now
 * free to go. Units never overflow into UVCTX__REF_STRIPED: seven stripes
 * and a guard per thread in this pass at once (the count must have come
 * back from zero in between, by a cancel's or a report's reference). */
__attribute__((noinline)) static int release_stripes(uvctx_t* p) {
  uvctx__stripes_t* b = stripes(p);
  unsigned units = UVCTX__REF_UNIT; /* the guard */
  int d;
  for (d = 1; d < UVCTX__DOMAINS; d++) {
    uvctx__lock_t* lk = &p->home->dom[d].lock;
    uvctx__lock_acquire(lk);
    if (b->s[d].holding && b->s[d].nref == 0) {
      b->s[d].holding = 0;
      units += UVCTX__REF_UNIT;
    }
    uvctx__lock_release(lk);
  }
  return ((atomic_fetch_sub_explicit(&p->refs, units, memory_order_acq_rel) -
           units) &
          ~UVCTX__REF_STRIPED) == 0;
}

/* [no lock] Drops `amount` from p's count: 1 if that was the last of it
 * (p is to be freed). One compare-and-swap: a striped parent's last
 * counted reference is swapped for a guard unit in the same step (see
 * release_stripes()), so that no child's free can free it meanwhile. */
static inline __attribute__((always_inline)) int put(uvctx_t* p,
                                                     unsigned amount) {
  unsigned old = atomic_load_explicit(&p->refs, memory_order_relaxed);
  unsigned now;
  int guard;
  do {
    now = old - amount;
    guard = UVCTX__UNLIKELY(old & UVCTX__REF_STRIPED) &&
            (now & UVCTX__REF_LOW) == 0 && (old & UVCTX__REF_LOW) != 0 &&
            (now & ~UVCTX__REF_STRIPED) != 0;
    if (guard)
      now += UVCTX__REF_UNIT;
  } while (!atomic_compare_exchange_weak_explicit(
      &p->refs, &old, now, memory_order_acq_rel, memory_order_relaxed));
  if (UVCTX__UNLIKELY(guard))
    return release_stripes(p);
  return (now & ~UVCTX__REF_STRIPED) == 0;
}

/* [no lock] Drops `amount` from c's count: 1 if that was the last of it.
 * A count that is not striped and never will be is dropped with a plain
 * subtraction. Only a live with_cancel context is ever striped, under
 * its lock, and its done state is published under that lock: seen done
 * (acquire), it was striped before and the flag is seen, or it never
 * will be. */
static inline __attribute__((always_inline)) int drop(uvctx_t* c,
                                                      unsigned amount) {
  if (c->kind != UVCTX__CANCEL ||
      (atomic_load_explicit(&c->err, memory_order_acquire) != UVCTX__LIVE &&
       !(atomic_load_explicit(&c->refs, memory_order_relaxed) &
         UVCTX__REF_STRIPED)))
    return atomic_fetch_sub_explicit(&c->refs, amount, memory_order_acq_rel) ==
           amount;
  return put(c, amount);
}

/* [n's lock; n a striped child whose count is zero] What it owes its
 * parent: its stripe's unit if it was the stripe's last child and the
 * parent's own references are gone, else nothing. */
__attribute__((noinline)) static int uncount_striped_locked(uvctx_t* n) {
  uvctx_t* t = n->parent;
  uvctx__stripes_t* b = stripes(t);
  int d = UVCTX__DOM(n);
  if (--b->s[d].nref == 0 &&
      (atomic_load_explicit(&t->refs, memory_order_relaxed) & UVCTX__REF_LOW) ==
          0) {
    b->s[d].holding = 0;
    return OWE_UNIT;
  }
  return OWE_NOTHING;
}

static inline __attribute__((always_inline)) void retire_inline(uvctx_t* n) {
  /* n's stripe, worked out once (n is no one else's to change now). */
  uvctx__dom_t* dm = uvctx__dom_of(n);
  uvctx__lock_t* h = &dm->lock;
  uvctx__lock_t* p;
  int w;
  /* Read first without a lock: n's count is zero, so nobody will list it
   * again, and since it was listed (before whoever let it go let go of
   * n) the only writes to `where` are the walk's and the free's, each
   * moving it on from AT_PARENT, never back. Not AT_PARENT here, it is
   * not on its parent's list under another lock (the common case: a
   * done context, on its own stripe's orphan list). */
  if (where(n) == UVCTX__AT_PARENT && (p = link_lock(n)) != NULL && p != h) {
    uvctx__lock_acquire(p);
    if (where(n) == UVCTX__AT_PARENT) {
      uvctx__unlink(&n->link);
      set_where(n, UVCTX__AT_NONE);
    }
    uvctx__lock_release(p);
  }
  uvctx__lock_acquire(h);
  w = where(n);
  if (w == UVCTX__AT_ORPHAN || w == UVCTX__AT_PARENT)
    uvctx__unlink(&n->link);
  if (n->kind == UVCTX__DEADLINE) {
    uvctx__deadline_t* d = (uvctx__deadline_t*)n;
    uvctx__main_enter(n); /* heap_index is the loop lock's */
    if (d->heap_index != UVCTX__NO_HEAP)
      uvctx__heap_remove_locked(n->home, d);
    uvctx__main_leave(n);
  }
  uvctx__count_gone_locked(dm, n->kind);
  if (UVCTX__UNLIKELY(n->lay & UVCTX__SREF))
    set_where(n, uncount_striped_locked(n));
  if (UVCTX__TRACING())
    uvctx__trace_free(n);
  uvctx__lock_release(h);
  if (n->kind == UVCTX__ANY) {
    uvctx__any_t* a = (uvctx__any_t*)n;
    size_t i;
    for (i = 0; i + 1 < a->n; i++) {
      uvctx__lock_t* q = parent_lock(a->extra[i].parent);
      if (q == NULL)
        continue;
      uvctx__lock_acquire(q);
      uvctx__unlink(&a->extra[i].link);
      uvctx__lock_release(q);
    }
  }
}

static void retire(uvctx_t* n) {
  retire_inline(n);
}

/* Drops `amount` of `p`; when it was the last, takes p out of the tree
 * and pushes it on the stack of contexts to free. */
static inline void drop_parent(const uvctx_t* c, uvctx_t* p, unsigned amount,
                               uvctx_t** stack) {
  if (p == NULL)
    return;
  if (p->kind == UVCTX__BACKGROUND) {
    uvctx__foreign(c, p, -1);
    return;
  }
  if (!drop(p, amount))
    return;
  retire_inline(p);
  p->link.next = *stack != NULL ? &(*stack)->link : NULL;
  *stack = p;
}

static inline __attribute__((always_inline)) void destroy(uvctx_t* c) {
  if (atomic_load_explicit(&c->err, memory_order_relaxed) != UVCTX__LIVE)
    uvctx__msg_unref(c->u2.msg);
  if (c->kind == UVCTX__CANCEL) {
    if (striped(c)) /* the only kind ever striped */
      uvctx__free(stripes(c)->block);
  } else if (c->kind == UVCTX__DEADLINE) {
    uvctx__msg_unref(((uvctx__deadline_t*)c)->dl_msg);
  } else if (c->kind == UVCTX__VALUE) {
    uvctx__value_t* v = (uvctx__value_t*)c;
    if (v->key->free_value != NULL && v->value != NULL)
      v->key->free_value(v->value);
  }
  uvctx__free((char*)c - (c->lay & 7) * 8);
}

/* Freeing is iterative like cancelling: the contexts whose last reference
 * goes are taken out of the tree one lock at a time (retire()), threaded
 * through their own links on a stack of contexts whose parents to drop,
 * then on a list of contexts to destroy, outside every lock, because value
 * destructors are user code. */
__attribute__((noinline)) static void free_from(uvctx_t* c) {
  uvctx_t* p = c->parent;
  uvctx_t* stack;
  uvctx_t* dead = NULL;

  retire_inline(c);
  /* The common case first: a context of one parent, which holds it with
   * one reference and stays (or is a background, which is not counted). */
  if (UVCTX__LIKELY(!(c->lay & UVCTX__SREF) && c->kind != UVCTX__ANY &&
                    p != NULL)) {
    if (p->kind == UVCTX__BACKGROUND) {
      if (p->home != c->home)
        uvctx__foreign(c, p, -1);
      destroy(c);
      return;
    }
    if (!drop(p, 1)) {
      destroy(c);
      return;
    }
    /* Its parent goes too: where the loop below would be after c. */
    retire(p);
    c->link.next = NULL;
    dead = c;
    p->link.next = NULL;
    stack = p;
  } else {
    c->link.next = NULL;
    stack = c;
  }
  while (stack != NULL) {
    uvctx_t* n = stack;
    uvctx_t* p = n->parent;
    unsigned owe = 1;
    if (UVCTX__UNLIKELY(n->lay & UVCTX__SREF)) {
      owe = UVCTX__REF_UNIT;
      if (where(n) != OWE_UNIT)
        p = NULL; /* its stripe keeps holding the parent */
    }
    stack = n->link.next != NULL ? n->link.next->owner : NULL;
    n->link.next = dead != NULL ? &dead->link : NULL;
    dead = n;
    drop_parent(n, p, owe, &stack);
    if (n->kind == UVCTX__ANY) {
      uvctx__any_t* a = (uvctx__any_t*)n;
      size_t i;
      for (i = 0; i + 1 < a->n; i++)
        drop_parent(n, a->extra[i].parent, 1, &stack);
    }
  }

  while (dead != NULL) {
    uvctx_t* n = dead;
    dead = n->link.next != NULL ? n->link.next->owner : NULL;
    destroy(n);
  }
}

/* Out of line, the free: a reference dropped that is not the last
 * touches no register the free needs saved. */
void uvctx_unref(uvctx_t* c) {
  if (c == NULL || c->kind == UVCTX__BACKGROUND)
    return;
  if (drop(c, 1))
    free_from(c);
}

void uvctx_release(uvctx_t* c) {
  if (c == NULL || c->kind == UVCTX__BACKGROUND)
    return;
  /* uvctx_cancel(), whose checks the ones above have made. */
  if (uvctx__cancellable_kind(c->kind) &&
      atomic_load_explicit(&c->err, memory_order_acquire) == UVCTX__LIVE)
    cancel(c, UVCTX__ERR_CANCELED, UV_ECANCELED, NULL, 0);
  uvctx_unref(c);
}
