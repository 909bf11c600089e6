/*
 * Internal entry points of the multi-thread scheduler.
 */
#ifndef WEFT_MT_H
#define WEFT_MT_H

#include "internal.h"

struct weft_sched;

int weft__multi_thread_new(weft_runtime *rt, int nworkers,
                           struct weft_sched **out);

#endif
