/*
 * Sync primitives: mutex, rwlock, semaphore, notify, barrier, once-cell.
 * Every case runs on both executors (WEFT_TEST_FLAVOR=mt: multi-thread).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "flavor.h"
#include "test.h"
#include "weft.h"

static void yield_until(atomic_int *flag, int want)
{
    while (atomic_load(flag) < want)
        ASSERT_OK(weft_yield());
}

/* Gives other tasks time to reach their suspension point. */
static void settle(void)
{
    for (int i = 0; i < (is_mt() ? 2000 : 4); i++)
        ASSERT_OK(weft_yield());
    if (is_mt())
        usleep(2000);
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_yield());
}

static int scaled(int n)
{
    return TEST_SANITIZED ? n / 10 : n;
}

/* A task that runs fn(arg) and stores its result; used to block tasks on a
 * primitive and cancel them. */
struct blocked {
    int (*fn)(void *arg);
    void *arg;
    atomic_int started;
    int rc;
    weft_task *t;
};

static void *blocked_main(void *arg)
{
    struct blocked *b = arg;
    atomic_store(&b->started, 1);
    b->rc = b->fn(b->arg);
    return NULL;
}

static void start_blocked(struct blocked *b, int (*fn)(void *), void *arg)
{
    b->fn = fn;
    b->arg = arg;
    atomic_store(&b->started, 0);
    b->rc = 12345;
    ASSERT_OK(weft_spawn(NULL, &b->t, blocked_main, b));
    yield_until(&b->started, 1);
    settle();
    ASSERT(!weft_task_done(b->t));
}

/* Cancels a blocked task; it must return -ECANCELED. */
static void cancel_blocked(struct blocked *b)
{
    weft_task_cancel(b->t);
    ASSERT_EQ(weft_join(b->t, NULL), -ECANCELED);
    ASSERT_EQ(b->rc, -ECANCELED);
    weft_task_free(b->t);
}

static void finish_blocked(struct blocked *b, int want)
{
    ASSERT_OK(weft_join(b->t, NULL));
    ASSERT_EQ(b->rc, want);
    weft_task_free(b->t);
}

/* ======================================================================== */
/* mutex                                                                    */
/* ======================================================================== */

static int lock_fn(void *m)
{
    return weft_mutex_lock(m);
}

static void *mutex_basic_body(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    ASSERT_OK(weft_mutex_lock(&m));
    ASSERT_EQ(weft_mutex_try_lock(&m), -EBUSY);
    ASSERT_EQ(weft_mutex_destroy(&m), -EBUSY);
    struct blocked b;
    start_blocked(&b, lock_fn, &m);
    weft_mutex_unlock(&m); /* handed to b */
    finish_blocked(&b, 0);
    ASSERT_EQ(weft_mutex_try_lock(&m), -EBUSY); /* b holds it */
    weft_mutex_unlock(&m);
    ASSERT_OK(weft_mutex_try_lock(&m));
    weft_mutex_unlock(&m);
    ASSERT_OK(weft_mutex_destroy(&m));
    return NULL;
}

TEST(mutex_basics)
{
    run(mutex_basic_body, NULL);
}

/* Waiters get the lock in the order they queued. The order is made
 * deterministic by queueing N lock futures from one join_all: its first
 * poll polls them in index order. Each, once it has the lock, records its
 * index and unlocks. */
#define FIFO_N 50

struct fifo_lock {
    weft_future base;
    weft_mutex *m;
    int id;
    int *order;
    atomic_int *n;
    atomic_int *queued;
    bool counted;
    weft_sync_op op;
};

static weft_poll fifo_lock_poll(weft_future *f, weft_cx *cx)
{
    struct fifo_lock *l = (struct fifo_lock *)f;
    if (weft_future_poll(&l->op.base, cx) == WEFT_PENDING) {
        if (!l->counted) {
            l->counted = true;
            atomic_fetch_add(l->queued, 1);
        }
        return WEFT_PENDING;
    }
    ASSERT_OK(l->op.base.err);
    weft_future_free(&l->op.base);
    l->order[atomic_fetch_add(l->n, 1)] = l->id;
    weft_mutex_unlock(l->m);
    return weft_future_set(f, NULL, 0);
}

static const weft_future_ops fifo_lock_ops = {fifo_lock_poll, NULL, "fifo"};

struct fifo_case {
    weft_mutex m;
    int order[FIFO_N];
    atomic_int n, queued;
};

static void *fifo_joiner(void *arg)
{
    struct fifo_case *c = arg;
    weft_future *fs[FIFO_N];
    for (int i = 0; i < FIFO_N; i++) {
        struct fifo_lock *l =
            (struct fifo_lock *)weft_future_new(sizeof *l, &fifo_lock_ops);
        ASSERT(l);
        l->m = &c->m;
        l->id = i;
        l->order = c->order;
        l->n = &c->n;
        l->queued = &c->queued;
        weft_mutex_lock_init(&l->op, &c->m);
        fs[i] = &l->base;
    }
    ASSERT_OK(weft_join_all(fs, FIFO_N, NULL, NULL));
    return NULL;
}

