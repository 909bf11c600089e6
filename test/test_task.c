/*
 * Tasks, futures and the executors. Every case runs on both executors
 * (WEFT_TEST_FLAVOR=mt: multi-thread, see flavor.h).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gate.h"
#include "flavor.h"
#include "test.h"
#include "weft.h"

/* Internal test hook (src/util/mem.c): fail the nth allocation from now. */
void weft__fail_alloc_after(long n);

/* ---- basics ---- */

static void *add_one(void *arg)
{
    return (void *)((uintptr_t)arg + 1);
}

TEST(block_on_returns_value)
{
    ASSERT_EQ((uintptr_t)run(add_one, (void *)41), 42);
}

static void *spawn_join_body(void *arg)
{
    (void)arg;
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, add_one, (void *)9));
    ASSERT(t != NULL);
    ASSERT(weft_task_id(t) != 0);
    /* Assigned at the first call, then stable, and never shared. */
    ASSERT_EQ(weft_task_id(t), weft_task_id(t));
    weft_task *t2;
    ASSERT_OK(weft_spawn(NULL, &t2, add_one, (void *)1));
    ASSERT(weft_task_id(t2) != 0);
    ASSERT(weft_task_id(t2) != weft_task_id(t));
    ASSERT_OK(weft_join(t2, NULL));
    weft_task_free(t2);
    void *v = NULL;
    ASSERT_EQ(weft_join(t, &v), 0);
    ASSERT_EQ((uintptr_t)v, 10);
    /* Joining again gives the same result: join does not consume. */
    v = NULL;
    ASSERT_EQ(weft_join(t, &v), 0);
    ASSERT_EQ((uintptr_t)v, 10);
    ASSERT(weft_task_done(t));
    weft_task_free(t);
    return NULL;
}

TEST(spawn_and_join)
{
    run(spawn_join_body, NULL);
}

static void *names_body(void *arg)
{
    (void)arg;
    weft_spawn_opts o = {.name = "worker-7"};
    weft_task *t;
    ASSERT_OK(weft_spawn_opts(NULL, &t, add_one, NULL, &o));
    ASSERT_STR_CONTAINS(weft_task_name(t), "worker-7");
    ASSERT_STR_CONTAINS(weft_task_site(t)->file, "test_task.c");
    ASSERT_GT(weft_task_site(t)->line, 0);
    ASSERT(weft_task_self() != NULL);
    ASSERT(weft_task_self() != t);
    ASSERT(weft_runtime_current() != NULL);
    ASSERT_OK(weft_join(t, NULL));
    weft_task_free(t);
    return NULL;
}

TEST(task_name_site_and_self)
{
    run(names_body, NULL);
    ASSERT(weft_task_self() == NULL);
    ASSERT(weft_runtime_current() == NULL);
}

TEST(version_and_errors)
{
    ASSERT_EQ(weft_version(), WEFT_VERSION_HEX);
    ASSERT_STR_CONTAINS(weft_version_string(), ".");
    ASSERT_STR_CONTAINS(weft_strerror(-ECANCELED), "anceled");
    ASSERT_STR_CONTAINS(weft_strerror(0), "success");
    ASSERT_STR_CONTAINS(weft_strerror(-99999), "unknown");
}

TEST(config_validation)
{
    weft_config cfg;
    weft_runtime *rt;
    weft_config_init(&cfg);
    cfg.stack_size = 1024;
    ASSERT_EQ(weft_runtime_new(&rt, &cfg), -EINVAL);
    ASSERT(rt == NULL);
    weft_config_init(&cfg);
    cfg.flavor = (weft_flavor)7;
    ASSERT_EQ(weft_runtime_new(&rt, &cfg), -EINVAL);
    weft_config_init(&cfg);
    cfg.stack_size = 64 * 1024;
    ASSERT_OK(weft_runtime_new(&rt, &cfg));
    weft_runtime_free(rt);
}

/* ---- many tasks ---- */

static void *ret_arg(void *arg)
{
    return arg;
}

struct many {
    long n;
};

static void *million_body(void *arg)
{
    struct many *m = arg;
    weft_task **h = malloc(sizeof *h * (size_t)m->n);
    ASSERT(h);
    for (long i = 0; i < m->n; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], ret_arg, (void *)(uintptr_t)i));
    uint64_t sum = 0;
    for (long i = 0; i < m->n; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        sum += (uintptr_t)v;
        weft_task_free(h[i]);
    }
    free(h);
    ASSERT_EQ(sum, (uint64_t)m->n * (uint64_t)(m->n - 1) / 2);
    return NULL;
}

TEST(million_tasks_spawned_and_joined)
{
    /* TSan makes a fiber per coroutine, at ~10 ms each: same mechanism,
     * fewer tasks. */
    struct many m = {TEST_TSAN ? 2000 : TEST_SANITIZED ? 100000 : 1000000};
    run(million_body, &m);
}

struct ready_fut {
    weft_future base;
    uintptr_t v;
};

static weft_poll ready_now(weft_future *f, weft_cx *cx)
{
    (void)cx;
    return weft_future_set(f, (void *)((struct ready_fut *)f)->v, 0);
}

static const weft_future_ops ready_now_ops = {.poll = ready_now,
                                              .name = "ready_now"};

