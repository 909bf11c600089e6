/*
 * A leaf future for tests, written only against the public future contract:
 * a gate that some thread opens. Awaiting a closed gate suspends the task;
 * gate_open() (from any thread) stores a value and wakes every waiter.
 */
#ifndef WEFT_TEST_GATE_H
#define WEFT_TEST_GATE_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "weft.h"

#define GATE_MAX_WAITERS 16

struct gate {
    pthread_mutex_t lock;
    int open;
    void *value;
    weft_waker waiters[GATE_MAX_WAITERS];
    atomic_int polls;
    atomic_int drops;
};

static inline void gate_init(struct gate *g)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->lock, NULL);
}

static inline void gate_destroy(struct gate *g)
{
    for (int i = 0; i < GATE_MAX_WAITERS; i++)
        weft_waker_drop(&g->waiters[i]);
    pthread_mutex_destroy(&g->lock);
}

static inline void gate_open(struct gate *g, void *value)
{
    weft_waker wake[GATE_MAX_WAITERS];
    pthread_mutex_lock(&g->lock);
    g->open = 1;
    g->value = value;
    memcpy(wake, g->waiters, sizeof wake);
    memset(g->waiters, 0, sizeof g->waiters);
    pthread_mutex_unlock(&g->lock);
    for (int i = 0; i < GATE_MAX_WAITERS; i++)
        weft_waker_wake(&wake[i]);
}

struct gate_future {
    weft_future base;
    struct gate *gate;
    int slot; /* -1 until registered */
};

static inline weft_poll gate_poll(weft_future *f, weft_cx *cx)
{
    struct gate_future *gf = (struct gate_future *)f;
    struct gate *g = gf->gate;
    atomic_fetch_add(&g->polls, 1);
    pthread_mutex_lock(&g->lock);
    if (g->open) {
        void *v = g->value;
        pthread_mutex_unlock(&g->lock);
        return weft_future_set(f, v, 0);
    }
    if (gf->slot < 0) {
        for (int i = 0; i < GATE_MAX_WAITERS; i++)
            if (!g->waiters[i].vtable) {
                gf->slot = i;
                break;
            }
        if (gf->slot < 0) {
            pthread_mutex_unlock(&g->lock);
            return weft_future_set(f, NULL, -EAGAIN);
        }
    }
    weft_waker *slot = &g->waiters[gf->slot];
    if (!slot->vtable || !weft_waker_will_wake(slot, weft_cx_waker(cx))) {
        weft_waker_drop(slot);
        *slot = weft_waker_clone(weft_cx_waker(cx));
    }
    pthread_mutex_unlock(&g->lock);
    return WEFT_PENDING;
}

static inline void gate_drop(weft_future *f)
{
    struct gate_future *gf = (struct gate_future *)f;
    struct gate *g = gf->gate;
    atomic_fetch_add(&g->drops, 1);
    weft_waker w = {0};
    pthread_mutex_lock(&g->lock);
    if (gf->slot >= 0 && !g->open) {
        w = g->waiters[gf->slot];
        memset(&g->waiters[gf->slot], 0, sizeof w);
    }
    pthread_mutex_unlock(&g->lock);
    weft_waker_drop(&w);
}

static const weft_future_ops gate_ops = {
    .poll = gate_poll,
    .drop = gate_drop,
    .name = "gate",
};

/* A heap future waiting for `g` to open. */
#define gate_wait(g) gate_wait_at((g), WEFT_HERE)
static inline weft_future *gate_wait_at(struct gate *g, const weft_site *site)
{
    struct gate_future *gf =
        (struct gate_future *)weft_future_new_at(sizeof *gf, &gate_ops, site);
    if (!gf)
        return NULL;
    gf->gate = g;
    gf->slot = -1;
    return &gf->base;
}

#endif
