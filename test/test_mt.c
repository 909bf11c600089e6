/*
 * The multi-thread work-stealing executor and the blocking pool.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>
#include <sys/syscall.h>

#include "gate.h"
#include "test.h"
#include "weft.h"

#include "internal.h" /* weft__alloc, weft__mem_prefault */

static weft_runtime *mt_rt(int workers)
{
    weft_config cfg;
    weft_config_init(&cfg);
    cfg.flavor = WEFT_MULTI_THREAD;
    cfg.workers = workers;
    weft_runtime *rt;
    ASSERT_OK(weft_runtime_new(&rt, &cfg));
    return rt;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- a counter future: ready once `count` exceeds `seen` ---- */

struct counter {
    atomic_ulong count;
    pthread_mutex_t lock;
    weft_waker waker;
};

struct counter_wait {
    weft_future base;
    struct counter *c;
    unsigned long seen;
};

static weft_poll counter_poll(weft_future *f, weft_cx *cx)
{
    struct counter_wait *w = (struct counter_wait *)f;
    struct counter *c = w->c;
    if (atomic_load(&c->count) > w->seen)
        return weft_future_set(f, NULL, 0);
    pthread_mutex_lock(&c->lock);
    if (!weft_waker_will_wake(&c->waker, weft_cx_waker(cx))) {
        weft_waker_drop(&c->waker);
        c->waker = weft_waker_clone(weft_cx_waker(cx));
    }
    pthread_mutex_unlock(&c->lock);
    /* Re-check after publishing the waker: a bump in between would
     * otherwise be missed by this future (not by the runtime). */
    if (atomic_load(&c->count) > w->seen)
        return weft_future_set(f, NULL, 0);
    return WEFT_PENDING;
}

static const weft_future_ops counter_ops = {.poll = counter_poll,
                                            .name = "counter"};

static void counter_bump(struct counter *c)
{
    atomic_fetch_add(&c->count, 1);
    pthread_mutex_lock(&c->lock);
    weft_waker_wake_by_ref(&c->waker);
    pthread_mutex_unlock(&c->lock);
}

static int counter_await(struct counter *c, unsigned long seen)
{
    struct counter_wait *w =
        (struct counter_wait *)weft_future_new(sizeof *w, &counter_ops);
    if (!w)
        return -ENOMEM;
    w->c = c;
    w->seen = seen;
    return weft_await(&w->base, NULL);
}

/* ---- no lost wake-ups ---- */

#define WAKERS 4

struct race {
    struct counter c;
    _Atomic uint32_t acked; /* a futex word: bumpers sleep on it */
    unsigned long rounds;
};

static void futex_wait_u32(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, INT32_MAX, NULL, NULL, 0);
}

/* Each foreign thread bumps the counter only after the task acknowledged
 * the previous bump, so nearly every bump races with the worker parking;
 * between rounds the bumpers sleep, leaving the CPUs to the runtime. */
static void *bumper(void *arg)
{
    struct race *r = arg;
    for (;;) {
        uint32_t a = atomic_load(&r->acked);
        if (a >= r->rounds)
            return NULL;
        unsigned long expect = a;
        if (atomic_compare_exchange_strong(&r->c.count, &expect, a + 1)) {
            pthread_mutex_lock(&r->c.lock);
            weft_waker_wake_by_ref(&r->c.waker);
            pthread_mutex_unlock(&r->c.lock);
        }
        futex_wait_u32(&r->acked, a); /* until the task acknowledges */
    }
}

static void *race_task(void *arg)
{
    struct race *r = arg;
    for (unsigned long i = 0; i < r->rounds; i++) {
        ASSERT_OK(counter_await(&r->c, i));
        atomic_store(&r->acked, (uint32_t)(i + 1));
        futex_wake_all(&r->acked);
    }
    return NULL;
}

static void lost_wakeup_run(int workers, unsigned long rounds)
{
    struct race r = {.rounds = rounds};
    pthread_mutex_init(&r.c.lock, NULL);
    weft_runtime *rt = mt_rt(workers);
    weft_task *t;
    ASSERT_OK(weft_spawn(rt, &t, race_task, &r));
    pthread_t th[WAKERS];
    for (int i = 0; i < WAKERS; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, bumper, &r), 0);
    ASSERT_OK(weft_join(t, NULL));
    for (int i = 0; i < WAKERS; i++)
        pthread_join(th[i], NULL);
    weft_task_free(t);
    weft_metrics m;
    weft_runtime_metrics(rt, &m);
    uint64_t parks = 0;
    for (int i = 0; i < m.workers; i++)
        parks += m.worker[i].parks;
    fprintf(stderr, "%lu rounds, %" PRIu64 " parks\n", rounds, parks);
    ASSERT_GT(parks, 0);
    weft_runtime_free(rt);
    weft_waker_drop(&r.c.waker);
    pthread_mutex_destroy(&r.c.lock);
}