static void *million_futures_body(void *arg)
{
    struct many *m = arg;
    weft_task **h = malloc(sizeof *h * (size_t)m->n);
    ASSERT(h);
    for (long i = 0; i < m->n; i++) {
        struct ready_fut *f =
            (struct ready_fut *)weft_future_new(sizeof *f, &ready_now_ops);
        ASSERT(f);
        f->v = (uintptr_t)i;
        ASSERT_OK(weft_spawn_future(NULL, &h[i], &f->base, NULL));
    }
    uint64_t sum = 0;
    for (long i = 0; i < m->n; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        sum += (uintptr_t)v;
        weft_task_free(h[i]);
    }
    free(h);
    ASSERT_EQ(sum, (uint64_t)m->n * (uint64_t)(m->n - 1) / 2);
    return NULL;
}

TEST(million_future_tasks)
{
    struct many m = {TEST_SANITIZED ? 100000 : 1000000};
    run(million_futures_body, &m);
}

/* 100,000 coroutines suspended at once, each on its own stack. */
static void *wait_gate(void *arg)
{
    void *v = NULL;
    int rc = weft_await(gate_wait((struct gate *)arg), &v);
    return rc == 0 ? v : (void *)(intptr_t)rc;
}

static void *many_suspended_body(void *arg)
{
    long n = *(long *)arg;
    /* Each waiter needs a slot in a gate; use one gate per 8 tasks. */
    long ngates = (n + GATE_MAX_WAITERS - 1) / GATE_MAX_WAITERS;
    struct gate *g = malloc(sizeof *g * (size_t)ngates);
    weft_task **h = malloc(sizeof *h * (size_t)n);
    ASSERT(g && h);
    for (long i = 0; i < ngates; i++)
        gate_init(&g[i]);
    for (long i = 0; i < n; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], wait_gate, &g[i / GATE_MAX_WAITERS]));
    /* Let every task run up to its suspension point. */
    ASSERT_OK(weft_yield());
    long polled = 0;
    for (long i = 0; i < ngates; i++)
        polled += atomic_load(&g[i].polls);
    ASSERT_EQ(polled, n);
    for (long i = 0; i < n; i++)
        ASSERT(!weft_task_done(h[i]));
    for (long i = 0; i < ngates; i++)
        gate_open(&g[i], (void *)(uintptr_t)(i + 1));
    for (long i = 0; i < n; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        ASSERT_EQ((uintptr_t)v, (uintptr_t)(i / GATE_MAX_WAITERS + 1));
        weft_task_free(h[i]);
    }
    for (long i = 0; i < ngates; i++)
        gate_destroy(&g[i]);
    free(g);
    free(h);
    return NULL;
}

TEST(hundred_thousand_suspended_coroutines)
{
    /* TSan counts each fiber as a thread (8128 at most) and makes each one
     * slowly; 1,000 proves the same mechanism there. */
    long n = TEST_TSAN ? 1000 : 100000;
    weft_config cfg;
    weft_config_init(&cfg);
    weft_runtime *rt;
    ASSERT_OK(weft_runtime_new(&rt, &cfg));
    ASSERT_OK(weft_block_on(rt, many_suspended_body, &n, NULL));
    weft_runtime_free(rt);
}

/* ---- wakes from other threads ---- */

struct opener {
    struct gate *g;
    int delay_ms;
    void *value;
};

static void *opener_thread(void *arg)
{
    struct opener *o = arg;
    usleep((useconds_t)o->delay_ms * 1000);
    gate_open(o->g, o->value);
    return NULL;
}

static void *foreign_wake_body(void *arg)
{
    (void)arg;
    struct gate g;
    gate_init(&g);
    struct opener o = {&g, 50, (void *)77};
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, opener_thread, &o), 0);
    /* Nothing else is runnable: the runtime parks until the foreign thread
     * opens the gate. */
    void *v = NULL;
    ASSERT_OK(weft_await(gate_wait(&g), &v));
    ASSERT_EQ((uintptr_t)v, 77);
    ASSERT_EQ(atomic_load(&g.polls), 2);
    pthread_join(th, NULL);
    gate_destroy(&g);
    return NULL;
}

TEST(wake_from_foreign_thread_while_parked)
{
    run(foreign_wake_body, NULL);
}

/* Many foreign threads waking many tasks at once, racing with parking. */
#define RACE_TASKS 64
/* TSan makes a fiber per coroutine slowly: fewer rounds there. */
#define RACE_ROUNDS (TEST_TSAN ? 20 : 200)

struct race {
    struct gate gates[RACE_TASKS];
};

static void *race_waiter(void *arg)
{
    struct gate *g = arg;
    return (void *)(intptr_t)weft_await(gate_wait(g), NULL);
}

static void *race_opener(void *arg)
{
    struct race *r = arg;
    for (int i = 0; i < RACE_TASKS; i++)
        gate_open(&r->gates[i], NULL);
    return NULL;
}

static void *race_body(void *arg)
{
    (void)arg;
    for (int round = 0; round < RACE_ROUNDS; round++) {
        struct race r;
        weft_task *h[RACE_TASKS];
        for (int i = 0; i < RACE_TASKS; i++) {
            gate_init(&r.gates[i]);
            ASSERT_OK(weft_spawn(NULL, &h[i], race_waiter, &r.gates[i]));
        }
        pthread_t th;
        ASSERT_EQ(pthread_create(&th, NULL, race_opener, &r), 0);
        for (int i = 0; i < RACE_TASKS; i++) {
            void *v;
            ASSERT_OK(weft_join(h[i], &v));
            ASSERT_EQ((intptr_t)v, 0);
            weft_task_free(h[i]);
        }
        pthread_join(th, NULL);
        for (int i = 0; i < RACE_TASKS; i++)
            gate_destroy(&r.gates[i]);
    }
    return NULL;
}

