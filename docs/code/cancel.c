/*
 * cancel.c - what cancelling a task does.
 *
 * A coroutine task always runs its function to the end: once cancelled,
 * every suspending call in it returns -ECANCELED, and the function unwinds
 * by ordinary returns, freeing what it holds. A future task is dropped
 * instead: its future's drop operation runs, and it is never polled again.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

/* A coroutine that owns a buffer and works until it is told to stop. */
static void *worker(void *arg)
{
    char *buf = arg; /* ours: we must free it, however we end */
    int rounds = 0, rc;
    while ((rc = weft_yield()) == 0)
        rounds++;
    printf("worker: weft_yield returned %s after %d rounds; freeing\n",
           weft_strerror(rc), rounds);
    free(buf);
    return NULL;
}

/* A future that is never ready, and says when it is dropped. */
static weft_poll never_poll(weft_future *f, weft_cx *cx)
{
    (void)f;
    (void)cx; /* nobody will ever wake us: a real future stores the waker */
    return WEFT_PENDING;
}

static void never_drop(weft_future *f)
{
    (void)f;
    printf("never: dropped\n");
}

static const weft_future_ops never_ops = {
    .poll = never_poll,
    .drop = never_drop,
    .name = "never",
};

static void *root(void *arg)
{
    (void)arg;
    weft_task *co, *fut;
    char *buf = malloc(4096);
    if (!buf)
        return NULL;

    int rc = weft_spawn(NULL, &co, worker, buf); /* worker owns buf now */
    if (rc < 0) {
        free(buf); /* nothing was spawned: buf is still ours */
        return NULL;
    }
    rc = weft_spawn_future(NULL, &fut,
                           weft_future_new(sizeof(weft_future), &never_ops),
                           NULL);
    if (rc < 0) {
        weft_task_cancel(co);
        weft_join(co, NULL);
        weft_task_free(co);
        return NULL;
    }

    for (int i = 0; i < 3; i++) /* let both run a little */
        if (weft_yield() < 0)
            break; /* we were cancelled ourselves: still clean up below */

    weft_task_cancel(co);
    weft_task_cancel(fut);
    printf("join coroutine task: %s\n", weft_strerror(weft_join(co, NULL)));
    printf("join future task:    %s\n", weft_strerror(weft_join(fut, NULL)));
    weft_task_free(co);
    weft_task_free(fut);
    return NULL;
}

int main(void)
{
    weft_runtime *rt;
    if (weft_runtime_new(&rt, NULL) < 0)
        return 1;
    int rc = weft_block_on(rt, root, NULL, NULL);
    weft_runtime_free(rt);
    return rc < 0;
}
