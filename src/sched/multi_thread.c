/*
 * The multi-thread work-stealing scheduler.
 *
 * Each worker thread owns a bounded local queue (local_queue.h) and a LIFO
 * slot; a mutex-protected injection queue takes spawns and wakes from
 * outside the workers and the overflow of full local queues. The worker loop
 * (worker_run) reads like the design:
 *
 *   tick
 *   every WEFT_GLOBAL_INTERVAL ticks: maintenance (timers), inject first
 *   a deferred notification due? (spread_due: wake affinity)
 *   next_task:  LIFO slot (at most WEFT_MAX_LIFO_POLLS in a row),
 *               local queue, injection queue
 *   steal:      become a searcher (at most half the busy workers search),
 *               take half of a random victim's queue, then the inject queue
 *   park:       the first idle worker to get the driver sleeps in it
 *               (timers, I/O); the others sleep on their own parker
 *
 * The shape and the numbers follow tokio (runtime/scheduler/multi_thread:
 * worker.rs, idle.rs, queue.rs) and Go (runtime/proc.go: findrunnable,
 * runqsteal, the spinning-M limit).
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rt/runtime.h"
#include "sched/driver.h"
#include "sched/local_queue.h"
#include "sched/mt.h"
#include "sched/park.h"
#include "sched/sched.h"
#include "sync/sync.h"
#include "task/task.h"
#include "util/fifo.h"

/* Ticks between two looks at the injection queue first (fairness). */
#ifndef WEFT_GLOBAL_INTERVAL
#define WEFT_GLOBAL_INTERVAL 61
#endif
/* Consecutive polls of LIFO-slot tasks before the slot's task must go to
 * the back of the queue, so that two tasks waking each other cannot
 * starve the rest. */
#ifndef WEFT_MAX_LIFO_POLLS
#define WEFT_MAX_LIFO_POLLS 3
#endif
/* Tasks a worker collects, finished here but owned by another worker's
 * shard, before it unlinks them in one lock per shard. */
#ifndef WEFT_RELEASE_BATCH
#define WEFT_RELEASE_BATCH 64
#endif
/* A task that the running task wakes and that lands in the stealable queue
 * (the LIFO slot was taken) does not wake an idle worker at once: only if
 * it still waits in the queue WEFT_SPREAD_NS later (looked at between
 * polls), or at once if the queue holds WEFT_SPREAD_QUEUE tasks or more.
 * See "Wake affinity" in design.md. */
#ifndef WEFT_SPREAD_NS
#define WEFT_SPREAD_NS 20000
#endif
#ifndef WEFT_SPREAD_QUEUE
#define WEFT_SPREAD_QUEUE 16
#endif
/* How often a parked worker looks whether prefaulted chunks went stale
 * (weft__mem_trim_ready), while there are any. */
#define READY_LOOK_NS 10000000
/* Shards are numbered 1..MAX_SHARDS in the task's sched word (TASK_W_OWNED). */
#define MAX_SHARDS 255

/* Counters a worker keeps; written by that worker only (relaxed atomics so
 * that metrics can read them from any thread). */
struct mt_worker_metrics {
    _Atomic uint64_t polls, steals, parks, overflows, idle_ns;
    uint64_t started_ns;
};

struct owned_shard {
    struct sync_lock lock;
    struct weft_task *head;
} __attribute__((aligned(64)));

struct mt_worker {
    struct weft_worker base; /* must be first */
    struct mt_sched *s;
    int index;
    struct owned_shard *shard; /* where this worker's spawns are linked */
    /* Live-task counters, written by this worker only: tasks it spawned and
     * tasks it finished (live = sum of spawned - sum of done). */
    _Atomic uint64_t spawned, done;
    /* Finished tasks of other shards, each holding a reference, waiting to
     * be unlinked in a batch (release_flush). */
    uint32_t nrel;
    struct weft_task *rel[WEFT_RELEASE_BATCH];
    bool searching;
    _Atomic bool parked; /* in the sleepers list */
    _Atomic bool in_driver;
    struct weft_task *lifo; /* owner only */
    unsigned lifo_polls;
    /* A deferred notification (owner only): due at spread_at (0: none)
     * unless the queue's head has reached spread_mark by then. */
    uint64_t spread_at;
    uint32_t spread_mark;
    uint32_t tick;
    uint64_t rng;
    struct weft_parker parker;
    pthread_t thread;
    bool started;
    struct mt_worker_metrics m;
    struct local_queue q;
} __attribute__((aligned(64)));