TEST(no_lost_wakeup_one_worker)
{
    lost_wakeup_run(1, TEST_SANITIZED ? 100000 : 1000000);
}

TEST(no_lost_wakeup_two_workers)
{
    lost_wakeup_run(2, TEST_SANITIZED ? 100000 : 1000000);
}

/* ---- fairness ---- */

static void *yield_forever(void *arg)
{
    atomic_int *stop = arg;
    while (!atomic_load(stop))
        if (weft_yield() < 0)
            break;
    return NULL;
}

static void *set_flag(void *arg)
{
    atomic_store((atomic_int *)arg, 1);
    return NULL;
}

static void *yield_starve_body(void *arg)
{
    (void)arg;
    atomic_int stop = 0;
    weft_task *y[3], *s;
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_spawn(NULL, &y[i], yield_forever, &stop));
    ASSERT_OK(weft_yield());
    ASSERT_OK(weft_spawn(NULL, &s, set_flag, &stop));
    ASSERT_OK(weft_join(s, NULL));
    for (int i = 0; i < 3; i++) {
        ASSERT_OK(weft_join(y[i], NULL));
        weft_task_free(y[i]);
    }
    weft_task_free(s);
    return NULL;
}

TEST(yielding_task_does_not_starve_others)
{
    for (int workers = 1; workers <= 2; workers++) {
        weft_runtime *rt = mt_rt(workers);
        ASSERT_OK(weft_block_on(rt, yield_starve_body, NULL, NULL));
        weft_runtime_free(rt);
    }
}

/* Two tasks that wake each other forever (each wake lands in the LIFO slot
 * of the worker) must not starve a third task on the same worker. */
struct flip {
    struct counter c[2];
    atomic_int stop;
};

struct flipper {
    struct flip *f;
    int me;
};

static void *flipper_task(void *arg)
{
    struct flipper *fl = arg;
    struct flip *f = fl->f;
    unsigned long seen = 0;
    while (!atomic_load(&f->stop)) {
        if (fl->me == 0)
            counter_bump(&f->c[1]);
        if (counter_await(&f->c[fl->me], seen) < 0)
            break;
        seen++;
        if (fl->me == 1)
            counter_bump(&f->c[0]);
    }
    /* Unblock the partner. */
    counter_bump(&f->c[!fl->me]);
    return NULL;
}

static void *lifo_body(void *arg)
{
    (void)arg;
    struct flip f = {0};
    for (int i = 0; i < 2; i++)
        pthread_mutex_init(&f.c[i].lock, NULL);
    struct flipper a = {&f, 0}, b = {&f, 1};
    weft_task *ta, *tb, *tc;
    ASSERT_OK(weft_spawn(NULL, &tb, flipper_task, &b));
    ASSERT_OK(weft_spawn(NULL, &ta, flipper_task, &a));
    ASSERT_OK(weft_yield());
    ASSERT_OK(weft_spawn(NULL, &tc, set_flag, &f.stop));
    ASSERT_OK(weft_join(tc, NULL));
    ASSERT_OK(weft_join(ta, NULL));
    ASSERT_OK(weft_join(tb, NULL));
    ASSERT_GT(atomic_load(&f.c[0].count), 0);
    weft_task_free(ta);
    weft_task_free(tb);
    weft_task_free(tc);
    for (int i = 0; i < 2; i++) {
        weft_waker_drop(&f.c[i].waker);
        pthread_mutex_destroy(&f.c[i].lock);
    }
    return NULL;
}

TEST(lifo_ping_pong_does_not_starve_a_third)
{
    weft_runtime *rt = mt_rt(1);
    ASSERT_OK(weft_block_on(rt, lifo_body, NULL, NULL));
    weft_runtime_free(rt);
}

/* ---- stealing and migration ---- */

#define STEAL_TASKS 50

static void spin_us(int us)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000 + (b.tv_nsec - a.tv_nsec) / 1000 <
           us);
}

