/*
 * weft_select and weft_join_all. Every case runs on both executors
 * (WEFT_TEST_FLAVOR=mt: multi-thread).
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

/* ======================================================================== */
/* select over receives loses nothing                                       */
/* ======================================================================== */

#define SEL_CHANS 3

struct sel {
    weft_chan_tx *tx[SEL_CHANS];
    weft_chan_rx *rx[SEL_CHANS];
    uint32_t per;
    atomic_uchar *seen;
};

struct sel_prod {
    struct sel *s;
    int ch;
    bool thread;
};

static void *sel_producer(void *arg)
{
    struct sel_prod *p = arg;
    struct sel *s = p->s;
    for (uint32_t i = 0; i < s->per; i++) {
        uint32_t v = i;
        ASSERT_OK(p->thread ? weft_chan_send_blocking(s->tx[p->ch], &v)
                            : weft_chan_send(s->tx[p->ch], &v));
    }
    weft_chan_tx_free(s->tx[p->ch]);
    return NULL;
}

static void *select_recv_body(void *arg)
{
    struct sel *s = arg;
    size_t total = (size_t)SEL_CHANS * s->per;
    s->seen = calloc(total, 1);
    ASSERT(s->seen);
    for (int c = 0; c < SEL_CHANS; c++)
        ASSERT_OK(weft_chan_new(&s->tx[c], &s->rx[c], sizeof(uint32_t),
                                (size_t)(c + 1)));
    struct sel_prod p[SEL_CHANS];
    weft_task *h[SEL_CHANS];
    pthread_t th;
    for (int c = 0; c < SEL_CHANS; c++) {
        p[c] = (struct sel_prod){s, c, c == SEL_CHANS - 1};
        if (p[c].thread)
            ASSERT_EQ(pthread_create(&th, NULL, sel_producer, &p[c]), 0);
        else
            ASSERT_OK(weft_spawn(NULL, &h[c], sel_producer, &p[c]));
    }
    /* Each round selects over the open channels with receive futures in
     * caller-owned storage: no allocation per round. */
    bool open[SEL_CHANS] = {true, true, true};
    uint32_t next[SEL_CHANS] = {0};
    weft_sync_op ops[SEL_CHANS];
    uint32_t vals[SEL_CHANS];
    size_t got = 0, rounds = 0;
    for (;;) {
        weft_future *fs[SEL_CHANS];
        int map[SEL_CHANS], n = 0;
        for (int c = 0; c < SEL_CHANS; c++)
            if (open[c]) {
                map[n] = c;
                fs[n++] = weft_chan_recv_init(&ops[c], s->rx[c], &vals[c]);
            }
        if (n == 0)
            break;
        size_t idx;
        int rc = weft_select(fs, (size_t)n, &idx, NULL);
        rounds++;
        ASSERT_LT(idx, (size_t)n);
        int c = map[idx];
        if (rc == -EPIPE) {
            open[c] = false;
            continue;
        }
        ASSERT_OK(rc);
        /* Per channel, in the order sent: a message handed to a losing
         * receive went back to the front of its channel. */
        ASSERT_EQ(vals[c], next[c]);
        next[c]++;
        unsigned char was =
            atomic_fetch_add(&s->seen[(size_t)c * s->per + vals[c]], 1);
        ASSERT_EQ(was, 0);
        got++;
    }
    ASSERT_EQ(got, total);
    ASSERT_EQ(rounds, total + SEL_CHANS);
    for (size_t i = 0; i < total; i++)
        ASSERT_EQ(atomic_load(&s->seen[i]), 1);
    for (int c = 0; c < SEL_CHANS - 1; c++) {
        ASSERT_OK(weft_join(h[c], NULL));
        weft_task_free(h[c]);
    }
    pthread_join(th, NULL);
    for (int c = 0; c < SEL_CHANS; c++)
        weft_chan_rx_free(s->rx[c]);
    free(s->seen);
    return NULL;
}