TEST(foreign_wakes_race_with_parking)
{
    run(race_body, NULL);
}

/* Spawning onto a runtime from a thread that is not inside it. */
struct remote_spawn {
    weft_runtime *rt;
    weft_task *h;
    struct gate done;
};

static void *remote_spawner(void *arg)
{
    struct remote_spawn *rs = arg;
    ASSERT_OK(weft_spawn(rs->rt, &rs->h, add_one, (void *)1));
    /* Joining from a plain thread blocks that thread. */
    void *v;
    ASSERT_OK(weft_join(rs->h, &v));
    ASSERT_EQ((uintptr_t)v, 2);
    gate_open(&rs->done, NULL);
    return NULL;
}

static void *remote_spawn_body(void *arg)
{
    struct remote_spawn *rs = arg;
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, remote_spawner, rs), 0);
    ASSERT_OK(weft_await(gate_wait(&rs->done), NULL));
    pthread_join(th, NULL);
    weft_task_free(rs->h);
    return NULL;
}

TEST(spawn_and_join_from_foreign_thread)
{
    struct remote_spawn rs = {0};
    gate_init(&rs.done);
    rs.rt = new_rt();
    ASSERT_OK(weft_block_on(rs.rt, remote_spawn_body, &rs, NULL));
    weft_runtime_free(rs.rt);
    gate_destroy(&rs.done);
}

/* ---- yield ---- */

struct pingpong {
    int turn;
    int log[16];
    int n;
};

static void *yielder(void *arg)
{
    struct pingpong *p = arg;
    int me = p->turn++;
    for (int i = 0; i < 4; i++) {
        p->log[p->n++] = me;
        ASSERT_OK(weft_yield());
    }
    return NULL;
}

static void *yield_body(void *arg)
{
    (void)arg;
    struct pingpong p = {0};
    weft_task *a, *b;
    ASSERT_OK(weft_spawn(NULL, &a, yielder, &p));
    ASSERT_OK(weft_spawn(NULL, &b, yielder, &p));
    ASSERT_OK(weft_join(a, NULL));
    ASSERT_OK(weft_join(b, NULL));
    weft_task_free(a);
    weft_task_free(b);
    /* Yield goes to the back of the queue: the two tasks alternate. */
    ASSERT_EQ(p.n, 8);
    for (int i = 0; i < 8; i++)
        ASSERT_EQ(p.log[i], i % 2);
    return NULL;
}

TEST(yield_alternates_tasks)
{
    /* An ordering property of the single-threaded executor. */
    weft_runtime *rt;
    ASSERT_OK(weft_runtime_new(&rt, NULL));
    ASSERT_OK(weft_block_on(rt, yield_body, NULL, NULL));
    weft_runtime_free(rt);
}

TEST(yield_outside_task_is_eperm)
{
    ASSERT_EQ(weft_yield(), -EPERM);
    ASSERT_EQ(weft_await(weft_ready(NULL, 0), NULL), -EPERM);
}

static void *yield_future_body(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_await(weft_yield_future(), NULL));
    void *v;
    ASSERT_EQ(weft_await(weft_ready((void *)5, -EIO), &v), -EIO);
    ASSERT_EQ((uintptr_t)v, 5);
    return NULL;
}

TEST(yield_and_ready_futures)
{
    run(yield_future_body, NULL);
}

/* Heap futures are as aligned as their type needs: a future whose size is
 * a multiple of 16 (which may hold a 16-aligned member) is 16-aligned, any
 * other at least 8-aligned; both run as tasks with the right result. */
struct aligned_future {
    weft_future base;
    _Alignas(16) unsigned char wide[16];
    uint64_t x;
};

struct odd_future {
    weft_future base;
    uint64_t x; /* 40 bytes: 8-aligned is all it can need */
};

static weft_poll x_poll(weft_future *f, weft_cx *cx)
{
    (void)cx;
    uint64_t x = f->ops->name[0] == 'a' ? ((struct aligned_future *)f)->x
                                        : ((struct odd_future *)f)->x;
    return weft_future_set(f, (void *)(uintptr_t)(x + 1), 0);
}

static const weft_future_ops aligned_ops = {.poll = x_poll, .name = "a"};
static const weft_future_ops odd_ops = {.poll = x_poll, .name = "o"};

static void *future_alignment_body(void *arg)
{
    (void)arg;
    _Static_assert(sizeof(struct aligned_future) % 16 == 0, "test shape");
    _Static_assert(sizeof(struct odd_future) % 16 != 0, "test shape");
    for (int i = 0; i < 100; i++) {
        struct aligned_future *a =
            (struct aligned_future *)weft_future_new(sizeof *a, &aligned_ops);
        struct odd_future *o =
            (struct odd_future *)weft_future_new(sizeof *o, &odd_ops);
        ASSERT(a && o);
        ASSERT_EQ((uintptr_t)a % 16, 0);
        ASSERT_EQ((uintptr_t)a->wide % 16, 0);
        ASSERT_EQ((uintptr_t)o % 8, 0);
        a->x = (uint64_t)i;
        o->x = (uint64_t)i * 2;
        weft_task *ta, *to;
        ASSERT_OK(weft_spawn_future(NULL, &ta, &a->base, NULL));
        ASSERT_OK(weft_spawn_future(NULL, &to, &o->base, NULL));
        void *va, *vo;
        ASSERT_OK(weft_join(ta, &va));
        ASSERT_OK(weft_join(to, &vo));
        ASSERT_EQ((uintptr_t)va, (uintptr_t)i + 1);
        ASSERT_EQ((uintptr_t)vo, (uintptr_t)i * 2 + 1);
        /* The spawn site of a future task is where the future was made. */
        ASSERT_STR_CONTAINS(weft_task_site(ta)->file, "test_task.c");
        ASSERT(weft_task_site(ta)->line < weft_task_site(to)->line);
        weft_task_free(ta);
        weft_task_free(to);
    }
    return NULL;
}