static void *mutex_fifo_body(void *arg)
{
    (void)arg;
    struct fifo_case c = {0};
    weft_mutex_init(&c.m);
    ASSERT_OK(weft_mutex_lock(&c.m));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, fifo_joiner, &c));
    yield_until(&c.queued, FIFO_N);
    weft_mutex_unlock(&c.m);
    ASSERT_OK(weft_join(t, NULL));
    weft_task_free(t);
    ASSERT_EQ(atomic_load(&c.n), FIFO_N);
    for (int i = 0; i < FIFO_N; i++)
        ASSERT_EQ(c.order[i], i);
    ASSERT_OK(weft_mutex_destroy(&c.m));
    return NULL;
}

TEST(mutex_hand_off_is_fifo)
{
    run(mutex_fifo_body, NULL);
}

/* No waiter starves: tasks hammer one mutex; each counts the acquisitions
 * by others between asking and getting it. With FIFO hand-off that is at
 * most N-1 on one thread (and stays bounded with threads). Also checks
 * mutual exclusion. */
#define STARVE_TASKS 8

struct starve {
    weft_mutex m;
    atomic_long acquisitions;
    atomic_int inside;
    long max_wait;
    int rounds;
};

static void *starve_task(void *arg)
{
    struct starve *s = arg;
    long worst = 0;
    for (int i = 0; i < s->rounds; i++) {
        long before = atomic_load(&s->acquisitions);
        ASSERT_OK(weft_mutex_lock(&s->m));
        long waited = atomic_fetch_add(&s->acquisitions, 1) - before;
        if (waited > worst)
            worst = waited;
        ASSERT_EQ(atomic_fetch_add(&s->inside, 1), 0);
        if (i % 3 == 0)
            ASSERT_OK(weft_yield()); /* hold it across a suspension */
        ASSERT_EQ(atomic_fetch_sub(&s->inside, 1), 1);
        weft_mutex_unlock(&s->m);
        if (i % 5 == 0)
            ASSERT_OK(weft_yield());
    }
    return (void *)worst;
}

static void *starve_thread(void *arg)
{
    struct starve *s = arg;
    for (int i = 0; i < s->rounds / 4; i++) {
        ASSERT_OK(weft_mutex_lock_blocking(&s->m));
        atomic_fetch_add(&s->acquisitions, 1);
        ASSERT_EQ(atomic_fetch_add(&s->inside, 1), 0);
        ASSERT_EQ(atomic_fetch_sub(&s->inside, 1), 1);
        weft_mutex_unlock(&s->m);
    }
    return NULL;
}

static void *mutex_starve_body(void *arg)
{
    struct starve *s = arg;
    weft_task *h[STARVE_TASKS];
    for (int i = 0; i < STARVE_TASKS; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], starve_task, s));
    pthread_t th;
    if (is_mt())
        ASSERT_EQ(pthread_create(&th, NULL, starve_thread, s), 0);
    for (int i = 0; i < STARVE_TASKS; i++) {
        void *worst;
        ASSERT_OK(weft_join(h[i], &worst));
        if ((long)worst > s->max_wait)
            s->max_wait = (long)worst;
        weft_task_free(h[i]);
    }
    if (is_mt())
        pthread_join(th, NULL);
    else
        ASSERT_LE(s->max_wait, STARVE_TASKS - 1);
    ASSERT_OK(weft_mutex_destroy(&s->m));
    return NULL;
}

TEST(mutex_no_waiter_starves)
{
    struct starve s = {.rounds = scaled(20000)};
    weft_mutex_init(&s.m);
    run(mutex_starve_body, &s);
    ASSERT_EQ(atomic_load(&s.acquisitions),
              (long)STARVE_TASKS * s.rounds + (is_mt() ? s.rounds / 4 : 0));
}

/* A task blocked in lock is cancelled; also one that was handed the lock
 * but cancelled before it ran: the lock passes on, nothing is stuck. */
static void *mutex_cancel_body(void *arg)
{
    (void)arg;
    weft_mutex m;
    weft_mutex_init(&m);
    ASSERT_OK(weft_mutex_lock(&m));
    struct blocked a, b, c;
    start_blocked(&a, lock_fn, &m);
    start_blocked(&b, lock_fn, &m);
    start_blocked(&c, lock_fn, &m);
    cancel_blocked(&b); /* in the middle of the queue */
    /* Hand to a, cancel it before it can run (on one thread it cannot). */
    weft_mutex_unlock(&m);
    weft_task_cancel(a.t);
    weft_join(a.t, NULL);
    weft_task_free(a.t);
    if (a.rc == 0)
        weft_mutex_unlock(&m); /* it ran first (multi-thread) and holds it */
    else
        ASSERT_EQ(a.rc, -ECANCELED);
    /* c gets it either way. */
    finish_blocked(&c, 0);
    weft_mutex_unlock(&m);
    ASSERT_OK(weft_mutex_destroy(&m));
    return NULL;
}

