/* ctx.c owns the context tree: the library lock, cancellable contexts
 * (with_cancel, with_cancel_on, any), cancellation and its propagation,
 * reference counting and freeing, and the lock-free readers (err, cause,
 * home). Deadlines live in deadline.c, values in value.c, watches in
 * watch.c. */
#include <sched.h>
#include <string.h>

#include "core/internal.h"

/* ---- the library lock ---------------------------------------------------- */

static atomic_int lock_word;

void uvctx__lock(void) {
  for (;;) {
    int spins = 0;
    if (!atomic_exchange_explicit(&lock_word, 1, memory_order_acquire))
      return;
    /* Spin on a plain load so the cache line stays shared while it is held;
     * yield soon, as the holder may have been preempted (2 cores). */
    while (atomic_load_explicit(&lock_word, memory_order_relaxed)) {
      if (++spins < 100) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
      } else {
        sched_yield();
        spins = 0;
      }
    }
  }
}

void uvctx__unlock(void) {
  atomic_store_explicit(&lock_word, 0, memory_order_release);
}

/* ---- small helpers ------------------------------------------------------- */

int uvctx__valid(const uvctx_t* c) {
  return c != NULL && c->kind <= UVCTX__DETACHED;
}

uvctx_t* uvctx__state_of(const uvctx_t* c) {
  if (c->kind == UVCTX__VALUE)
    return ((const uvctx__value_t*)c)->anc;
  return (uvctx_t*)c;
}

int uvctx__err_code(int stored) {
  switch (stored) {
    case UVCTX__ERR_CANCELED:
      return UV_ECANCELED;
    case UVCTX__ERR_TIMEDOUT:
      return UV_ETIMEDOUT;
    default:
      return 0;
  }
}

void uvctx__unlink(uvctx__link_t* l) {
  UVCTX__LIST_REMOVE(l, next, pprev);
}

static void unlink_all(uvctx_t* c) {
  uvctx__unlink(&c->link);
  if (c->kind == UVCTX__ANY) {
    uvctx__any_t* a = (uvctx__any_t*)c;
    size_t i;
    for (i = 0; i + 1 < a->n; i++)
      uvctx__unlink(&a->extra[i].link);
  }
}

