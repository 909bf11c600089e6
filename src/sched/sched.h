/*
 * The scheduler interface. A runtime has one scheduler: current_thread.c or
 * (later) multi_thread.c. Everything above this line (tasks, futures,
 * drivers) talks to the scheduler only through these operations, so the two
 * flavours plug in side by side.
 */
#ifndef WEFT_SCHED_H
#define WEFT_SCHED_H

#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "coro/coro.h"
#include "task/coro_task.h"
#include "task/task.h"

struct weft_sched;

struct weft_sched_ops {
    /* Registers a new task (NOTIFIED, carrying a queue reference) in the
     * owned list and queues it. -ESHUTDOWN once shutdown has begun (the task
     * is untouched then). Any thread. */
    int (*spawn)(struct weft_sched *s, struct weft_task *t);
    /* Queues a task that became NOTIFIED and carries a queue reference.
     * Any thread; from a foreign thread it unparks the runtime. */
    void (*schedule)(struct weft_sched *s, struct weft_task *t);
    /* Set by a scheduler whose tasks are resident (one thread polls them
     * all: task.h), NULL otherwise. Queues a wake, from a thread that is
     * not the scheduler's, of a task that has started (it is RUNNING); the
     * wake carries a reference. */
    void (*wake_running)(struct weft_sched *s, struct weft_task *t);
    /* Unlinks a task that completed from the owned list. Called on the
     * thread that completed it. */
    void (*release)(struct weft_sched *s, struct weft_task *t);
    /* Runs until `root` (already spawned, handle held by the caller)
     * completes. Called on a thread outside the runtime. */
    int (*block_on)(struct weft_sched *s, struct weft_task *root);
    /* Refuses new spawns, cancels every task and runs them to their end,
     * waiting at most timeout_ms (< 0: no limit) for tasks on other threads.
     * Returns 0, or -ETIMEDOUT with tasks still running. Idempotent. Called
     * on a thread outside the runtime. */
    int (*shutdown)(struct weft_sched *s, int64_t timeout_ms);
    /* Frees the scheduler after a shutdown that returned 0. */
    void (*free)(struct weft_sched *s);
    /* Fills the scheduler's part of *out (zeroed by the caller). */
    void (*metrics)(struct weft_sched *s, weft_metrics *out);
};

struct weft_sched {
    const struct weft_sched_ops *ops;
    weft_runtime *rt;
};

/* Allocates a zeroed scheduler (a struct that starts with weft_sched),
 * aligned to WEFT_SCHED_ALIGN: a task keeps its kind, its owned-list
 * number and the yield bit in the low bits of its scheduler pointer.
 * Freed with free(). */
static inline void *weft__sched_alloc(size_t size)
{
    size_t n = (size + WEFT_SCHED_ALIGN - 1) & ~(size_t)(WEFT_SCHED_ALIGN - 1);
    void *p = aligned_alloc(WEFT_SCHED_ALIGN, n);
    if (p)
        memset(p, 0, n);
    return p;
}

/* The owned list a scheduler keeps of its live tasks (doubly linked through
 * owned_prev/owned_next, `*head` its first task), so that shutdown can find
 * and cancel them. `no` is the list's number plus one, recorded in the
 * task's sched word (a scheduler with one list passes 1). The caller
 * serialises each list. */
static inline void weft__owned_push(struct weft_task **head,
                                    struct weft_task *t, unsigned no)
{
    weft__task_set_owned_no(t, no);
    t->owned_prev = NULL;
    t->owned_next = *head;
    if (*head)
        (*head)->owned_prev = t;
    *head = t;
}

static inline void weft__owned_remove(struct weft_task **head,
                                      struct weft_task *t)
{
    if (t->owned_prev)
        t->owned_prev->owned_next = t->owned_next;
    else
        *head = t->owned_next;
    if (t->owned_next)
        t->owned_next->owned_prev = t->owned_prev;
    weft__task_set_owned_no(t, 0);
}