TEST(mutex_cancel_waiters)
{
    run(mutex_cancel_body, NULL);
}

static void *mutex_future_body(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    ASSERT_OK(weft_await(weft_mutex_lock_future(&m), NULL));
    /* A lock future that loses a select holds nothing. */
    weft_mutex m2 = WEFT_MUTEX_INIT;
    ASSERT_OK(weft_mutex_lock(&m2));
    weft_future *fs[2] = {weft_mutex_lock_future(&m), weft_ready(NULL, 0)};
    size_t idx;
    ASSERT_OK(weft_select(fs, 2, &idx, NULL));
    ASSERT_EQ(idx, 1);
    weft_mutex_unlock(&m);
    ASSERT_OK(weft_mutex_try_lock(&m));
    weft_mutex_unlock(&m);
    weft_mutex_unlock(&m2);
    ASSERT_OK(weft_mutex_destroy(&m));
    ASSERT_OK(weft_mutex_destroy(&m2));
    return NULL;
}

TEST(mutex_future_and_select)
{
    run(mutex_future_body, NULL);
}

/* ======================================================================== */
/* rwlock                                                                   */
/* ======================================================================== */

struct rw_state {
    weft_rwlock rw;
    atomic_int readers, writers, max_readers;
    long value;
    int rounds;
};

static void *rw_reader(void *arg)
{
    struct rw_state *s = arg;
    for (int i = 0; i < s->rounds; i++) {
        ASSERT_OK(weft_rwlock_read(&s->rw));
        int r = atomic_fetch_add(&s->readers, 1) + 1;
        ASSERT_EQ(atomic_load(&s->writers), 0);
        int m = atomic_load(&s->max_readers);
        while (r > m && !atomic_compare_exchange_weak(&s->max_readers, &m, r))
            ;
        ASSERT_OK(weft_yield());
        atomic_fetch_sub(&s->readers, 1);
        weft_rwlock_unlock(&s->rw);
    }
    return NULL;
}

static void *rw_writer(void *arg)
{
    struct rw_state *s = arg;
    for (int i = 0; i < s->rounds; i++) {
        ASSERT_OK(weft_rwlock_write(&s->rw));
        ASSERT_EQ(atomic_fetch_add(&s->writers, 1), 0);
        ASSERT_EQ(atomic_load(&s->readers), 0);
        s->value++;
        if (i % 2)
            ASSERT_OK(weft_yield());
        atomic_fetch_sub(&s->writers, 1);
        weft_rwlock_unlock(&s->rw);
        ASSERT_OK(weft_yield());
    }
    return NULL;
}

static void *rw_stress_body(void *arg)
{
    struct rw_state *s = arg;
    weft_task *h[10];
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], i < 7 ? rw_reader : rw_writer, s));
    for (int i = 0; i < 10; i++) {
        ASSERT_OK(weft_join(h[i], NULL));
        weft_task_free(h[i]);
    }
    ASSERT_EQ(s->value, 3L * s->rounds);
    if (!is_mt()) /* readers share (on one thread, certainly) */
        ASSERT_GT(atomic_load(&s->max_readers), 1);
    ASSERT_OK(weft_rwlock_destroy(&s->rw));
    return NULL;
}

TEST(rwlock_readers_share_writers_exclude)
{
    struct rw_state s = {.rounds = scaled(5000)};
    weft_rwlock_init(&s.rw);
    run(rw_stress_body, &s);
}

static int read_fn(void *rw)
{
    return weft_rwlock_read(rw);
}

static int write_fn(void *rw)
{
    return weft_rwlock_write(rw);
}

/* A waiting writer holds back later readers (no writer starvation); when
 * it is cancelled, the readers behind it get in. */
static void *rw_fair_body(void *arg)
{
    (void)arg;
    weft_rwlock rw = WEFT_RWLOCK_INIT;
    ASSERT_OK(weft_rwlock_read(&rw));
    struct blocked w, r;
    start_blocked(&w, write_fn, &rw);
    ASSERT_EQ(weft_rwlock_try_read(&rw), -EBUSY); /* a writer waits */
    start_blocked(&r, read_fn, &rw);
    cancel_blocked(&w);
    finish_blocked(&r, 0); /* the reader behind it got in */
    weft_rwlock_unlock(&rw);
    weft_rwlock_unlock(&rw);
    /* Writer waits for readers, then gets in; readers queue behind. */
    ASSERT_OK(weft_rwlock_read(&rw));
    start_blocked(&w, write_fn, &rw);
    weft_rwlock_unlock(&rw);
    finish_blocked(&w, 0);
    ASSERT_EQ(weft_rwlock_try_write(&rw), -EBUSY);
    weft_rwlock_unlock(&rw);
    ASSERT_OK(weft_rwlock_try_write(&rw));
    weft_rwlock_unlock(&rw);
    ASSERT_OK(weft_rwlock_destroy(&rw));
    return NULL;
}