TEST(heap_futures_are_aligned_for_their_type)
{
    run(future_alignment_body, NULL);
}

/* ---- the cooperative budget ---- */

static void *busy_ready_loop(void *arg)
{
    atomic_int *stop = arg;
    long n = 0;
    /* Every await here is ready at once: without the budget this task
     * would never give up the thread. */
    while (!atomic_load(stop)) {
        ASSERT_OK(weft_await(weft_ready(NULL, 0), NULL));
        n++;
    }
    return (void *)n;
}

static void *stopper(void *arg)
{
    atomic_store((atomic_int *)arg, 1);
    return NULL;
}

static void *budget_body(void *arg)
{
    (void)arg;
    atomic_int stop = 0;
    weft_task *busy, *s;
    ASSERT_OK(weft_spawn(NULL, &busy, busy_ready_loop, &stop));
    ASSERT_OK(weft_spawn(NULL, &s, stopper, &stop));
    void *n;
    ASSERT_OK(weft_join(busy, &n));
    ASSERT_OK(weft_join(s, NULL));
    /* On one thread it ran at least once before the stopper got its turn
     * (on two workers the stopper may even run first). What matters is
     * that both finished. */
    if (!is_mt())
        ASSERT_GE((intptr_t)n, 1);
    weft_task_free(busy);
    weft_task_free(s);
    return NULL;
}

TEST(budget_stops_a_task_that_is_always_ready)
{
    run(budget_body, NULL);
}

/* ---- wakes before the woken task runs ---- */

/* A task whose future counts its polls and stays pending until `done`,
 * keeping a clone of its task's waker: what the cases below observe. */
struct counted {
    atomic_int polls, done;
    weft_waker waker;
    weft_task *t;
};

struct counted_future {
    weft_future base;
    struct counted *c;
};

static weft_poll counted_poll(weft_future *f, weft_cx *cx)
{
    struct counted *c = ((struct counted_future *)f)->c;
    if (atomic_load(&c->done)) {
        atomic_fetch_add(&c->polls, 1);
        return weft_future_set(f, NULL, 0);
    }
    /* A task's waker is the same at every poll: keep the first clone. The
     * count is published after it, for the test body on another thread. */
    if (!c->waker.vtable)
        c->waker = weft_waker_clone(weft_cx_waker(cx));
    atomic_fetch_add(&c->polls, 1);
    return WEFT_PENDING;
}

static const weft_future_ops counted_ops = {.poll = counted_poll,
                                            .name = "counting"};

/* Spawns the task and yields until its first poll has run. */
static void counted_spawn(struct counted *c)
{
    struct counted_future *f =
        (struct counted_future *)weft_future_new(sizeof *f, &counted_ops);
    ASSERT(f != NULL);
    f->c = c;
    ASSERT_OK(weft_spawn_future(NULL, &c->t, &f->base, NULL));
    while (atomic_load(&c->polls) < 1)
        ASSERT_OK(weft_yield());
}

/* Lets the task finish and joins it. */
static void counted_finish(struct counted *c)
{
    atomic_store(&c->done, 1);
    weft_waker_wake_by_ref(&c->waker);
    ASSERT_OK(weft_join(c->t, NULL));
}

static void counted_free(struct counted *c)
{
    weft_waker_drop(&c->waker);
    weft_task_free(c->t);
}

/* Two wakes of a task before it runs (the second finds it queued) give one
 * poll, not two: on one thread a wake takes the task straight to its next
 * poll, and the second wake must see that. */
static void *double_wake_body(void *arg)
{
    (void)arg;
    struct counted c = {0};
    counted_spawn(&c);
    weft_waker_wake_by_ref(&c.waker);
    weft_waker_wake_by_ref(&c.waker);
    for (int i = 0; i < 8; i++)
        ASSERT_OK(weft_yield());
    if (!is_mt())
        ASSERT_EQ(atomic_load(&c.polls), 2);
    while (atomic_load(&c.polls) < 2)
        ASSERT_OK(weft_yield());
    counted_finish(&c);
    if (!is_mt())
        ASSERT_EQ(atomic_load(&c.polls), 3);
    counted_free(&c);
    return NULL;
}

TEST(two_wakes_before_running_give_one_poll)
{
    run(double_wake_body, NULL);
}

static void *wake_twice_thread(void *arg)
{
    weft_waker_wake_by_ref(arg);
    weft_waker_wake_by_ref(arg);
    return NULL;
}

/* The same with wakes from another thread, alone and after a wake on the
 * runtime's thread: each batch of wakes that comes before a poll gives one
 * poll, whatever mix of threads sent it. */