/* A thread that polls tasks: the thread inside block_on for the current-
 * thread flavour, each worker thread for the multi-thread one. */
struct weft_worker {
    struct weft_sched *sched;
    weft_runtime *rt;
    struct weft_task *current; /* the task being polled */
    weft_coro_host host;       /* what coroutines switch back to */
    weft_cx cx;
    /* time (src/time): this worker's timing wheel, made at its first
     * timer, and the clock in ms as it last read it (weft_now) */
    struct weft_wheel *wheel;
    int64_t now_ms;
};

/* The worker of the calling thread, or NULL. Coroutines may move between
 * threads, so code that runs on a coroutine stack must call
 * weft__worker_current() again after every suspension instead of keeping the
 * pointer (or the address of the thread-local) across it: the function is
 * out of line so that the compiler cannot cache the thread-local address. */
extern __thread struct weft_worker *weft__tls_worker;
struct weft_worker *weft__worker_current(void);

/* Polls `t` (which the caller popped from a run queue) on worker `w`.
 * Returns true if the task must go back to the end of a run queue (it
 * yielded, or was woken while running); the queue reference goes with it.
 * `resident`: the scheduler's tasks are resident (task.h), so one that
 * returns PENDING stays RUNNING instead of going idle. Inline, and coroutine
 * tasks resumed without the vtable call, so that a coroutine switches straight
 * back into the scheduler's loop (coro.h, weft__coro_resume_inline). */
static inline __attribute__((always_inline)) bool
weft__worker_poll(struct weft_worker *w, struct weft_task *t, bool resident)
{
    enum task_run run;
    uintptr_t word = weft__task_word(t);
    if (word & TASK_W_YIELDED) {
        /* Still RUNNING from its last poll (see task.h, "yield"); a cancel
         * that came meanwhile only set bits. */
        word &= ~(uintptr_t)TASK_W_YIELDED;
        atomic_store_explicit(&t->sched_word, word, memory_order_relaxed);
        uint64_t st = atomic_load_explicit(&t->state, memory_order_relaxed);
        if (resident && weft_unlikely(st & TASK_NOTIFIED))
            weft__task_take_notified(t);
        run = st & TASK_CANCELLED ? RUN_CANCELLED : RUN_OK;
    } else {
        run = weft__task_to_running(t);
        if (run == RUN_GONE)
            return false;
    }
    unsigned kind = (unsigned)(word & TASK_W_KIND);
    if (weft_unlikely(run == RUN_CANCELLED) && kind != TASK_KIND_CORO) {
        weft__task_vtables[kind]->abandon(t);
        weft__task_complete(t, NULL, -ECANCELED);
        return false;
    }
    w->current = t;
    w->cx.waker = weft__task_waker(t);
    w->cx.task = t;
    w->cx.budget = WEFT_COOP_BUDGET;
    /* Both kinds a worker polls are called directly (blocking jobs never
     * reach a worker). */
    weft_poll r = kind == TASK_KIND_CORO ? weft__coro_task_poll(t, &w->host)
                                         : weft__ftask_poll(t, &w->cx);
    w->current = NULL;
    word = weft__task_word(t);
    if (r == WEFT_READY) {
        if (word & TASK_W_YIELDED) /* woke itself, then finished anyway */
            weft__task_set_bits(t, TASK_W_YIELDED, false);
        weft__task_finish(t); /* the poll stored the result */
        return false;
    }
    if (word & TASK_W_YIELDED)
        return true;
    if (resident)
        return false; /* parked: it stays RUNNING (task.h) */
    return weft__task_to_idle(t);
}

/* Binds the calling thread to `w` (host, TLS). Returns 0 or -ENOMEM. */
int weft__worker_enter(struct weft_worker *w, struct weft_sched *s);
void weft__worker_leave(struct weft_worker *w);

/* Schedulers. */
int weft__current_thread_new(weft_runtime *rt, struct weft_sched **out);

#endif
