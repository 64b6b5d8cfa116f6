/* The intrusive list every layer uses, in the style of BSD <sys/queue.h>:
 * the caller names the two link fields of its struct, `next` (a pointer to
 * the next element) and `pprev` (a pointer to the previous element's `next`,
 * or to the head), so that an element unlinks itself in O(1) without
 * knowing which list it is on, and one element may sit on several lists
 * through several pairs of fields. A list is a head pointer; a queue adds a
 * tail (the address of the last `next`) for appending. An unlinked element
 * has `pprev == NULL`. Nothing here locks or allocates. */
#ifndef UVCTX_COMMON_LIST_H
#define UVCTX_COMMON_LIST_H

#include <stddef.h>

/* Puts `elm` first on the list whose head pointer is `*(headp)`. */
#define UVCTX__LIST_INSERT_HEAD(headp, elm, next, pprev) \
  do {                                                   \
    (elm)->next = *(headp);                              \
    if ((elm)->next != NULL)                             \
      (elm)->next->pprev = &(elm)->next;                 \
    *(headp) = (elm);                                    \
    (elm)->pprev = (headp);                              \
  } while (0)

/* Takes `elm` off whatever list it is on; nothing if it is on none. */
#define UVCTX__LIST_REMOVE(elm, next, pprev) \
  do {                                       \
    if ((elm)->pprev != NULL) {              \
      *(elm)->pprev = (elm)->next;           \
      if ((elm)->next != NULL)               \
        (elm)->next->pprev = (elm)->pprev;   \
      (elm)->next = NULL;                    \
      (elm)->pprev = NULL;                   \
    }                                        \
  } while (0)

/* A queue: `*(headp)` the first element, `*(tailpp)` the address of the
 * last element's `next` (or of the head when empty). Initialize with
 * `head = NULL; tail = &head`. */
#define UVCTX__QUEUE_INSERT_TAIL(tailpp, elm, next, pprev) \
  do {                                                     \
    (elm)->next = NULL;                                    \
    (elm)->pprev = *(tailpp);                              \
    **(tailpp) = (elm);                                    \
    *(tailpp) = &(elm)->next;                              \
  } while (0)

/* Takes `elm`, which must be queued, off the queue. */
#define UVCTX__QUEUE_REMOVE(tailpp, elm, next, pprev) \
  do {                                                \
    *(elm)->pprev = (elm)->next;                      \
    if ((elm)->next != NULL)                          \
      (elm)->next->pprev = (elm)->pprev;              \
    else                                              \
      *(tailpp) = (elm)->pprev;                       \
    (elm)->next = NULL;                               \
    (elm)->pprev = NULL;                              \
  } while (0)

#endif /* UVCTX_COMMON_LIST_H */
