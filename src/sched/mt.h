/*
 * Internal entry points of the multi-thread scheduler.
 */
#ifndef WEFT_MT_H
#define WEFT_MT_H

#include "internal.h"

struct weft_sched;

#define MT_METRICS_MAX 64

/* Counters a worker keeps; written by that worker only (relaxed atomics so
 * that metrics can read them from any thread). */
struct mt_worker_metrics {
    _Atomic uint64_t polls, steals, parks, overflows, idle_ns;
    uint64_t started_ns;
    uint32_t local_depth;
};

struct mt_metrics {
    int workers;
    size_t live;
    size_t inject_depth;
    struct mt_worker_metrics w[MT_METRICS_MAX];
};

int weft__multi_thread_new(weft_runtime *rt, int nworkers,
                           struct weft_sched **out);
void weft__mt_metrics(struct weft_sched *s, struct mt_metrics *out);

#endif