static void *busy_task(void *arg)
{
    (void)arg;
    spin_us(200);
    return (void *)pthread_self();
}

static void *steal_body(void *arg)
{
    (void)arg;
    /* Rounds of work spawned here, on one worker; on a loaded machine the
     * other worker may need a few rounds to get a CPU. */
    pthread_t first = 0;
    int other = 0;
    for (int round = 0; round < 200 && !other; round++) {
        weft_task *h[STEAL_TASKS];
        for (int i = 0; i < STEAL_TASKS; i++)
            ASSERT_OK(weft_spawn(NULL, &h[i], busy_task, NULL));
        for (int i = 0; i < STEAL_TASKS; i++) {
            void *v;
            ASSERT_OK(weft_join(h[i], &v));
            if (!first)
                first = (pthread_t)v;
            else if ((pthread_t)v != first)
                other++;
            weft_task_free(h[i]);
        }
    }
    ASSERT_GT(other, 0);
    return NULL;
}

TEST(work_spawned_on_one_worker_runs_on_both)
{
    weft_runtime *rt = mt_rt(2);
    ASSERT_OK(weft_block_on(rt, steal_body, NULL, NULL));
    weft_metrics m;
    ASSERT_OK(weft_runtime_metrics(rt, &m));
    ASSERT_EQ(m.workers, 2);
    ASSERT_GT(m.worker[0].steals + m.worker[1].steals, 0);
    ASSERT_GT(m.worker[0].polls, 0);
    ASSERT_GT(m.worker[1].polls, 0);
    weft_runtime_free(rt);
}

/* ---- wake affinity ---- */

/* Tasks that one task wakes together, where most go to the stealable queue
 * (the LIFO slot holds one), still reach an idle worker: the notification
 * is only deferred (WEFT_SPREAD_NS), and sent once the first woken task
 * has run for longer than that while the others wait. (The woken tasks
 * report on a channel rather than by finishing: a completion wakes its
 * joiner from outside any poll, which notifies at once.) */
#define FAN_TASKS 4

struct fan {
    weft_chan_tx *tx[FAN_TASKS], *done_tx;
    weft_chan_rx *rx[FAN_TASKS], *done_rx;
    atomic_int waiting;
};

struct fan_arg {
    struct fan *f;
    int i;
};

static void *fan_task(void *arg)
{
    struct fan_arg *a = arg;
    uint64_t v;
    atomic_fetch_add(&a->f->waiting, 1);
    ASSERT_OK(weft_chan_recv(a->f->rx[a->i], &v));
    spin_us(3000);
    v = (uint64_t)pthread_self();
    ASSERT_OK(weft_chan_send(a->f->done_tx, &v));
    return NULL;
}

static void *fan_body(void *arg)
{
    (void)arg;
    int spread = 0;
    for (int round = 0; round < 20; round++) {
        struct fan f = {0};
        struct fan_arg a[FAN_TASKS];
        weft_task *h[FAN_TASKS];
        ASSERT_OK(
            weft_chan_new(&f.done_tx, &f.done_rx, sizeof(uint64_t), FAN_TASKS));
        for (int i = 0; i < FAN_TASKS; i++) {
            ASSERT_OK(weft_chan_new(&f.tx[i], &f.rx[i], sizeof(uint64_t), 1));
            a[i] = (struct fan_arg){&f, i};
            ASSERT_OK(weft_spawn(NULL, &h[i], fan_task, &a[i]));
        }
        while (atomic_load(&f.waiting) < FAN_TASKS)
            ASSERT_OK(weft_yield());
        usleep(2000); /* let them wait, and the other worker park */
        /* One poll wakes all four: one to the LIFO slot, three behind. */
        for (int i = 0; i < FAN_TASKS; i++) {
            uint64_t v = (uint64_t)i;
            ASSERT_OK(weft_chan_try_send(f.tx[i], &v));
        }
        uint64_t first = 0, v;
        bool mixed = false;
        for (int i = 0; i < FAN_TASKS; i++) {
            ASSERT_OK(weft_chan_recv(f.done_rx, &v));
            if (i == 0)
                first = v;
            else if (v != first)
                mixed = true;
        }
        spread += mixed;
        for (int i = 0; i < FAN_TASKS; i++) {
            ASSERT_OK(weft_join(h[i], NULL));
            weft_task_free(h[i]);
            weft_chan_tx_free(f.tx[i]);
            weft_chan_rx_free(f.rx[i]);
        }
        weft_chan_tx_free(f.done_tx);
        weft_chan_rx_free(f.done_rx);
    }
    /* Every round should spread; allow for a loaded machine. */
    ASSERT_GE(spread, 10);
    return NULL;
}

