/*
 * Task groups: limits and backpressure, next/wait, cancellation, freeing.
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

static void settle(void)
{
    for (int i = 0; i < (is_mt() ? 2000 : 4); i++)
        ASSERT_OK(weft_yield());
    if (is_mt())
        usleep(2000);
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_yield());
}

static void yield_until(atomic_int *v, int want)
{
    while (atomic_load(v) < want)
        ASSERT_OK(weft_yield());
}

/* ======================================================================== */
/* spawn, next, wait                                                        */
/* ======================================================================== */

static int return_arg(void *arg)
{
    return -(int)(intptr_t)arg;
}

static void *next_body(void *arg)
{
    (void)arg;
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, NULL));
    int result;
    void *value;
    ASSERT_EQ(weft_group_next(g, &result, &value), -ECHILD);
    for (intptr_t i = 0; i < 20; i++)
        ASSERT_OK(weft_group_spawn(g, return_arg, (void *)i));
    ASSERT_EQ(weft_group_len(g), 20);
    bool seen[20] = {false};
    for (int i = 0; i < 20; i++) {
        ASSERT_OK(weft_group_next(g, &result, &value));
        intptr_t k = (intptr_t)value;
        ASSERT(k >= 0 && k < 20 && !seen[k]);
        seen[k] = true;
        ASSERT_EQ(result, -(int)k);
    }
    ASSERT_EQ(weft_group_next(g, &result, &value), -ECHILD);
    ASSERT_EQ(weft_group_len(g), 0);
    weft_group_free(g);
    return NULL;
}

TEST(next_reaps_every_child)
{
    run(next_body, NULL);
}

/* Children finish in the order their channel messages arrive; next
 * reports that order. */
struct ordered {
    weft_chan_rx *rx[5];
};

static int wait_msg(void *arg)
{
    uint64_t v;
    return weft_chan_recv(arg, &v);
}

static void *order_body(void *arg)
{
    (void)arg;
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, NULL));
    weft_chan_tx *tx[5];
    weft_chan_rx *rx[5];
    for (int i = 0; i < 5; i++) {
        ASSERT_OK(weft_chan_new(&tx[i], &rx[i], sizeof(uint64_t), 1));
        ASSERT_OK(weft_group_spawn(g, wait_msg, rx[i]));
    }
    settle();
    int order[5] = {3, 1, 4, 0, 2};
    for (int i = 0; i < 5; i++) {
        uint64_t v = 0;
        ASSERT_OK(weft_chan_send(tx[order[i]], &v));
        int result;
        void *value;
        ASSERT_OK(weft_group_next(g, &result, &value));
        ASSERT_OK(result);
        ASSERT_PTR_EQ(value, rx[order[i]]);
    }
    weft_group_free(g);
    for (int i = 0; i < 5; i++) {
        weft_chan_tx_free(tx[i]);
        weft_chan_rx_free(rx[i]);
    }
    return NULL;
}

TEST(next_in_finishing_order)
{
    run(order_body, NULL);
}

/* wait returns the first failure; -ECANCELED is not one. */
static int fail_with(void *arg)
{
    return (int)(intptr_t)arg;
}

static void *wait_body(void *arg)
{
    (void)arg;
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, NULL));
    ASSERT_OK(weft_group_spawn(g, fail_with, (void *)0));
    ASSERT_OK(weft_group_spawn(g, fail_with, (void *)(intptr_t)-ECANCELED));
    ASSERT_OK(weft_group_wait(g));
    ASSERT_OK(weft_group_spawn(g, fail_with, (void *)(intptr_t)-EIO));
    ASSERT_OK(weft_group_spawn(g, fail_with, (void *)0));
    ASSERT_EQ(weft_group_wait(g), -EIO);
    ASSERT_EQ(weft_group_len(g), 0);
    weft_group_free(g);
    return NULL;
}

TEST(wait_returns_first_failure)
{
    run(wait_body, NULL);
}

/* ======================================================================== */
/* limits and backpressure                                                  */
/* ======================================================================== */

#define LIMIT 4

struct limited {
    weft_group *g;
    atomic_int running, max_running, done;
    int children;
};

static int limited_child(void *arg)
{
    struct limited *l = arg;
    int now = atomic_fetch_add(&l->running, 1) + 1;
    ASSERT_LE(now, LIMIT); /* the limit is never exceeded */
    int m = atomic_load(&l->max_running);
    while (now > m && !atomic_compare_exchange_weak(&l->max_running, &m, now))
        ;
    for (int i = 0; i < 3; i++)
        if (weft_yield() < 0)
            break;
    atomic_fetch_sub(&l->running, 1);
    atomic_fetch_add(&l->done, 1);
    return 0;
}