TEST(select_over_receives_loses_nothing)
{
    /* 10^6 rounds; a tenth under the sanitizers. */
    struct sel s = {.per = (TEST_SANITIZED ? 100000 : 1000000) / SEL_CHANS};
    run(select_recv_body, &s);
}

/* ======================================================================== */
/* select semantics                                                         */
/* ======================================================================== */

static void *lowest_index_body(void *arg)
{
    (void)arg;
    weft_future *fs[3] = {weft_yield_future(), weft_ready((void *)1, 0),
                          weft_ready((void *)2, -EIO)};
    size_t idx;
    void *v;
    ASSERT_OK(weft_select(fs, 3, &idx, &v));
    ASSERT_EQ(idx, 1);
    ASSERT_PTR_EQ(v, (void *)1);
    ASSERT(fs[0] == NULL && fs[1] == NULL && fs[2] == NULL);
    /* The winner's error is the result. */
    weft_future *gs[2] = {weft_ready(NULL, -EIO), weft_ready(NULL, 0)};
    ASSERT_EQ(weft_select(gs, 2, &idx, NULL), -EIO);
    ASSERT_EQ(idx, 0);
    return NULL;
}

TEST(select_lowest_ready_index_wins)
{
    run(lowest_index_body, NULL);
}

static void *select_errors_body(void *arg)
{
    (void)arg;
    size_t idx = 99;
    ASSERT_EQ(weft_select(NULL, 0, &idx, NULL), -EINVAL);
    ASSERT_EQ(idx, 0);
    weft_future *fs[2] = {weft_ready(NULL, 0), NULL};
    ASSERT_EQ(weft_select(fs, 2, &idx, NULL), -ENOMEM);
    ASSERT_EQ(idx, 2);
    ASSERT(fs[0] == NULL); /* freed */
    weft_future *gs[2] = {NULL, weft_ready(NULL, 0)};
    ASSERT_EQ(weft_join_all(gs, 2, NULL, NULL), -ENOMEM);
    ASSERT(gs[1] == NULL);
    ASSERT_OK(weft_join_all(NULL, 0, NULL, NULL));
    return NULL;
}

TEST(select_and_join_all_errors)
{
    run(select_errors_body, NULL);
}

/* A send that loses keeps its message, even when a slot had been reserved
 * for it before it lost. */
static void *receiver_task(void *arg)
{
    weft_chan_rx *rx = arg;
    uint64_t v;
    ASSERT_OK(weft_chan_recv(rx, &v));
    ASSERT_EQ(v, 1);
    return NULL;
}

static void *send_loser_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++) {
        weft_chan_tx *tx;
        weft_chan_rx *rx;
        ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1));
        uint64_t one = 1, two = 2, v;
        ASSERT_OK(weft_chan_send(tx, &one)); /* full */
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, receiver_task, rx));
        weft_future *fs[2] = {weft_yield_future(),
                              weft_chan_send_future(tx, &two)};
        size_t idx;
        ASSERT_OK(weft_select(fs, 2, &idx, NULL));
        ASSERT_OK(weft_join(t, NULL));
        weft_task_free(t);
        if (idx == 0) {
            /* Lost: nothing was sent, and the slot is free for others. */
            ASSERT_EQ(weft_chan_try_recv(rx, &v), -EAGAIN);
            uint64_t three = 3;
            ASSERT_OK(weft_chan_try_send(tx, &three));
            ASSERT_OK(weft_chan_try_recv(rx, &v));
            ASSERT_EQ(v, 3);
        } else {
            ASSERT(is_mt());
            ASSERT_OK(weft_chan_try_recv(rx, &v));
            ASSERT_EQ(v, 2);
        }
        ASSERT_EQ(weft_chan_try_recv(rx, &v), -EAGAIN);
        weft_chan_tx_free(tx);
        weft_chan_rx_free(rx);
    }
    return NULL;
}

TEST(select_send_loser_keeps_message)
{
    run(send_loser_body, NULL);
}

/* A receive that had been handed a message and then loses puts it back. */
static void *sender_task(void *arg)
{
    uint64_t v = 42;
    ASSERT_OK(weft_chan_send(arg, &v));
    return NULL;
}

