/*
 * The runtime object: configuration, the scheduler, shared pools.
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include "internal.h"
#include "coro/coro.h"

struct weft_runtime {
    struct weft_sched *sched;
    struct weft_driver *driver;          /* timers and I/O: sched/driver.h */
    struct weft_blocking_pool *blocking; /* sched/blocking.c */
    weft_stack_pool *stacks;
    weft_config cfg;
    size_t stack_size;   /* default, rounded to pages */
    bool debug;          /* diagnostics for this runtime's tasks */
    _Atomic bool closed; /* shutdown has begun: no new spawns */
    bool shut_down;      /* shutdown finished: every task has ended */
    bool shutdown_tried; /* weft_runtime_shutdown was called */
};

#endif