static void *mixed_wakes_body(void *arg)
{
    (void)arg;
    struct counted c = {0};
    counted_spawn(&c);
    for (int round = 0; round < 2; round++) {
        int before = atomic_load(&c.polls);
        if (round == 1)
            weft_waker_wake_by_ref(&c.waker); /* queued here first */
        pthread_t th;
        ASSERT_OK(pthread_create(&th, NULL, wake_twice_thread, &c.waker));
        ASSERT_OK(pthread_join(th, NULL));
        while (atomic_load(&c.polls) < before + 1)
            ASSERT_OK(weft_yield());
        for (int i = 0; i < 300; i++) /* past the next remote-queue look */
            ASSERT_OK(weft_yield());
        if (!is_mt())
            ASSERT_EQ(atomic_load(&c.polls), before + 1);
    }
    counted_finish(&c);
    counted_free(&c);
    return NULL;
}

TEST(foreign_wakes_before_running_give_one_poll)
{
    run(mixed_wakes_body, NULL);
}

/* A wake from another thread finds no memory to queue its entry: it is
 * kept in the task's state and still reaches the task. */
static void *wake_once_thread(void *arg)
{
    weft_waker_wake_by_ref(arg);
    return NULL;
}

static void *wake_without_memory_body(void *arg)
{
    (void)arg;
    if (is_mt())
        return NULL; /* the entry is the current-thread runtime's */
    struct counted c = {0};
    counted_spawn(&c);
    weft__fail_alloc_after(1); /* the entry array's first allocation */
    pthread_t th;
    ASSERT_OK(pthread_create(&th, NULL, wake_once_thread, &c.waker));
    ASSERT_OK(pthread_join(th, NULL));
    weft__fail_alloc_after(0);
    for (int i = 0; i < 100000 && atomic_load(&c.polls) < 2; i++)
        ASSERT_OK(weft_yield());
    ASSERT_EQ(atomic_load(&c.polls), 2);
    counted_finish(&c);
    counted_free(&c);
    return NULL;
}

TEST(foreign_wake_without_memory_is_not_lost)
{
    run(wake_without_memory_body, NULL);
}

/* A waker may outlive its runtime: waking it, and cancelling a handle,
 * after weft_runtime_free is a harmless no-op (the task has finished; the
 * freed scheduler is not touched). */
static void *keep_waker_body(void *arg)
{
    struct counted *c = arg;
    counted_spawn(c);
    counted_finish(c);
    return NULL;
}

TEST(waker_and_handle_outlive_the_runtime)
{
    struct counted c = {0};
    run(keep_waker_body, &c); /* frees the runtime */
    ASSERT(c.waker.vtable != NULL);
    weft_waker_wake_by_ref(&c.waker);
    weft_task_cancel(c.t);
    pthread_t th;
    ASSERT_OK(pthread_create(&th, NULL, wake_once_thread, &c.waker));
    ASSERT_OK(pthread_join(th, NULL));
    ASSERT_EQ(weft_join(c.t, NULL), 0);
    counted_free(&c);
}

/* A task woken (and so queued) and then cancelled before it runs sees the
 * cancel at that run. */
static void *woken_then_cancelled_body(void *arg)
{
    (void)arg;
    struct counted c = {0};
    counted_spawn(&c);
    weft_waker_wake_by_ref(&c.waker);
    weft_task_cancel(c.t);
    ASSERT_EQ(weft_join(c.t, NULL), -ECANCELED);
    /* Dropped without another poll on one thread (on two it may have run
     * between the wake and the cancel). */
    if (!is_mt())
        ASSERT_EQ(atomic_load(&c.polls), 1);
    counted_free(&c);
    return NULL;
}

TEST(task_woken_then_cancelled_before_it_runs)
{
    run(woken_then_cancelled_body, NULL);
}

/* ---- cancellation at each kind of suspension point ---- */

static void *cancel_in_await(void *arg)
{
    struct gate *g = arg;
    int rc = weft_await(gate_wait(g), NULL);
    /* Every later suspension fails too. */
    int rc2 = weft_yield();
    int rc3 = weft_await(weft_ready(NULL, 0), NULL);
    ASSERT_EQ(rc2, -ECANCELED);
    ASSERT_EQ(rc3, -ECANCELED);
    ASSERT(weft_task_cancelled());
    return (void *)(intptr_t)rc;
}

static void *cancel_await_body(void *arg)
{
    (void)arg;
    struct gate g;
    gate_init(&g);
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, cancel_in_await, &g));
    while (atomic_load(&g.polls) < 1) /* until t is suspended in the gate */
        ASSERT_OK(weft_yield());
    weft_task_cancel(t);
    void *v = NULL;
    ASSERT_EQ(weft_join(t, &v), -ECANCELED);
    ASSERT(weft_task_done(t));
    weft_task_free(t);
    /* The gate future was dropped: its waker slot is free again. */
    ASSERT_EQ(atomic_load(&g.drops), 1);
    ASSERT(g.waiters[0].vtable == NULL);
    gate_destroy(&g);
    return NULL;
}

TEST(cancel_while_awaiting)
{
    run(cancel_await_body, NULL);
}

static void *spin_yield(void *arg)
{
    atomic_int *seen = arg;
    for (;;) {
        int rc = weft_yield();
        if (rc < 0) {
            atomic_store(seen, rc);
            return NULL;
        }
    }
}

static void *cancel_yield_body(void *arg)
{
    (void)arg;
    atomic_int seen = 0;
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, spin_yield, &seen));
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_yield());
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    ASSERT_EQ(atomic_load(&seen), -ECANCELED);
    weft_task_free(t);
    return NULL;
}

TEST(cancel_while_yielding)
{
    run(cancel_yield_body, NULL);
}

static void *join_forever(void *arg)
{
    return (void *)(intptr_t)weft_join((weft_task *)arg, NULL);
}