static void *recv_loser_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 200; i++) {
        weft_chan_tx *tx;
        weft_chan_rx *rx;
        ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1));
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, sender_task, tx));
        uint64_t v = 0;
        weft_future *fs[2] = {weft_yield_future(),
                              weft_chan_recv_future(rx, &v)};
        size_t idx;
        ASSERT_OK(weft_select(fs, 2, &idx, NULL));
        ASSERT_OK(weft_join(t, NULL));
        weft_task_free(t);
        if (idx == 0) {
            ASSERT_OK(weft_chan_try_recv(rx, &v)); /* it went back */
        } else {
            ASSERT(is_mt());
            ASSERT_EQ(weft_chan_try_recv(rx, &v), -EAGAIN);
        }
        ASSERT_EQ(v, 42);
        weft_chan_tx_free(tx);
        weft_chan_rx_free(rx);
    }
    return NULL;
}

TEST(select_recv_loser_puts_message_back)
{
    run(recv_loser_body, NULL);
}

/* A task blocked in a select is cancelled: all its futures are dropped and
 * no message is taken. */
struct blocked_sel {
    weft_chan_rx *rx[2];
    uint64_t v[2];
    atomic_int started;
    int rc;
    size_t idx;
};

static void *blocked_select(void *arg)
{
    struct blocked_sel *b = arg;
    weft_future *fs[2] = {weft_chan_recv_future(b->rx[0], &b->v[0]),
                          weft_chan_recv_future(b->rx[1], &b->v[1])};
    atomic_store(&b->started, 1);
    b->rc = weft_select(fs, 2, &b->idx, NULL);
    return NULL;
}

static void *select_cancel_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx[2];
    struct blocked_sel b = {0};
    for (int i = 0; i < 2; i++)
        ASSERT_OK(weft_chan_new(&tx[i], &b.rx[i], sizeof(uint64_t), 4));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, blocked_select, &b));
    while (!atomic_load(&b.started))
        ASSERT_OK(weft_yield());
    settle();
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    ASSERT_EQ(b.rc, -ECANCELED);
    ASSERT_EQ(b.idx, 2);
    weft_task_free(t);
    for (int i = 0; i < 2; i++) {
        uint64_t x = 7 + (uint64_t)i, y;
        ASSERT_OK(weft_chan_send(tx[i], &x));
        ASSERT_OK(weft_chan_recv(b.rx[i], &y));
        ASSERT_EQ(y, x);
        weft_chan_tx_free(tx[i]);
        weft_chan_rx_free(b.rx[i]);
    }
    return NULL;
}

TEST(select_cancelled_drops_all)
{
    run(select_cancel_body, NULL);
}

static void *select_future_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1));
    uint64_t a = 5, v = 0;
    ASSERT_OK(weft_chan_send(tx, &a));
    size_t idx = 77;
    weft_future *fs[2] = {weft_yield_future(), weft_chan_recv_future(rx, &v)};
    weft_future *sf = weft_select_future(fs, 2, &idx);
    ASSERT(sf && fs[0] == NULL && fs[1] == NULL);
    ASSERT_OK(weft_await(sf, NULL));
    ASSERT_EQ(idx, 1);
    ASSERT_EQ(v, 5);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(select_future_form)
{
    run(select_future_body, NULL);
}

/* From a plain thread: select blocks the thread. */
struct thread_sel {
    weft_chan_rx *rx[2];
    int rc;
    size_t idx;
    uint64_t v[2];
};

static void *thread_select(void *arg)
{
    struct thread_sel *t = arg;
    weft_sync_op ops[2];
    weft_future *fs[2] = {weft_chan_recv_init(&ops[0], t->rx[0], &t->v[0]),
                          weft_chan_recv_init(&ops[1], t->rx[1], &t->v[1])};
    t->rc = weft_select(fs, 2, &t->idx, NULL);
    return NULL;
}

