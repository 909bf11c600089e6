/*
 * The blocking pool (blocking.c).
 */
#ifndef WEFT_BLOCKING_H
#define WEFT_BLOCKING_H

#include "internal.h"

struct weft_blocking_pool;

int weft__blocking_pool_new(const weft_config *cfg,
                            struct weft_blocking_pool **out);

/* Refuses new jobs, cancels queued ones and waits up to timeout_ms (< 0: no
 * limit) for running ones. 0, or -ETIMEDOUT with jobs still running. */
int weft__blocking_pool_shutdown(struct weft_blocking_pool *p,
                                 int64_t timeout_ms);

/* Lets go of the pool: freed now if no thread runs, else by the last one. */
void weft__blocking_pool_free(struct weft_blocking_pool *p);

void weft__blocking_pool_stats(struct weft_blocking_pool *p, int *threads,
                               int *idle, size_t *queued);

#endif