static void *limit_body(void *arg)
{
    struct limited *l = arg;
    weft_group_opts o = {.limit = LIMIT};
    ASSERT_OK(weft_group_new(&l->g, NULL, &o));
    for (int i = 0; i < l->children; i++) {
        ASSERT_OK(weft_group_spawn(l->g, limited_child, l));
        ASSERT_LE(weft_group_len(l->g), (size_t)l->children);
    }
    ASSERT_OK(weft_group_wait(l->g));
    ASSERT_EQ(atomic_load(&l->done), l->children);
    ASSERT_LE(atomic_load(&l->max_running), LIMIT);
    if (!is_mt()) /* one thread: the spawner fills every slot first */
        ASSERT_EQ(atomic_load(&l->max_running), LIMIT);
    weft_group_free(l->g);
    return NULL;
}

TEST(limit_is_never_exceeded)
{
    struct limited l = {.children = TEST_SANITIZED ? 300 : 3000};
    run(limit_body, &l);
}

/* Spawning into a full group suspends the spawner; try_spawn says
 * -EAGAIN. */
struct full {
    weft_group *g;
    weft_notify go;
    atomic_int started, spawned;
};

static int gated_child(void *arg)
{
    struct full *f = arg;
    atomic_fetch_add(&f->started, 1);
    return weft_notify_wait(&f->go);
}

static void *spawner(void *arg)
{
    struct full *f = arg;
    ASSERT_OK(weft_group_spawn(f->g, gated_child, f));
    atomic_fetch_add(&f->spawned, 1);
    return NULL;
}

static void *full_body(void *arg)
{
    (void)arg;
    struct full f = {0};
    weft_notify_init(&f.go);
    weft_group_opts o = {.limit = 2};
    ASSERT_OK(weft_group_new(&f.g, NULL, &o));
    ASSERT_OK(weft_group_spawn(f.g, gated_child, &f));
    ASSERT_OK(weft_group_spawn(f.g, gated_child, &f));
    ASSERT_EQ(weft_group_try_spawn(f.g, gated_child, &f), -EAGAIN);
    weft_task *s;
    ASSERT_OK(weft_spawn(NULL, &s, spawner, &f));
    yield_until(&f.started, 2);
    settle();
    ASSERT_EQ(atomic_load(&f.spawned), 0); /* suspended: no slot */
    ASSERT(!weft_task_done(s));
    weft_notify_one(&f.go);        /* one child finishes */
    ASSERT_OK(weft_join(s, NULL)); /* the spawner got its slot */
    ASSERT_EQ(atomic_load(&f.spawned), 1);
    weft_task_free(s);
    yield_until(&f.started, 3);
    weft_notify_one(&f.go);
    weft_notify_one(&f.go);
    settle();
    weft_notify_all(&f.go);
    ASSERT_OK(weft_group_wait(f.g));
    weft_group_free(f.g);
    return NULL;
}

TEST(full_group_suspends_spawner)
{
    run(full_body, NULL);
}

/* ======================================================================== */
/* cancellation                                                             */
/* ======================================================================== */

/* Children blocked at every kind of suspension point. */
struct everywhere {
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    weft_mutex m;
    weft_rwlock rw;
    weft_sem sem;
    weft_notify n;
    weft_barrier b;
    weft_oneshot_rx *orx;
    weft_oneshot_tx *otx;
    weft_bcast_rx *brx;
    weft_bcast_tx *btx;
    weft_watch_rx *wrx;
    weft_watch_tx *wtx;
    weft_task *forever;
    atomic_int started;
    atomic_int results[16];
};

struct point {
    struct everywhere *e;
    int kind;
};

static int never_ends_fn(void *arg)
{
    (void)arg;
    return 0;
}

static void *forever_task(void *arg)
{
    weft_notify *n = arg;
    while (weft_notify_wait(n) == 0)
        ;
    return NULL;
}

