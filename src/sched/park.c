/*
 * Futex parker. See park.h.
 */
#include "sched/park.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { EMPTY = 0, PARKED = 1, NOTIFIED = 2 };

static void futex_wait(_Atomic uint32_t *addr, uint32_t val, int64_t ns)
{
    struct timespec ts, *tp = NULL;
    if (ns >= 0) {
        ts.tv_sec = ns / 1000000000;
        ts.tv_nsec = ns % 1000000000;
        tp = &ts;
    }
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, tp, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void weft__parker_init(struct weft_parker *p)
{
    atomic_init(&p->state, EMPTY);
    atomic_init(&p->refs, 1);
}

static bool take_notification(struct weft_parker *p)
{
    uint32_t expect = NOTIFIED;
    return atomic_compare_exchange_strong(&p->state, &expect, EMPTY);
}

bool weft__parker_park_timeout(struct weft_parker *p, int64_t timeout_ns)
{
    if (take_notification(p))
        return true;
    if (timeout_ns == 0)
        return false;
    uint32_t expect = EMPTY;
    if (!atomic_compare_exchange_strong(&p->state, &expect, PARKED)) {
        /* An unpark slipped in between: it can only be NOTIFIED. */
        atomic_store(&p->state, EMPTY);
        return true;
    }
    futex_wait(&p->state, PARKED, timeout_ns);
    /* Woken, timed out or spurious: leave PARKED either way. */
    return atomic_exchange(&p->state, EMPTY) == NOTIFIED;
}

void weft__parker_unpark(struct weft_parker *p)
{
    if (atomic_exchange(&p->state, NOTIFIED) == PARKED)
        futex_wake(&p->state);
}

struct weft_parker *weft__parker_new(void)
{
    struct weft_parker *p = weft__alloc(sizeof *p);
    if (p)
        weft__parker_init(p);
    return p;
}

void weft__parker_unref(struct weft_parker *p)
{
    if (atomic_fetch_sub_explicit(&p->refs, 1, memory_order_acq_rel) == 1)
        weft__free(p, sizeof *p);
}

static weft_waker parker_clone(void *data)
{
    struct weft_parker *p = data;
    atomic_fetch_add_explicit(&p->refs, 1, memory_order_relaxed);
    return weft__parker_waker(p);
}

static void parker_wake_by_ref(void *data)
{
    weft__parker_unpark(data);
}

static void parker_wake(void *data)
{
    weft__parker_unpark(data);
    weft__parker_unref(data);
}

static void parker_drop(void *data)
{
    weft__parker_unref(data);
}

static const weft_waker_vtable parker_vtable = {
    .clone = parker_clone,
    .wake = parker_wake,
    .wake_by_ref = parker_wake_by_ref,
    .drop = parker_drop,
};

weft_waker weft__parker_waker(struct weft_parker *p)
{
    weft_waker w = {&parker_vtable, p};
    return w;
}
