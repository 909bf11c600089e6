/*
 * The current-thread scheduler: every task runs on the thread inside
 * weft_block_on().
 *
 * That thread (the "owner", while it is inside block_on or shutdown) alone
 * touches the local run queue and the owned list, without locks. Other
 * threads - and the owner's own calls made while no one runs the loop - put
 * spawns and wakes on the remote queue under a mutex and unpark the owner;
 * the owner moves them to the local queue every WEFT_REMOTE_INTERVAL polls
 * and whenever it runs dry.
 *
 * The local queue is two FIFOs taken in turn: woken tasks (`hot`) and new
 * or yielding ones (`cold`). A task woken by a timer or a message usually
 * finishes or parks again quickly and gives back its stack and memory,
 * which the next new task then reuses while it is still in the cache; one
 * FIFO would start every queued spawn first, each on fresh memory (W5: a
 * million queued coroutines, each woken only after all the others had
 * started on fresh stacks). Taking the two in turn keeps both moving: no
 * stream of wakes can starve the spawns, and a yield still goes behind
 * every task that was already waiting to start.
 *
 * Its tasks are resident (task.h): they stay RUNNING between polls, so a
 * wake on this thread is a queue push with no atomic operation, and a wake
 * from another thread arrives on the remote queue even for a started task
 * (drain_remote tells the two kinds of entry apart).
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rt/runtime.h"
#include "sched/driver.h"
#include "sched/sched.h"
#include "task/task.h"
#include "util/fifo.h"

struct ct_sched {
    struct weft_sched base;
    struct weft_worker worker;
    /* Two run queues: `hot` holds tasks woken by an event, `cold` new
     * spawns and tasks that yielded. The loop alternates between them when
     * both hold work (see run_once). */
    struct fifo hot, cold;
    bool cold_turn;
    struct weft_task *owned;                /* doubly linked, owner only */
    _Atomic size_t owned_count;             /* read by metrics */
    _Atomic uint64_t polls, parks, idle_ns; /* owner writes, metrics read */
    uint64_t started_ns;
    size_t remote_len;

    pthread_mutex_t lock; /* guards remote and bells; closed is set
                             under it */
    struct fifo remote;   /* spawns, and wakes of tasks not yet started */
    /* Wakes from other threads of started (resident) tasks, each holding a
     * reference. Not linked through the task's queue link, which the owner
     * may be using at that moment (the task may be queued here as well, or
     * completing, when the link holds its result). `spare` is the owner's
     * (drain_remote swaps it with `bells` under the lock and drains it
     * outside). `rescan`: a bell found no memory, so the owner looks at
     * every task for NOTIFIED. */
    struct bells {
        struct weft_task **at;
        size_t n, cap;
    } bells, spare;
    bool rescan;
    _Atomic bool remote_pending;
    _Atomic bool closed;

    struct weft_driver *driver;
    _Atomic bool running; /* a thread is inside block_on or shutdown */
};

static struct ct_sched *ct_of(struct weft_sched *s)
{
    return (struct ct_sched *)s;
}

static bool on_owner(struct ct_sched *s)
{
    return weft__tls_worker == &s->worker;
}

static void owned_link(struct ct_sched *s, struct weft_task *t)
{
    weft__owned_push(&s->owned, t, 1);
    atomic_fetch_add_explicit(&s->owned_count, 1, memory_order_relaxed);
}

static void ct_release(struct weft_sched *base, struct weft_task *t)
{
    struct ct_sched *s = ct_of(base);
    weft__owned_remove(&s->owned, t);
    atomic_fetch_sub_explicit(&s->owned_count, 1, memory_order_relaxed);
}

/* Queues `t` from a thread that is not the owner. Returns false if the
 * scheduler is closed and `new_task` was refused. */
static bool push_remote(struct ct_sched *s, struct weft_task *t, bool new_task)
{
    pthread_mutex_lock(&s->lock);
    if (new_task && s->closed) {
        pthread_mutex_unlock(&s->lock);
        return false;
    }
    fifo_push(&s->remote, t);
    s->remote_len++;
    atomic_store_explicit(&s->remote_pending, true, memory_order_release);
    pthread_mutex_unlock(&s->lock);
    weft__driver_unpark(s->driver);
    return true;
}