static void *select_thread_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx[2];
    struct thread_sel t = {0};
    for (int i = 0; i < 2; i++)
        ASSERT_OK(weft_chan_new(&tx[i], &t.rx[i], sizeof(uint64_t), 1));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, thread_select, &t), 0);
    settle();
    uint64_t x = 99;
    ASSERT_OK(weft_chan_send(tx[1], &x));
    pthread_join(th, NULL);
    ASSERT_OK(t.rc);
    ASSERT_EQ(t.idx, 1);
    ASSERT_EQ(t.v[1], 99);
    for (int i = 0; i < 2; i++) {
        weft_chan_tx_free(tx[i]);
        weft_chan_rx_free(t.rx[i]);
    }
    return NULL;
}

TEST(select_from_plain_thread)
{
    run(select_thread_body, NULL);
}

/* ======================================================================== */
/* join_all                                                                 */
/* ======================================================================== */

static void *join_all_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 4));
    uint64_t got[3] = {0};
    weft_future *fs[4] = {
        weft_chan_recv_future(rx, &got[0]), weft_chan_recv_future(rx, &got[1]),
        weft_yield_future(), weft_chan_recv_future(rx, &got[2])};
    weft_task *t;
    uint64_t x = 1;
    ASSERT_OK(weft_chan_send(tx, &x));
    ASSERT_OK(weft_spawn(NULL, &t, sender_task, tx));
    ASSERT_OK(weft_spawn(NULL, NULL, sender_task, tx));
    void *values[4];
    int errs[4];
    ASSERT_OK(weft_join_all(fs, 4, values, errs));
    for (int i = 0; i < 4; i++) {
        ASSERT(fs[i] == NULL);
        ASSERT_EQ(errs[i], 0);
    }
    ASSERT_EQ(got[0] + got[1] + got[2], 1 + 42 + 42);
    ASSERT_OK(weft_join(t, NULL));
    weft_task_free(t);
    /* The lowest-index failure is the result; all ran. */
    weft_future *gs[3] = {weft_ready((void *)1, 0), weft_ready(NULL, -EIO),
                          weft_ready(NULL, -ENOENT)};
    ASSERT_EQ(weft_join_all(gs, 3, values, errs), -EIO);
    ASSERT_PTR_EQ(values[0], (void *)1);
    ASSERT_EQ(errs[2], -ENOENT);
    /* Future form. */
    weft_future *hs[2] = {weft_ready((void *)3, 0), weft_yield_future()};
    weft_future *jf = weft_join_all_future(hs, 2, values, errs);
    ASSERT(jf);
    ASSERT_OK(weft_await(jf, NULL));
    ASSERT_PTR_EQ(values[0], (void *)3);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(join_all_waits_for_all)
{
    run(join_all_body, NULL);
}

struct blocked_join {
    weft_chan_rx *rx;
    uint64_t v[2];
    atomic_int started;
    int rc;
};

static void *blocked_join_all(void *arg)
{
    struct blocked_join *b = arg;
    weft_future *fs[2] = {weft_chan_recv_future(b->rx, &b->v[0]),
                          weft_chan_recv_future(b->rx, &b->v[1])};
    atomic_store(&b->started, 1);
    b->rc = weft_join_all(fs, 2, NULL, NULL);
    return NULL;
}

static void *join_all_cancel_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    struct blocked_join b = {0};
    ASSERT_OK(weft_chan_new(&tx, &b.rx, sizeof(uint64_t), 4));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, blocked_join_all, &b));
    while (!atomic_load(&b.started))
        ASSERT_OK(weft_yield());
    settle();
    uint64_t x = 1, y;
    ASSERT_OK(weft_chan_send(tx, &x)); /* one of the two is done */
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    ASSERT_EQ(b.rc, -ECANCELED);
    weft_task_free(t);
    /* The unfinished receive took nothing. */
    x = 2;
    ASSERT_OK(weft_chan_send(tx, &x));
    ASSERT_OK(weft_chan_recv(b.rx, &y));
    ASSERT(y == 2 || y == 1);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(b.rx);
    return NULL;
}

TEST(join_all_cancelled)
{
    run(join_all_cancel_body, NULL);
}

TEST_MAIN()