TEST(woken_tasks_spread_to_an_idle_worker)
{
    weft_runtime *rt = mt_rt(2);
    ASSERT_OK(weft_block_on(rt, fan_body, NULL, NULL));
    weft_runtime_free(rt);
}

/* The case the deferral is for: a receiver that frees a quarter of a full
 * channel wakes the four senders waiting on it, which fill it again within
 * microseconds while the receiver drains it (W4). Waking the idle worker
 * for each such batch made it steal senders, costing a futex wake-up per
 * batch and a cache line transfer per message; now the batch stays on the
 * worker that woke it, so the idle worker is rarely woken. */
#define AFF_PRODUCERS 4
#define AFF_PER 100000

struct aff {
    weft_chan_tx *tx;
    weft_chan_rx *rx;
};

static void *aff_producer(void *arg)
{
    struct aff *a = arg;
    for (uint64_t i = 0; i < AFF_PER; i++)
        ASSERT_OK(weft_chan_send(a->tx, &i));
    weft_chan_tx_free(a->tx);
    return NULL;
}

static void *aff_body(void *arg)
{
    struct aff *a = arg;
    ASSERT_OK(weft_chan_new(&a->tx, &a->rx, sizeof(uint64_t), 1024));
    for (int i = 0; i < AFF_PRODUCERS; i++) {
        weft_chan_tx_clone(a->tx);
        ASSERT_OK(weft_spawn(NULL, NULL, aff_producer, a));
    }
    weft_chan_tx_free(a->tx);
    uint64_t v, n = 0;
    while (weft_chan_recv(a->rx, &v) == 0)
        n++;
    ASSERT_EQ(n, (uint64_t)AFF_PRODUCERS * AFF_PER);
    weft_chan_rx_free(a->rx);
    return NULL;
}

TEST(a_batch_of_short_wakes_stays_on_its_worker)
{
    weft_runtime *rt = mt_rt(2);
    struct aff a;
    ASSERT_OK(weft_block_on(rt, aff_body, &a, NULL));
    weft_metrics m;
    ASSERT_OK(weft_runtime_metrics(rt, &m));
    uint64_t parks = m.worker[0].parks + m.worker[1].parks;
    /* About 1,600 batches of wakes (a quarter of 1024 each); waking the
     * idle worker for each gave 1,000-2,700 parks here, the deferral 2-8.
     * The bound leaves room for a loaded machine, where preemption delays
     * some batches past the deferral. Sanitizers slow every batch past it,
     * so there the count is only reported. */
    fprintf(stderr, "parks %llu steals %llu\n", (unsigned long long)parks,
            (unsigned long long)(m.worker[0].steals + m.worker[1].steals));
    if (!TEST_SANITIZED)
        ASSERT_LT(parks, 700);
    weft_runtime_free(rt);
}

/* A coroutine that suspends on one worker and is resumed on another keeps
 * its stack and locals. With busy tasks queued on both workers, queued work
 * moves by stealing and by the injection queue; keep suspending until the
 * task has been seen on a second thread. */
/* pthread_self() is declared const: the compiler may call it once per
 * function and reuse the value across a suspension, which is exactly the
 * hazard weft.h warns about. Ask the kernel instead. */
static long thread_id(void)
{
    return syscall(SYS_gettid);
}

struct migrate {
    struct gate g[64];
};

static void *long_job(void *arg)
{
    (void)arg;
    spin_us(5000);
    return NULL;
}

/* Before each suspension T leaves a long job in its worker's queue; a
 * foreign thread then wakes T through the injection queue, and the idle
 * worker picks it up while T's old worker is busy. */
static void *migrating_task(void *arg)
{
    struct migrate *m = arg;
    long start = thread_id();
    for (int i = 0; i < 64; i++) {
        volatile int local = i * 7;
        ASSERT_OK(weft_spawn(NULL, NULL, long_job, NULL));
        ASSERT_OK(weft_await(gate_wait(&m->g[i]), NULL));
        ASSERT_EQ(local, i * 7);
        if (thread_id() != start)
            return (void *)1;
    }
    return NULL;
}