struct mt_sched {
    struct weft_sched base;
    int n;
    struct mt_worker *workers;

    /* injection queue */
    pthread_mutex_t inject_lock;
    struct fifo inject;
    _Atomic size_t inject_len;

    /* idle workers: counts packed like tokio's idle.rs, sleepers under lock */
    _Atomic uint32_t idle_state; /* searching | unparked << 16 */
    pthread_mutex_t idle_lock;
    int *sleepers;
    int nsleepers;

    /* Owned tasks: one shard per worker (shared round robin past
     * MAX_SHARDS - 1 workers) and the last one for spawns from outside. */
    struct owned_shard *shards;
    int nshards;
    _Atomic uint64_t remote_spawned, remote_done; /* outside the workers */
    _Atomic bool closed;
    _Atomic bool stop;
    struct weft_parker shutdown_parker;
    uint64_t started_ns;

    pthread_mutex_t driver_lock;
    struct weft_driver *driver;

    /* A worker out of work spins this long looking for some before it
     * parks (WEFT_PARK_SPIN_NS; 0: never), one worker at a time. */
    uint64_t spin_ns;
    _Atomic bool spinner;
};

#define IDLE_SEARCH_ONE 1u
#define IDLE_UNPARK_ONE (1u << 16)
#define IDLE_SEARCH_MASK 0xffffu

/* Counters are written by their worker only: no locked instruction. */
#define STAT_ADD(x, n)                                                         \
    atomic_store_explicit(                                                     \
        &(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n),          \
        memory_order_relaxed)

static struct mt_sched *mt_of(struct weft_sched *s)
{
    return (struct mt_sched *)s;
}

/* The worker of `s` running on this thread, or NULL. */
static struct mt_worker *local_worker(struct mt_sched *s)
{
    struct weft_worker *w = weft__tls_worker;
    if (w && w->sched == &s->base)
        return (struct mt_worker *)w;
    return NULL;
}

static uint32_t rand_below(struct mt_worker *w, uint32_t n)
{
    /* xorshift64* */
    w->rng ^= w->rng >> 12;
    w->rng ^= w->rng << 25;
    w->rng ^= w->rng >> 27;
    return (uint32_t)(((w->rng * 0x2545F4914F6CDD1Dull) >> 32) % n);
}

/* ---- injection queue ---- */

static void inject_push_batch(struct mt_sched *s, struct weft_task **ts,
                              uint32_t n, struct weft_task *extra)
{
    pthread_mutex_lock(&s->inject_lock);
    for (uint32_t i = 0; i < n; i++)
        fifo_push(&s->inject, ts[i]);
    if (extra)
        fifo_push(&s->inject, extra);
    atomic_fetch_add(&s->inject_len, n + (extra != NULL)); /* seq_cst */
    pthread_mutex_unlock(&s->inject_lock);
}

static inline void push_local(struct mt_worker *w, struct weft_task *t);

/* Takes a fair share of the injection queue (its length over the number
 * of workers, plus one, as tokio does) in one lock: returns one task and
 * puts the rest in `w`'s local queue. */
static struct weft_task *inject_pop(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    if (!atomic_load_explicit(&s->inject_len, memory_order_acquire))
        return NULL;
    uint32_t room = WEFT_LOCAL_QUEUE_CAP - lq_len(&w->q);
    if (room > WEFT_LOCAL_QUEUE_CAP / 2)
        room = WEFT_LOCAL_QUEUE_CAP / 2;
    struct weft_task *got[WEFT_LOCAL_QUEUE_CAP / 2 + 1];
    uint32_t n = 0;
    pthread_mutex_lock(&s->inject_lock);
    size_t len = atomic_load_explicit(&s->inject_len, memory_order_relaxed);
    size_t want = len / (size_t)s->n + 1;
    if (want > room + 1)
        want = room + 1;
    while (n < want && (got[n] = fifo_pop(&s->inject)))
        n++;
    if (n)
        atomic_fetch_sub_explicit(&s->inject_len, n, memory_order_relaxed);
    pthread_mutex_unlock(&s->inject_lock);
    for (uint32_t i = 1; i < n; i++)
        push_local(w, got[i]);
    return n ? got[0] : NULL;
}

/* ---- idle workers ---- */

