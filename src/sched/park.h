/*
 * Parking a thread until another thread unparks it (futex based). Used by
 * idle workers, by threads that block outside the runtime (weft_join from a
 * plain thread) and, through weft__parker_waker, as a waker for them.
 *
 * state: EMPTY -> PARKED (the parker sleeps) -> NOTIFIED (unpark) -> EMPTY.
 * An unpark that comes before the park is kept, so no wake-up is lost.
 */
#ifndef WEFT_PARK_H
#define WEFT_PARK_H

#include "internal.h"

struct weft_parker {
    _Atomic uint32_t state;
    _Atomic uint32_t refs; /* heap parkers only */
};

void weft__parker_init(struct weft_parker *p);

/* Sleeps until unparked or `timeout_ns` passes (< 0: no limit). Consumes a
 * pending unpark without sleeping. Returns true if it was unparked. Only the
 * owning thread parks. */
bool weft__parker_park_timeout(struct weft_parker *p, int64_t timeout_ns);
static inline void weft__parker_park(struct weft_parker *p)
{
    weft__parker_park_timeout(p, -1);
}

/* Wakes the parked owner, or makes its next park return at once. Any
 * thread. */
void weft__parker_unpark(struct weft_parker *p);

/* A reference-counted parker on the heap, for wakers that may outlive the
 * waiting thread's stack frame. NULL on exhaustion. */
struct weft_parker *weft__parker_new(void);
void weft__parker_unref(struct weft_parker *p);

/* A waker that unparks `p` (borrowed: clone it to keep it). */
weft_waker weft__parker_waker(struct weft_parker *p);

#endif