static void *opener_all(void *arg)
{
    struct migrate *m = arg;
    for (int i = 0; i < 64; i++) {
        usleep(1000);
        gate_open(&m->g[i], NULL);
    }
    return NULL;
}

static void *migrate_body(void *arg)
{
    (void)arg;
    struct migrate m;
    for (int i = 0; i < 64; i++)
        gate_init(&m.g[i]);
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, migrating_task, &m));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, opener_all, &m), 0);
    void *moved;
    ASSERT_OK(weft_join(t, &moved));
    pthread_join(th, NULL);
    ASSERT_EQ((intptr_t)moved, 1);
    weft_task_free(t);
    for (int i = 0; i < 64; i++)
        gate_destroy(&m.g[i]);
    return NULL;
}

TEST(coroutine_resumes_on_another_thread)
{
    weft_runtime *rt = mt_rt(2);
    ASSERT_OK(weft_block_on(rt, migrate_body, NULL, NULL));
    weft_runtime_free(rt);
}

/* ---- owned tasks, live counts, spinning, prefaulting ---- */

static uint64_t live_tasks(weft_runtime *rt)
{
    weft_metrics m;
    ASSERT_OK(weft_runtime_metrics(rt, &m));
    return m.live_tasks;
}

/* Waits (up to 2 s) for the live count to come down to `want`: a joiner is
 * woken before the task that finished counts itself done. */
static bool live_settles(weft_runtime *rt, uint64_t want)
{
    for (int i = 0; i < 2000; i++) {
        if (live_tasks(rt) == want)
            return true;
        usleep(1000);
    }
    return false;
}

static void *short_job(void *arg)
{
    spin_us(2);
    return arg;
}

#define LIVE_TASKS 20000

struct live_body {
    weft_runtime *rt;
    atomic_ulong ran;
};

static void *detached_job(void *arg)
{
    struct live_body *b = arg;
    atomic_fetch_add(&b->ran, 1);
    return NULL;
}

static void *live_body(void *arg)
{
    struct live_body *b = arg;
    int n = TEST_SANITIZED ? LIVE_TASKS / 10 : LIVE_TASKS;
    weft_task **h = malloc(sizeof *h * (size_t)n);
    ASSERT(h != NULL);
    /* Spawned on this worker, many finished on the other one (stolen). */
    for (int i = 0; i < n; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], short_job, (void *)(uintptr_t)i));
    for (int i = 0; i < n; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        ASSERT_EQ((uintptr_t)v, (uintptr_t)i);
        weft_task_free(h[i]);
    }
    free(h);
    ASSERT(live_settles(b->rt, 1)); /* this root task */
    /* Detached tasks finished on either worker: nothing but the runtime
     * holds them, so they are freed when their batch is unlinked. */
    for (int i = 0; i < n; i++)
        ASSERT_OK(weft_spawn(NULL, NULL, detached_job, b));
    while (atomic_load(&b->ran) < (unsigned long)n)
        ASSERT_OK(weft_yield());
    ASSERT(live_settles(b->rt, 1));
    return NULL;
}

static void *spawn_from_outside(void *arg)
{
    struct live_body *b = arg;
    for (int i = 0; i < 1000; i++)
        ASSERT_OK(weft_spawn(b->rt, NULL, detached_job, b));
    return NULL;
}

TEST(live_count_right_when_tasks_finish_on_another_worker)
{
    struct live_body b = {.rt = mt_rt(2)};
    ASSERT_OK(weft_block_on(b.rt, live_body, &b, NULL));
    ASSERT(live_settles(b.rt, 0));
    weft_metrics m;
    ASSERT_OK(weft_runtime_metrics(b.rt, &m));
    ASSERT_GT(m.worker[0].polls, 0);
    ASSERT_GT(m.worker[1].polls, 0);
    /* Spawned from a plain thread: the shared shard and counters. */
    atomic_store(&b.ran, 0);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, spawn_from_outside, &b), 0);
    pthread_join(th, NULL);
    while (atomic_load(&b.ran) < 1000)
        usleep(1000);
    ASSERT(live_settles(b.rt, 0));
    /* Detached tasks still waiting in a worker's release batch are freed
     * by the shutdown (the leak checker of the ASan build sees to it). */
    for (int i = 0; i < 100; i++)
        ASSERT_OK(weft_spawn(b.rt, NULL, detached_job, &b));
    weft_runtime_free(b.rt);
}

