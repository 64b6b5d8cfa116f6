/* ctx_ops.c owns the fuzz target of the core: the input is a program of
 * context operations (with_cancel, with_timeout, with_value,
 * without_cancel, any, cancel, cancel_cause, unref, release, watch
 * start/stop, value lookups, loop turns) over a few slots, run against a
 * model of what each context must report. Invariants, checked as the
 * program runs and at its end: a context is done exactly when one of the
 * contexts it inherits cancellation from was cancelled (or born past its
 * deadline), at once when uvctx_cancel() returns, descendants included;
 * only cancellable kinds can be cancelled; a value lookup finds the
 * innermost binding; every watch callback runs exactly once unless a stop
 * prevented it, never inside the call that caused it, with its context's
 * error; and once everything is released the loop closes with zero live
 * contexts, watches and allocations (fz_loop_end). */
#include <string.h>

#include "fuzz.h"

#define SLOTS 16
#define WATCHES 8
#define MAX_IDS 256
#define KEYS 2

enum { K_CANCEL, K_TIMEOUT, K_VALUE, K_DETACHED, K_ANY };

typedef struct bits_s {
  uint64_t w[MAX_IDS / 64];
} bits_t;

typedef struct slot_s {
  uvctx_t* c; /* NULL: empty */
  int kind;
  int id;
  bits_t anc;        /* ids whose cancel reaches this context, its own too */
  void* value[KEYS]; /* what uvctx_value() must find */
} slot_t;

typedef struct watch_s {
  uvctx_watch_t w;
  int started;
  int fired;
  int prevented;
  uvctx_t* c; /* what it watches (borrowed: the watch holds a ref) */
} watch_t;

static const uvctx_key_t keys[KEYS] = {{"k0", NULL, NULL}, {"k1", NULL, NULL}};

static slot_t slots[SLOTS];
static watch_t watches[WATCHES];
static bits_t cancelled;
static int next_id;
static int in_call; /* inside a library call that must not call back */

static void bit_set(bits_t* b, int i) {
  b->w[i / 64] |= (uint64_t)1 << (i % 64);
}

static int meets(const bits_t* a, const bits_t* b) {
  size_t i;
  for (i = 0; i < MAX_IDS / 64; i++)
    if (a->w[i] & b->w[i])
      return 1;
  return 0;
}

static void bits_or(bits_t* a, const bits_t* b) {
  size_t i;
  for (i = 0; i < MAX_IDS / 64; i++)
    a->w[i] |= b->w[i];
}

/* Every live context reports done exactly as the model says. */
static void check_all(void) {
  int i;
  for (i = 0; i < SLOTS; i++) {
    if (slots[i].c == NULL)
      continue;
    int done = uvctx_err(slots[i].c) != 0;
    if (done != meets(&slots[i].anc, &cancelled)) {
      fprintf(stderr, "slot %d (kind %d, id %d): err %d, model says %s\n", i,
              slots[i].kind, slots[i].id, uvctx_err(slots[i].c),
              done ? "not done" : "done");
      abort();
    }
  }
}

static void on_watch(uvctx_watch_t* w, int err) {
  watch_t* x = (watch_t*)w;
  FZ_CHECK(!in_call);
  FZ_CHECK(x->started && !x->fired && !x->prevented);
  FZ_CHECK(err != 0);
  FZ_CHECK(err == uvctx_err(x->c));
  x->fired = 1;
}

/* A parent: a live slot, or the background when `pick` says so. */
static const slot_t* parent_of(unsigned pick, uvctx_t** c, const slot_t* bg) {
  const slot_t* p = &slots[pick % SLOTS];
  if (pick >= 128 || p->c == NULL) {
    *c = bg->c;
    return bg;
  }
  *c = p->c;
  return p;
}

static slot_t* free_slot(unsigned pick) {
  slot_t* s = &slots[pick % SLOTS];
  return s->c == NULL && next_id < MAX_IDS ? s : NULL;
}