static void *cancel_join_body(void *arg)
{
    (void)arg;
    struct gate g;
    gate_init(&g);
    weft_task *sleeper, *joiner;
    ASSERT_OK(weft_spawn(NULL, &sleeper, wait_gate, &g));
    ASSERT_OK(weft_spawn(NULL, &joiner, join_forever, sleeper));
    ASSERT_OK(weft_yield());
    weft_task_cancel(joiner);
    void *v;
    ASSERT_EQ(weft_join(joiner, &v), -ECANCELED);
    ASSERT(!weft_task_done(sleeper));
    gate_open(&g, (void *)3);
    ASSERT_OK(weft_join(sleeper, &v));
    ASSERT_EQ((uintptr_t)v, 3);
    weft_task_free(joiner);
    weft_task_free(sleeper);
    gate_destroy(&g);
    return NULL;
}

TEST(cancel_while_joining)
{
    run(cancel_join_body, NULL);
}

static void *record_cancel(void *arg)
{
    atomic_int *ran = arg;
    atomic_store(ran, 1);
    ASSERT(weft_task_cancelled());
    ASSERT_EQ(weft_yield(), -ECANCELED);
    return (void *)1;
}

static void *cancel_before_start_body(void *arg)
{
    (void)arg;
    atomic_int ran = 0;
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, record_cancel, &ran));
    weft_task_cancel(t); /* before it ever ran */
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    /* Coroutine tasks always run their function, so it can free its arg. */
    ASSERT_EQ(atomic_load(&ran), 1);
    weft_task_cancel(t); /* cancelling a finished task does nothing */
    weft_task_free(t);
    return NULL;
}

TEST(cancel_before_first_poll)
{
    /* Only a current-thread runtime guarantees that the task has not
     * started by the time the spawner cancels it. */
    weft_runtime *rt;
    ASSERT_OK(weft_runtime_new(&rt, NULL));
    ASSERT_OK(weft_block_on(rt, cancel_before_start_body, NULL, NULL));
    weft_runtime_free(rt);
}

static void *cancel_future_body(void *arg)
{
    (void)arg;
    struct gate g;
    gate_init(&g);
    weft_task *t;
    ASSERT_OK(weft_spawn_future(NULL, &t, gate_wait(&g), NULL));
    while (atomic_load(&g.polls) < 1)
        ASSERT_OK(weft_yield());
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    /* Dropped, never polled again. */
    ASSERT_EQ(atomic_load(&g.drops), 1);
    ASSERT_EQ(atomic_load(&g.polls), 1);
    weft_task_free(t);
    gate_destroy(&g);
    return NULL;
}

TEST(cancel_future_task_drops_it)
{
    run(cancel_future_body, NULL);
}

/* Cancel from a foreign thread while the runtime is parked. */
struct cancel_remote {
    weft_task *t;
};

static void *cancel_thread(void *arg)
{
    usleep(20000);
    weft_task_cancel(((struct cancel_remote *)arg)->t);
    return NULL;
}

static void *cancel_remote_body(void *arg)
{
    (void)arg;
    struct gate g;
    gate_init(&g);
    struct cancel_remote cr;
    ASSERT_OK(weft_spawn(NULL, &cr.t, wait_gate, &g));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, cancel_thread, &cr), 0);
    ASSERT_EQ(weft_join(cr.t, NULL), -ECANCELED);
    pthread_join(th, NULL);
    weft_task_free(cr.t);
    gate_destroy(&g);
    return NULL;
}

TEST(cancel_from_foreign_thread)
{
    run(cancel_remote_body, NULL);
}

/* A handle is a plain pointer: several tasks and a plain thread may join
 * the same task at once, and every one of them is woken. */
struct shared_join {
    weft_task *target;
    atomic_int woken;
};

static void *join_shared(void *arg)
{
    struct shared_join *sj = arg;
    void *v = NULL;
    ASSERT_OK(weft_join(sj->target, &v));
    ASSERT_EQ((uintptr_t)v, 5);
    atomic_fetch_add(&sj->woken, 1);
    return NULL;
}

static void *many_joiners_body(void *arg)
{
    (void)arg;
    struct gate g;
    gate_init(&g);
    struct shared_join sj = {0};
    ASSERT_OK(weft_spawn(NULL, &sj.target, wait_gate, &g));
    weft_task *j[4];
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_spawn(NULL, &j[i], join_shared, &sj));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, join_shared, &sj), 0);
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_yield());
    ASSERT_EQ(atomic_load(&sj.woken), 0);
    gate_open(&g, (void *)5);
    for (int i = 0; i < 4; i++) {
        ASSERT_OK(weft_join(j[i], NULL));
        weft_task_free(j[i]);
    }
    pthread_join(th, NULL);
    ASSERT_EQ(atomic_load(&sj.woken), 5);
    weft_task_free(sj.target);
    gate_destroy(&g);
    return NULL;
}

TEST(many_joiners_of_one_task)
{
    run(many_joiners_body, NULL);
}

/* ---- deadlocks ---- */

static void *self_join(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)weft_join(weft_task_self(), NULL);
}

TEST(self_join_is_edeadlk)
{
    ASSERT_EQ((intptr_t)run(self_join, NULL), -EDEADLK);
}

struct cycle {
    weft_task *t[3];
    int len;
    struct gate start;
    atomic_int deadlocks;
};

