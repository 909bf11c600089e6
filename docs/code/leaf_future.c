/*
 * leaf_future.c - a leaf future that a foreign thread completes.
 *
 * offload(fn, arg) is a future whose first poll starts a plain pthread
 * running fn(arg); the future is ready with fn's return value. The helper
 * thread knows nothing about weft except a waker, which it wakes when done.
 * This is the pattern behind every leaf future: store a waker, return
 * PENDING; whoever makes progress wakes the waker; the next poll finds the
 * result.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft.h>

typedef void *(*job_fn)(void *);

/* What the future and the helper thread share. Each holds a reference; the
 * last one to let go frees it, so either side may finish first. */
struct job {
    pthread_mutex_t lock; /* guards done, value, waker, refs */
    job_fn fn;
    void *arg;
    int done;
    void *value;
    weft_waker waker; /* whom to wake; a no-op waker until the first poll */
    int refs;
};

static void job_unref(struct job *j)
{
    pthread_mutex_lock(&j->lock);
    int last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (last) {
        pthread_mutex_destroy(&j->lock);
        free(j);
    }
}

static void *helper(void *arg)
{
    struct job *j = arg;
    void *value = j->fn(j->arg); /* the slow part, off the runtime */

    pthread_mutex_lock(&j->lock);
    j->done = 1;
    j->value = value;
    weft_waker w = j->waker; /* take the waker out ... */
    j->waker.vtable = NULL;
    pthread_mutex_unlock(&j->lock);

    weft_waker_wake(&w); /* ... and wake it outside the lock */
    job_unref(j);
    return NULL;
}

struct offload_future {
    weft_future base; /* first member */
    job_fn fn;
    void *arg;
    struct job *job; /* NULL until the first poll */
};

/* The first poll starts the work. Later polls (after a wake, or spurious
 * ones) check for the result and keep the stored waker current. */
static weft_poll offload_poll(weft_future *f, weft_cx *cx)
{
    struct offload_future *of = (struct offload_future *)f;
    const weft_waker *me = weft_cx_waker(cx);

    if (!of->job) {
        struct job *j = calloc(1, sizeof *j);
        if (!j)
            return weft_future_set(f, NULL, -ENOMEM);
        pthread_mutex_init(&j->lock, NULL);
        j->fn = of->fn;
        j->arg = of->arg;
        j->refs = 2; /* this future and the helper */
        j->waker = weft_waker_clone(me);
        pthread_t th;
        int rc = pthread_create(&th, NULL, helper, j);
        if (rc != 0) {
            weft_waker_drop(&j->waker);
            pthread_mutex_destroy(&j->lock);
            free(j);
            return weft_future_set(f, NULL, -rc);
        }
        pthread_detach(th);
        of->job = j;
        return WEFT_PENDING;
    }

    struct job *j = of->job;
    weft_waker stale = {0};
    pthread_mutex_lock(&j->lock);
    int done = j->done;
    void *value = j->value;
    if (!done && !weft_waker_will_wake(&j->waker, me)) {
        stale = j->waker; /* polled by another task than last time */
        j->waker = weft_waker_clone(me);
    }
    pthread_mutex_unlock(&j->lock);
    weft_waker_drop(&stale);
    return done ? weft_future_set(f, value, 0) : WEFT_PENDING;
}

/* Runs once, whether the future finished or was abandoned (its task was
 * cancelled). The helper cannot be stopped: let go of the job, and it frees
 * the job when it is done, waking no one. */
static void offload_drop(weft_future *f)
{
    struct offload_future *of = (struct offload_future *)f;
    struct job *j = of->job;
    if (!j)
        return; /* never polled: nothing was started */
    pthread_mutex_lock(&j->lock);
    weft_waker w = j->waker;
    j->waker.vtable = NULL;
    pthread_mutex_unlock(&j->lock);
    weft_waker_drop(&w);
    job_unref(j);
}

static const weft_future_ops offload_ops = {
    .poll = offload_poll,
    .drop = offload_drop,
    .name = "offload",
};

/* The constructor takes the caller's site, so that diagnostics name the
 * line that created the future, not this function. */
static weft_future *offload_at(job_fn fn, void *arg, const weft_site *site)
{
    struct offload_future *of = (struct offload_future *)weft_future_new_at(
        sizeof *of, &offload_ops, site);
    if (!of)
        return NULL; /* weft_await(NULL, ...) returns -ENOMEM */
    of->fn = fn;
    of->arg = arg;
    return &of->base;
}
#define offload(fn, arg) offload_at((fn), (arg), WEFT_HERE)

/* ---- using it ---- */

static void *sum_to(void *arg) /* blocking, CPU-bound work */
{
    intptr_t n = (intptr_t)arg, sum = 0;
    for (intptr_t i = 1; i <= n; i++)
        sum += i;
    return (void *)sum;
}

static void *root(void *arg)
{
    (void)arg;
    void *sum;
    int rc = weft_await(offload(sum_to, (void *)(intptr_t)1000), &sum);
    if (rc < 0) {
        fprintf(stderr, "offload: %s\n", weft_strerror(rc));
        return NULL;
    }
    printf("1 + 2 + ... + 1000 = %ld\n", (long)(intptr_t)sum);
    return NULL;
}

int main(void)
{
    weft_runtime *rt;
    int rc = weft_runtime_new(&rt, NULL);
    if (rc < 0)
        return 1;
    rc = weft_block_on(rt, root, NULL, NULL);
    weft_runtime_free(rt);
    return rc < 0;
}
