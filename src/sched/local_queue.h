/*
 * A worker's local run queue: a bounded ring that its owner pushes to and
 * pops from without locks, and that other workers steal half of.
 *
 * This is the shape of Go's runq (runtime/proc.go: runqput, runqget,
 * runqgrab): `tail` is written only by the owner; `head` moves by CAS, by
 * the owner popping one task or by a thief taking a batch. A thief copies
 * the slots it wants first and then claims them with one CAS on head; the
 * owner never writes a slot between head and tail, so a successful CAS
 * proves the copies were valid.
 */
#ifndef WEFT_LOCAL_QUEUE_H
#define WEFT_LOCAL_QUEUE_H

#include "internal.h"

#ifndef WEFT_LOCAL_QUEUE_CAP
#define WEFT_LOCAL_QUEUE_CAP 256
#endif
#define LQ_MASK (WEFT_LOCAL_QUEUE_CAP - 1)

struct weft_task;

struct local_queue {
    _Atomic uint32_t head;
    char pad_[60];
    _Atomic uint32_t tail;
    _Atomic(struct weft_task *) slots[WEFT_LOCAL_QUEUE_CAP];
};

static inline void lq_init(struct local_queue *q)
{
    atomic_init(&q->head, 0);
    atomic_init(&q->tail, 0);
}

static inline uint32_t lq_len(struct local_queue *q)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t t = atomic_load_explicit(&q->tail, memory_order_acquire);
    return t - h;
}

/* Owner: pushes `t` at the tail. Returns false if the queue is full (the
 * caller moves half of it elsewhere with lq_pop_half and retries). */
static inline bool lq_push(struct local_queue *q, struct weft_task *t)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t tl = atomic_load_explicit(&q->tail, memory_order_relaxed);
    if (tl - h >= WEFT_LOCAL_QUEUE_CAP)
        return false;
    atomic_store_explicit(&q->slots[tl & LQ_MASK], t, memory_order_relaxed);
    atomic_store_explicit(&q->tail, tl + 1, memory_order_release);
    return true;
}

/* Owner: pops from the head. NULL if empty. */
static inline struct weft_task *lq_pop(struct local_queue *q)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    for (;;) {
        uint32_t tl = atomic_load_explicit(&q->tail, memory_order_relaxed);
        if (tl == h)
            return NULL;
        struct weft_task *t =
            atomic_load_explicit(&q->slots[h & LQ_MASK], memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&q->head, &h, h + 1,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            return t;
    }
}

/* Owner, queue full: takes the older half out into `out` (room for
 * WEFT_LOCAL_QUEUE_CAP / 2). Returns how many, 0 if thieves got there first
 * (the caller retries its push). */
static inline uint32_t lq_pop_half(struct local_queue *q,
                                   struct weft_task **out)
{
    uint32_t h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t tl = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint32_t n = (tl - h) / 2;
    if (n != WEFT_LOCAL_QUEUE_CAP / 2)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        out[i] = atomic_load_explicit(&q->slots[(h + i) & LQ_MASK],
                                      memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(
            &q->head, &h, h + n, memory_order_acq_rel, memory_order_acquire))
        return 0;
    return n;
}

/* Thief: moves half of `victim`'s tasks into `q` (which the calling thread
 * owns) and returns one of them to run, or NULL if there was nothing. */
static inline struct weft_task *lq_steal_into(struct local_queue *victim,
                                              struct local_queue *q,
                                              uint32_t *stolen)
{
    uint32_t tl = atomic_load_explicit(&q->tail, memory_order_relaxed);
    uint32_t my_h = atomic_load_explicit(&q->head, memory_order_acquire);
    uint32_t room = WEFT_LOCAL_QUEUE_CAP - (tl - my_h);
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->head, memory_order_acquire);
        uint32_t vt = atomic_load_explicit(&victim->tail, memory_order_acquire);
        uint32_t n = vt - h;
        n -= n / 2;
        if (n == 0)
            return NULL;
        if (n > WEFT_LOCAL_QUEUE_CAP / 2)
            continue; /* inconsistent snapshot: retry */
        if (n > room)
            n = room;
        if (n == 0)
            return NULL;
        for (uint32_t i = 0; i < n; i++) {
            struct weft_task *t = atomic_load_explicit(
                &victim->slots[(h + i) & LQ_MASK], memory_order_relaxed);
            atomic_store_explicit(&q->slots[(tl + i) & LQ_MASK], t,
                                  memory_order_relaxed);
        }
        if (atomic_compare_exchange_weak_explicit(&victim->head, &h, h + n,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire)) {
            /* Keep the last one to run; publish the rest. */
            n--;
            struct weft_task *run = atomic_load_explicit(
                &q->slots[(tl + n) & LQ_MASK], memory_order_relaxed);
            if (n)
                atomic_store_explicit(&q->tail, tl + n, memory_order_release);
            *stolen = n + 1;
            return run;
        }
    }
}

#endif