/* Doubles the bell array (under the lock). False if there is no memory. */
static bool bells_grow(struct bells *b)
{
    size_t ncap = b->cap ? b->cap * 2 : 16;
    struct weft_task **na = weft__alloc(ncap * sizeof *na);
    if (!na)
        return false;
    if (b->n)
        memcpy(na, b->at, b->n * sizeof *na);
    if (b->at)
        weft__free(b->at, b->cap * sizeof *na);
    b->at = na;
    b->cap = ncap;
    return true;
}

static void bells_free(struct bells *b)
{
    if (b->at)
        weft__free(b->at, b->cap * sizeof *b->at);
    b->at = NULL;
    b->n = b->cap = 0;
}

/* A wake from another thread of a started task (task.h, resident tasks),
 * holding a reference for the owner. */
static void ct_wake_running(struct weft_sched *base, struct weft_task *t)
{
    struct ct_sched *s = ct_of(base);
    bool kept = true;
    pthread_mutex_lock(&s->lock);
    if (s->bells.n < s->bells.cap || bells_grow(&s->bells)) {
        s->bells.at[s->bells.n++] = t;
    } else {
        /* The wake lives on in the task's NOTIFIED bit alone. */
        s->rescan = true;
        kept = false;
    }
    atomic_store_explicit(&s->remote_pending, true, memory_order_release);
    pthread_mutex_unlock(&s->lock);
    if (!kept)
        weft__task_unref(t); /* the waker still holds the task */
    weft__driver_unpark(s->driver);
}

