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