TEST(rwlock_fair_and_cancel)
{
    run(rw_fair_body, NULL);
}

/* ======================================================================== */
/* semaphore                                                                */
/* ======================================================================== */

struct sem_arg {
    weft_sem *s;
    size_t n;
};

static int acquire_fn(void *arg)
{
    struct sem_arg *a = arg;
    return weft_sem_acquire(a->s, a->n);
}

static void *sem_body(void *arg)
{
    (void)arg;
    weft_sem s;
    weft_sem_init(&s, 3);
    ASSERT_OK(weft_sem_acquire(&s, 2));
    ASSERT_EQ(weft_sem_available(&s), 1);
    ASSERT_EQ(weft_sem_try_acquire(&s, 2), -EAGAIN);
    ASSERT_OK(weft_sem_acquire(&s, 0));
    /* A big request at the head is not overtaken by a small one. */
    struct sem_arg big = {&s, 3}, small = {&s, 1};
    struct blocked b1, b2;
    start_blocked(&b1, acquire_fn, &big);
    ASSERT_EQ(weft_sem_try_acquire(&s, 1), -EAGAIN); /* someone waits */
    start_blocked(&b2, acquire_fn, &small);
    weft_sem_release(&s, 1); /* 2 available: not enough for the head */
    settle();
    ASSERT(!weft_task_done(b2.t));
    weft_sem_release(&s, 1); /* 3: the head gets them */
    finish_blocked(&b1, 0);
    ASSERT(!weft_task_done(b2.t));
    weft_sem_release(&s, 3);
    finish_blocked(&b2, 0);
    ASSERT_EQ(weft_sem_available(&s), 2);
    /* A cancelled head lets the ones behind it in. */
    ASSERT_OK(weft_sem_acquire(&s, 2));
    big.n = 5;
    start_blocked(&b1, acquire_fn, &big);
    weft_sem_release(&s, 1);
    start_blocked(&b2, acquire_fn, &small);
    cancel_blocked(&b1);
    finish_blocked(&b2, 0);
    ASSERT_EQ(weft_sem_available(&s), 0);
    weft_sem_release(&s, 2);
    ASSERT_OK(weft_sem_destroy(&s));
    return NULL;
}

TEST(sem_fifo_try_and_cancel)
{
    run(sem_body, NULL);
}

/* Permits granted to a future that then loses a select go back. A helper
 * releases a permit while the select waits; on one thread it is granted to
 * the acquire future after the yield future became ready, which wins. */
static void *releaser(void *arg)
{
    weft_sem_release(arg, 1);
    return NULL;
}

static void *sem_select_body(void *arg)
{
    (void)arg;
    weft_sem s;
    weft_sem_init(&s, 0);
    for (int i = 0; i < 100; i++) {
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, releaser, &s));
        weft_future *fs[2] = {weft_yield_future(),
                              weft_sem_acquire_future(&s, 1)};
        size_t idx;
        ASSERT_OK(weft_select(fs, 2, &idx, NULL));
        if (!is_mt())
            ASSERT_EQ(idx, 0);
        if (idx == 1)
            weft_sem_release(&s, 1); /* we won it: give it back */
        ASSERT_OK(weft_join(t, NULL));
        weft_task_free(t);
        ASSERT_EQ(weft_sem_available(&s), 1);
        ASSERT_OK(weft_sem_acquire(&s, 1));
    }
    ASSERT_OK(weft_sem_destroy(&s));
    return NULL;
}

TEST(sem_select_loser_keeps_nothing)
{
    run(sem_select_body, NULL);
}

/* Limit the concurrency of many tasks and threads to K. */
struct sem_stress {
    weft_sem s;
    atomic_int inside, max_inside;
    int rounds;
};

static void enter_sem(struct sem_stress *st)
{
    int in = atomic_fetch_add(&st->inside, 1) + 1;
    ASSERT_LE(in, 3);
    int m = atomic_load(&st->max_inside);
    while (in > m && !atomic_compare_exchange_weak(&st->max_inside, &m, in))
        ;
}

static void *sem_task(void *arg)
{
    struct sem_stress *st = arg;
    for (int i = 0; i < st->rounds; i++) {
        ASSERT_OK(weft_sem_acquire(&st->s, 1));
        enter_sem(st);
        ASSERT_OK(weft_yield());
        atomic_fetch_sub(&st->inside, 1);
        weft_sem_release(&st->s, 1);
    }
    return NULL;
}