/* The lost-wake-up race again, with a spin long enough that most wakes
 * land while the idle worker is still spinning, and with no spin. */
TEST(no_lost_wakeup_two_workers_long_spin)
{
    setenv("WEFT_PARK_SPIN_NS", "200000", 1);
    lost_wakeup_run(2, TEST_SANITIZED ? 20000 : 200000);
    unsetenv("WEFT_PARK_SPIN_NS");
}

TEST(no_lost_wakeup_two_workers_no_spin)
{
    setenv("WEFT_PARK_SPIN_NS", "0", 1);
    lost_wakeup_run(2, TEST_SANITIZED ? 20000 : 200000);
    unsetenv("WEFT_PARK_SPIN_NS");
}

/* A spinning worker gives up after its spin and parks: an idle runtime
 * with a 2 ms spin parks both workers and burns no CPU while idle. */
static int64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

TEST(spinning_worker_still_parks)
{
    setenv("WEFT_PARK_SPIN_NS", "2000000", 1);
    weft_runtime *rt = mt_rt(2);
    unsetenv("WEFT_PARK_SPIN_NS");
    ASSERT_OK(weft_block_on(rt, detached_job, &(struct live_body){0}, NULL));
    usleep(50000);
    weft_metrics m0, m1;
    ASSERT_OK(weft_runtime_metrics(rt, &m0));
    int64_t c0 = cpu_ns();
    usleep(200000);
    int64_t c1 = cpu_ns();
    ASSERT_OK(weft_runtime_metrics(rt, &m1));
    for (int i = 0; i < 2; i++) {
        ASSERT_GT(m0.worker[i].parks, 0);
        ASSERT_EQ(m1.worker[i].parks, m0.worker[i].parks); /* still asleep */
    }
    /* A worker that kept spinning would use ~200 ms of CPU here. */
    ASSERT_LT(c1 - c0, 50000000);
    weft_runtime_free(rt);
}

/* A thread that allocates in bulk gets chunks faulted in ahead by whoever
 * calls weft__mem_prefault (an idle worker), at most two at a time; the
 * memory is usable like any other, and what is left over when the bulk
 * stops goes back. */
TEST(prefault_makes_chunks_ahead_for_bulk_allocation)
{
    if (TEST_SANITIZED || getenv("WEFT_MALLOC"))
        SKIP("the allocator steps aside for malloc here");
    enum { SIZE = 128, COUNT = 3 * (2 << 20) / SIZE };
    char **p = malloc(sizeof *p * COUNT);
    ASSERT(p != NULL);
    int made = 0;
    struct timespec last = {0}; /* when the last chunk was made ahead */
    for (int i = 0; i < COUNT; i++) {
        ASSERT((p[i] = weft__alloc(SIZE)) != NULL);
        memset(p[i], i & 0xff, SIZE);
        while (weft__mem_prefault()) {
            made++;
            clock_gettime(CLOCK_MONOTONIC, &last);
        }
    }
    /* Not given back while fresh: asked only when this thread can tell
     * that less than 5 ms have passed since a chunk was last made (a
     * loaded machine may take longer over the loop's end). */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    bool fresh = (now.tv_sec - last.tv_sec) * 1000000000L +
                     (now.tv_nsec - last.tv_nsec) <
                 5000000;
    bool kept = weft__mem_trim_ready();
    if (fresh)
        ASSERT(kept);
    ASSERT_GT(made, 0);
    ASSERT_LE(made, 3);
    for (int i = 0; i < COUNT; i++) {
        ASSERT_EQ((unsigned char)p[i][SIZE - 1], (unsigned char)(i & 0xff));
        weft__free(p[i], SIZE);
    }
    free(p);
    /* The spawner stopped: the chunks made ahead are given back once
     * nobody made or took one for 10 ms. */
    usleep(15000);
    ASSERT(!weft__mem_trim_ready());
    ASSERT(!weft__mem_ready_held());
}

/* ---- entry points ---- */

TEST(workers_from_environment)
{
    setenv("WEFT_WORKERS", "3", 1);
    weft_runtime *rt = mt_rt(0);
    weft_metrics m;
    ASSERT_OK(weft_runtime_metrics(rt, &m));
    ASSERT_EQ(m.workers, 3);
    weft_runtime_free(rt);
    unsetenv("WEFT_WORKERS");
    rt = mt_rt(0);
    ASSERT_OK(weft_runtime_metrics(rt, &m));
    ASSERT_GE(m.workers, 1);
    weft_runtime_free(rt);
}

