/*
 * The driver. With no timers or I/O registered, parking is a futex wait.
 */
#include "sched/driver.h"

#include <stdlib.h>

#include "sched/park.h"

struct weft_driver {
    weft_runtime *rt;
    struct weft_parker parker;
};

int weft__driver_new(weft_runtime *rt, struct weft_driver **out)
{
    struct weft_driver *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->rt = rt;
    weft__parker_init(&d->parker);
    *out = d;
    return 0;
}

void weft__driver_free(struct weft_driver *d)
{
    free(d);
}

void weft__driver_park(struct weft_driver *d, struct weft_worker *w,
                       int64_t timeout_ns, bool all_idle)
{
    (void)w;
    (void)all_idle;
    weft__parker_park_timeout(&d->parker, timeout_ns);
}

void weft__driver_unpark(struct weft_driver *d)
{
    weft__parker_unpark(&d->parker);
}

void weft__driver_maintain(struct weft_driver *d, struct weft_worker *w)
{
    (void)d;
    (void)w;
}