static void *sem_thread(void *arg)
{
    struct sem_stress *st = arg;
    for (int i = 0; i < st->rounds / 10; i++) {
        ASSERT_OK(weft_sem_acquire_blocking(&st->s, 1));
        enter_sem(st);
        atomic_fetch_sub(&st->inside, 1);
        weft_sem_release(&st->s, 1);
    }
    return NULL;
}

static void *sem_stress_body(void *arg)
{
    struct sem_stress *st = arg;
    weft_task *h[12];
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, sem_thread, st), 0);
    for (int i = 0; i < 12; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], sem_task, st));
    for (int i = 0; i < 12; i++) {
        ASSERT_OK(weft_join(h[i], NULL));
        weft_task_free(h[i]);
    }
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    ASSERT_LE(atomic_load(&st->max_inside), 3); /* checked at each entry */
    if (!is_mt()) /* one thread: the tasks that yield inside fill it */
        ASSERT_EQ(atomic_load(&st->max_inside), 3);
    ASSERT_EQ(weft_sem_available(&st->s), 3);
    return NULL;
}

TEST(sem_limits_tasks_and_threads)
{
    struct sem_stress st = {.rounds = scaled(3000)};
    weft_sem_init(&st.s, 3);
    run(sem_stress_body, &st);
}

/* ======================================================================== */
/* notify                                                                   */
/* ======================================================================== */

static int notify_fn(void *n)
{
    return weft_notify_wait(n);
}

static void *notify_body(void *arg)
{
    (void)arg;
    weft_notify n = WEFT_NOTIFY_INIT;
    /* A notification before the wait is stored (one). */
    ASSERT_EQ(weft_notify_try_wait(&n), -EAGAIN);
    weft_notify_one(&n);
    weft_notify_one(&n);
    ASSERT_OK(weft_notify_wait(&n));
    ASSERT_EQ(weft_notify_try_wait(&n), -EAGAIN);
    /* notify_one wakes the oldest. */
    struct blocked a, b, c;
    start_blocked(&a, notify_fn, &n);
    start_blocked(&b, notify_fn, &n);
    weft_notify_one(&n);
    finish_blocked(&a, 0);
    ASSERT(!weft_task_done(b.t));
    /* notify_all wakes everyone waiting, stores nothing. */
    start_blocked(&c, notify_fn, &n);
    weft_notify_all(&n);
    finish_blocked(&b, 0);
    finish_blocked(&c, 0);
    ASSERT_EQ(weft_notify_try_wait(&n), -EAGAIN);
    /* A cancelled waiter is just gone. */
    start_blocked(&a, notify_fn, &n);
    cancel_blocked(&a);
    weft_notify_one(&n);
    ASSERT_OK(weft_notify_try_wait(&n)); /* stored: nobody waits */
    ASSERT_OK(weft_notify_destroy(&n));
    return NULL;
}

TEST(notify_one_all_and_permit)
{
    run(notify_body, NULL);
}

/* A stored permit is taken by one select branch; the loser takes none. */
static void *notify_select_body(void *arg)
{
    (void)arg;
    weft_notify n = WEFT_NOTIFY_INIT;
    for (int i = 0; i < 100; i++) {
        weft_notify_one(&n);
        weft_future *fs[2] = {weft_notify_wait_future(&n),
                              weft_notify_wait_future(&n)};
        size_t idx;
        ASSERT_OK(weft_select(fs, 2, &idx, NULL));
        ASSERT_EQ(idx, 0);
        ASSERT_EQ(weft_notify_try_wait(&n), -EAGAIN);
    }
    ASSERT_OK(weft_notify_destroy(&n));
    return NULL;
}

TEST(notify_select)
{
    run(notify_select_body, NULL);
}

static void *notify_cancel_forward_body(void *arg)
{
    (void)arg;
    if (is_mt())
        return NULL; /* needs a cancelled waiter not to run in between */
    weft_notify n = WEFT_NOTIFY_INIT;
    struct blocked a, b;
    start_blocked(&a, notify_fn, &n);
    start_blocked(&b, notify_fn, &n);
    weft_notify_one(&n); /* handed to a */
    weft_task_cancel(a.t);
    ASSERT_EQ(weft_join(a.t, NULL), -ECANCELED);
    ASSERT_EQ(a.rc, -ECANCELED);
    weft_task_free(a.t);
    finish_blocked(&b, 0); /* a's notification went on to b */
    ASSERT_OK(weft_notify_destroy(&n));
    return NULL;
}

TEST(notify_cancelled_waiter_passes_it_on)
{
    run(notify_cancel_forward_body, NULL);
}

/* ======================================================================== */
/* barrier                                                                  */
/* ======================================================================== */

#define BARRIER_N 6

struct barrier_case {
    weft_barrier b;
    atomic_int leaders[64];
    atomic_int arrived[64];
    int rounds;
};