static void unpark_worker(struct mt_worker *w)
{
    weft__parker_unpark(&w->parker);
    if (atomic_load(&w->in_driver))
        weft__driver_unpark(w->s->driver);
}

static bool should_notify(struct mt_sched *s)
{
    uint32_t st = atomic_load(&s->idle_state);
    return (st & IDLE_SEARCH_MASK) == 0 && (st >> 16) < (uint32_t)s->n;
}

/* Wakes one sleeping worker to look for work, unless one is searching
 * already (it will find the work, and wake another when it does). */
static void notify_parked(struct mt_sched *s)
{
    /* The queue push before this call and the load in should_notify are
     * sequentially consistent, as are park()'s count update and its look
     * at the queues: either we see the parking worker's count, or it sees
     * the work we queued (no fence: TSan does not model fences). */
    if (!should_notify(s))
        return;
    pthread_mutex_lock(&s->idle_lock);
    if (!should_notify(s) || s->nsleepers == 0) {
        pthread_mutex_unlock(&s->idle_lock);
        return;
    }
    atomic_fetch_add(&s->idle_state, IDLE_SEARCH_ONE | IDLE_UNPARK_ONE);
    struct mt_worker *w = &s->workers[s->sleepers[--s->nsleepers]];
    w->parked = false;
    pthread_mutex_unlock(&s->idle_lock);
    unpark_worker(w);
}

static bool transition_to_searching(struct mt_worker *w)
{
    if (w->searching)
        return true;
    struct mt_sched *s = w->s;
    uint32_t st = atomic_load(&s->idle_state);
    uint32_t searching = st & IDLE_SEARCH_MASK, unparked = st >> 16;
    /* Bound the searchers to half of the busy workers, as Go and tokio do:
     * one wake must not send every idle thread hunting. */
    if (2 * searching >= unparked)
        return false;
    atomic_fetch_add(&s->idle_state, IDLE_SEARCH_ONE);
    w->searching = true;
    return true;
}

/* A searcher found work: stop searching; if it was the last searcher, wake
 * another worker, since more work may be waiting. */
static void transition_from_searching(struct mt_worker *w)
{
    if (!w->searching)
        return;
    w->searching = false;
    uint32_t prev = atomic_fetch_sub(&w->s->idle_state, IDLE_SEARCH_ONE);
    if ((prev & IDLE_SEARCH_MASK) == 1)
        notify_parked(w->s);
}

/* Returns true if this was the last searching worker. */
static bool transition_to_parked(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    pthread_mutex_lock(&s->idle_lock);
    uint32_t dec = IDLE_UNPARK_ONE + (w->searching ? IDLE_SEARCH_ONE : 0);
    uint32_t prev = atomic_fetch_sub(&s->idle_state, dec);
    s->sleepers[s->nsleepers++] = w->index;
    w->parked = true;
    pthread_mutex_unlock(&s->idle_lock);
    bool last = w->searching && (prev & IDLE_SEARCH_MASK) == 1;
    w->searching = false;
    return last;
}

/* Leaves the sleepers list if still in it (woken by the driver or spuriously
 * with work of its own). Returns true if a notifier had already taken it out
 * (then it is counted as searching). */
static bool transition_from_parked(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    pthread_mutex_lock(&s->idle_lock);
    bool notified = !w->parked;
    if (w->parked) {
        for (int i = 0; i < s->nsleepers; i++)
            if (s->sleepers[i] == w->index) {
                s->sleepers[i] = s->sleepers[--s->nsleepers];
                break;
            }
        w->parked = false;
        atomic_fetch_add(&s->idle_state, IDLE_UNPARK_ONE);
    }
    pthread_mutex_unlock(&s->idle_lock);
    return notified;
}

static bool work_anywhere(struct mt_sched *s)
{
    if (atomic_load(&s->inject_len))
        return true;
    for (int i = 0; i < s->n; i++)
        if (lq_len(&s->workers[i].q))
            return true;
    return false;
}

/* ---- queues of one worker ---- */

/* A full local queue sends half of itself and `t` to the injection queue in
 * one batch. */
static __attribute__((noinline)) void push_overflow(struct mt_worker *w,
                                                    struct weft_task *t)
{
    while (!lq_push(&w->q, t)) {
        struct weft_task *half[WEFT_LOCAL_QUEUE_CAP / 2];
        uint32_t n = lq_pop_half(&w->q, half);
        if (n) {
            inject_push_batch(w->s, half, n, t);
            STAT_ADD(w->m.overflows, 1);
            return;
        }
    }
}