static void drain_remote(struct ct_sched *s)
{
    if (!atomic_load_explicit(&s->remote_pending, memory_order_acquire))
        return;
    struct fifo got;
    pthread_mutex_lock(&s->lock);
    got = s->remote;
    s->remote.head = s->remote.tail = NULL;
    s->remote_len = 0;
    struct bells b = s->bells;
    s->bells = s->spare;
    bool rescan = s->rescan;
    s->rescan = false;
    atomic_store_explicit(&s->remote_pending, false, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
    struct weft_task *t, *next;
    for (t = got.head; t; t = next) {
        next = t->next;
        /* Spawns that came from outside join the owned list here. */
        if (!weft__task_owned(t) && !(atomic_load(&t->state) & TASK_COMPLETE))
            owned_link(s, t);
        fifo_push(&s->hot, t);
    }
    for (size_t i = 0; i < b.n; i++)
        if (weft__task_remote_woken(b.at[i]))
            fifo_push(&s->hot, b.at[i]);
    b.n = 0;
    s->spare = b; /* the owner's alone until the next swap */
    if (weft_unlikely(rescan))
        for (t = s->owned; t; t = t->owned_next)
            if (weft__task_rescan_woken(t))
                fifo_push(&s->hot, t);
}

static int ct_spawn(struct weft_sched *base, struct weft_task *t)
{
    struct ct_sched *s = ct_of(base);
    if (on_owner(s)) {
        if (s->closed)
            return -ESHUTDOWN;
        owned_link(s, t);
        fifo_push(&s->cold, t);
        return 0;
    }
    return push_remote(s, t, true) ? 0 : -ESHUTDOWN;
}

static void ct_schedule(struct weft_sched *base, struct weft_task *t)
{
    struct ct_sched *s = ct_of(base);
    if (on_owner(s))
        fifo_push(&s->hot, t);
    else
        push_remote(s, t, false);
}

/* Counters are written by the owner only: no locked instruction. */
static void stat_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

/* One step of the loop: poll one task, or park when there is none.
 * `tick` counts down the polls to the next look at the remote queue and
 * the timers. */
static inline __attribute__((always_inline)) void run_once(struct ct_sched *s,
                                                           unsigned *tick)
{
    if (weft_unlikely(--*tick == 0)) {
        *tick = WEFT_REMOTE_INTERVAL;
        weft__driver_maintain(s->driver, &s->worker);
        drain_remote(s);
    } else if (!s->hot.head && !s->cold.head) {
        drain_remote(s);
    }
    struct weft_task *t;
    if (s->cold.head && (s->cold_turn || !s->hot.head)) {
        t = fifo_pop(&s->cold);
        s->cold_turn = false;
    } else {
        t = fifo_pop(&s->hot);
        s->cold_turn = true;
    }
    if (!t) {
        uint64_t t0 = (uint64_t)weft__mono_ns();
        weft__driver_park(s->driver, &s->worker, -1, true);
        stat_add(&s->parks, 1);
        stat_add(&s->idle_ns, (uint64_t)weft__mono_ns() - t0);
        return;
    }
    stat_add(&s->polls, 1);
    if (weft__worker_poll(&s->worker, t, true))
        fifo_push(&s->cold, t); /* it yielded */
}

static int enter(struct ct_sched *s)
{
    if (weft__tls_worker)
        return -EPERM; /* inside some runtime's task or loop already */
    if (atomic_exchange(&s->running, true))
        return -EBUSY;
    int rc = weft__worker_enter(&s->worker, &s->base);
    if (rc < 0)
        atomic_store(&s->running, false);
    return rc;
}

static void leave(struct ct_sched *s)
{
    weft__worker_leave(&s->worker);
    atomic_store(&s->running, false);
}

static int ct_block_on(struct weft_sched *base, struct weft_task *root)
{
    struct ct_sched *s = ct_of(base);
    int rc = enter(s);
    if (rc < 0)
        return rc;
    /* The clock may have moved on since the last block_on: look now. */
    weft__driver_maintain(s->driver, &s->worker);
    unsigned tick = WEFT_REMOTE_INTERVAL;
    while (!(atomic_load_explicit(&root->state, memory_order_acquire) &
             TASK_COMPLETE))
        run_once(s, &tick);
    leave(s);
    return 0;
}

/* The current-thread runtime runs its cancelled tasks on the calling thread
 * itself, so there is nothing to time out: a cancelled coroutine never
 * suspends again and runs to its end. */
static int ct_shutdown(struct weft_sched *base, int64_t timeout_ms)
{
    (void)timeout_ms;
    struct ct_sched *s = ct_of(base);
    pthread_mutex_lock(&s->lock);
    s->closed = true;
    pthread_mutex_unlock(&s->lock);
    /* Another thread may still be leaving block_on: wait for it. */
    int rc;
    while ((rc = enter(s)) == -EBUSY)
        sched_yield();
    WEFT_CHECK(rc == 0, "weft_runtime_free called from inside a runtime");
    drain_remote(s);
    for (struct weft_task *t = s->owned; t; t = t->owned_next)
        weft__task_cancel(t);
    unsigned tick = WEFT_REMOTE_INTERVAL;
    while (s->owned || s->hot.head || s->cold.head ||
           atomic_load_explicit(&s->remote_pending, memory_order_acquire))
        run_once(s, &tick);
    leave(s);
    return 0;
}

static void ct_free(struct weft_sched *base)
{
    struct ct_sched *s = ct_of(base);
    bells_free(&s->bells);
    bells_free(&s->spare);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static void ct_metrics(struct weft_sched *base, weft_metrics *out)
{
    struct ct_sched *s = ct_of(base);
    out->workers = 1;
    out->live_tasks = atomic_load(&s->owned_count);
    pthread_mutex_lock(&s->lock);
    out->global_queue_depth = s->remote_len + s->bells.n;
    pthread_mutex_unlock(&s->lock);
    weft_worker_metrics *m = &out->worker[0];
    m->polls = atomic_load_explicit(&s->polls, memory_order_relaxed);
    m->parks = atomic_load_explicit(&s->parks, memory_order_relaxed);
    uint64_t up = (uint64_t)weft__mono_ns() - s->started_ns;
    uint64_t idle = atomic_load_explicit(&s->idle_ns, memory_order_relaxed);
    m->busy_ns = up > idle ? up - idle : 0;
    /* The local queue belongs to the running thread: not read here. */
}

static const struct weft_sched_ops ct_ops = {
    .spawn = ct_spawn,
    .schedule = ct_schedule,
    .wake_running = ct_wake_running,
    .release = ct_release,
    .block_on = ct_block_on,
    .shutdown = ct_shutdown,
    .free = ct_free,
    .metrics = ct_metrics,
};

int weft__current_thread_new(weft_runtime *rt, struct weft_sched **out)
{
    struct ct_sched *s = weft__sched_alloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->base.ops = &ct_ops;
    s->base.rt = rt;
    pthread_mutex_init(&s->lock, NULL);
    s->driver = rt->driver;
    s->started_ns = (uint64_t)weft__mono_ns();
    *out = &s->base;
    return 0;
}