static void *barrier_task(void *arg)
{
    struct barrier_case *c = arg;
    for (int r = 0; r < c->rounds; r++) {
        atomic_fetch_add(&c->arrived[r], 1);
        int rc = weft_barrier_wait(&c->b);
        ASSERT_GE(rc, 0);
        /* Everyone of this round has arrived. */
        ASSERT_EQ(atomic_load(&c->arrived[r]), BARRIER_N);
        if (rc == 1)
            atomic_fetch_add(&c->leaders[r], 1);
    }
    return NULL;
}

static void *barrier_thread(void *arg)
{
    struct barrier_case *c = arg;
    for (int r = 0; r < c->rounds; r++) {
        atomic_fetch_add(&c->arrived[r], 1);
        int rc = weft_barrier_wait_blocking(&c->b);
        ASSERT_GE(rc, 0);
        ASSERT_EQ(atomic_load(&c->arrived[r]), BARRIER_N);
        if (rc == 1)
            atomic_fetch_add(&c->leaders[r], 1);
    }
    return NULL;
}

static void *barrier_body(void *arg)
{
    struct barrier_case *c = arg;
    ASSERT_EQ(weft_barrier_init(&c->b, 0), -EINVAL);
    ASSERT_OK(weft_barrier_init(&c->b, BARRIER_N));
    weft_task *h[BARRIER_N];
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, barrier_thread, c), 0);
    for (int i = 0; i < BARRIER_N - 1; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], barrier_task, c));
    for (int i = 0; i < BARRIER_N - 1; i++) {
        ASSERT_OK(weft_join(h[i], NULL));
        weft_task_free(h[i]);
    }
    pthread_join(th, NULL);
    for (int r = 0; r < c->rounds; r++)
        ASSERT_EQ(atomic_load(&c->leaders[r]), 1);
    ASSERT_OK(weft_barrier_destroy(&c->b));
    return NULL;
}

TEST(barrier_rounds_one_leader_each)
{
    struct barrier_case c = {.rounds = 64};
    run(barrier_body, &c);
}

static int barrier_fn(void *b)
{
    return weft_barrier_wait(b);
}

static void *barrier_cancel_body(void *arg)
{
    (void)arg;
    weft_barrier b;
    ASSERT_OK(weft_barrier_init(&b, 2));
    struct blocked a;
    start_blocked(&a, barrier_fn, &b);
    cancel_blocked(&a); /* withdraws its arrival */
    start_blocked(&a, barrier_fn, &b);
    ASSERT_EQ(weft_barrier_wait(&b), 1); /* we complete the round */
    finish_blocked(&a, 0);
    ASSERT_OK(weft_barrier_destroy(&b));
    return NULL;
}

TEST(barrier_cancel_withdraws)
{
    run(barrier_cancel_body, NULL);
}

/* ======================================================================== */
/* once-cell                                                                */
/* ======================================================================== */

struct once_case {
    weft_once o;
    atomic_int inits, fails_left;
    atomic_int started;
    int spins; /* yields inside the initialiser (default 20) */
};

static int slow_init(void *arg, void **value)
{
    struct once_case *c = arg;
    atomic_fetch_add(&c->inits, 1);
    for (int i = 0; i < (c->spins ? c->spins : 20); i++) {
        int rc = weft_yield(); /* initialisers may suspend */
        if (rc < 0)
            return rc;
    }
    if (atomic_load(&c->fails_left) > 0) {
        atomic_fetch_sub(&c->fails_left, 1);
        return -EIO;
    }
    *value = (void *)0xfeed;
    return 0;
}

static void *once_getter(void *arg)
{
    struct once_case *c = arg;
    void *v = NULL;
    atomic_fetch_add(&c->started, 1);
    int rc;
    while ((rc = weft_once_get(&c->o, slow_init, c, &v)) == -EIO)
        ;
    ASSERT_OK(rc);
    ASSERT_PTR_EQ(v, (void *)0xfeed);
    return NULL;
}

static void *once_body(void *arg)
{
    struct once_case *c = arg;
    weft_task *h[10];
    ASSERT_EQ(weft_once_try_get(&c->o, NULL), -EAGAIN);
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_spawn(NULL, &h[i], once_getter, c));
    for (int i = 0; i < 10; i++) {
        ASSERT_OK(weft_join(h[i], NULL));
        weft_task_free(h[i]);
    }
    /* Two failures, then one success: three initialisers ran. */
    ASSERT_EQ(atomic_load(&c->inits), 3);
    void *v;
    ASSERT_OK(weft_once_try_get(&c->o, &v));
    ASSERT_PTR_EQ(v, (void *)0xfeed);
    ASSERT_OK(weft_once_destroy(&c->o));
    return NULL;
}

TEST(once_runs_one_initialiser)
{
    struct once_case c = {.fails_left = 2};
    weft_once_init(&c.o);
    run(once_body, &c);
}

/* The initialiser's task is cancelled: the next caller initialises. */
static int cancel_init_fn(void *arg)
{
    struct once_case *c = arg;
    void *v;
    return weft_once_get(&c->o, slow_init, c, &v);
}

