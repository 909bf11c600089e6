/*
 * The blocking pool: threads that run blocking calls (file I/O, DNS,
 * compression...) so that workers never block.
 *
 * A blocking job is a task that no worker ever polls: it is created RUNNING
 * (owned by the pool), so weft_join, weft_join_future and weft_task_cancel
 * work on it unchanged; the pool thread completes it with the ordinary
 * weft__task_complete, which wakes the joiners.
 *
 * Threads are created on demand up to a cap; an idle thread exits after a
 * keep-alive; jobs queue when the cap is reached (tokio's blocking pool and
 * Go's handling of blocking syscalls make the same trade). The pool lives
 * as long as its last thread: a shutdown that times out leaves it to the
 * threads still running, and the last one frees it.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rt/runtime.h"
#include "sched/blocking.h"
#include "task/task.h"

struct blocking_task {
    struct weft_task task;
    weft_task_fn fn;
    void *arg;
    int err; /* the result's error, once complete */
};

struct weft_blocking_pool {
    pthread_mutex_t lock;
    pthread_cond_t work;  /* a job arrived, or shutdown */
    pthread_cond_t exits; /* a thread exited */
    struct weft_task *head, *tail;
    size_t queued;
    int threads, idle, cap;
    int64_t keepalive_ms;
    bool shutdown;
    bool orphaned; /* the runtime let go: the last thread frees the pool */
};

static void btask_never_polled(struct weft_task *t)
{
    (void)t;
    WEFT_CHECK(0, "a blocking job was scheduled on a worker");
}

static weft_poll btask_poll(struct weft_task *t, weft_cx *cx)
{
    (void)cx;
    btask_never_polled(t);
    return WEFT_PENDING;
}

static void btask_dealloc(struct weft_task *t)
{
    weft__free(t, sizeof(struct blocking_task));
}

static int *btask_err_slot(struct weft_task *t)
{
    return &((struct blocking_task *)t)->err;
}

static const weft_site *btask_site(const struct weft_task *t)
{
    (void)t;
    return NULL;
}

const struct weft_task_vtable weft__blocking_vtable = {
    .poll = btask_poll,
    .abandon = NULL,
    .dealloc = btask_dealloc,
    .err_slot = btask_err_slot,
    .site = btask_site,
};

static void deadline_after(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static void cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
}

int weft__blocking_pool_new(const weft_config *cfg,
                            struct weft_blocking_pool **out)
{
    struct weft_blocking_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    pthread_mutex_init(&p->lock, NULL);
    cond_init_monotonic(&p->work);
    cond_init_monotonic(&p->exits);
    p->cap = cfg->max_blocking_threads > 0 ? cfg->max_blocking_threads : 512;
    p->keepalive_ms =
        cfg->blocking_keepalive_ms > 0 ? cfg->blocking_keepalive_ms : 10000;
    *out = p;
    return 0;
}

static void pool_destroy(struct weft_blocking_pool *p)
{
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->exits);
    pthread_mutex_destroy(&p->lock);
    free(p);
}

static struct weft_task *pop_job(struct weft_blocking_pool *p)
{
    struct weft_task *t = p->head;
    if (t) {
        p->head = t->next;
        if (!p->head)
            p->tail = NULL;
        p->queued--;
    }
    return t;
}

static void run_job(struct weft_task *t)
{
    struct blocking_task *bt = (struct blocking_task *)t;
    bool cancelled = atomic_load(&t->state) & TASK_CANCELLED;
    /* Cancelled before it started: it never runs (like tokio's). */
    void *v = cancelled ? NULL : bt->fn(bt->arg);
    weft__task_complete(t, v, cancelled ? -ECANCELED : 0);
}

/* Returns with the lock held. */
static bool thread_should_exit(struct weft_blocking_pool *p)
{
    if (p->head)
        return false;
    if (p->shutdown)
        return true;
    struct timespec ts;
    deadline_after(&ts, p->keepalive_ms);
    p->idle++;
    int rc = 0;
    while (!p->head && !p->shutdown && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&p->work, &p->lock, &ts);
    p->idle--;
    return !p->head;
}