/* Pushes to the local queue (inline: a yield's hot path). */
static inline void push_local(struct mt_worker *w, struct weft_task *t)
{
    if (weft_unlikely(!lq_push(&w->q, t)))
        push_overflow(w, t);
}

/* The running task woke a task that went to the stealable queue, where it
 * now ends at queue position `mark`. This worker will most likely run it
 * within microseconds (the waker is about to block, as a receiver that
 * freed a channel's slots does after waking its senders); an idle worker
 * woken for it would take tens of microseconds to come and steal it, and
 * would then split tasks that share a channel across two CPUs. So the
 * notification waits: spread_due() sends it if the task is still queued
 * WEFT_SPREAD_NS later. A long queue is spread at once. */
static void spread_later(struct mt_worker *w)
{
    uint32_t tail = atomic_load_explicit(&w->q.tail, memory_order_relaxed);
    if (lq_len(&w->q) >= WEFT_SPREAD_QUEUE || w->s->n == 1) {
        notify_parked(w->s);
        return;
    }
    w->spread_mark = tail;
    if (!w->spread_at)
        w->spread_at = (uint64_t)weft__mono_ns() + WEFT_SPREAD_NS;
}

/* Between polls, with a notification deferred: cancels it if the tasks it
 * was for have left the queue, sends it if they waited too long. */
static __attribute__((noinline)) void spread_due(struct mt_worker *w)
{
    uint32_t head = atomic_load_explicit(&w->q.head, memory_order_relaxed);
    if ((int32_t)(head - w->spread_mark) >= 0) {
        w->spread_at = 0;
    } else if ((uint64_t)weft__mono_ns() >= w->spread_at) {
        w->spread_at = 0;
        notify_parked(w->s);
    }
}

static void schedule_local(struct mt_worker *w, struct weft_task *t,
                           bool is_yield)
{
    if (is_yield || !w->base.current) {
        /* A yield goes to the back; a wake from outside any poll (the
         * driver, a task's completion waking its joiner) too. */
        push_local(w, t);
        notify_parked(w->s);
        return;
    }
    /* The running task woke `t`: run it next, on this warm cache. */
    struct weft_task *prev = w->lifo;
    w->lifo = t;
    if (prev) {
        push_local(w, prev);
        spread_later(w);
    }
}

/* ---- owned tasks and the live count ---- */

/* Spawned minus finished, summed over the workers. Read after the shards
 * were closed, the spawn counts are final and the done counts only grow, so
 * 0 means that every task has finished. Elsewhere it is an estimate. */
static uint64_t live_count(struct mt_sched *s)
{
    uint64_t spawned =
        atomic_load_explicit(&s->remote_spawned, memory_order_acquire);
    uint64_t done = atomic_load_explicit(&s->remote_done, memory_order_acquire);
    for (int i = 0; i < s->n; i++) {
        spawned +=
            atomic_load_explicit(&s->workers[i].spawned, memory_order_acquire);
        done += atomic_load_explicit(&s->workers[i].done, memory_order_acquire);
    }
    return spawned > done ? spawned - done : 0;
}

/* Unlinks the batch of finished tasks `w` collected from other shards, one
 * lock per run of the same shard, then drops the references they held. */
static __attribute__((noinline)) void release_flush(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    uint32_t n = w->nrel;
    if (!n)
        return;
    struct owned_shard *locked = NULL;
    for (uint32_t i = 0; i < n; i++) {
        struct weft_task *t = w->rel[i];
        struct owned_shard *sh = &s->shards[weft__task_owned_no(t) - 1];
        if (sh != locked) {
            if (locked)
                sync_unlock(&locked->lock);
            sync_lock(&sh->lock);
            locked = sh;
        }
        weft__owned_remove(&sh->head, t);
    }
    sync_unlock(&locked->lock);
    w->nrel = 0;
    for (uint32_t i = 0; i < n; i++)
        weft__task_unref(w->rel[i]);
}