static int blocked_somewhere(void *arg)
{
    struct point *p = arg;
    struct everywhere *e = p->e;
    uint64_t v = 0;
    int rc = -1;
    atomic_fetch_add(&e->started, 1);
    switch (p->kind) {
    case 0:
        rc = weft_chan_recv(e->rx, &v);
        break;
    case 1:
        rc = weft_chan_send(e->tx, &v);
        break; /* channel full */
    case 2:
        rc = weft_mutex_lock(&e->m);
        break;
    case 3:
        rc = weft_rwlock_write(&e->rw);
        break;
    case 4:
        rc = weft_sem_acquire(&e->sem, 1);
        break;
    case 5:
        rc = weft_notify_wait(&e->n);
        break;
    case 6:
        rc = weft_barrier_wait(&e->b);
        break;
    case 7:
        rc = weft_oneshot_recv(e->orx, &v);
        break;
    case 8:
        rc = weft_bcast_recv(e->brx, &v);
        break;
    case 9:
        rc = weft_watch_recv(e->wrx, &v);
        break;
    case 10:
        rc = weft_join(e->forever, NULL);
        break;
    case 11:
        while ((rc = weft_yield()) == 0)
            ;
        break;
    case 12: {
        weft_future *fs[2] = {weft_chan_recv_future(e->rx, &v),
                              weft_notify_wait_future(&e->n)};
        rc = weft_select(fs, 2, NULL, NULL);
        break;
    }
    case 13: {
        weft_group *inner;
        ASSERT_OK(weft_group_new(&inner, NULL, NULL));
        ASSERT_OK(weft_group_spawn(inner, never_ends_fn, NULL));
        rc = weft_notify_wait(&e->n);
        weft_group_free(inner);
        break;
    }
    default:
        (void)never_ends_fn;
    }
    atomic_store(&e->results[p->kind], rc);
    return rc;
}

#define KINDS 14

static void *cancel_group_body(void *arg)
{
    (void)arg;
    struct everywhere e = {0};
    uint64_t zero = 0;
    ASSERT_OK(weft_chan_new(&e.tx, &e.rx, sizeof(uint64_t), 1));
    weft_mutex_init(&e.m);
    weft_rwlock_init(&e.rw);
    weft_sem_init(&e.sem, 0);
    weft_notify_init(&e.n);
    ASSERT_OK(weft_barrier_init(&e.b, 2));
    ASSERT_OK(weft_oneshot_new(&e.otx, &e.orx, sizeof(uint64_t)));
    ASSERT_OK(weft_bcast_new(&e.btx, &e.brx, sizeof(uint64_t), 4));
    ASSERT_OK(weft_watch_new(&e.wtx, &e.wrx, sizeof(uint64_t), &zero));
    weft_notify never;
    weft_notify_init(&never);
    ASSERT_OK(weft_spawn(NULL, &e.forever, forever_task, &never));
    ASSERT_OK(weft_mutex_lock(&e.m));
    ASSERT_OK(weft_rwlock_read(&e.rw));
    /* Kind 0 waits to receive on an empty channel, kind 1 to send on a
     * full one. */
    weft_chan_tx *ftx;
    weft_chan_rx *frx;
    ASSERT_OK(weft_chan_new(&ftx, &frx, sizeof(uint64_t), 1));
    ASSERT_OK(weft_chan_send(ftx, &zero));

    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, NULL));
    struct point pts[KINDS];
    for (int k = 0; k < KINDS; k++) {
        pts[k].e = &e;
        pts[k].kind = k;
        atomic_store(&e.results[k], 1);
    }
    weft_chan_tx *save_tx = e.tx;
    e.tx = ftx; /* kind 1 sends on the full one */
    for (int k = 0; k < KINDS; k++)
        ASSERT_OK(weft_group_spawn(g, blocked_somewhere, &pts[k]));
    yield_until(&e.started, KINDS);
    settle();
    ASSERT_EQ(weft_group_len(g), KINDS);
    weft_group_cancel(g);
    ASSERT_OK(weft_group_wait(g)); /* -ECANCELED is no failure */
    for (int k = 0; k < KINDS; k++)
        ASSERT_EQ(atomic_load(&e.results[k]), -ECANCELED);
    /* Spawning into a cancelled group is refused. */
    ASSERT_EQ(weft_group_spawn(g, never_ends_fn, NULL), -ECANCELED);
    weft_group_free(g);

    /* Every primitive is still consistent. */
    uint64_t v;
    e.tx = save_tx;
    ASSERT_OK(weft_chan_try_send(e.tx, &zero));
    ASSERT_OK(weft_chan_try_recv(e.rx, &v));
    ASSERT_OK(weft_chan_try_recv(frx, &v)); /* only the first message */
    ASSERT_EQ(weft_chan_try_recv(frx, &v), -EAGAIN);
    weft_mutex_unlock(&e.m);
    ASSERT_OK(weft_mutex_destroy(&e.m));
    weft_rwlock_unlock(&e.rw);
    ASSERT_OK(weft_rwlock_destroy(&e.rw));
    ASSERT_OK(weft_sem_destroy(&e.sem));
    ASSERT_OK(weft_notify_destroy(&e.n));
    ASSERT_OK(weft_barrier_destroy(&e.b));
    ASSERT_OK(weft_oneshot_send(e.otx, &zero));
    ASSERT_OK(weft_oneshot_try_recv(e.orx, &v));
    weft_oneshot_rx_free(e.orx);
    ASSERT_OK(weft_bcast_send(e.btx, &zero));
    ASSERT_OK(weft_bcast_try_recv(e.brx, &v));
    weft_bcast_tx_free(e.btx);
    weft_bcast_rx_free(e.brx);
    weft_watch_tx_free(e.wtx);
    weft_watch_rx_free(e.wrx);
    weft_task_cancel(e.forever);
    weft_join(e.forever, NULL);
    weft_task_free(e.forever);
    weft_chan_tx_free(e.tx);
    weft_chan_rx_free(e.rx);
    weft_chan_tx_free(ftx);
    weft_chan_rx_free(frx);
    return NULL;
}