void uvctx__orphan_locked(uvctx_t* c, uvctx__link_t* l) {
  UVCTX__LIST_INSERT_HEAD(&c->home->orphans, l, next, pprev);
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

uvctx_t* uvctx__alloc_ctx(size_t size, int kind, uvctx_t* parent,
                          uvctx_loop_t* home, void* site) {
  uvctx_t* c = uvctx__malloc(size);
  if (c == NULL)
    return NULL;
  atomic_init(&c->refs, 1);
  atomic_init(&c->err, UVCTX__LIVE);
  c->kind = (uint8_t)kind;
  c->flags = 0;
  c->pad_ = 0;
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

uvctx__attach_t uvctx__register_child_locked(uvctx__link_t* l,
                                             uvctx_t* parent) {
  uvctx_t* t = uvctx__state_of(parent);
  if (!uvctx__cancellable_kind(t->kind))
    return UVCTX__PARENT_NEVER_DONE;
  if (atomic_load_explicit(&t->err, memory_order_relaxed) != UVCTX__LIVE)
    return UVCTX__PARENT_DONE;
  UVCTX__LIST_INSERT_HEAD(&t->u1.children, l, next, pprev);
  return UVCTX__LINKED;
}

/* [lock] A child of a done context copies its error and cause. */
void uvctx__born_done_locked(uvctx_t* c, const uvctx_t* from) {
  const uvctx_t* t = uvctx__state_of(from);
  c->u1.cause = t->u1.cause;
  c->u2.msg = t->u2.msg;
  msg_ref(c->u2.msg);
  atomic_store_explicit(&c->err,
                        atomic_load_explicit(&t->err, memory_order_relaxed),
                        memory_order_release);
  uvctx__orphan_locked(c, &c->link);
}

void uvctx__foreign_locked(const uvctx_t* c, const uvctx_t* parent, int d) {
  if (parent->kind == UVCTX__BACKGROUND && parent->home != c->home)
    parent->home->n_foreign += (uint64_t)d;
}

void uvctx__attach_locked(uvctx_t* c, uvctx_t* parent) {
  switch (uvctx__register_child_locked(&c->link, parent)) {
    case UVCTX__LINKED:
      break;
    case UVCTX__PARENT_DONE:
      uvctx__born_done_locked(c, parent);
      break;
    case UVCTX__PARENT_NEVER_DONE:
      uvctx__orphan_locked(c, &c->link);
      break;
  }
  uvctx__count_live_locked(c->home, c->kind, 1);
  uvctx__count_created_locked(c->home);
  uvctx__foreign_locked(c, parent, 1);
}

/* ---- cancellation -------------------------------------------------------- */

void uvctx__cancel_op_id(uvctx__cancel_op_t* op) {
  static uint64_t last_op; /* [lock] */
  if (op->id == 0)
    op->id = ++last_op;
}

/* [lock] Everything a context needs once its children have been taken
 * off it: its watches made due, its deadline entry gone, its cause and
 * error published, and itself listed on its home's orphan list. */
static inline void finish_locked(uvctx_t* n, const uvctx_t* root, int err,
                                 intptr_t cause, uvctx__msg_t* msg,
                                 uvctx__cancel_op_t* op, uint64_t* same_home) {
  if (n->u2.watches != NULL)
    uvctx__watches_fire_locked(n, uvctx__err_code(err), op);
  /* Counted in a register while the subtree stays on the root's loop. */
  if (n->home == root->home)
    (*same_home)++;
  else
    n->home->cancels++;
  if (n->kind == UVCTX__DEADLINE) {
    uvctx__deadline_t* d = (uvctx__deadline_t*)n;
    if (d->heap_index != UVCTX__NO_HEAP)
      uvctx__heap_remove_locked(n->home, d);
  }
  n->u1.cause = cause;
  n->u2.msg = msg;
  msg_ref(msg);
  atomic_store_explicit(&n->err, (unsigned char)err, memory_order_release);
  uvctx__orphan_locked(n, &n->link);
}

/* The subtree is walked with an explicit stack threaded through the links
 * of the contexts being cancelled: a context taken off its parent's list has
 * a free `link.next` until it is put on its home's orphan list, so the walk
 * needs no memory and no recursion, whatever the depth. Leaves (no children
 * of their own, the common case of a wide fan-out) are finished as they are
 * met, so that each is touched once. */
void uvctx__cancel_locked(uvctx_t* c, int err, intptr_t cause,
                          uvctx__msg_t* msg, uint64_t now) {
  uvctx__cancel_op_t op;
  uvctx_t* stack;
  uint64_t same_home = 0;

  if (atomic_load_explicit(&c->err, memory_order_relaxed) != UVCTX__LIVE)
    return;
  /* The id and the time are taken lazily, by the tracer or the first watch
   * made due: a cancel nobody watches pays for neither. */
  op.id = 0;
  op.time = now;
  if (UVCTX__TRACING()) {
    uvctx__cancel_op_id(&op);
    uvctx__trace_cancel(c, err, cause, &op);
  }
  unlink_all(c);
  c->link.next = NULL;
  stack = c;

  while (stack != NULL) {
    uvctx_t* n = stack;
    uvctx__link_t* l;
    uvctx__link_t* next;

    stack = n->link.next != NULL ? n->link.next->owner : NULL;
    n->link.next = NULL;

    for (l = n->u1.children; l != NULL; l = next) {
      uvctx_t* k = l->owner;
      next = l->next;
      /* The list being walked is dropped whole, and the `next` of the
       * links already walked now threads the stack: detach this link by
       * hand, never through pprev (that would write into a link already
       * reused). A merge also leaves its other parents' lists; it is listed
       * once per distinct parent state, so it cannot come up twice. */
      l->pprev = NULL;
      if (k->kind == UVCTX__ANY) {
        unlink_all(k);
      } else if (k->u1.children == NULL) {
        finish_locked(k, c, err, cause, msg, &op, &same_home);
        continue;
      }
      k->link.next = stack != NULL ? &stack->link : NULL;
      stack = k;
    }
    n->u1.children = NULL;
    finish_locked(n, c, err, cause, msg, &op, &same_home);
  }
  c->home->cancels += same_home;
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
  uvctx__lock();
  uvctx__cancel_locked(c, UVCTX__ERR_CANCELED, UV_ECANCELED, NULL, 0);
  uvctx__unlock();
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
  uvctx__lock();
  uvctx__cancel_locked(c, UVCTX__ERR_CANCELED, cause, m, 0);
  uvctx__unlock();
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
  return (int)c->u1.cause;
}

uvctx_loop_t* uvctx_home(const uvctx_t* c) {
  return c != NULL ? c->home : NULL;
}

/* ---- constructors -------------------------------------------------------- */

static int with_cancel(uvctx_t* parent, uvctx_loop_t* home, uvctx_t** out,
                       void* site) {
  uvctx_t* c = uvctx__alloc_ctx(sizeof(*c), UVCTX__CANCEL, parent, home, site);
  if (c == NULL)
    return UV_ENOMEM;
  uvctx_ref(parent);
  uvctx__lock();
  uvctx__attach_locked(c, parent);
  uvctx__unlock();
  if (UVCTX__TRACING())
    uvctx__trace_create(c);
  *out = c;
  return 0;
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
  uvctx_t* done_from = NULL;
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
      parents[0]->home, __builtin_return_address(0));
  if (a == NULL)
    return UV_ENOMEM;
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

  uvctx__lock();
  for (i = 0; i < n && done_from == NULL; i++) {
    uvctx_t* t = uvctx__state_of(parents[i]);
    if (uvctx__cancellable_kind(t->kind) &&
        atomic_load_explicit(&t->err, memory_order_relaxed) != UVCTX__LIVE)
      done_from = t;
  }
  if (done_from != NULL) {
    uvctx__born_done_locked(&a->base, done_from);
  } else {
    for (i = 0; i < n; i++) {
      uvctx__link_t* l = i == 0 ? &a->base.link : &a->extra[i - 1].link;
      uvctx_t* t = uvctx__state_of(parents[i]);
      int dup = 0;
      /* Listed once per distinct state: two parents that share one (two
       * values over the same context) would otherwise list it twice. */
      for (j = 0; j < i; j++)
        if (uvctx__state_of(parents[j]) == t)
          dup = 1;
      if (!dup && uvctx__register_child_locked(l, parents[i]) == UVCTX__LINKED)
        linked = 1;
    }
    if (!linked)
      uvctx__orphan_locked(&a->base, &a->base.link);
  }
  uvctx__count_live_locked(a->base.home, UVCTX__ANY, 1);
  uvctx__count_created_locked(a->base.home);
  for (i = 0; i < n; i++)
    uvctx__foreign_locked(&a->base, parents[i], 1);
  uvctx__unlock();
  if (UVCTX__TRACING())
    uvctx__trace_create(&a->base);
  *out = &a->base;
  return 0;
}

/* ---- references and freeing ---------------------------------------------- */

uvctx_t* uvctx_ref(uvctx_t* c) {
  if (c != NULL && c->kind != UVCTX__BACKGROUND)
    atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  return c;
}

/* Drops one reference to `p`; when it was the last, takes p out of the tree
 * and pushes it on the stack of contexts to free. */
static void drop_parent_locked(const uvctx_t* c, uvctx_t* p, uvctx_t** stack) {
  if (p == NULL)
    return;
  if (p->kind == UVCTX__BACKGROUND) {
    uvctx__foreign_locked(c, p, -1);
    return;
  }
  if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) != 1)
    return;
  unlink_all(p);
  p->link.next = *stack != NULL ? &(*stack)->link : NULL;
  *stack = p;
}