static void slot_drop(slot_t* s, int release) {
  in_call = 1;
  if (release)
    uvctx_release(s->c);
  else
    uvctx_unref(s->c);
  in_call = 0;
  if (release &&
      (s->kind == K_CANCEL || s->kind == K_TIMEOUT || s->kind == K_ANY))
    bit_set(&cancelled, s->id);
  s->c = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fz_loop_t f;
  fz_in_t in = {data, size};
  slot_t bg;
  int i, steps = 0;

  memset(slots, 0, sizeof(slots));
  memset(watches, 0, sizeof(watches));
  memset(&cancelled, 0, sizeof(cancelled));
  memset(&bg, 0, sizeof(bg));
  next_id = 0;
  fz_loop_begin(&f);
  bg.c = uvctx_background(f.l);
  bg.kind = K_DETACHED;
  bg.id = -1;

  while (in.n > 0 && steps++ < 4096) {
    unsigned op = fz_below(&in, 12);
    unsigned a = fz_byte(&in);
    unsigned b = fz_byte(&in);
    slot_t* s = &slots[a % SLOTS];
    const slot_t* p;
    uvctx_t* pc;
    slot_t* out;
    int rc;

    switch (op) {
      case 0: /* with_cancel */
      case 1: /* with_timeout: 0 (born done) or an hour (never, here) */
        if ((out = free_slot(a)) == NULL)
          break;
        p = parent_of(b, &pc, &bg);
        in_call = 1;
        if (op == 0)
          rc = uvctx_with_cancel(pc, &out->c);
        else
          rc = uvctx_with_timeout(pc, (b & 1) ? 0 : 3600 * 1000, &out->c);
        in_call = 0;
        FZ_CHECK(rc == 0);
        out->kind = op == 0 ? K_CANCEL : K_TIMEOUT;
        out->id = next_id++;
        out->anc = p->anc;
        bit_set(&out->anc, out->id);
        memcpy(out->value, p->value, sizeof(out->value));
        if (op == 1 && (b & 1))
          bit_set(&cancelled, out->id);
        break;
      case 2: /* with_value */
        if ((out = free_slot(a)) == NULL)
          break;
        p = parent_of(b, &pc, &bg);
        {
          int k = (b >> 3) & 1;
          void* v = (void*)(uintptr_t)(1 + (b >> 4));
          FZ_CHECK(uvctx_with_value(pc, &keys[k], v, &out->c) == 0);
          out->kind = K_VALUE;
          out->id = next_id++;
          out->anc = p->anc;
          memcpy(out->value, p->value, sizeof(out->value));
          out->value[k] = v;
        }
        break;
      case 3: /* without_cancel: cancellation stops here, values go on */
        if ((out = free_slot(a)) == NULL)
          break;
        p = parent_of(b, &pc, &bg);
        FZ_CHECK(uvctx_without_cancel(pc, &out->c) == 0);
        out->kind = K_DETACHED;
        out->id = next_id++;
        memset(&out->anc, 0, sizeof(out->anc));
        memcpy(out->value, p->value, sizeof(out->value));
        break;
      case 4: /* any of two parents */
        if ((out = free_slot(a)) == NULL)
          break;
        {
          uvctx_t* ps[2];
          const slot_t* p0 = parent_of(b, &ps[0], &bg);
          const slot_t* p1 = parent_of(fz_byte(&in), &ps[1], &bg);
          in_call = 1;
          rc = uvctx_any(ps, 2, &out->c);
          in_call = 0;
          FZ_CHECK(rc == 0);
          out->kind = K_ANY;
          out->id = next_id++;
          out->anc = p0->anc;
          bits_or(&out->anc, &p1->anc);
          bit_set(&out->anc, out->id);
          memcpy(out->value, p0->value, sizeof(out->value));
        }
        break;
      case 5: /* cancel, or cancel with a cause */
        if (s->c == NULL)
          break;
        in_call = 1;
        if (b & 1)
          rc = uvctx_cancel(s->c);
        else
          rc = uvctx_cancel_cause(s->c, -1 - (int)(b >> 1), "fuzz");
        in_call = 0;
        if (s->kind == K_CANCEL || s->kind == K_TIMEOUT || s->kind == K_ANY) {
          FZ_CHECK(rc == 0);
          bit_set(&cancelled, s->id);
        } else {
          FZ_CHECK(rc == UV_EINVAL);
        }
        break;
      case 6: /* unref or release */
        if (s->c != NULL)
          slot_drop(s, b & 1);
        break;
      case 7: { /* watch_start */
        watch_t* w = &watches[b % WATCHES];
        if (s->c == NULL || (w->started && !w->fired && !w->prevented))
          break;
        memset(w, 0, sizeof(*w));
        in_call = 1;
        rc = uvctx_watch_start(&w->w, s->c, on_watch);
        in_call = 0;
        FZ_CHECK(rc == 0);
        w->started = 1;
        w->c = s->c;
        break;
      }
      case 8: { /* watch_stop */
        watch_t* w = &watches[b % WATCHES];
        if (!w->started || w->fired || w->prevented)
          break;
        in_call = 1;
        rc = uvctx_watch_stop(&w->w);
        in_call = 0;
        FZ_CHECK(rc == 1); /* a callback not yet run is prevented */
        w->prevented = 1;
        break;
      }
      case 9: /* value lookup */
        if (s->c != NULL)
          FZ_CHECK(uvctx_value(s->c, &keys[b & 1]) == s->value[b & 1]);
        break;
      default:
        fz_loop_turns(&f, 1 + (int)(b % 3));
        break;
    }
    check_all();
  }
  /* The end: stop what would never fire, release everything. */
  fz_loop_turns(&f, 2);
  for (i = 0; i < WATCHES; i++)
    if (watches[i].started && !watches[i].fired && !watches[i].prevented)
      watches[i].prevented = uvctx_watch_stop(&watches[i].w) == 1;
  for (i = 0; i < SLOTS; i++)
    if (slots[i].c != NULL)
      slot_drop(&slots[i], 0);
  fz_loop_end(&f);
  for (i = 0; i < WATCHES; i++)
    if (watches[i].started)
      FZ_CHECK(watches[i].fired + watches[i].prevented == 1);
  if (getenv("UVCTX_FUZZ_VERBOSE") != NULL) {
    int fired = 0, prevented = 0;
    for (i = 0; i < WATCHES; i++) {
      fired += watches[i].fired;
      prevented += watches[i].prevented;
    }
    fprintf(stderr, "%d steps, %d contexts, watches fired %d, stopped %d\n",
            steps, next_id, fired, prevented);
  }
  return 0;
}