TEST(cancel_reaches_every_suspension_point)
{
    run(cancel_group_body, NULL);
}

/* The first failure cancels the rest. */
static int fail_later(void *arg)
{
    weft_notify *n = arg;
    for (int i = 0; i < 10; i++)
        ASSERT_OK(weft_yield());
    (void)n;
    return -EIO;
}

static int wait_forever(void *arg)
{
    return weft_notify_wait(arg);
}

static void *cancel_on_error_body(void *arg)
{
    (void)arg;
    weft_notify n;
    weft_notify_init(&n);
    weft_group_opts o = {.cancel_on_error = 1};
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, &o));
    for (int i = 0; i < 5; i++)
        ASSERT_OK(weft_group_spawn(g, wait_forever, &n));
    ASSERT_OK(weft_group_spawn(g, fail_later, &n));
    ASSERT_EQ(weft_group_wait(g), -EIO);
    ASSERT_EQ(weft_group_spawn(g, wait_forever, &n), -ECANCELED);
    ASSERT_EQ(weft_group_try_spawn(g, wait_forever, &n), -ECANCELED);
    weft_group_free(g);
    ASSERT_OK(weft_notify_destroy(&n));
    return NULL;
}

TEST(cancel_on_error)
{
    run(cancel_on_error_body, NULL);
}

/* Freeing a group cancels and joins its children: none outlives it. */
struct outlive {
    weft_notify n;
    atomic_int ended;
};

static int count_end(void *arg)
{
    struct outlive *o = arg;
    int rc = weft_notify_wait(&o->n);
    /* Cleanup that suspends would fail now; just finish. */
    atomic_fetch_add(&o->ended, 1);
    return rc;
}

static void *free_joins_body(void *arg)
{
    struct outlive *o = arg;
    weft_group *g;
    weft_group_opts opts = {.limit = 3};
    ASSERT_OK(weft_group_new(&g, NULL, &opts));
    for (int i = 0; i < 3; i++)
        ASSERT_OK(weft_group_spawn(g, count_end, o));
    settle();
    weft_group_free(g);
    ASSERT_EQ(atomic_load(&o->ended), 3);
    return NULL;
}

TEST(free_cancels_and_joins_children)
{
    struct outlive o = {0};
    weft_notify_init(&o.n);
    run(free_joins_body, &o);
}

/* Even from a task that is itself cancelled, free waits for the children
 * (which need the worker to run). */
static void *owner_task(void *arg)
{
    struct outlive *o = arg;
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, NULL));
    for (int i = 0; i < 4; i++)
        ASSERT_OK(weft_group_spawn(g, count_end, o));
    int rc = weft_notify_wait(&o->n); /* cancelled here */
    ASSERT_EQ(rc, -ECANCELED);
    weft_group_free(g);
    ASSERT_EQ(atomic_load(&o->ended), 4);
    return NULL;
}

static void *cancelled_owner_body(void *arg)
{
    struct outlive *o = arg;
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, owner_task, o));
    settle();
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    weft_task_free(t);
    ASSERT_EQ(atomic_load(&o->ended), 4);
    return NULL;
}

TEST(free_from_cancelled_task_still_joins)
{
    struct outlive o = {0};
    weft_notify_init(&o.n);
    run(cancelled_owner_body, &o);
}

/* ======================================================================== */
/* future children, plain threads                                           */
/* ======================================================================== */