static void *cycle_member(void *arg)
{
    struct cycle *c = arg;
    weft_task *self = weft_task_self();
    int me = 0;
    while (c->t[me] != self)
        me++;
    ASSERT_OK(weft_await(gate_wait(&c->start), NULL));
    int rc = weft_join(c->t[(me + 1) % c->len], NULL);
    if (rc == -EDEADLK)
        atomic_fetch_add(&c->deadlocks, 1);
    return (void *)(intptr_t)rc;
}

static void *cycle_body(void *arg)
{
    struct cycle *c = arg;
    gate_init(&c->start);
    for (int i = 0; i < c->len; i++)
        ASSERT_OK(weft_spawn(NULL, &c->t[i], cycle_member, c));
    gate_open(&c->start, NULL);
    for (int i = 0; i < c->len; i++)
        weft_join(c->t[i], NULL);
    /* Exactly the task that closed the cycle was told; the others then
     * finished normally once it returned. */
    ASSERT_EQ(atomic_load(&c->deadlocks), 1);
    for (int i = 0; i < c->len; i++)
        weft_task_free(c->t[i]);
    gate_destroy(&c->start);
    return NULL;
}

TEST(join_cycle_of_two)
{
    struct cycle c = {.len = 2};
    run(cycle_body, &c);
}

TEST(join_cycle_of_three)
{
    struct cycle c = {.len = 3};
    run(cycle_body, &c);
}

static void *nested_block_on(void *arg)
{
    return (void *)(intptr_t)weft_block_on((weft_runtime *)arg, add_one, NULL,
                                           NULL);
}

TEST(block_on_inside_task_is_eperm)
{
    weft_runtime *rt = new_rt();
    weft_runtime *other = new_rt();
    void *v;
    ASSERT_OK(weft_block_on(rt, nested_block_on, other, &v));
    ASSERT_EQ((intptr_t)v, -EPERM);
    ASSERT_OK(weft_block_on(rt, nested_block_on, rt, &v));
    ASSERT_EQ((intptr_t)v, -EPERM);
    weft_runtime_free(other);
    weft_runtime_free(rt);
}

/* ---- futures: laziness and the never-polled report ---- */