static int mt_spawn(struct weft_sched *base, struct weft_task *t)
{
    struct mt_sched *s = mt_of(base);
    struct mt_worker *w = local_worker(s);
    struct owned_shard *sh = w ? w->shard : &s->shards[s->nshards - 1];
    sync_lock(&sh->lock);
    if (atomic_load_explicit(&s->closed, memory_order_relaxed)) {
        sync_unlock(&sh->lock);
        return -ESHUTDOWN;
    }
    weft__owned_push(&sh->head, t, (unsigned)(sh - s->shards + 1));
    /* Counted under the shard lock, so that shutdown, which closes every
     * shard under its lock, sees every spawn it let in. */
    if (w)
        STAT_ADD(w->spawned, 1);
    else
        atomic_fetch_add(&s->remote_spawned, 1);
    sync_unlock(&sh->lock);
    if (w)
        push_local(w, t);
    else
        inject_push_batch(s, NULL, 0, t);
    notify_parked(s);
    return 0;
}

static void mt_schedule(struct weft_sched *base, struct weft_task *t)
{
    struct mt_sched *s = mt_of(base);
    struct mt_worker *w = local_worker(s);
    if (w) {
        schedule_local(w, t, false);
        return;
    }
    inject_push_batch(s, NULL, 0, t);
    notify_parked(s);
}

static void mt_release(struct weft_sched *base, struct weft_task *t)
{
    struct mt_sched *s = mt_of(base);
    struct mt_worker *w = local_worker(s);
    struct owned_shard *sh = &s->shards[weft__task_owned_no(t) - 1];
    if (w && sh == w->shard) {
        sync_lock(&sh->lock);
        weft__owned_remove(&sh->head, t);
        sync_unlock(&sh->lock);
        STAT_ADD(w->done, 1);
    } else if (w) {
        /* Another worker's task: keep it (and its memory) until the batch
         * is unlinked, rather than take that worker's lock for each. */
        weft__task_ref(t);
        w->rel[w->nrel++] = t;
        if (w->nrel == WEFT_RELEASE_BATCH)
            release_flush(w);
        STAT_ADD(w->done, 1);
    } else {
        sync_lock(&sh->lock);
        weft__owned_remove(&sh->head, t);
        sync_unlock(&sh->lock);
        atomic_fetch_add(&s->remote_done, 1);
    }
    if (weft_unlikely(atomic_load(&s->closed)))
        weft__parker_unpark(&s->shutdown_parker);
}

/* ---- the worker loop ---- */

static struct weft_task *next_task(struct mt_worker *w)
{
    struct weft_task *t;
    if (w->tick % WEFT_GLOBAL_INTERVAL == 0) {
        if ((t = inject_pop(w)))
            return t;
        return lq_pop(&w->q);
    }
    if ((t = lq_pop(&w->q)))
        return t;
    return inject_pop(w);
}

static inline __attribute__((always_inline)) void poll_one(struct mt_worker *w,
                                                           struct weft_task *t)
{
    STAT_ADD(w->m.polls, 1);
    if (weft__worker_poll(&w->base, t, false))
        push_local(w, t); /* yielded or woken while running: to the back */
}

/* Runs `t`, then whatever it put in the LIFO slot, within the cap. */
static inline __attribute__((always_inline)) void run_task(struct mt_worker *w,
                                                           struct weft_task *t)
{
    transition_from_searching(w);
    poll_one(w, t);
    w->lifo_polls = 0;
    while ((t = w->lifo)) {
        w->lifo = NULL;
        if (++w->lifo_polls > WEFT_MAX_LIFO_POLLS) {
            push_local(w, t);
            break;
        }
        if (weft_unlikely(w->spread_at))
            spread_due(w); /* between any two polls */
        poll_one(w, t);
    }
}

