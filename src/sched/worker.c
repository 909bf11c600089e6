/*
 * What every worker does with a task it popped, whatever the flavour.
 */
#include "sched/sched.h"

#include "rt/runtime.h"

__thread struct weft_worker *weft__tls_worker;

__attribute__((noinline)) struct weft_worker *weft__worker_current(void)
{
    /* The empty asm keeps the compiler from treating this function as pure
     * and merging calls across a coroutine switch. */
    __asm__ volatile("" ::: "memory");
    return weft__tls_worker;
}

int weft__worker_enter(struct weft_worker *w, struct weft_sched *s)
{
    int rc = weft__coro_host_init(&w->host);
    if (rc < 0)
        return rc;
    w->sched = s;
    w->rt = s->rt;
    w->current = NULL;
    weft__tls_worker = w;
    return 0;
}

void weft__worker_leave(struct weft_worker *w)
{
    weft__coro_host_destroy(&w->host);
    weft__tls_worker = NULL;
}

bool weft__worker_poll(struct weft_worker *w, struct weft_task *t)
{
    enum task_run run;
    if (t->yielded) {
        /* Still RUNNING from its last poll (see task.h, "yield"); a cancel
         * that came meanwhile only set bits. */
        t->yielded = 0;
        run = atomic_load_explicit(&t->state, memory_order_relaxed) &
                      TASK_CANCELLED
                  ? RUN_CANCELLED
                  : RUN_OK;
    } else {
        run = weft__task_to_running(t);
        if (run == RUN_GONE)
            return false;
    }
    if (run == RUN_CANCELLED && t->vt->abandon) {
        t->vt->abandon(t);
        weft__task_complete(t, NULL, -ECANCELED);
        return false;
    }
    w->current = t;
    w->cx.waker = weft__task_waker(t);
    w->cx.task = t;
    w->cx.budget = WEFT_COOP_BUDGET;
    weft_poll r = t->vt->poll(t, &w->cx);
    w->current = NULL;
    if (r == WEFT_READY) {
        t->yielded = 0; /* woke itself, then finished anyway */
        weft__task_complete(t, t->value, t->err);
        return false;
    }
    if (t->yielded)
        return true;
    return weft__task_to_idle(t);
}
