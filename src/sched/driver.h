/*
 * The driver: what an idle worker blocks in. Timers (src/time) and later
 * I/O readiness (src/io) plug in here, so that one parked worker sleeps
 * exactly until the next event and is woken early by any other thread.
 *
 * One driver per runtime. At most one worker at a time is inside
 * weft__driver_park() (the scheduler guarantees it: the current-thread
 * scheduler trivially, the multi-thread one with a try-lock); the other idle
 * workers wait on their own parkers.
 */
#ifndef WEFT_DRIVER_H
#define WEFT_DRIVER_H

#include "internal.h"

struct weft_driver;
struct weft_worker;

int weft__driver_new(weft_runtime *rt, struct weft_driver **out);
void weft__driver_free(struct weft_driver *d);

/* Blocks until weft__driver_unpark(), an event, the earliest timer of any
 * worker, or `timeout_ns` (< 0: no limit, 0: just poll), then fires what is
 * due (wakes tasks). `all_idle` tells the driver that no worker has anything
 * to run: a paused clock then jumps to the next timer instead of sleeping
 * (without it, a paused driver looks again every millisecond). */
void weft__driver_park(struct weft_driver *d, struct weft_worker *w,
                       int64_t timeout_ns, bool all_idle);

/* Makes a parked (or the next) weft__driver_park() return. Any thread. */
void weft__driver_unpark(struct weft_driver *d);

/* Tells the driver that every worker is idle now (called by the last worker
 * to park when another one holds the driver): with a paused clock, the
 * driver re-plans (it may jump to the next timer). Cheap otherwise. */
void weft__driver_all_idle(struct weft_driver *d);

/* Called by a busy worker now and then (each scheduler tick interval), and
 * by a current-thread runtime when block_on starts: refreshes the worker's
 * clock (weft_now) and fires timers that are due, without blocking. */
void weft__driver_maintain(struct weft_driver *d, struct weft_worker *w);

/* The time driver (src/time/time.h) of `d`. */
struct weft_time;
struct weft_time *weft__driver_time(struct weft_driver *d);

#endif
