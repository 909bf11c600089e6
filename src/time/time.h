/*
 * Time: the clock of a runtime, one timing wheel per worker, and the hooks
 * the driver (sched/driver.c) and coroutine tasks (task/coro_task.c) call.
 *
 * Who does what:
 *   - A timer registers on the wheel of the worker that first polls it
 *     (timer.c); cancel and reset lock whichever wheel holds it, from any
 *     thread.
 *   - A busy worker fires what is due on the wheels now and then
 *     (weft__time_maintain, from the scheduler's tick interval).
 *   - The worker parked in the driver fires what is due on every wheel and
 *     sleeps until the earliest deadline over all wheels
 *     (weft__time_park_begin / _end); a timer registered nearer than that
 *     deadline from another thread unparks it.
 *   - While the clock is paused and every task is idle, the parked driver
 *     jumps the clock to the next deadline instead of sleeping.
 */
#ifndef WEFT_TIME_TIME_H
#define WEFT_TIME_TIME_H

#include <pthread.h>

#include "internal.h"
#include "time/wheel.h"

struct weft_parker;

/* The clock of one runtime, in nanoseconds: CLOCK_MONOTONIC + offset, or
 * `frozen` while paused. */
struct weft_clock {
    _Atomic int64_t frozen; /* CLOCK_RUNNING, or the paused time */
    _Atomic int64_t offset; /* added to CLOCK_MONOTONIC while running */
};
#define CLOCK_RUNNING INT64_MIN

/* A worker's wheel: the wheel, its lock, and the earliest tick it needs
 * attention at (published for the driver and other workers). */
struct weft_wheel {
    pthread_mutex_t lock;
    _Atomic uint64_t next; /* <= the next deadline; UINT64_MAX: empty */
    struct weft_time *time;
    struct weft_wheel *next_wheel; /* the time driver's list; immutable */
    struct wheel_core core;
};

/* The time part of a runtime's driver. */
struct weft_time {
    struct weft_clock clock;
    /* Every wheel of the runtime (one per worker that ever used a timer),
     * pushed under wheels_lock, read without it. */
    _Atomic(struct weft_wheel *) wheels;
    pthread_mutex_t wheels_lock;
    /* The tick the parked driver sleeps until: registering a timer due
     * before it unparks the driver. NOT_SLEEPING (0) while no one sleeps
     * there, UINT64_MAX while it sleeps with no timer at all. */
    _Atomic uint64_t sleep_until;
    struct weft_parker *parker; /* the driver's */
};
#define NOT_SLEEPING 0

int weft__time_init(struct weft_time *tm, struct weft_parker *parker);
/* Frees the wheels, releasing any timer still registered (its waker is
 * dropped and it reads as fired). */
void weft__time_fini(struct weft_time *tm);

/* ---- the clock ---- */

/* The runtime's clock in ns. */
int64_t weft__clock_ns(struct weft_clock *c);
static inline bool weft__clock_paused(struct weft_clock *c)
{
    return atomic_load_explicit(&c->frozen, memory_order_acquire) !=
           CLOCK_RUNNING;
}

/* ---- driver hooks (sched/driver.c) ---- */

/* Before the driver parks `w`: fires what is due; decides how long to
 * sleep. Returns the timeout in ns for the parker (-1: no limit, 0: do not
 * sleep), at most `timeout_ns` (< 0: no limit). With a paused clock and
 * `all_idle`, jumps the clock to the next deadline instead (returns 0). */
int64_t weft__time_park_begin(struct weft_time *tm, struct weft_worker *w,
                              int64_t timeout_ns, bool all_idle);
/* After the park: fires what is due by now. */
void weft__time_park_end(struct weft_time *tm, struct weft_worker *w);
/* A busy worker's periodic look: refreshes its clock, fires what is due. */
void weft__time_maintain(struct weft_time *tm, struct weft_worker *w);

/* Timers registered on all wheels of `tm` right now (tests, diagnostics). */
size_t weft__time_registered(struct weft_time *tm);

/* ---- for other subsystems ---- */

/* The time in ms as weft_now() gives it on worker `w` (non-NULL). */
int64_t weft__time_now_ms(struct weft_worker *w);

/* Deadline scopes, for weft_await and weft_yield (scope.c). `s` is the
 * innermost scope of the calling coroutine task. expired: has its
 * effective deadline passed? arm: before suspending, make sure the task is
 * woken at the deadline; returns true if it has passed already. */
bool weft__scope_expired(weft_scope *s);
bool weft__scope_arm(weft_scope *s, weft_cx *cx);

/* The innermost-scope slot of the calling coroutine task, or NULL outside
 * one (task/coro_task.c). */
weft_scope **weft__coro_scope_slot(void);

#endif