static void *add_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

struct bo_thread {
    weft_runtime *rt;
    uintptr_t in;
    void *out;
    int rc;
};

static void *block_on_thread(void *arg)
{
    struct bo_thread *b = arg;
    b->rc = weft_block_on(b->rt, add_one, (void *)b->in, &b->out);
    return NULL;
}

TEST(block_on_from_several_threads_at_once)
{
    weft_runtime *rt = mt_rt(2);
    struct bo_thread b[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        b[i] = (struct bo_thread){rt, (uintptr_t)i * 10, NULL, -1};
        ASSERT_EQ(pthread_create(&th[i], NULL, block_on_thread, &b[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ASSERT_OK(b[i].rc);
        ASSERT_EQ((uintptr_t)b[i].out, (uintptr_t)i * 10 + 1);
    }
    weft_runtime_free(rt);
}

/* ---- the blocking pool ---- */

struct pool_probe {
    atomic_int running, max_running, done;
};

static void *blocking_job(void *arg)
{
    struct pool_probe *p = arg;
    int now = atomic_fetch_add(&p->running, 1) + 1;
    int max = atomic_load(&p->max_running);
    while (now > max &&
           !atomic_compare_exchange_weak(&p->max_running, &max, now))
        ;
    usleep(30000);
    atomic_fetch_sub(&p->running, 1);
    atomic_fetch_add(&p->done, 1);
    return (void *)7;
}

static void *pool_body(void *arg)
{
    struct pool_probe *p = arg;
    weft_task *h[6];
    for (int i = 0; i < 6; i++)
        ASSERT_OK(weft_spawn_blocking(NULL, &h[i], blocking_job, p));
    weft_metrics m;
    ASSERT_OK(weft_runtime_metrics(weft_runtime_current(), &m));
    ASSERT_LE(m.blocking_threads, 2);
    ASSERT_GE(m.blocking_queue_depth, 1); /* queued beyond the cap */
    for (int i = 0; i < 6; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        ASSERT_EQ((uintptr_t)v, 7);
        weft_task_free(h[i]);
    }
    return NULL;
}

static void blocking_pool_run(weft_flavor flavor)
{
    weft_config cfg;
    weft_config_init(&cfg);
    cfg.flavor = flavor;
    cfg.workers = 2;
    cfg.max_blocking_threads = 2;
    cfg.blocking_keepalive_ms = 100;
    weft_runtime *rt;
    ASSERT_OK(weft_runtime_new(&rt, &cfg));
    struct pool_probe p = {0};
    ASSERT_OK(weft_block_on(rt, pool_body, &p, NULL));
    ASSERT_EQ(atomic_load(&p.max_running), 2);
    ASSERT_EQ(atomic_load(&p.done), 6);
    /* Idle threads leave after the keep-alive. */
    weft_metrics m;
    int64_t until = now_ms() + 5000;
    do {
        usleep(20000);
        ASSERT_OK(weft_runtime_metrics(rt, &m));
    } while (m.blocking_threads > 0 && now_ms() < until);
    ASSERT_EQ(m.blocking_threads, 0);
    weft_runtime_free(rt);
}

TEST(blocking_pool_cap_queue_keepalive)
{
    blocking_pool_run(WEFT_MULTI_THREAD);
    blocking_pool_run(WEFT_CURRENT_THREAD);
}

TEST(blocking_job_joined_from_plain_thread_and_cancelled)
{
    weft_runtime *rt = mt_rt(1);
    struct pool_probe p = {0};
    weft_task *h;
    ASSERT_OK(weft_spawn_blocking(rt, &h, blocking_job, &p));
    void *v;
    ASSERT_OK(weft_join(h, &v)); /* from this plain thread: blocks */
    ASSERT_EQ((uintptr_t)v, 7);
    weft_task_free(h);
    /* Cancelled before it could start: never runs. */
    weft_config cfg;
    weft_config_init(&cfg);
    cfg.max_blocking_threads = 1;
    weft_runtime *one;
    ASSERT_OK(weft_runtime_new(&one, &cfg));
    weft_task *a, *b;
    ASSERT_OK(weft_spawn_blocking(one, &a, blocking_job, &p));
    ASSERT_OK(weft_spawn_blocking(one, &b, blocking_job, &p));
    weft_task_cancel(b);
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_EQ(weft_join(b, NULL), -ECANCELED);
    ASSERT_EQ(atomic_load(&p.done), 2);
    weft_task_free(a);
    weft_task_free(b);
    weft_runtime_free(one);
    weft_runtime_free(rt);
}

/* ---- shutdown ---- */

static atomic_int spinners_started;

static void *spin_until(void *arg)
{
    atomic_int *stop = arg;
    atomic_fetch_add(&spinners_started, 1);
    while (!atomic_load(stop))
        ; /* never suspends: cancellation cannot reach it */
    return NULL;
}

static atomic_int sleepers_started;

static void *sleep_job(void *arg)
{
    atomic_int *stop = arg;
    atomic_fetch_add(&sleepers_started, 1);
    while (!atomic_load(stop))
        usleep(1000);
    return NULL;
}

TEST(shutdown_returns_within_timeout)
{
    weft_runtime *rt = mt_rt(2);
    atomic_int stop = 0;
    struct gate g;
    gate_init(&g);
    ASSERT_OK(weft_spawn(rt, NULL, spin_until, &stop));
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_spawn_future(rt, NULL, gate_wait(&g), NULL));
    while (atomic_load(&spinners_started) == 0)
        usleep(1000);
    usleep(20000); /* let the gate waiters reach their suspension */
    int64_t t0 = now_ms();
    ASSERT_EQ(weft_runtime_shutdown(rt, 200), -ETIMEDOUT);
    int64_t took = now_ms() - t0;
    ASSERT_GE(took, 190);
    /* The bound leaves room for a loaded CI machine (seen: 1.6 s at load
     * 11); what it catches is a shutdown that waits for the spinner. */
    ASSERT_LT(took, 5000);
    /* The blocked ones were cancelled; the spinner goes once told. */
    ASSERT_EQ(atomic_load(&g.drops), 10);
    atomic_store(&stop, 1);
    ASSERT_OK(weft_runtime_shutdown(rt, 5000));
    weft_runtime_free(rt);
    gate_destroy(&g);
}

TEST(shutdown_with_blocking_work_returns_within_timeout)
{
    weft_runtime *rt = mt_rt(1);
    atomic_int stop = 0;
    weft_task *h;
    ASSERT_OK(weft_spawn_blocking(rt, &h, sleep_job, &stop));
    /* Queued blocking work that has not started is cancelled at shutdown;
     * this test is about work that is running, so wait for it to run. */
    while (atomic_load(&sleepers_started) == 0)
        usleep(1000);
    int64_t t0 = now_ms();
    ASSERT_EQ(weft_runtime_shutdown(rt, 100), -ETIMEDOUT);
    ASSERT_LT(now_ms() - t0, 5000);
    atomic_store(&stop, 1);
    ASSERT_OK(weft_join(h, NULL));
    weft_task_free(h);
    ASSERT_OK(weft_runtime_shutdown(rt, -1));
    weft_runtime_free(rt);
}

struct spammer {
    weft_runtime *rt;
    atomic_int refused, accepted;
};

static void *spawn_spammer(void *arg)
{
    struct spammer *s = arg;
    while (atomic_load(&s->refused) < 100) {
        if (atomic_load(&s->accepted) > 2000) /* enough in flight: slow */
            usleep(1000);
        weft_task *t;
        int rc = weft_spawn(s->rt, &t, add_one, NULL);
        if (rc == -ESHUTDOWN) {
            ASSERT(t == NULL);
            atomic_fetch_add(&s->refused, 1);
        } else {
            ASSERT_OK(rc);
            atomic_fetch_add(&s->accepted, 1);
            weft_task_free(t);
        }
    }
    return NULL;
}

TEST(spawn_from_foreign_thread_during_shutdown)
{
    struct spammer s = {.rt = mt_rt(2)};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, spawn_spammer, &s), 0);
    usleep(20000);
    ASSERT_OK(weft_runtime_shutdown(s.rt, 60000));
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ASSERT_GT(atomic_load(&s.accepted), 0);
    ASSERT_EQ(weft_spawn_blocking(s.rt, NULL, add_one, NULL), -ESHUTDOWN);
    ASSERT_EQ(weft_block_on(s.rt, add_one, NULL, NULL), -ESHUTDOWN);
    weft_runtime_free(s.rt);
}

TEST_MAIN()