static void destroy(uvctx_t* c) {
  if (atomic_load_explicit(&c->err, memory_order_relaxed) != UVCTX__LIVE)
    uvctx__msg_unref(c->u2.msg);
  if (c->kind == UVCTX__DEADLINE)
    uvctx__msg_unref(((uvctx__deadline_t*)c)->dl_msg);
  if (c->kind == UVCTX__VALUE) {
    uvctx__value_t* v = (uvctx__value_t*)c;
    if (v->key->free_value != NULL && v->value != NULL)
      v->key->free_value(v->value);
  }
  uvctx__free(c);
}

/* Freeing is iterative like cancelling: the contexts whose last reference
 * goes are threaded through their own links, first on a stack of contexts
 * to take out of the tree (under the lock), then on a list of contexts to
 * destroy (outside it, because value destructors are user code). */
void uvctx_unref(uvctx_t* c) {
  uvctx_t* stack;
  uvctx_t* dead = NULL;

  if (c == NULL || c->kind == UVCTX__BACKGROUND)
    return;
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;

  uvctx__lock();
  unlink_all(c);
  c->link.next = NULL;
  stack = c;
  while (stack != NULL) {
    uvctx_t* n = stack;
    stack = n->link.next != NULL ? n->link.next->owner : NULL;

    if (n->kind == UVCTX__DEADLINE) {
      uvctx__deadline_t* d = (uvctx__deadline_t*)n;
      if (d->heap_index != UVCTX__NO_HEAP)
        uvctx__heap_remove_locked(n->home, d);
    }
    uvctx__count_live_locked(n->home, n->kind, -1);
    if (UVCTX__TRACING())
      uvctx__trace_free(n);
    n->link.next = dead != NULL ? &dead->link : NULL;
    dead = n;

    drop_parent_locked(n, n->parent, &stack);
    if (n->kind == UVCTX__ANY) {
      uvctx__any_t* a = (uvctx__any_t*)n;
      size_t i;
      for (i = 0; i + 1 < a->n; i++)
        drop_parent_locked(n, a->extra[i].parent, &stack);
    }
  }
  uvctx__unlock();

  while (dead != NULL) {
    uvctx_t* n = dead;
    dead = n->link.next != NULL ? n->link.next->owner : NULL;
    destroy(n);
  }
}

void uvctx_release(uvctx_t* c) {
  if (c == NULL || c->kind == UVCTX__BACKGROUND)
    return;
  if (uvctx__cancellable_kind(c->kind))
    uvctx_cancel(c);
  uvctx_unref(c);
}