static void *future_children_body(void *arg)
{
    (void)arg;
    weft_group *g;
    weft_group_opts o = {.limit = 2};
    ASSERT_OK(weft_group_new(&g, NULL, &o));
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 8));
    uint64_t got[3] = {0, 0, 0};
    ASSERT_OK(weft_group_spawn_future(g, weft_chan_recv_future(rx, &got[0])));
    ASSERT_OK(weft_group_spawn_future(g, weft_chan_recv_future(rx, &got[1])));
    settle();
    ASSERT_EQ(weft_group_try_spawn_future(g, weft_ready((void *)5, 0)),
              -EAGAIN); /* full; the future is consumed all the same */
    uint64_t v = 9;
    ASSERT_OK(weft_chan_send(tx, &v));
    ASSERT_OK(weft_chan_send(tx, &v));
    ASSERT_OK(weft_group_spawn_future(g, weft_ready((void *)5, 0)));
    ASSERT_OK(weft_group_spawn_future(g, weft_ready(NULL, -EIO)));
    int fives = 0, eios = 0, oks = 0, result;
    void *value;
    while (weft_group_next(g, &result, &value) == 0) {
        if (value == (void *)5)
            fives++;
        else if (result == -EIO)
            eios++;
        else if (result == 0)
            oks++;
    }
    ASSERT_EQ(fives, 1);
    ASSERT_EQ(eios, 1);
    ASSERT_EQ(oks, 2);
    ASSERT_EQ(got[0] + got[1], 18);
    ASSERT_EQ(weft_chan_try_recv(rx, &v), -EAGAIN);
    weft_group_free(g);
    /* A cancelled group drops its future children. */
    ASSERT_OK(weft_group_new(&g, NULL, NULL));
    ASSERT_OK(weft_group_spawn_future(g, weft_chan_recv_future(rx, &got[2])));
    settle();
    weft_group_cancel(g);
    ASSERT_OK(weft_group_next(g, &result, NULL));
    ASSERT_EQ(result, -ECANCELED);
    weft_group_free(g);
    ASSERT_OK(weft_chan_try_send(tx, &v)); /* nobody took a message */
    ASSERT_OK(weft_chan_try_recv(rx, &v));
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(future_children)
{
    run(future_children_body, NULL);
}

/* A plain thread creates a group on the runtime, spawns into it with
 * backpressure, waits and frees it. */
struct from_thread {
    weft_runtime *rt;
    struct limited l;
    atomic_int finished;
};

static void *group_thread(void *arg)
{
    struct from_thread *ft = arg;
    weft_group_opts o = {.limit = LIMIT};
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, ft->rt, &o));
    for (int i = 0; i < ft->l.children; i++)
        ASSERT_OK(weft_group_spawn(g, limited_child, &ft->l));
    ASSERT_OK(weft_group_wait(g));
    weft_group_free(g);
    atomic_store(&ft->finished, 1);
    return NULL;
}

static void *thread_group_body(void *arg)
{
    struct from_thread *ft = arg;
    ft->rt = weft_runtime_current();
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, group_thread, ft), 0);
    yield_until(&ft->finished, 1); /* the root keeps the runtime running */
    pthread_join(th, NULL);
    ASSERT_EQ(atomic_load(&ft->l.done), ft->l.children);
    return NULL;
}

TEST(group_from_plain_thread)
{
    struct from_thread ft = {.l = {.children = 200}};
    run(thread_group_body, &ft);
}

TEST(group_new_outside_runtime_is_eperm)
{
    weft_group *g;
    ASSERT_EQ(weft_group_new(&g, NULL, NULL), -EPERM);
    ASSERT(g == NULL);
}

/* ======================================================================== */
/* deadline forms                                                           */
/* ======================================================================== */

static void *deadline_body(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_time_pause());
    weft_notify n = WEFT_NOTIFY_INIT;
    weft_group_opts o = {.limit = 1};
    weft_group *g;
    ASSERT_OK(weft_group_new(&g, NULL, &o));
    ASSERT_OK(weft_group_spawn_dl(g, wait_forever, &n, weft_now() + 10));
    int64_t t0 = weft_now();
    ASSERT_EQ(weft_group_spawn_dl(g, wait_forever, &n, t0 + 10), -ETIMEDOUT);
    ASSERT_GE(weft_now(), t0 + 10);
    ASSERT_EQ(weft_group_len(g), 1);
    int result;
    ASSERT_EQ(weft_group_next_dl(g, &result, NULL, weft_now() + 10),
              -ETIMEDOUT);
    ASSERT_EQ(weft_group_wait_dl(g, weft_now() + 10), -ETIMEDOUT);
    weft_notify_one(&n);
    ASSERT_OK(weft_group_wait_dl(g, weft_now() + 10));
    weft_group_free(g);
    ASSERT_OK(weft_time_resume());
    return NULL;
}

TEST(deadline_forms)
{
    run(deadline_body, NULL);
}

TEST_MAIN()