static struct weft_task *steal_work(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    if (!transition_to_searching(w))
        return NULL;
    uint32_t start = rand_below(w, (uint32_t)s->n);
    for (int i = 0; i < s->n; i++) {
        struct mt_worker *v =
            &s->workers[(start + (uint32_t)i) % (uint32_t)s->n];
        if (v == w)
            continue;
        uint32_t got = 0;
        struct weft_task *t = lq_steal_into(&v->q, &w->q, &got);
        if (t) {
            STAT_ADD(w->m.steals, got);
            return t;
        }
    }
    return inject_pop(w);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* Before parking, the searcher keeps looking for work for up to spin_ns:
 * the injection queue and every other worker's queue. A worker that ran
 * out of work is often given more a few microseconds later (a receiver
 * frees a quarter of a channel, and the senders it wakes land in the other
 * worker's queue); sleeping costs a futex wait here and a futex wake on the
 * waker's side, tens of microseconds on a paravirtualised machine. Only one
 * worker spins at a time, and only a searcher (it stays counted as one, so
 * notifiers leave the sleepers alone and let it find the work, and when it
 * parks it does the last searcher's check like any other). It leaves a
 * queue that holds a single task to its owner, which will most likely pop
 * it next: taking it would move a ping-pong pair of tasks (W3) to another
 * CPU every few round trips. If the owner is stuck, the task waits at most
 * one spin: the spinner then parks as the last searcher, sees the queue,
 * and wakes a worker (itself, if none sleeps) whose ordinary steal takes
 * it. */
static struct weft_task *spin_for_work(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    if (!s->spin_ns || !w->searching ||
        atomic_load_explicit(&s->spinner, memory_order_relaxed) ||
        atomic_exchange(&s->spinner, true))
        return NULL;
    struct weft_task *t = NULL;
    uint64_t deadline = 0;
    for (unsigned i = 0;; i++) {
        if ((t = lq_pop(&w->q)))
            break;
        if (atomic_load_explicit(&s->inject_len, memory_order_relaxed) &&
            (t = inject_pop(w)))
            break;
        for (int k = 0; k < s->n && !t; k++) {
            struct mt_worker *v = &s->workers[k];
            uint32_t got = 0;
            if (v != w && lq_len(&v->q) >= 2 &&
                (t = lq_steal_into(&v->q, &w->q, &got)))
                STAT_ADD(w->m.steals, got);
        }
        if (t || atomic_load_explicit(&s->stop, memory_order_relaxed))
            break;
        if (i % 16 == 0) {
            uint64_t now = (uint64_t)weft__mono_ns();
            if (!deadline)
                deadline = now + s->spin_ns;
            else if (now >= deadline)
                break;
        }
        for (int k = 0; k < 32; k++)
            cpu_relax();
    }
    atomic_store_explicit(&s->spinner, false, memory_order_release);
    return t;
}

/* Nothing to run: rather than sleep, fault in task memory ahead for a
 * thread spawning in bulk (mem.c), if one is. The worker stops searching
 * first (it is busy for a while, and notifiers must not count on it), and
 * looks for work again afterwards. */
static bool prefault_idle(struct mt_worker *w)
{
    if (!weft__mem_prefault_wanted())
        return false;
    transition_from_searching(w);
    uint64_t t0 = (uint64_t)weft__mono_ns();
    bool did = weft__mem_prefault();
    STAT_ADD(w->m.idle_ns, (uint64_t)weft__mono_ns() - t0);
    return did;
}

/* Sleeps until notified, in the driver if it is free. */
static void park_wait(struct mt_worker *w);

static void park(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    release_flush(w); /* an idle worker holds no finished task */
    bool last = transition_to_parked(w);
    if (last && work_anywhere(s))
        notify_parked(s); /* the last searcher must not strand work */
    STAT_ADD(w->m.parks, 1);
    uint64_t t0 = (uint64_t)weft__mono_ns();
    park_wait(w);
    STAT_ADD(w->m.idle_ns, (uint64_t)weft__mono_ns() - t0);
}

static void park_wait(struct mt_worker *w)
{
    struct mt_sched *s = w->s;
    for (;;) {
        if (atomic_load(&s->stop))
            break;
        /* Chunks faulted in ahead for a spawner that has stopped should
         * not stay in the RSS: come back to give them up once stale. */
        int64_t timeout = weft__mem_ready_held() ? READY_LOOK_NS : -1;
        if (pthread_mutex_trylock(&s->driver_lock) == 0) {
            atomic_store(&w->in_driver, true);
            /* An unpark that came before in_driver was visible left the
             * parker notified: take it instead of sleeping. */
            if (!weft__parker_park_timeout(&w->parker, 0)) {
                uint32_t st = atomic_load(&s->idle_state);
                weft__driver_park(s->driver, &w->base, timeout,
                                  (st >> 16) == 0);
            }
            atomic_store(&w->in_driver, false);
            pthread_mutex_unlock(&s->driver_lock);
        } else {
            /* The last worker to go idle tells the driver: a paused clock
             * may jump to the next timer now. */
            if ((atomic_load(&s->idle_state) >> 16) == 0)
                weft__driver_all_idle(s->driver);
            weft__parker_park_timeout(&w->parker, timeout);
        }
        if (timeout >= 0)
            weft__mem_trim_ready();
        /* Work of our own (woken by the driver on this thread) or a
         * notification ends the park. */
        if (w->lifo || lq_len(&w->q)) {
            if (transition_from_parked(w))
                w->searching = true;
            notify_parked(s);
            return;
        }
        if (!w->parked) {
            w->searching = true; /* the notifier counted us as searching */
            return;
        }
    }
    if (transition_from_parked(w))
        w->searching = true;
}

static void maintenance(struct mt_worker *w)
{
    weft__driver_maintain(w->s->driver, &w->base);
}

static void drain_stale(struct mt_worker *w)
{
    /* After shutdown every task has completed; queue entries left are
     * references to finished tasks. */
    struct weft_task *t;
    if ((t = w->lifo)) {
        w->lifo = NULL;
        weft__worker_poll(&w->base, t, false);
    }
    while ((t = lq_pop(&w->q)))
        weft__worker_poll(&w->base, t, false);
}

static void *worker_main(void *arg)
{
    struct mt_worker *w = arg;
    struct mt_sched *s = w->s;
    if (weft__worker_enter(&w->base, &s->base) < 0)
        weft__panic(__FILE__, __LINE__, "worker %d could not start", w->index);
    while (!atomic_load_explicit(&s->stop, memory_order_relaxed)) {
        w->tick++;
        if (w->tick % WEFT_GLOBAL_INTERVAL == 0)
            maintenance(w);
        if (weft_unlikely(w->spread_at))
            spread_due(w);
        struct weft_task *t = next_task(w);
        if (!t)
            t = steal_work(w);
        if (!t)
            t = spin_for_work(w);
        if (t) {
            run_task(w, t);
            continue;
        }
        if (prefault_idle(w))
            continue;
        park(w);
    }
    drain_stale(w);
    release_flush(w);
    weft__worker_leave(&w->base);
    return NULL;
}

/* ---- block_on, shutdown ---- */

static int mt_block_on(struct weft_sched *base, struct weft_task *root)
{
    (void)base;
    /* The root runs on the workers; this thread waits for it. */
    void *ignored;
    int rc = weft_join(root, &ignored);
    (void)rc;
    return 0;
}

static void cancel_all(struct mt_sched *s)
{
    for (int i = 0; i < s->nshards; i++) {
        struct owned_shard *sh = &s->shards[i];
        sync_lock(&sh->lock);
        for (struct weft_task *t = sh->head; t; t = t->owned_next)
            weft__task_cancel(t);
        sync_unlock(&sh->lock);
    }
}

static int mt_shutdown(struct weft_sched *base, int64_t timeout_ms)
{
    struct mt_sched *s = mt_of(base);
    /* Closing under every shard lock: no spawn can link a task after. */
    for (int i = 0; i < s->nshards; i++)
        sync_lock(&s->shards[i].lock);
    atomic_store(&s->closed, true);
    for (int i = s->nshards - 1; i >= 0; i--)
        sync_unlock(&s->shards[i].lock);
    cancel_all(s);
    uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
                                       : (uint64_t)weft__mono_ns() +
                                             (uint64_t)timeout_ms * 1000000u;
    /* Completions after closing unpark us; the counts are spread over the
     * workers, so look again every millisecond as well rather than reason
     * about which completion is the last. */
    while (live_count(s) > 0) {
        uint64_t now = (uint64_t)weft__mono_ns();
        if (now >= deadline)
            return -ETIMEDOUT;
        int64_t wait = (int64_t)(deadline - now);
        if (wait > 1000000)
            wait = 1000000;
        weft__parker_park_timeout(&s->shutdown_parker, wait);
    }
    atomic_store(&s->stop, true);
    for (int i = 0; i < s->n; i++)
        unpark_worker(&s->workers[i]);
    for (int i = 0; i < s->n; i++) {
        if (s->workers[i].started)
            pthread_join(s->workers[i].thread, NULL);
        s->workers[i].started = false;
    }
    return 0;
}

static void mt_free(struct weft_sched *base)
{
    struct mt_sched *s = mt_of(base);
    pthread_mutex_destroy(&s->inject_lock);
    pthread_mutex_destroy(&s->idle_lock);
    pthread_mutex_destroy(&s->driver_lock);
    free(s->sleepers);
    free(s->shards);
    free(s->workers);
    free(s);
}

static void mt_metrics(struct weft_sched *base, weft_metrics *out)
{
    struct mt_sched *s = mt_of(base);
    out->workers = s->n;
    out->live_tasks = live_count(s);
    out->global_queue_depth = atomic_load(&s->inject_len);
    uint64_t now = (uint64_t)weft__mono_ns();
    for (int i = 0; i < s->n && i < WEFT_METRICS_MAX_WORKERS; i++) {
        struct mt_worker *w = &s->workers[i];
        weft_worker_metrics *m = &out->worker[i];
        m->polls = atomic_load_explicit(&w->m.polls, memory_order_relaxed);
        m->steals = atomic_load_explicit(&w->m.steals, memory_order_relaxed);
        m->parks = atomic_load_explicit(&w->m.parks, memory_order_relaxed);
        m->overflows =
            atomic_load_explicit(&w->m.overflows, memory_order_relaxed);
        uint64_t idle =
            atomic_load_explicit(&w->m.idle_ns, memory_order_relaxed);
        uint64_t up = now - s->started_ns;
        m->busy_ns = up > idle ? up - idle : 0;
        m->local_queue_depth = lq_len(&w->q);
    }
}

static const struct weft_sched_ops mt_ops = {
    .spawn = mt_spawn,
    .schedule = mt_schedule,
    .release = mt_release,
    .block_on = mt_block_on,
    .shutdown = mt_shutdown,
    .free = mt_free,
    .metrics = mt_metrics,
};

#ifndef WEFT_PARK_SPIN_NS
/* Off by default: see design.md, "Spinning before parking". */
#define WEFT_PARK_SPIN_NS 0
#endif

static uint64_t park_spin_ns(void)
{
    const char *env = getenv("WEFT_PARK_SPIN_NS");
    if (env && *env)
        return strtoull(env, NULL, 10);
    return WEFT_PARK_SPIN_NS;
}

static int default_workers(void)
{
    const char *env = getenv("WEFT_WORKERS");
    if (env && atoi(env) > 0)
        return atoi(env);
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0)
        return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int weft__multi_thread_new(weft_runtime *rt, int nworkers,
                           struct weft_sched **out)
{
    if (nworkers <= 0)
        nworkers = default_workers();
    if (nworkers > 4096)
        return -EINVAL;
    struct mt_sched *s = weft__sched_alloc(sizeof *s);
    if (!s)
        return -ENOMEM;
    s->workers = aligned_alloc(64, sizeof *s->workers * (size_t)nworkers);
    s->sleepers = calloc((size_t)nworkers, sizeof *s->sleepers);
    s->nshards = nworkers < MAX_SHARDS ? nworkers + 1 : MAX_SHARDS;
    s->shards = aligned_alloc(64, sizeof *s->shards * (size_t)s->nshards);
    if (!s->workers || !s->sleepers || !s->shards) {
        free(s->shards);
        free(s->workers);
        free(s->sleepers);
        free(s);
        return -ENOMEM;
    }
    memset(s->workers, 0, sizeof *s->workers * (size_t)nworkers);
    s->base.ops = &mt_ops;
    s->base.rt = rt;
    s->n = nworkers;
    s->driver = rt->driver;
    /* One worker has nobody to wait for. */
    s->spin_ns = nworkers > 1 ? park_spin_ns() : 0;
    pthread_mutex_init(&s->inject_lock, NULL);
    pthread_mutex_init(&s->idle_lock, NULL);
    pthread_mutex_init(&s->driver_lock, NULL);
    memset(s->shards, 0, sizeof *s->shards * (size_t)s->nshards);
    weft__parker_init(&s->shutdown_parker);
    atomic_init(&s->idle_state, (uint32_t)nworkers << 16);
    s->started_ns = (uint64_t)weft__mono_ns();
    for (int i = 0; i < nworkers; i++) {
        struct mt_worker *w = &s->workers[i];
        w->s = s;
        w->index = i;
        w->rng = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1);
        w->shard = &s->shards[i % (s->nshards - 1)];
        weft__parker_init(&w->parker);
        lq_init(&w->q);
    }
    for (int i = 0; i < nworkers; i++) {
        struct mt_worker *w = &s->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            mt_shutdown(&s->base, -1);
            mt_free(&s->base);
            return -ENOMEM;
        }
        w->started = true;
    }
    *out = &s->base;
    return 0;
}
