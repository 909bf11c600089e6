/*
 * The driver: what an idle worker blocks in. Today it is a futex parker
 * plus time (src/time): before sleeping it fires the timers that are due on
 * every worker's wheel and sleeps only until the earliest deadline left;
 * a timer registered nearer than that from another thread unparks it. I/O
 * readiness (src/io) will plug in here too, with epoll_wait's timeout
 * taking the parker's place.
 */
#include "sched/driver.h"

#include <stdlib.h>

#include "sched/park.h"
#include "time/time.h"

struct weft_driver {
    weft_runtime *rt;
    struct weft_parker parker;
    struct weft_time time;
};

int weft__driver_new(weft_runtime *rt, struct weft_driver **out)
{
    struct weft_driver *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->rt = rt;
    weft__parker_init(&d->parker);
    int rc = weft__time_init(&d->time, &d->parker);
    if (rc < 0) {
        free(d);
        return rc;
    }
    *out = d;
    return 0;
}

void weft__driver_free(struct weft_driver *d)
{
    weft__time_fini(&d->time);
    free(d);
}

struct weft_time *weft__driver_time(struct weft_driver *d)
{
    return &d->time;
}

void weft__driver_park(struct weft_driver *d, struct weft_worker *w,
                       int64_t timeout_ns, bool all_idle)
{
    int64_t wait = weft__time_park_begin(&d->time, w, timeout_ns, all_idle);
    weft__parker_park_timeout(&d->parker, wait);
    weft__time_park_end(&d->time, w);
}

void weft__driver_unpark(struct weft_driver *d)
{
    weft__parker_unpark(&d->parker);
}

void weft__driver_all_idle(struct weft_driver *d)
{
    if (weft__clock_paused(&d->time.clock))
        weft__parker_unpark(&d->parker);
}

void weft__driver_maintain(struct weft_driver *d, struct weft_worker *w)
{
    weft__time_maintain(&d->time, w);
}