static void *once_cancel_body(void *arg)
{
    struct once_case *c = arg;
    struct blocked a;
    a.fn = cancel_init_fn;
    a.arg = c;
    atomic_store(&a.started, 0);
    ASSERT_OK(weft_spawn(NULL, &a.t, blocked_main, &a));
    yield_until(&c->inits, 1); /* it is initialising */
    weft_task_cancel(a.t);
    ASSERT_EQ(weft_join(a.t, NULL), -ECANCELED);
    ASSERT_EQ(a.rc, -ECANCELED);
    weft_task_free(a.t);
    void *v = NULL;
    c->spins = 20;
    ASSERT_OK(weft_once_get(&c->o, slow_init, c, &v));
    ASSERT_PTR_EQ(v, (void *)0xfeed);
    ASSERT_EQ(atomic_load(&c->inits), 2);
    return NULL;
}

TEST(once_cancelled_initialiser)
{
    struct once_case c = {.spins = 1000000};
    weft_once_init(&c.o);
    run(once_cancel_body, &c);
}

/* The future form, with an initialiser future. */
static weft_future *make_ready(void *arg)
{
    return weft_ready(arg, 0);
}

static weft_future *make_failing(void *arg)
{
    (void)arg;
    return weft_ready(NULL, -EIO);
}

static void *once_future_body(void *arg)
{
    (void)arg;
    weft_once o = WEFT_ONCE_INIT;
    void *v = NULL;
    ASSERT_EQ(weft_await(weft_once_get_future(&o, make_failing, NULL), &v),
              -EIO);
    ASSERT_EQ(weft_once_try_get(&o, &v), -EAGAIN);
    ASSERT_OK(weft_await(weft_once_get_future(&o, make_ready, (void *)7), &v));
    ASSERT_PTR_EQ(v, (void *)7);
    ASSERT_OK(weft_await(weft_once_get_future(&o, make_ready, (void *)8), &v));
    ASSERT_PTR_EQ(v, (void *)7);
    ASSERT_OK(weft_once_destroy(&o));
    return NULL;
}

TEST(once_future_form)
{
    run(once_future_body, NULL);
}

/* Plain threads racing on one cell. */
static int thread_init(void *arg, void **value)
{
    atomic_fetch_add((atomic_int *)arg, 1);
    usleep(5000);
    *value = (void *)42;
    return 0;
}

struct once_threads {
    weft_once o;
    atomic_int inits;
};

static void *once_thread(void *arg)
{
    struct once_threads *c = arg;
    void *v;
    ASSERT_OK(weft_once_get_blocking(&c->o, thread_init, &c->inits, &v));
    ASSERT_PTR_EQ(v, (void *)42);
    return NULL;
}

TEST(once_between_threads)
{
    struct once_threads c = {0};
    weft_once_init(&c.o);
    pthread_t th[6];
    for (int i = 0; i < 6; i++)
        ASSERT_EQ(pthread_create(&th[i], NULL, once_thread, &c), 0);
    for (int i = 0; i < 6; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&c.inits), 1);
}

/* ======================================================================== */
/* Plain threads and tasks on the same primitives                           */
/* ======================================================================== */

struct mixed {
    weft_mutex m;
    weft_notify n;
    long counter;
    int rounds;
    atomic_int passed;
};

static void *mixed_thread(void *arg)
{
    struct mixed *x = arg;
    for (int i = 0; i < x->rounds; i++) {
        ASSERT_OK(weft_mutex_lock_blocking(&x->m));
        x->counter++;
        weft_mutex_unlock(&x->m);
    }
    ASSERT_OK(weft_notify_wait_blocking(&x->n)); /* woken by a task */
    atomic_fetch_add(&x->passed, 1);
    return NULL;
}

static void *mixed_task(void *arg)
{
    struct mixed *x = arg;
    for (int i = 0; i < x->rounds; i++) {
        ASSERT_OK(weft_mutex_lock(&x->m));
        x->counter++;
        weft_mutex_unlock(&x->m);
    }
    return NULL;
}

static void *mixed_body(void *arg)
{
    struct mixed *x = arg;
    pthread_t th[2];
    weft_task *h[2];
    for (int i = 0; i < 2; i++) {
        ASSERT_EQ(pthread_create(&th[i], NULL, mixed_thread, x), 0);
        ASSERT_OK(weft_spawn(NULL, &h[i], mixed_task, x));
    }
    for (int i = 0; i < 2; i++) {
        ASSERT_OK(weft_join(h[i], NULL));
        weft_task_free(h[i]);
    }
    /* Both threads wait on n (or will): notify until both are through
     * (one permit is stored at most, so one call may not be enough). */
    while (atomic_load(&x->passed) < 2) {
        weft_notify_one(&x->n);
        ASSERT_OK(weft_yield());
    }
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    ASSERT_EQ(x->counter, 4L * x->rounds);
    return NULL;
}