static void *pool_thread(void *arg)
{
    struct weft_blocking_pool *p = arg;
    pthread_mutex_lock(&p->lock);
    while (!thread_should_exit(p)) {
        struct weft_task *t = pop_job(p);
        pthread_mutex_unlock(&p->lock);
        run_job(t);
        pthread_mutex_lock(&p->lock);
    }
    bool last = --p->threads == 0;
    bool free_it = last && p->orphaned;
    pthread_cond_broadcast(&p->exits);
    pthread_mutex_unlock(&p->lock);
    if (free_it)
        pool_destroy(p);
    return NULL;
}

static int start_thread(struct weft_blocking_pool *p)
{
    pthread_attr_t a;
    pthread_t th;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &a, pool_thread, p);
    pthread_attr_destroy(&a);
    return rc == 0 ? 0 : -EAGAIN;
}

static int submit(struct weft_blocking_pool *p, struct weft_task *t)
{
    pthread_mutex_lock(&p->lock);
    if (p->shutdown) {
        pthread_mutex_unlock(&p->lock);
        return -ESHUTDOWN;
    }
    t->next = NULL;
    if (p->tail)
        p->tail->next = t;
    else
        p->head = t;
    p->tail = t;
    p->queued++;
    if (p->idle > (int)p->queued - 1) {
        pthread_cond_signal(&p->work);
    } else if (p->threads < p->cap) {
        if (start_thread(p) == 0)
            p->threads++;
        else if (p->threads == 0) {
            /* No thread at all to run it: refuse rather than queue
             * forever. */
            pop_job(p);
            pthread_mutex_unlock(&p->lock);
            return -EAGAIN;
        }
    }
    pthread_mutex_unlock(&p->lock);
    return 0;
}

int weft_spawn_blocking(weft_runtime *rt, weft_task **out, weft_task_fn fn,
                        void *arg)
{
    if (out)
        *out = NULL;
    if (!rt)
        rt = weft_runtime_current();
    if (!rt)
        return -EPERM;
    if (atomic_load(&rt->closed))
        return -ESHUTDOWN;
    struct blocking_task *bt = weft__alloc(sizeof *bt);
    if (!bt)
        return -ENOMEM;
    struct weft_task *t = &bt->task;
    weft__task_init(t, TASK_KIND_BLOCKING, out != NULL);
    /* RUNNING from the start: the pool owns it; no worker queues it. The
     * two references of weft__task_complete (owned + poll) are the pool's
     * one, counted twice, plus the handle's. */
    uint64_t bits = TASK_RUNNING | (out ? TASK_JOIN_INTEREST : 0);
    atomic_store(&t->state, bits | (out ? 3 : 2) * TASK_REF_ONE);
    bt->fn = fn;
    bt->err = 0;
    bt->arg = arg;
    int rc = submit(rt->blocking, t);
    if (rc < 0) {
        weft__task_fini(t);
        btask_dealloc(t);
        return rc;
    }
    if (out)
        *out = t;
    return 0;
}

int weft__blocking_pool_shutdown(struct weft_blocking_pool *p,
                                 int64_t timeout_ms)
{
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    /* Jobs that have not started are cancelled, not run. */
    struct weft_task *t;
    while ((t = pop_job(p))) {
        pthread_mutex_unlock(&p->lock);
        weft__task_cancel(t);
        weft__task_complete(t, NULL, -ECANCELED);
        pthread_mutex_lock(&p->lock);
    }
    pthread_cond_broadcast(&p->work);
    struct timespec ts;
    if (timeout_ms >= 0)
        deadline_after(&ts, timeout_ms);
    int rc = 0;
    while (p->threads > 0 && rc != ETIMEDOUT)
        rc = timeout_ms < 0 ? pthread_cond_wait(&p->exits, &p->lock)
                            : pthread_cond_timedwait(&p->exits, &p->lock, &ts);
    int left = p->threads;
    pthread_mutex_unlock(&p->lock);
    return left ? -ETIMEDOUT : 0;
}

void weft__blocking_pool_free(struct weft_blocking_pool *p)
{
    pthread_mutex_lock(&p->lock);
    p->shutdown = true;
    bool free_now = p->threads == 0;
    p->orphaned = !free_now;
    pthread_mutex_unlock(&p->lock);
    if (free_now)
        pool_destroy(p);
}

void weft__blocking_pool_stats(struct weft_blocking_pool *p, int *threads,
                               int *idle, size_t *queued)
{
    pthread_mutex_lock(&p->lock);
    *threads = p->threads;
    *idle = p->idle;
    *queued = p->queued;
    pthread_mutex_unlock(&p->lock);
}