/* Runs fn in a child process with stderr captured; returns what it wrote. */
static char *capture_stderr(void (*fn)(void), int *status)
{
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        fn();
        _exit(0);
    }
    close(p[1]);
    static char buf[8192];
    size_t n = 0;
    ssize_t r;
    while ((r = read(p[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(p[0]);
    waitpid(pid, status, 0);
    return buf;
}

static atomic_int lazy_polls;

static weft_poll counting_poll(weft_future *f, weft_cx *cx)
{
    (void)cx;
    atomic_fetch_add(&lazy_polls, 1);
    return weft_future_set(f, NULL, 0);
}

static const weft_future_ops counting_ops = {.poll = counting_poll,
                                             .name = "counting"};

static void forget_future(void)
{
    setenv("WEFT_DEBUG", "1", 1);
    weft_future *f = weft_future_new(sizeof *f, &counting_ops);
    weft_future_free(f); /* forgot to await */
}

static void *await_counting(void *arg)
{
    (void)arg;
    weft_future *f = weft_future_new(sizeof *f, &counting_ops);
    ASSERT_EQ(atomic_load(&lazy_polls), 0); /* lazy: nothing ran yet */
    ASSERT_OK(weft_await(f, NULL));
    ASSERT_EQ(atomic_load(&lazy_polls), 1);
    return NULL;
}

static void await_future_properly(void)
{
    setenv("WEFT_DEBUG", "1", 1);
    run(await_counting, NULL);
}

TEST(never_polled_future_is_reported)
{
    int status;
    char *err = capture_stderr(forget_future, &status);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT_STR_CONTAINS(err, "without ever being polled");
    ASSERT_STR_CONTAINS(err, "counting");
    ASSERT_STR_CONTAINS(err, "test_task.c:");
}

TEST(polled_future_is_not_reported)
{
    int status;
    char *err = capture_stderr(await_future_properly, &status);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT(strstr(err, "ever being polled") == NULL);
}

static void forget_without_debug(void)
{
    setenv("WEFT_DEBUG", "0", 1);
    weft_future_free(weft_future_new(sizeof(weft_future), &counting_ops));
}

TEST(never_polled_report_off_with_debug_0)
{
    int status;
    char *err = capture_stderr(forget_without_debug, &status);
    ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    ASSERT(strstr(err, "ever being polled") == NULL);
}

/* ---- stack overflow ---- */

static int recurse(int depth)
{
    volatile char buf[1024];
    buf[0] = (char)depth;
    return depth > 1000000 ? buf[0] : recurse(depth + 1) + buf[0];
}

static void *overflow_task(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)recurse(0);
}

static void *overflow_body(void *arg)
{
    (void)arg;
    weft_spawn_opts o = {.name = "deep-recursion", .stack_size = 64 * 1024};
    weft_task *t;
    ASSERT_OK(weft_spawn_opts(NULL, &t, overflow_task, NULL, &o));
    weft_join(t, NULL);
    return NULL;
}

static void overflow_child(void)
{
    run(overflow_body, NULL);
}

TEST(stack_overflow_is_reported)
{
    int status;
    char *err = capture_stderr(overflow_child, &status);
#if defined(__SANITIZE_ADDRESS__)
    /* ASan's own SIGSEGV handling may win and report a stack-overflow. */
    if (strstr(err, "stack-overflow"))
        return;
#endif
    ASSERT(WIFSIGNALED(status));
    ASSERT_EQ(WTERMSIG(status), SIGABRT);
    ASSERT_STR_CONTAINS(err, "overflowed its stack");
    ASSERT_STR_CONTAINS(err, "deep-recursion");
    ASSERT_STR_CONTAINS(err, "spawned at ");
    ASSERT_STR_CONTAINS(err, "test_task.c:");
}

/* ---- shutdown ---- */

struct pending {
    struct gate g;
    atomic_int unwound;
};

static void *pending_task(void *arg)
{
    struct pending *p = arg;
    int rc = weft_await(gate_wait(&p->g), NULL);
    if (rc == -ECANCELED)
        atomic_fetch_add(&p->unwound, 1);
    return NULL;
}

static void *leave_pending(void *arg)
{
    struct pending *p = arg;
    for (int i = 0; i < 5; i++)
        ASSERT_OK(weft_spawn(NULL, NULL, pending_task, p));
    weft_task *keep;
    ASSERT_OK(weft_spawn(NULL, &keep, pending_task, p));
    ASSERT_OK(weft_yield()); /* the six suspend in the gate */
    /* Some that never even start before shutdown. */
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_spawn(NULL, NULL, pending_task, p));
    /* And a future task. */
    ASSERT_OK(weft_spawn_future(NULL, NULL, gate_wait(&p->g), NULL));
    return keep;
}

TEST(shutdown_with_tasks_pending)
{
    struct pending p;
    gate_init(&p.g);
    atomic_init(&p.unwound, 0);
    weft_runtime *rt = new_rt();
    void *v;
    ASSERT_OK(weft_block_on(rt, leave_pending, &p, &v));
    weft_task *keep = v;
    ASSERT(!weft_task_done(keep));
    weft_runtime_free(rt);
    /* Every coroutine unwound through its own code with -ECANCELED. */
    ASSERT_EQ(atomic_load(&p.unwound), 9);
    /* A handle held across shutdown stays valid until freed. */
    ASSERT(weft_task_done(keep));
    ASSERT_EQ(weft_join(keep, NULL), -ECANCELED);
    weft_task_free(keep);
    ASSERT_EQ(atomic_load(&p.g.drops), 9 + 1);
    gate_destroy(&p.g);
}

static void *spawn_during_shutdown(void *arg)
{
    atomic_int *rc = arg;
    struct gate g;
    gate_init(&g);
    weft_await(gate_wait(&g), NULL); /* cancelled by shutdown */
    weft_task *t;
    atomic_store(rc, weft_spawn(NULL, &t, add_one, NULL));
    ASSERT(t == NULL);
    gate_destroy(&g);
    return NULL;
}

static void *start_spawner(void *arg)
{
    ASSERT_OK(weft_spawn(NULL, NULL, spawn_during_shutdown, arg));
    return NULL;
}

TEST(spawn_during_shutdown_is_eshutdown)
{
    atomic_int rc = 1;
    weft_runtime *rt = new_rt();
    ASSERT_OK(weft_block_on(rt, start_spawner, &rc, NULL));
    weft_runtime_free(rt);
    ASSERT_EQ(atomic_load(&rc), -ESHUTDOWN);
}

TEST(block_on_twice_and_remote_spawn_between)
{
    weft_runtime *rt = new_rt();
    void *v;
    ASSERT_OK(weft_block_on(rt, add_one, (void *)1, &v));
    ASSERT_EQ((uintptr_t)v, 2);
    /* Spawned while no thread is inside block_on: a current-thread runtime
     * runs it at the next block_on (a multi-thread one at once). */
    weft_task *t;
    ASSERT_OK(weft_spawn(rt, &t, add_one, (void *)5));
    if (!is_mt())
        ASSERT(!weft_task_done(t));
    ASSERT_OK(weft_block_on(rt, add_one, (void *)2, &v));
    ASSERT_EQ((uintptr_t)v, 3);
    if (!is_mt())
        ASSERT(weft_task_done(t));
    ASSERT_OK(weft_join(t, &v));
    ASSERT_EQ((uintptr_t)v, 6);
    weft_task_free(t);
    weft_runtime_free(rt);
}

/* ---- errors ---- */

static void *spawn_errors_body(void *arg)
{
    (void)arg;
    weft_task *t = (weft_task *)1;
    weft_spawn_opts small = {.stack_size = 1024};
    ASSERT_EQ(weft_spawn_opts(NULL, &t, add_one, NULL, &small), -EINVAL);
    ASSERT(t == NULL);
    /* Allocation failure is a clean error. */
    weft__fail_alloc_after(1);
    ASSERT_EQ(weft_spawn(NULL, &t, add_one, NULL), -ENOMEM);
    ASSERT(t == NULL);
    weft__fail_alloc_after(1);
    ASSERT_EQ(weft_await(weft_yield_future(), NULL), -ENOMEM);
    weft__fail_alloc_after(0);
    ASSERT_EQ(weft_spawn_future(NULL, &t, NULL, NULL), -EINVAL);
    /* A caller-owned future cannot be spawned. */
    weft_future f;
    weft_future_init(&f, &counting_ops);
    ASSERT_EQ(weft_spawn_future(NULL, &t, &f, NULL), -EINVAL);
    return NULL;
}

TEST(spawn_errors)
{
    run(spawn_errors_body, NULL);
}

TEST(spawn_outside_runtime_without_rt_is_eperm)
{
    weft_task *t;
    ASSERT_EQ(weft_spawn(NULL, &t, add_one, NULL), -EPERM);
}

TEST_MAIN()