TEST(threads_and_tasks_share_primitives)
{
    struct mixed x = {.rounds = scaled(20000)};
    weft_mutex_init(&x.m);
    weft_notify_init(&x.n);
    run(mixed_body, &x);
}

TEST(coroutine_forms_outside_task_are_eperm)
{
    weft_mutex m = WEFT_MUTEX_INIT;
    ASSERT_EQ(weft_mutex_lock(&m), -EPERM);
    weft_sem s;
    weft_sem_init(&s, 0);
    ASSERT_EQ(weft_sem_acquire(&s, 1), -EPERM);
    weft_notify n = WEFT_NOTIFY_INIT;
    ASSERT_EQ(weft_notify_wait(&n), -EPERM);
}

static void *blocking_in_task_body(void *arg)
{
    (void)arg;
    weft_mutex m = WEFT_MUTEX_INIT;
    ASSERT_EQ(weft_mutex_lock_blocking(&m), -EPERM);
    weft_sem s;
    weft_sem_init(&s, 1);
    ASSERT_EQ(weft_sem_acquire_blocking(&s, 1), -EPERM);
    ASSERT_EQ(weft_sem_available(&s), 1);
    weft_barrier b;
    ASSERT_OK(weft_barrier_init(&b, 1));
    ASSERT_EQ(weft_barrier_wait_blocking(&b), -EPERM);
    ASSERT_EQ(weft_barrier_wait(&b), 1); /* alone: every round is ours */
    return NULL;
}

TEST(blocking_forms_inside_task_are_eperm)
{
    run(blocking_in_task_body, NULL);
}

/* ======================================================================== */
/* deadline forms                                                           */
/* ======================================================================== */

static int init_forever(void *arg, void **value)
{
    (void)value;
    return weft_notify_wait(arg); /* until cancelled */
}

static int once_forever_fn(void *arg)
{
    void **a = arg;
    void *v;
    return weft_once_get(a[0], init_forever, a[1], &v);
}

static void *deadline_body(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_time_pause());
    int64_t t0 = weft_now();
    weft_mutex m = WEFT_MUTEX_INIT;
    ASSERT_OK(weft_mutex_lock_dl(&m, t0 + 10));
    ASSERT_EQ(weft_mutex_lock_dl(&m, t0 + 10), -ETIMEDOUT);
    ASSERT_GE(weft_now(), t0 + 10);
    weft_mutex_unlock(&m);
    ASSERT_OK(weft_mutex_destroy(&m)); /* the timed-out waiter left */

    weft_rwlock rw = WEFT_RWLOCK_INIT;
    ASSERT_OK(weft_rwlock_write_dl(&rw, weft_now() + 10));
    ASSERT_EQ(weft_rwlock_read_dl(&rw, weft_now() + 10), -ETIMEDOUT);
    ASSERT_EQ(weft_rwlock_write_dl(&rw, weft_now() + 10), -ETIMEDOUT);
    weft_rwlock_unlock(&rw);
    ASSERT_OK(weft_rwlock_read_dl(&rw, weft_now() + 10));
    weft_rwlock_unlock(&rw);
    ASSERT_OK(weft_rwlock_destroy(&rw));

    weft_sem s;
    weft_sem_init(&s, 1);
    ASSERT_EQ(weft_sem_acquire_dl(&s, 2, weft_now() + 10), -ETIMEDOUT);
    ASSERT_OK(weft_sem_acquire_dl(&s, 1, weft_now() + 10));
    ASSERT_OK(weft_sem_destroy(&s));

    weft_notify n = WEFT_NOTIFY_INIT;
    ASSERT_EQ(weft_notify_wait_dl(&n, weft_now() + 10), -ETIMEDOUT);
    weft_notify_one(&n);
    ASSERT_OK(weft_notify_wait_dl(&n, weft_now() + 10));

    weft_barrier b;
    ASSERT_OK(weft_barrier_init(&b, 2));
    ASSERT_EQ(weft_barrier_wait_dl(&b, weft_now() + 10), -ETIMEDOUT);
    ASSERT_OK(weft_barrier_destroy(&b)); /* the arrival was withdrawn */

    weft_once o = WEFT_ONCE_INIT;
    weft_notify never = WEFT_NOTIFY_INIT;
    void *args[2] = {&o, &never};
    struct blocked init;
    start_blocked(&init, once_forever_fn, args); /* initialising forever */
    void *v;
    ASSERT_EQ(weft_once_get_dl(&o, init_forever, &never, &v, weft_now() + 10),
              -ETIMEDOUT);
    cancel_blocked(&init);
    ASSERT_EQ(weft_once_try_get(&o, &v), -EAGAIN);
    ASSERT_OK(weft_time_resume());
    return NULL;
}

TEST(deadline_forms)
{
    run(deadline_body, NULL);
}

TEST_MAIN()
