/*
 * Coroutine tasks (coro_task.c): the layout, and the poll the schedulers
 * inline into their loops (see weft__coro_resume_inline in coro.h for why).
 */
#ifndef WEFT_CORO_TASK_H
#define WEFT_CORO_TASK_H

#include "task/task.h"

/* What a coroutine needs only once it runs lives at the top of its own
 * stack (the page it touches first anyway), not in the task: a spawned but
 * not yet started coroutine task costs its 80-byte header and nothing
 * else. */
struct coro_frame {
    weft_coro coro;
    weft_stack view;   /* the stack below this frame, as the coroutine
                          layer sees it (same guard, smaller top) */
    weft_stack *stack; /* the pool's descriptor, to give back */
    struct coro_task *task;
    weft_scope *scope; /* innermost deadline scope, or NULL */
    bool finished;
};

struct coro_task {
    struct weft_task task;
    weft_task_fn fn;
    void *arg;
    struct coro_frame *frame; /* NULL until the first poll */
    const weft_site *site;    /* where it was spawned */
    int err;                  /* the result's error, once complete */
    uint16_t stack_kib;       /* stack size in KiB */
};

_Static_assert(sizeof(struct coro_task) <= 80,
               "a coroutine task header should fit 80 bytes");

/* First poll: takes a stack and builds the frame. NULL (with the task's
 * result set to -ENOMEM) if there is no memory for a stack. */
struct coro_frame *weft__coro_task_start(struct coro_task *ct);

/* The coroutine returned: gives its stack back. */
void weft__coro_task_finish(struct coro_task *ct);

/* Polls a coroutine task on host `h`: runs it until it suspends or
 * returns. */
static inline __attribute__((always_inline)) weft_poll
weft__coro_task_poll(struct weft_task *t, weft_coro_host *h)
{
    struct coro_task *ct = (struct coro_task *)t;
    struct coro_frame *fr = ct->frame;
    if (weft_unlikely(!fr) && !(fr = weft__coro_task_start(ct)))
        return WEFT_READY;
    weft__coro_resume_inline(h, &fr->coro);
    if (weft_likely(!fr->finished))
        return WEFT_PENDING;
    weft__coro_task_finish(ct);
    return WEFT_READY;
}

#endif
