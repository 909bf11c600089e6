/*
 * Channels: mpsc bounded and unbounded, oneshot, broadcast, watch. Every
 * case runs on both executors (WEFT_TEST_FLAVOR=mt: multi-thread).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#include "flavor.h"
#include "test.h"
#include "weft.h"

/* Yields until *flag is set (another task or thread sets it). */
static void yield_until(atomic_int *flag)
{
    while (!atomic_load(flag))
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

/* ======================================================================== */
/* mpsc: basics                                                             */
/* ======================================================================== */

static void *basic_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 4));
    for (uint64_t i = 0; i < 4; i++)
        ASSERT_OK(weft_chan_send(tx, &i));
    uint64_t x = 99;
    ASSERT_EQ(weft_chan_try_send(tx, &x), -EAGAIN);
    ASSERT_EQ(weft_chan_len(rx), 4);
    for (uint64_t i = 0; i < 4; i++) {
        uint64_t v;
        ASSERT_OK(weft_chan_recv(rx, &v));
        ASSERT_EQ(v, i);
    }
    ASSERT_EQ(weft_chan_try_recv(rx, &x), -EAGAIN);
    /* The last sender closes: drain, then -EPIPE. */
    x = 7;
    ASSERT_OK(weft_chan_try_send(tx, &x));
    weft_chan_tx_free(tx);
    uint64_t v = 0;
    ASSERT_OK(weft_chan_recv(rx, &v));
    ASSERT_EQ(v, 7);
    ASSERT_EQ(weft_chan_recv(rx, &v), -EPIPE);
    ASSERT_EQ(weft_chan_try_recv(rx, &v), -EPIPE);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(send_recv_in_order_and_close)
{
    run(basic_body, NULL);
}

TEST(new_validates)
{
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_EQ(weft_chan_new(&tx, &rx, 8, 0), -EINVAL);
    ASSERT(tx == NULL && rx == NULL);
    ASSERT_OK(weft_chan_new_unbounded(&tx, &rx, 8));
    weft_chan_rx_free(rx);
    weft_chan_tx_free(tx);
}

struct big {
    char name[24];
    void *ptr;
    uint32_t n;
};

static void *struct_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new_unbounded(&tx, &rx, sizeof(struct big)));
    for (uint32_t i = 0; i < 1000; i++) {
        struct big b = {.ptr = &b, .n = i};
        snprintf(b.name, sizeof b.name, "msg-%u", i);
        ASSERT_OK(weft_chan_send(tx, &b));
    }
    ASSERT_EQ(weft_chan_len(rx), 1000);
    for (uint32_t i = 0; i < 1000; i++) {
        struct big b;
        ASSERT_OK(weft_chan_recv(rx, &b));
        char want[24];
        snprintf(want, sizeof want, "msg-%u", i);
        ASSERT_STR_CONTAINS(b.name, want);
        ASSERT_EQ(b.n, i);
    }
    /* Pointers travel as their bytes. */
    weft_chan_tx *ptx;
    weft_chan_rx *prx;
    ASSERT_OK(weft_chan_new(&ptx, &prx, sizeof(char *), 1));
    char *s = strdup("hello"), *got = NULL;
    ASSERT_OK(weft_chan_send(ptx, &s));
    ASSERT_OK(weft_chan_recv(prx, &got));
    ASSERT_PTR_EQ(got, s);
    free(got);
    weft_chan_tx_free(ptx);
    weft_chan_rx_free(prx);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(structs_and_pointers_travel)
{
    run(struct_body, NULL);
}

/* ---- no receivers: -EPIPE, the message stays the sender's ---- */

struct closer {
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    atomic_int started;
    int rc;
};

static void *blocked_sender(void *arg)
{
    struct closer *c = arg;
    uint64_t v = 5;
    atomic_store(&c->started, 1);
    c->rc = weft_chan_send(c->tx, &v);
    ASSERT_EQ(v, 5);
    return NULL;
}

static void *no_receivers_body(void *arg)
{
    (void)arg;
    struct closer c = {0};
    ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 1));
    uint64_t one = 1;
    ASSERT_OK(weft_chan_send(c.tx, &one)); /* now full */
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, blocked_sender, &c));
    yield_until(&c.started);
    settle();
    ASSERT(!weft_task_done(t));
    weft_chan_rx_free(c.rx); /* the waiting sender gets -EPIPE */
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(c.rc, -EPIPE);
    uint64_t v = 3;
    ASSERT_EQ(weft_chan_send(c.tx, &v), -EPIPE);
    ASSERT_EQ(weft_chan_try_send(c.tx, &v), -EPIPE);
    ASSERT_EQ(v, 3);
    weft_task_free(t);
    weft_chan_tx_free(c.tx);
    return NULL;
}

TEST(send_without_receivers_is_epipe)
{
    run(no_receivers_body, NULL);
}

/* ---- waiting receivers are woken by close ---- */

static void *blocked_receiver(void *arg)
{
    struct closer *c = arg;
    uint64_t v;
    atomic_store(&c->started, 1);
    c->rc = weft_chan_recv(c->rx, &v);
    return NULL;
}

static void *close_wakes_body(void *arg)
{
    (void)arg;
    struct closer c = {0};
    ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 8));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, blocked_receiver, &c));
    yield_until(&c.started);
    settle();
    weft_chan_tx_clone(c.tx);
    weft_chan_tx_free(c.tx); /* one of two: still open */
    settle();
    ASSERT(!weft_task_done(t));
    weft_chan_tx_free(c.tx); /* the last */
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(c.rc, -EPIPE);
    weft_task_free(t);
    weft_chan_rx_free(c.rx);
    return NULL;
}

TEST(last_sender_wakes_receivers)
{
    run(close_wakes_body, NULL);
}

/* ======================================================================== */
/* mpsc: stress, N producers x M consumers                                  */
/* ======================================================================== */

struct msg {
    uint32_t producer;
    uint32_t seq;
};

struct stress {
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    int producers, consumers;
    int thread_producers, thread_consumers; /* of which plain threads */
    uint32_t per;
    atomic_uchar *seen;
    atomic_long received;
};

static void consume(struct stress *s, bool blocking)
{
    uint32_t *last = calloc((size_t)s->producers, sizeof *last);
    ASSERT(last);
    struct msg m;
    int rc;
    for (;;) {
        rc = blocking ? weft_chan_recv_blocking(s->rx, &m)
                      : weft_chan_recv(s->rx, &m);
        if (rc != 0)
            break;
        ASSERT_LT(m.producer, (uint32_t)s->producers);
        ASSERT_LT(m.seq, s->per);
        /* From one producer, in the order sent. */
        ASSERT_GE(m.seq, last[m.producer]);
        last[m.producer] = m.seq + 1;
        unsigned char was =
            atomic_fetch_add(&s->seen[(size_t)m.producer * s->per + m.seq], 1);
        ASSERT_EQ(was, 0);
        atomic_fetch_add(&s->received, 1);
    }
    ASSERT_EQ(rc, -EPIPE);
    free(last);
    weft_chan_rx_free(s->rx);
}

static void produce(struct stress *s, uint32_t id, bool blocking)
{
    for (uint32_t i = 0; i < s->per; i++) {
        struct msg m = {id, i};
        int rc = blocking ? weft_chan_send_blocking(s->tx, &m)
                          : weft_chan_send(s->tx, &m);
        ASSERT_OK(rc);
        if (i % 97 == 0 && !blocking)
            ASSERT_OK(weft_yield());
    }
    weft_chan_tx_free(s->tx);
}

struct worker_arg {
    struct stress *s;
    uint32_t id;
};

static void *consumer_task(void *arg)
{
    consume(((struct worker_arg *)arg)->s, false);
    return NULL;
}

static void *consumer_thread(void *arg)
{
    consume(((struct worker_arg *)arg)->s, true);
    return NULL;
}

static void *producer_task(void *arg)
{
    struct worker_arg *w = arg;
    produce(w->s, w->id, false);
    return NULL;
}

static void *producer_thread(void *arg)
{
    struct worker_arg *w = arg;
    produce(w->s, w->id, true);
    return NULL;
}

static void *stress_body(void *arg)
{
    struct stress *s = arg;
    int np = s->producers, nc = s->consumers;
    size_t total = (size_t)np * s->per;
    s->seen = calloc(total, 1);
    ASSERT(s->seen);
    for (int i = 1; i < np; i++)
        weft_chan_tx_clone(s->tx);
    for (int i = 1; i < nc; i++)
        weft_chan_rx_clone(s->rx);
    struct worker_arg *wa = calloc((size_t)(np + nc), sizeof *wa);
    weft_task **tasks = calloc((size_t)(np + nc), sizeof *tasks);
    pthread_t *threads = calloc((size_t)(np + nc), sizeof *threads);
    ASSERT(wa && tasks && threads);
    int nt = 0, nth = 0;
    for (int i = 0; i < nc; i++) {
        wa[i].s = s;
        if (i < s->thread_consumers)
            ASSERT_EQ(
                pthread_create(&threads[nth++], NULL, consumer_thread, &wa[i]),
                0);
        else
            ASSERT_OK(weft_spawn(NULL, &tasks[nt++], consumer_task, &wa[i]));
    }
    for (int i = 0; i < np; i++) {
        struct worker_arg *w = &wa[nc + i];
        w->s = s;
        w->id = (uint32_t)i;
        if (i < s->thread_producers)
            ASSERT_EQ(pthread_create(&threads[nth++], NULL, producer_thread, w),
                      0);
        else
            ASSERT_OK(weft_spawn(NULL, &tasks[nt++], producer_task, w));
    }
    for (int i = 0; i < nt; i++) {
        ASSERT_OK(weft_join(tasks[i], NULL));
        weft_task_free(tasks[i]);
    }
    for (int i = 0; i < nth; i++)
        pthread_join(threads[i], NULL);
    ASSERT_EQ(atomic_load(&s->received), (long)total);
    for (size_t i = 0; i < total; i++)
        ASSERT_EQ(atomic_load(&s->seen[i]), 1);
    free(s->seen);
    free(wa);
    free(tasks);
    free(threads);
    return NULL;
}

static uint32_t scaled(uint32_t n)
{
    return TEST_SANITIZED ? n / 10 : n;
}

static void stress(size_t cap, int producers, int consumers, int tp, int tc)
{
    struct stress s = {.producers = producers,
                       .consumers = consumers,
                       .thread_producers = tp,
                       .thread_consumers = tc,
                       .per = scaled(20000)};
    if (cap)
        ASSERT_OK(weft_chan_new(&s.tx, &s.rx, sizeof(struct msg), cap));
    else
        ASSERT_OK(weft_chan_new_unbounded(&s.tx, &s.rx, sizeof(struct msg)));
    run(stress_body, &s);
}

TEST(stress_bounded_1_by_1)
{
    stress(1, 1, 1, 0, 0);
}

TEST(stress_bounded_8_producers_4_consumers)
{
    stress(3, 8, 4, 0, 0);
}

TEST(stress_bounded_with_threads)
{
    stress(16, 6, 3, 2, 1);
}

TEST(stress_bounded_1024_8_producers_4_consumers)
{
    stress(1024, 8, 4, 0, 0);
}

TEST(stress_bounded_64_with_threads)
{
    stress(64, 6, 3, 2, 2);
}

TEST(stress_unbounded_8_producers_4_consumers)
{
    stress(0, 8, 4, 0, 0);
}

TEST(stress_unbounded_with_threads)
{
    stress(0, 4, 3, 2, 2);
}

/* ---- plain threads only, no runtime at all ---- */

TEST(threads_without_runtime)
{
    struct stress s = {.producers = 3, .consumers = 2, .per = scaled(20000)};
    ASSERT_OK(weft_chan_new(&s.tx, &s.rx, sizeof(struct msg), 2));
    s.seen = calloc((size_t)s.producers * s.per, 1);
    weft_chan_tx_clone(s.tx);
    weft_chan_tx_clone(s.tx);
    weft_chan_rx_clone(s.rx);
    struct worker_arg wa[5];
    pthread_t th[5];
    for (int i = 0; i < 5; i++) {
        wa[i].s = &s;
        wa[i].id = (uint32_t)(i - 2);
        ASSERT_EQ(pthread_create(&th[i], NULL,
                                 i < 2 ? consumer_thread : producer_thread,
                                 &wa[i]),
                  0);
    }
    for (int i = 0; i < 5; i++)
        pthread_join(th[i], NULL);
    ASSERT_EQ(atomic_load(&s.received), (long)(3 * s.per));
    free(s.seen);
}

static void *blocking_in_task_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, 4, 1));
    int v = 1;
    ASSERT_EQ(weft_chan_send_blocking(tx, &v), -EPERM);
    ASSERT_EQ(weft_chan_recv_blocking(rx, &v), -EPERM);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(blocking_calls_inside_task_are_eperm)
{
    run(blocking_in_task_body, NULL);
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, 4, 1));
    int v = 1;
    /* And the coroutine calls outside a task. */
    ASSERT_EQ(weft_chan_send(tx, &v), -EPERM);
    ASSERT_EQ(weft_chan_recv(rx, &v), -EPERM);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
}

/* ======================================================================== */
/* mpsc: cancellation                                                       */
/* ======================================================================== */

struct cancel_case {
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    atomic_int started;
    int rc;
    uint64_t v;
};

static void *cancel_recv_task(void *arg)
{
    struct cancel_case *c = arg;
    atomic_store(&c->started, 1);
    c->rc = weft_chan_recv(c->rx, &c->v);
    return NULL;
}

static void *cancel_send_task(void *arg)
{
    struct cancel_case *c = arg;
    uint64_t mine = 222;
    atomic_store(&c->started, 1);
    c->rc = weft_chan_send(c->tx, &mine);
    return NULL;
}

/* A receiver blocked in recv is cancelled: -ECANCELED, and the channel
 * still works. */
static void *cancel_waiting_recv_body(void *arg)
{
    (void)arg;
    struct cancel_case c = {0};
    ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 2));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, cancel_recv_task, &c));
    yield_until(&c.started);
    settle();
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    ASSERT_EQ(c.rc, -ECANCELED);
    uint64_t x = 11, y = 0;
    ASSERT_OK(weft_chan_send(c.tx, &x));
    ASSERT_OK(weft_chan_recv(c.rx, &y));
    ASSERT_EQ(y, 11);
    weft_task_free(t);
    weft_chan_tx_free(c.tx);
    weft_chan_rx_free(c.rx);
    return NULL;
}

TEST(cancel_blocked_receiver)
{
    run(cancel_waiting_recv_body, NULL);
}

/* A message handed straight to a waiting receiver that is cancelled before
 * it runs goes back into the channel: nothing is lost. */
static void *handed_then_cancelled_body(void *arg)
{
    (void)arg;
    for (int round = 0; round < (TEST_SANITIZED ? 200 : 2000); round++) {
        struct cancel_case c = {0};
        ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 1));
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, cancel_recv_task, &c));
        yield_until(&c.started);
        if (round % 2)
            ASSERT_OK(weft_yield());
        weft_task_cancel(t);
        uint64_t x = 1000 + (uint64_t)round, y = 0;
        ASSERT_OK(weft_chan_send(c.tx, &x));
        weft_join(t, NULL);
        if (c.rc == 0) {
            /* It ran before the cancel: it has the message. */
            ASSERT_EQ(c.v, x);
            ASSERT_EQ(weft_chan_try_recv(c.rx, &y), -EAGAIN);
        } else {
            ASSERT_EQ(c.rc, -ECANCELED);
            ASSERT_OK(weft_chan_try_recv(c.rx, &y));
            ASSERT_EQ(y, x);
        }
        weft_task_free(t);
        weft_chan_tx_free(c.tx);
        weft_chan_rx_free(c.rx);
    }
    return NULL;
}

TEST(message_handed_to_cancelled_receiver_is_kept)
{
    run(handed_then_cancelled_body, NULL);
}

/* Put back into a full buffer: the buffer grows past its capacity. */
static void *put_back_full_body(void *arg)
{
    (void)arg;
    if (is_mt())
        return NULL; /* needs the receiver not to run between two steps */
    struct cancel_case c = {0};
    ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 1));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, cancel_recv_task, &c));
    yield_until(&c.started);
    ASSERT_OK(weft_yield());
    uint64_t a = 1, b = 2, y;
    ASSERT_OK(weft_chan_send(c.tx, &a)); /* straight to the receiver */
    ASSERT_OK(weft_chan_send(c.tx, &b)); /* fills the buffer */
    weft_task_cancel(t);
    ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
    ASSERT_EQ(c.rc, -ECANCELED);
    ASSERT_EQ(weft_chan_len(c.rx), 2);
    ASSERT_OK(weft_chan_recv(c.rx, &y));
    ASSERT_EQ(y, 1);
    ASSERT_OK(weft_chan_recv(c.rx, &y));
    ASSERT_EQ(y, 2);
    weft_task_free(t);
    weft_chan_tx_free(c.tx);
    weft_chan_rx_free(c.rx);
    return NULL;
}

TEST(put_back_into_full_channel)
{
    run(put_back_full_body, NULL);
}

/* A sender blocked on a full channel is cancelled: its message is not sent;
 * also when a slot had already been reserved for it. */
static void *cancel_blocked_sender_body(void *arg)
{
    (void)arg;
    for (int round = 0; round < (TEST_SANITIZED ? 100 : 1000); round++) {
        struct cancel_case c = {0};
        ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 1));
        uint64_t first = 111, y;
        ASSERT_OK(weft_chan_send(c.tx, &first));
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, cancel_send_task, &c));
        yield_until(&c.started);
        if (round % 2)
            settle();
        if (round % 4 >= 2) {
            /* Free a slot first: it is reserved for the waiting sender. */
            ASSERT_OK(weft_chan_recv(c.rx, &y));
            ASSERT_EQ(y, 111);
        }
        weft_task_cancel(t);
        weft_join(t, NULL);
        if (round % 4 < 2) {
            ASSERT_EQ(c.rc, -ECANCELED);
            ASSERT_OK(weft_chan_recv(c.rx, &y));
            ASSERT_EQ(y, 111);
            ASSERT_EQ(weft_chan_try_recv(c.rx, &y), -EAGAIN);
        } else if (c.rc == 0) {
            ASSERT_OK(weft_chan_try_recv(c.rx, &y)); /* it sent first */
            ASSERT_EQ(y, 222);
        } else {
            ASSERT_EQ(c.rc, -ECANCELED);
            ASSERT_EQ(weft_chan_try_recv(c.rx, &y), -EAGAIN);
        }
        /* The slot is usable again either way. */
        uint64_t z = 333;
        ASSERT_OK(weft_chan_try_send(c.tx, &z));
        ASSERT_OK(weft_chan_try_recv(c.rx, &y));
        ASSERT_EQ(y, 333);
        weft_task_free(t);
        weft_chan_tx_free(c.tx);
        weft_chan_rx_free(c.rx);
    }
    return NULL;
}

TEST(cancel_blocked_sender)
{
    run(cancel_blocked_sender_body, NULL);
}

/* ======================================================================== */
/* mpsc: large buffers                                                      */
/* ======================================================================== */

/* What a user sees of a buffer of hundreds of messages: exact capacity,
 * FIFO order, put-back order, draining on close, batched sender wake-ups.
 * (Written for a receive-side cache that moved batches of messages out of
 * the ring, since dropped, see design.md; they hold for any channel and
 * would catch such a cache getting the accounting wrong.) */

/* Each receive frees exactly one slot for try_send, and weft_chan_len
 * counts every message not yet received. */
static void *large_capacity_body(void *arg)
{
    (void)arg;
    enum { CAP = 256 };
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), CAP));
    uint64_t next = 0, want = 0, v;
    for (; next < CAP; next++)
        ASSERT_OK(weft_chan_try_send(tx, &next));
    ASSERT_EQ(weft_chan_try_send(tx, &next), -EAGAIN);
    for (int i = 0; i < 3 * CAP; i++) {
        ASSERT_OK(weft_chan_try_recv(rx, &v));
        ASSERT_EQ(v, want);
        want++;
        ASSERT_EQ(weft_chan_len(rx), CAP - 1);
        ASSERT_OK(weft_chan_try_send(tx, &next));
        next++;
        ASSERT_EQ(weft_chan_try_send(tx, &next), -EAGAIN);
        ASSERT_EQ(weft_chan_len(rx), CAP);
    }
    /* Drain: FIFO to the end. */
    while (weft_chan_try_recv(rx, &v) == 0)
        ASSERT_EQ(v, want++);
    ASSERT_EQ(want, next);
    ASSERT_EQ(weft_chan_len(rx), 0);
    weft_chan_tx_free(tx);
    ASSERT_EQ(weft_chan_try_recv(rx, &v), -EPIPE);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(large_buffer_keeps_capacity_exact)
{
    run(large_capacity_body, NULL);
}

/* Messages come out in order through every way of receiving, with sends
 * and receives interleaved in runs of varying length. */
static void *large_fifo_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1024));
    uint64_t next = 0, want = 0, v;
    weft_sync_op op;
    for (int round = 0; round < 2000; round++) {
        int sends = 1 + (round * 7) % 97, recvs = 1 + (round * 13) % 89;
        for (int i = 0; i < sends && weft_chan_len(rx) < 1024; i++, next++)
            ASSERT_OK(weft_chan_send(tx, &next));
        for (int i = 0; i < recvs && want < next; i++, want++) {
            switch ((round + i) % 3) {
            case 0:
                ASSERT_OK(weft_chan_recv(rx, &v));
                break;
            case 1:
                ASSERT_OK(weft_chan_try_recv(rx, &v));
                break;
            default:
                ASSERT_OK(weft_await(weft_chan_recv_init(&op, rx, &v), NULL));
            }
            ASSERT_EQ(v, want);
        }
        ASSERT_EQ(weft_chan_len(rx), next - want);
    }
    weft_chan_tx_free(tx);
    while (weft_chan_recv(rx, &v) == 0)
        ASSERT_EQ(v, want++);
    ASSERT_EQ(want, next);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(large_buffer_fifo_through_every_receive)
{
    run(large_fifo_body, NULL);
}

/* A message handed to a receiver that is cancelled goes back in front of
 * the messages sent after it, however many there are. */
static void *large_put_back_body(void *arg)
{
    (void)arg;
    if (is_mt())
        return NULL; /* needs the receiver not to run between two steps */
    for (uint64_t extra = 2; extra < 300; extra += 37) {
        struct cancel_case c = {0};
        ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 1024));
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, cancel_recv_task, &c));
        yield_until(&c.started);
        ASSERT_OK(weft_yield());
        uint64_t v;
        /* 0 straight to the receiver (try_send: no budget spent, so the
         * receiver does not run yet). */
        for (v = 0; v <= extra; v++)
            ASSERT_OK(weft_chan_try_send(c.tx, &v));
        ASSERT_OK(weft_chan_try_recv(c.rx, &v));
        ASSERT_EQ(v, 1);
        weft_task_cancel(t);
        ASSERT_EQ(weft_join(t, NULL), -ECANCELED);
        ASSERT_EQ(c.rc, -ECANCELED);
        ASSERT_EQ(weft_chan_len(c.rx), extra);
        ASSERT_OK(weft_chan_recv(c.rx, &v));
        ASSERT_EQ(v, 0);
        for (uint64_t want = 2; want <= extra; want++) {
            ASSERT_OK(weft_chan_recv(c.rx, &v));
            ASSERT_EQ(v, want);
        }
        ASSERT_EQ(weft_chan_try_recv(c.rx, &v), -EAGAIN);
        weft_task_free(t);
        weft_chan_tx_free(c.tx);
        weft_chan_rx_free(c.rx);
    }
    return NULL;
}

TEST(large_buffer_put_back_goes_first)
{
    run(large_put_back_body, NULL);
}

/* Closing: receivers drain the buffer before -EPIPE; freeing the last
 * receiver discards it and fails the senders. */
static void *large_close_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 512));
    uint64_t v;
    for (v = 0; v < 500; v++)
        ASSERT_OK(weft_chan_send(tx, &v));
    ASSERT_OK(weft_chan_recv(rx, &v));
    ASSERT_EQ(v, 0);
    weft_chan_tx_free(tx);
    for (uint64_t want = 1; want < 500; want++) {
        ASSERT_OK(weft_chan_recv(rx, &v));
        ASSERT_EQ(v, want);
    }
    ASSERT_EQ(weft_chan_recv(rx, &v), -EPIPE);
    ASSERT_EQ(weft_chan_try_recv(rx, &v), -EPIPE);
    weft_chan_rx_free(rx);

    /* The last receiver goes with messages left. */
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 512));
    for (v = 0; v < 512; v++)
        ASSERT_OK(weft_chan_send(tx, &v));
    ASSERT_OK(weft_chan_recv(rx, &v));
    weft_chan_rx_free(rx);
    ASSERT_EQ(weft_chan_send(tx, &v), -EPIPE);
    ASSERT_EQ(weft_chan_try_send(tx, &v), -EPIPE);
    weft_chan_tx_free(tx);
    return NULL;
}

TEST(large_buffer_close_drains_then_epipe)
{
    run(large_close_body, NULL);
}

/* A sender that waits on a full channel is let through once receives have
 * freed a quarter of it. */
static void *large_sender_waits_body(void *arg)
{
    (void)arg;
    struct cancel_case c = {0};
    ASSERT_OK(weft_chan_new(&c.tx, &c.rx, sizeof(uint64_t), 256));
    uint64_t v;
    for (v = 0; v < 256; v++)
        ASSERT_OK(weft_chan_send(c.tx, &v));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, cancel_send_task, &c));
    yield_until(&c.started);
    settle();
    for (uint64_t want = 0; want < 256; want++) {
        ASSERT_OK(weft_chan_recv(c.rx, &v));
        ASSERT_EQ(v, want);
    }
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(c.rc, 0);
    ASSERT_OK(weft_chan_recv(c.rx, &v));
    ASSERT_EQ(v, 222);
    weft_task_free(t);
    weft_chan_tx_free(c.tx);
    weft_chan_rx_free(c.rx);
    return NULL;
}

TEST(large_buffer_waiting_sender_is_woken)
{
    run(large_sender_waits_body, NULL);
}

/* ======================================================================== */
/* mpsc: futures                                                            */
/* ======================================================================== */

static void *future_forms_body(void *arg)
{
    (void)arg;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1));
    uint64_t v = 41;
    weft_future *sf = weft_chan_send_future(tx, &v);
    v = 0; /* the future has its own copy */
    ASSERT_OK(weft_await(sf, NULL));
    uint64_t got = 0;
    ASSERT_OK(weft_await(weft_chan_recv_future(rx, &got), NULL));
    ASSERT_EQ(got, 41);
    /* A send future dropped unpolled sends nothing. */
    v = 5;
    sf = weft_chan_send_future(tx, &v);
    ASSERT_OK(weft_chan_try_send(tx, &v));
    weft_future_free(sf); /* (reported as never polled in debug runs) */
    ASSERT_OK(weft_chan_recv(rx, &got));
    ASSERT_EQ(weft_chan_try_recv(rx, &got), -EAGAIN);
    /* Caller-owned storage. */
    weft_sync_op op;
    v = 9;
    ASSERT_OK(weft_await(weft_chan_send_init(&op, tx, &v), NULL));
    ASSERT_OK(weft_await(weft_chan_recv_init(&op, rx, &got), NULL));
    ASSERT_EQ(got, 9);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    return NULL;
}

TEST(future_forms)
{
    run(future_forms_body, NULL);
}

/* A stackless task that echoes messages, driving channel futures from its
 * own poll function in a weft_sync_op. */
struct echo {
    weft_future base;
    weft_chan_rx *in;
    weft_chan_tx *out;
    uint64_t v;
    int step; /* 0: receive, 1: send */
    bool active;
    weft_sync_op op;
};

static weft_poll echo_poll(weft_future *f, weft_cx *cx)
{
    struct echo *e = (struct echo *)f;
    for (;;) {
        if (!e->active) {
            if (e->step == 0)
                weft_chan_recv_init(&e->op, e->in, &e->v);
            else
                weft_chan_send_init(&e->op, e->out, &e->v);
            e->active = true;
        }
        if (weft_future_poll(&e->op.base, cx) == WEFT_PENDING)
            return WEFT_PENDING;
        int rc = e->op.base.err;
        weft_future_free(&e->op.base);
        e->active = false;
        if (rc == -EPIPE) {
            weft_chan_tx_free(e->out);
            return weft_future_set(f, NULL, 0);
        }
        ASSERT_OK(rc);
        e->step ^= 1;
    }
}

static void echo_drop(weft_future *f)
{
    struct echo *e = (struct echo *)f;
    if (e->active)
        weft_future_free(&e->op.base);
}

static const weft_future_ops echo_ops = {echo_poll, echo_drop, "echo"};

static void *stackless_body(void *arg)
{
    (void)arg;
    weft_chan_tx *atx, *btx;
    weft_chan_rx *arx, *brx;
    ASSERT_OK(weft_chan_new(&atx, &arx, sizeof(uint64_t), 1));
    ASSERT_OK(weft_chan_new(&btx, &brx, sizeof(uint64_t), 1));
    struct echo *e = (struct echo *)weft_future_new(sizeof *e, &echo_ops);
    ASSERT(e);
    e->in = arx;
    e->out = btx;
    weft_task *t;
    ASSERT_OK(weft_spawn_future(NULL, &t, &e->base, NULL));
    for (uint64_t i = 0; i < 10000; i++) {
        uint64_t v;
        ASSERT_OK(weft_chan_send(atx, &i));
        ASSERT_OK(weft_chan_recv(brx, &v));
        ASSERT_EQ(v, i);
    }
    weft_chan_tx_free(atx);
    ASSERT_OK(weft_join(t, NULL));
    uint64_t v;
    ASSERT_EQ(weft_chan_recv(brx, &v), -EPIPE);
    weft_task_free(t);
    weft_chan_rx_free(arx);
    weft_chan_rx_free(brx);
    return NULL;
}

TEST(stackless_task_with_caller_owned_ops)
{
    run(stackless_body, NULL);
}

/* ---- the cooperative budget: an always-ready receiver lets others run -- */

struct budget {
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    atomic_int other_ran;
    int seen_before_done;
};

static void *other_task(void *arg)
{
    struct budget *b = arg;
    atomic_store(&b->other_ran, 1);
    return NULL;
}

static void *budget_body(void *arg)
{
    (void)arg;
    struct budget b = {0};
    ASSERT_OK(weft_chan_new_unbounded(&b.tx, &b.rx, sizeof(uint64_t)));
    for (uint64_t i = 0; i < 100000; i++)
        ASSERT_OK(weft_chan_try_send(b.tx, &i));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, other_task, &b));
    /* Never has to wait; the budget still makes it yield. */
    for (uint64_t i = 0; i < 100000; i++) {
        uint64_t v;
        ASSERT_OK(weft_chan_recv(b.rx, &v));
        ASSERT_EQ(v, i);
        if (i == 10000)
            b.seen_before_done = atomic_load(&b.other_ran);
    }
    /* On one thread the other task can only have run if the receiver
     * yielded; on several, a worker may have taken it without running it
     * yet, so only the end result is certain there. */
    if (!is_mt())
        ASSERT(b.seen_before_done);
    ASSERT_OK(weft_join(t, NULL));
    weft_task_free(t);
    weft_chan_tx_free(b.tx);
    weft_chan_rx_free(b.rx);
    return NULL;
}

TEST(budget_makes_busy_receiver_yield)
{
    run(budget_body, NULL);
}

/* ======================================================================== */
/* oneshot                                                                  */
/* ======================================================================== */

struct os_case {
    weft_oneshot_tx *tx;
    weft_oneshot_rx *rx;
    atomic_int started;
    int rc;
    uint64_t v;
};

static void *os_receiver(void *arg)
{
    struct os_case *c = arg;
    atomic_store(&c->started, 1);
    c->rc = weft_oneshot_recv(c->rx, &c->v);
    return NULL;
}

static void *oneshot_body(void *arg)
{
    (void)arg;
    /* Sent before the receive. */
    struct os_case c = {0};
    ASSERT_OK(weft_oneshot_new(&c.tx, &c.rx, sizeof(uint64_t)));
    uint64_t x = 5, y = 0;
    ASSERT_EQ(weft_oneshot_try_recv(c.rx, &y), -EAGAIN);
    ASSERT_OK(weft_oneshot_send(c.tx, &x));
    ASSERT_OK(weft_oneshot_recv(c.rx, &y));
    ASSERT_EQ(y, 5);
    ASSERT_EQ(weft_oneshot_recv(c.rx, &y), -EPIPE); /* only once */
    weft_oneshot_rx_free(c.rx);

    /* Received while waiting. */
    struct os_case d = {0};
    ASSERT_OK(weft_oneshot_new(&d.tx, &d.rx, sizeof(uint64_t)));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, os_receiver, &d));
    yield_until(&d.started);
    settle();
    x = 77;
    ASSERT_OK(weft_oneshot_send(d.tx, &x));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(d.rc, 0);
    ASSERT_EQ(d.v, 77);
    weft_task_free(t);
    weft_oneshot_rx_free(d.rx);

    /* The sender goes without sending. */
    struct os_case e = {0};
    ASSERT_OK(weft_oneshot_new(&e.tx, &e.rx, sizeof(uint64_t)));
    ASSERT_OK(weft_spawn(NULL, &t, os_receiver, &e));
    yield_until(&e.started);
    settle();
    weft_oneshot_tx_free(e.tx);
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(e.rc, -EPIPE);
    weft_task_free(t);
    weft_oneshot_rx_free(e.rx);

    /* The receiver goes first: send fails, message stays ours. */
    struct os_case f = {0};
    ASSERT_OK(weft_oneshot_new(&f.tx, &f.rx, sizeof(uint64_t)));
    weft_oneshot_rx_free(f.rx);
    x = 3;
    ASSERT_EQ(weft_oneshot_send(f.tx, &x), -EPIPE);
    ASSERT_EQ(x, 3);
    return NULL;
}

TEST(oneshot_basics)
{
    run(oneshot_body, NULL);
}

static void *oneshot_cancel_body(void *arg)
{
    (void)arg;
    for (int round = 0; round < (TEST_SANITIZED ? 200 : 2000); round++) {
        struct os_case c = {0};
        ASSERT_OK(weft_oneshot_new(&c.tx, &c.rx, sizeof(uint64_t)));
        weft_task *t;
        ASSERT_OK(weft_spawn(NULL, &t, os_receiver, &c));
        yield_until(&c.started);
        if (round % 2)
            ASSERT_OK(weft_yield());
        weft_task_cancel(t);
        uint64_t x = (uint64_t)round, y = 99999;
        ASSERT_OK(weft_oneshot_send(c.tx, &x));
        weft_join(t, NULL);
        if (c.rc == 0) {
            ASSERT_EQ(c.v, x);
            ASSERT_EQ(weft_oneshot_try_recv(c.rx, &y), -EPIPE);
        } else {
            ASSERT_EQ(c.rc, -ECANCELED);
            ASSERT_OK(weft_oneshot_try_recv(c.rx, &y)); /* kept */
            ASSERT_EQ(y, x);
        }
        weft_task_free(t);
        weft_oneshot_rx_free(c.rx);
    }
    return NULL;
}

TEST(oneshot_cancelled_receiver_keeps_message)
{
    run(oneshot_cancel_body, NULL);
}

/* Many pairs, senders on other tasks and on a plain thread. */
#define OS_PAIRS 2000

struct os_many {
    weft_oneshot_tx *tx[OS_PAIRS];
    weft_oneshot_rx *rx[OS_PAIRS];
};

static void *os_send_task(void *arg)
{
    struct os_many *m = arg;
    for (uint64_t i = 0; i < OS_PAIRS; i += 2)
        ASSERT_OK(weft_oneshot_send(m->tx[i], &i));
    return NULL;
}

static void *os_send_thread(void *arg)
{
    struct os_many *m = arg;
    for (uint64_t i = 1; i < OS_PAIRS; i += 2)
        ASSERT_OK(weft_oneshot_send(m->tx[i], &i));
    return NULL;
}

static void *os_recv_task(void *arg)
{
    weft_oneshot_rx *rx = arg;
    uint64_t v;
    ASSERT_OK(weft_oneshot_recv(rx, &v));
    weft_oneshot_rx_free(rx);
    return (void *)(uintptr_t)v;
}

static void *oneshot_many_body(void *arg)
{
    (void)arg;
    struct os_many *m = malloc(sizeof *m);
    weft_task **h = malloc(sizeof *h * OS_PAIRS);
    ASSERT(m && h);
    for (int i = 0; i < OS_PAIRS; i++) {
        ASSERT_OK(weft_oneshot_new(&m->tx[i], &m->rx[i], sizeof(uint64_t)));
        ASSERT_OK(weft_spawn(NULL, &h[i], os_recv_task, m->rx[i]));
    }
    weft_task *s;
    pthread_t th;
    ASSERT_OK(weft_spawn(NULL, &s, os_send_task, m));
    ASSERT_EQ(pthread_create(&th, NULL, os_send_thread, m), 0);
    for (int i = 0; i < OS_PAIRS; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        ASSERT_EQ((uintptr_t)v, (uintptr_t)i);
        weft_task_free(h[i]);
    }
    ASSERT_OK(weft_join(s, NULL));
    weft_task_free(s);
    pthread_join(th, NULL);
    free(m);
    free(h);
    return NULL;
}

TEST(oneshot_many_pairs_tasks_and_threads)
{
    run(oneshot_many_body, NULL);
}

static void *os_one_send_thread(void *arg)
{
    usleep(10000);
    uint64_t v = 1;
    ASSERT_OK(weft_oneshot_send(arg, &v));
    return NULL;
}

/* weft_oneshot_poll_recv: stackless receivers with the waker kept in the
 * channel, woken by sends from tasks and threads, by the sender's release,
 * and dropped (with their registration) by cancellation. */
struct os_big {
    uint64_t w[5]; /* 40 bytes: larger than the channel's waker slot */
};

struct os_poll_future {
    weft_future base;
    weft_oneshot_rx *rx;
    atomic_int *polls; /* counts polls that had to wait */
};

static weft_poll os_poll_poll(weft_future *f, weft_cx *cx)
{
    struct os_poll_future *p = (struct os_poll_future *)f;
    struct os_big v = {{0}};
    int rc = weft_oneshot_poll_recv(p->rx, cx, &v);
    if (rc == -EAGAIN) {
        atomic_fetch_add(p->polls, 1);
        return WEFT_PENDING;
    }
    weft_oneshot_rx_free(p->rx);
    p->rx = NULL;
    uint64_t sum = v.w[0] + v.w[4];
    return weft_future_set(f, (void *)(uintptr_t)sum, rc);
}

static void os_poll_drop(weft_future *f)
{
    struct os_poll_future *p = (struct os_poll_future *)f;
    weft_oneshot_rx_free(p->rx);
}

static const weft_future_ops os_poll_ops = {
    .poll = os_poll_poll,
    .drop = os_poll_drop,
    .name = "os-poll",
};

static weft_task *os_poll_spawn(weft_oneshot_rx *rx, atomic_int *polls)
{
    struct os_poll_future *p =
        (struct os_poll_future *)weft_future_new(sizeof *p, &os_poll_ops);
    ASSERT(p != NULL);
    p->rx = rx;
    p->polls = polls;
    weft_task *t;
    ASSERT_OK(weft_spawn_future(NULL, &t, &p->base, NULL));
    return t;
}

static void *os_big_send_thread(void *arg)
{
    usleep(5000);
    struct os_big v = {{3, 0, 0, 0, 4}};
    ASSERT_OK(weft_oneshot_send(arg, &v));
    return NULL;
}

#define OS_POLL_N 64

static void *oneshot_poll_body(void *arg)
{
    (void)arg;
    atomic_int polls = 0;
    weft_oneshot_tx *tx[OS_POLL_N];
    weft_task *h[OS_POLL_N];
    for (int i = 0; i < OS_POLL_N; i++) {
        weft_oneshot_rx *rx;
        ASSERT_OK(weft_oneshot_new(&tx[i], &rx, sizeof(struct os_big)));
        h[i] = os_poll_spawn(rx, &polls);
    }
    /* Every receiver waits (the channel holds its waker)... */
    for (int spins = 0; atomic_load(&polls) < OS_POLL_N && spins < 10000;
         spins++)
        ASSERT_OK(weft_yield());
    ASSERT_EQ(atomic_load(&polls), OS_POLL_N);
    /* ...and is woken by a send here, from a thread, or by tx_free. */
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, os_big_send_thread, tx[1]), 0);
    for (int i = 0; i < OS_POLL_N; i++) {
        struct os_big v = {{(uint64_t)i, 0, 0, 0, 100}};
        if (i == 1)
            continue;
        if (i % 4 == 3)
            weft_oneshot_tx_free(tx[i]);
        else
            ASSERT_OK(weft_oneshot_send(tx[i], &v));
    }
    for (int i = 0; i < OS_POLL_N; i++) {
        void *v = NULL;
        int rc = weft_join(h[i], &v);
        if (i == 1) {
            ASSERT_OK(rc);
            ASSERT_EQ((uintptr_t)v, 7);
        } else if (i % 4 == 3) {
            ASSERT_EQ(rc, -EPIPE);
        } else {
            ASSERT_OK(rc);
            ASSERT_EQ((uintptr_t)v, (uintptr_t)i + 100);
        }
        weft_task_free(h[i]);
    }
    pthread_join(th, NULL);

    /* Sent before the first poll: ready at once, no registration. */
    weft_oneshot_tx *t1;
    weft_oneshot_rx *r1;
    ASSERT_OK(weft_oneshot_new(&t1, &r1, sizeof(struct os_big)));
    struct os_big v1 = {{1, 0, 0, 0, 2}};
    ASSERT_OK(weft_oneshot_send(t1, &v1));
    atomic_int p1 = 0;
    weft_task *k = os_poll_spawn(r1, &p1);
    void *got = NULL;
    ASSERT_OK(weft_join(k, &got));
    ASSERT_EQ((uintptr_t)got, 3);
    ASSERT_EQ(atomic_load(&p1), 0);
    weft_task_free(k);

    /* Cancelled while registered: the drop frees the receiver, which drops
     * the waker the channel held; the sender then finds no receiver. */
    ASSERT_OK(weft_oneshot_new(&t1, &r1, sizeof(struct os_big)));
    atomic_int p2 = 0;
    k = os_poll_spawn(r1, &p2);
    for (int spins = 0; atomic_load(&p2) < 1 && spins < 10000; spins++)
        ASSERT_OK(weft_yield());
    ASSERT_EQ(atomic_load(&p2), 1);
    weft_task_cancel(k);
    ASSERT_EQ(weft_join(k, NULL), -ECANCELED);
    weft_task_free(k);
    ASSERT_EQ(weft_oneshot_send(t1, &v1), -EPIPE);
    return NULL;
}

TEST(oneshot_poll_recv_stackless)
{
    run(oneshot_poll_body, NULL);
}

/* A receive future waiting on the handle makes poll_recv -EBUSY. */
static weft_poll os_busy_poll(weft_future *f, weft_cx *cx)
{
    struct os_poll_future *p = (struct os_poll_future *)f;
    uint64_t v;
    return weft_future_set(f, NULL, weft_oneshot_poll_recv(p->rx, cx, &v));
}

static const weft_future_ops os_busy_ops = {.poll = os_busy_poll,
                                            .name = "os-busy"};

static void *oneshot_poll_busy_body(void *arg)
{
    (void)arg;
    struct os_case c = {0};
    ASSERT_OK(weft_oneshot_new(&c.tx, &c.rx, sizeof(uint64_t)));
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, os_receiver, &c));
    yield_until(&c.started);
    settle();
    struct os_poll_future *p =
        (struct os_poll_future *)weft_future_new(sizeof *p, &os_busy_ops);
    ASSERT(p != NULL);
    p->rx = c.rx;
    ASSERT_EQ(weft_await(&p->base, NULL), -EBUSY);
    uint64_t x = 9;
    ASSERT_OK(weft_oneshot_send(c.tx, &x));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(c.rc, 0);
    ASSERT_EQ(c.v, 9);
    weft_task_free(t);
    weft_oneshot_rx_free(c.rx);
    return NULL;
}

TEST(oneshot_poll_recv_busy)
{
    run(oneshot_poll_busy_body, NULL);
}

TEST(oneshot_between_threads)
{
    weft_oneshot_tx *tx;
    weft_oneshot_rx *rx;
    ASSERT_OK(weft_oneshot_new(&tx, &rx, sizeof(uint64_t)));
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, os_one_send_thread, tx), 0);
    uint64_t v = 0;
    ASSERT_OK(weft_oneshot_recv_blocking(rx, &v));
    ASSERT_EQ(v, 1);
    pthread_join(th, NULL);
    weft_oneshot_rx_free(rx);
}

/* ======================================================================== */
/* broadcast                                                                */
/* ======================================================================== */

static void *bcast_basic_body(void *arg)
{
    (void)arg;
    weft_bcast_tx *tx;
    weft_bcast_rx *a, *b;
    ASSERT_OK(weft_bcast_new(&tx, &a, sizeof(uint64_t), 4));
    ASSERT_OK(weft_bcast_subscribe(tx, &b));
    for (uint64_t i = 0; i < 3; i++)
        ASSERT_OK(weft_bcast_send(tx, &i));
    uint64_t v;
    for (uint64_t i = 0; i < 3; i++) {
        ASSERT_EQ(weft_bcast_recv(a, &v), 0);
        ASSERT_EQ(v, i);
        ASSERT_EQ(weft_bcast_recv(b, &v), 0);
        ASSERT_EQ(v, i);
    }
    ASSERT_EQ(weft_bcast_try_recv(a, &v), -EAGAIN);
    /* b falls behind by 6 of which the ring keeps 4: it missed 2. */
    for (uint64_t i = 3; i < 9; i++) {
        ASSERT_OK(weft_bcast_send(tx, &i));
        ASSERT_EQ(weft_bcast_recv(a, &v), 0);
        ASSERT_EQ(v, i);
    }
    ASSERT_EQ(weft_bcast_recv(b, &v), 2);
    ASSERT_EQ(v, 5);
    for (uint64_t i = 6; i < 9; i++) {
        ASSERT_EQ(weft_bcast_recv(b, &v), 0);
        ASSERT_EQ(v, i);
    }
    /* A late subscriber sees only what comes after. */
    weft_bcast_rx *c;
    ASSERT_OK(weft_bcast_subscribe(tx, &c));
    ASSERT_EQ(weft_bcast_try_recv(c, &v), -EAGAIN);
    uint64_t last = 100;
    ASSERT_OK(weft_bcast_send(tx, &last));
    weft_bcast_tx_free(tx);
    ASSERT_EQ(weft_bcast_recv(c, &v), 0);
    ASSERT_EQ(v, 100);
    ASSERT_EQ(weft_bcast_recv(c, &v), -EPIPE);
    ASSERT_EQ(weft_bcast_recv(a, &v), 0);
    ASSERT_EQ(weft_bcast_recv(a, &v), -EPIPE);
    weft_bcast_rx_free(a);
    weft_bcast_rx_free(b);
    weft_bcast_rx_free(c);
    return NULL;
}

TEST(bcast_every_receiver_sees_every_message)
{
    run(bcast_basic_body, NULL);
}

TEST(bcast_no_receivers_is_epipe)
{
    weft_bcast_tx *tx;
    weft_bcast_rx *rx;
    ASSERT_EQ(weft_bcast_new(&tx, &rx, 8, 0), -EINVAL);
    ASSERT_OK(weft_bcast_new(&tx, &rx, 8, 2));
    weft_bcast_rx_free(rx);
    uint64_t v = 1;
    ASSERT_EQ(weft_bcast_send(tx, &v), -EPIPE);
    weft_bcast_tx_free(tx);
}

/* P senders, R receivers (tasks and a thread): every receiver gets every
 * message, per sender in order, when the ring is large enough. */
struct bstress {
    weft_bcast_tx *tx;
    int senders, receivers;
    uint32_t per;
    atomic_long total;
};

struct brecv {
    struct bstress *s;
    weft_bcast_rx *rx;
    bool blocking;
};

static void *bcast_receiver(void *arg)
{
    struct brecv *r = arg;
    struct bstress *s = r->s;
    uint32_t *last = calloc((size_t)s->senders, sizeof *last);
    struct msg m;
    long n = 0;
    int rc;
    while ((rc = r->blocking ? weft_bcast_recv_blocking(r->rx, &m)
                             : weft_bcast_recv(r->rx, &m)) >= 0) {
        ASSERT_EQ(rc, 0); /* nothing missed */
        ASSERT_EQ(m.seq, last[m.producer]);
        last[m.producer]++;
        n++;
    }
    ASSERT_EQ(rc, -EPIPE);
    ASSERT_EQ(n, (long)s->senders * s->per);
    atomic_fetch_add(&s->total, n);
    free(last);
    weft_bcast_rx_free(r->rx);
    return NULL;
}

static void *bcast_receiver_thread(void *arg)
{
    return bcast_receiver(arg);
}

struct bsend {
    struct bstress *s;
    uint32_t id;
};

static void *bcast_sender(void *arg)
{
    struct bsend *b = arg;
    for (uint32_t i = 0; i < b->s->per; i++) {
        struct msg m = {b->id, i};
        ASSERT_OK(weft_bcast_send(b->s->tx, &m));
        ASSERT_OK(weft_yield());
    }
    weft_bcast_tx_free(b->s->tx);
    return NULL;
}

static void *bcast_stress_body(void *arg)
{
    struct bstress *s = arg;
    weft_bcast_rx *first;
    uint32_t cap = (uint32_t)s->senders * s->per; /* nobody can lag */
    ASSERT_OK(weft_bcast_new(&s->tx, &first, sizeof(struct msg), cap));
    struct brecv r[8];
    struct bsend b[8];
    weft_task *h[16];
    int nh = 0;
    pthread_t th;
    for (int i = 0; i < s->receivers; i++) {
        r[i].s = s;
        r[i].blocking = i == 0;
        if (i == 0)
            r[i].rx = first;
        else
            ASSERT_OK(weft_bcast_subscribe(s->tx, &r[i].rx));
    }
    for (int i = 1; i < s->senders; i++)
        weft_bcast_tx_clone(s->tx);
    ASSERT_EQ(pthread_create(&th, NULL, bcast_receiver_thread, &r[0]), 0);
    for (int i = 1; i < s->receivers; i++)
        ASSERT_OK(weft_spawn(NULL, &h[nh++], bcast_receiver, &r[i]));
    for (int i = 0; i < s->senders; i++) {
        b[i].s = s;
        b[i].id = (uint32_t)i;
        ASSERT_OK(weft_spawn(NULL, &h[nh++], bcast_sender, &b[i]));
    }
    for (int i = 0; i < nh; i++) {
        ASSERT_OK(weft_join(h[i], NULL));
        weft_task_free(h[i]);
    }
    pthread_join(th, NULL);
    ASSERT_EQ(atomic_load(&s->total), (long)s->receivers * s->senders * s->per);
    return NULL;
}

TEST(bcast_stress)
{
    struct bstress s = {.senders = 4, .receivers = 5, .per = scaled(5000)};
    run(bcast_stress_body, &s);
}

/* ======================================================================== */
/* watch                                                                    */
/* ======================================================================== */

struct wcase {
    weft_watch_tx *tx;
    weft_watch_rx *rx;
    atomic_int started;
    int rc;
    uint64_t v;
};

static void *watch_waiter(void *arg)
{
    struct wcase *c = arg;
    atomic_store(&c->started, 1);
    c->rc = weft_watch_recv(c->rx, &c->v);
    return NULL;
}

static void *watch_basic_body(void *arg)
{
    (void)arg;
    struct wcase c = {0};
    uint64_t init = 1, v = 0;
    ASSERT_OK(weft_watch_new(&c.tx, &c.rx, sizeof(uint64_t), &init));
    ASSERT_OK(weft_watch_get(c.rx, &v));
    ASSERT_EQ(v, 1);
    ASSERT_EQ(weft_watch_try_recv(c.rx, &v), -EAGAIN); /* initial: seen */
    /* Values in between are skipped: only the latest is seen. */
    for (uint64_t i = 2; i <= 5; i++)
        ASSERT_OK(weft_watch_send(c.tx, &i));
    ASSERT_OK(weft_watch_recv(c.rx, &v));
    ASSERT_EQ(v, 5);
    ASSERT_EQ(weft_watch_try_recv(c.rx, &v), -EAGAIN);
    /* A waiter is woken by a send. */
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, watch_waiter, &c));
    yield_until(&c.started);
    settle();
    ASSERT(!weft_task_done(t));
    uint64_t six = 6;
    ASSERT_OK(weft_watch_send(c.tx, &six));
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(c.rc, 0);
    ASSERT_EQ(c.v, 6);
    weft_task_free(t);
    /* A clone has seen what its origin had seen. */
    weft_watch_rx *r2;
    ASSERT_OK(weft_watch_rx_clone(c.rx, &r2));
    ASSERT_EQ(weft_watch_try_recv(r2, &v), -EAGAIN);
    /* The sender goes: waiters get -EPIPE. */
    c.started = 0;
    ASSERT_OK(weft_spawn(NULL, &t, watch_waiter, &c));
    yield_until(&c.started);
    settle();
    weft_watch_tx_free(c.tx);
    ASSERT_OK(weft_join(t, NULL));
    ASSERT_EQ(c.rc, -EPIPE);
    weft_task_free(t);
    weft_watch_rx_free(c.rx);
    weft_watch_rx_free(r2);
    return NULL;
}

TEST(watch_basics)
{
    run(watch_basic_body, NULL);
}

TEST(watch_send_without_receivers_is_epipe)
{
    weft_watch_tx *tx;
    weft_watch_rx *rx;
    uint64_t v = 0;
    ASSERT_OK(weft_watch_new(&tx, &rx, sizeof v, &v));
    weft_watch_rx_free(rx);
    v = 2;
    ASSERT_EQ(weft_watch_send(tx, &v), -EPIPE);
    weft_watch_tx_free(tx);
}

/* Writers count up; readers only ever see values increase, and see the
 * final one. */
struct wstress {
    weft_watch_tx *tx;
    uint64_t last;
};

static void *watch_reader(void *arg)
{
    weft_watch_rx *rx = arg;
    uint64_t prev = 0, v;
    int rc;
    while ((rc = weft_watch_recv(rx, &v)) == 0) {
        ASSERT_GT(v, prev);
        prev = v;
    }
    ASSERT_EQ(rc, -EPIPE);
    weft_watch_rx_free(rx);
    return (void *)(uintptr_t)prev;
}

static void *watch_reader_thread(void *arg)
{
    weft_watch_rx *rx = arg;
    uint64_t prev = 0, v;
    int rc;
    while ((rc = weft_watch_recv_blocking(rx, &v)) == 0) {
        ASSERT_GT(v, prev);
        prev = v;
    }
    ASSERT_EQ(rc, -EPIPE);
    weft_watch_rx_free(rx);
    return (void *)(uintptr_t)prev;
}

static void *watch_stress_body(void *arg)
{
    struct wstress *s = arg;
    weft_watch_rx *rx;
    uint64_t zero = 0;
    ASSERT_OK(weft_watch_new(&s->tx, &rx, sizeof zero, &zero));
    weft_task *h[4];
    for (int i = 0; i < 4; i++) {
        weft_watch_rx *r;
        ASSERT_OK(weft_watch_rx_clone(rx, &r));
        ASSERT_OK(weft_spawn(NULL, &h[i], watch_reader, r));
    }
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, watch_reader_thread, rx), 0);
    for (uint64_t i = 1; i <= s->last; i++) {
        ASSERT_OK(weft_watch_send(s->tx, &i));
        if (i % 7 == 0)
            ASSERT_OK(weft_yield());
    }
    weft_watch_tx_free(s->tx);
    for (int i = 0; i < 4; i++) {
        void *v;
        ASSERT_OK(weft_join(h[i], &v));
        ASSERT_EQ((uintptr_t)v, s->last);
        weft_task_free(h[i]);
    }
    void *v;
    pthread_join(th, &v);
    ASSERT_EQ((uintptr_t)v, s->last);
    return NULL;
}

TEST(watch_stress)
{
    struct wstress s = {.last = scaled(50000)};
    run(watch_stress_body, &s);
}

/* ======================================================================== */
/* deadline forms                                                           */
/* ======================================================================== */

static void *late_sender(void *arg)
{
    ASSERT_OK(weft_sleep(10));
    uint64_t v = 55;
    ASSERT_OK(weft_chan_send(arg, &v));
    return NULL;
}

static void *deadline_body(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_time_pause()); /* idle runtime: the clock jumps */
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1));
    uint64_t v = 1;
    int64_t t0 = weft_now();
    ASSERT_EQ(weft_chan_recv_dl(rx, &v, t0 + 100), -ETIMEDOUT);
    ASSERT_GE(weft_now(), t0 + 100);
    ASSERT_OK(weft_chan_send_dl(tx, &v, weft_now() + 100));
    uint64_t w = 2;
    ASSERT_EQ(weft_chan_send_dl(tx, &w, weft_now() + 100), -ETIMEDOUT);
    ASSERT_EQ(weft_chan_len(rx), 1); /* the timed-out send sent nothing */
    /* A deadline that has passed fails at once, even with a message. */
    ASSERT_EQ(weft_chan_recv_dl(rx, &v, weft_now() - 1), -ETIMEDOUT);
    ASSERT_OK(weft_chan_recv_dl(rx, &v, weft_now() + 100));
    ASSERT_EQ(v, 1);
    /* Met before the deadline. */
    weft_task *t;
    ASSERT_OK(weft_spawn(NULL, &t, late_sender, tx));
    ASSERT_OK(weft_chan_recv_dl(rx, &v, weft_now() + 1000));
    ASSERT_EQ(v, 55);
    ASSERT_OK(weft_join(t, NULL));
    weft_task_free(t);

    weft_oneshot_tx *otx;
    weft_oneshot_rx *orx;
    ASSERT_OK(weft_oneshot_new(&otx, &orx, sizeof(uint64_t)));
    ASSERT_EQ(weft_oneshot_recv_dl(orx, &v, weft_now() + 10), -ETIMEDOUT);
    ASSERT_OK(weft_oneshot_send(otx, &w));
    ASSERT_OK(weft_oneshot_recv_dl(orx, &v, weft_now() + 10));
    ASSERT_EQ(v, 2);
    weft_oneshot_rx_free(orx);

    weft_bcast_tx *btx;
    weft_bcast_rx *brx;
    ASSERT_OK(weft_bcast_new(&btx, &brx, sizeof(uint64_t), 2));
    ASSERT_EQ(weft_bcast_recv_dl(brx, &v, weft_now() + 10), -ETIMEDOUT);
    ASSERT_OK(weft_bcast_send(btx, &w));
    ASSERT_EQ(weft_bcast_recv_dl(brx, &v, weft_now() + 10), 0);
    weft_bcast_tx_free(btx);
    weft_bcast_rx_free(brx);

    weft_watch_tx *wtx;
    weft_watch_rx *wrx;
    ASSERT_OK(weft_watch_new(&wtx, &wrx, sizeof(uint64_t), &v));
    ASSERT_EQ(weft_watch_recv_dl(wrx, &v, weft_now() + 10), -ETIMEDOUT);
    weft_watch_tx_free(wtx);
    weft_watch_rx_free(wrx);

    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    ASSERT_OK(weft_time_resume());
    return NULL;
}

TEST(deadline_forms)
{
    run(deadline_body, NULL);
}

/* The plain calls inside a deadline scope (weft_scope_enter): a receive and
 * a send that must wait fail with -ETIMEDOUT when the scope's deadline
 * passes, and neither takes nor leaves a message behind. */
static void *scope_body(void *arg)
{
    (void)arg;
    ASSERT_OK(weft_time_pause());
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    ASSERT_OK(weft_chan_new(&tx, &rx, sizeof(uint64_t), 1));
    uint64_t v = 0, w = 2;
    int64_t t0 = weft_now();
    weft_scope s;
    weft_scope_enter(&s, t0 + 50);
    ASSERT_EQ(weft_chan_recv(rx, &v), -ETIMEDOUT);
    ASSERT_EQ(weft_now(), t0 + 50);
    weft_scope_exit(&s);
    v = 1;
    ASSERT_OK(weft_chan_send(tx, &v)); /* fills it */
    weft_scope_enter(&s, weft_now() + 50);
    ASSERT_EQ(weft_chan_send(tx, &w), -ETIMEDOUT);
    weft_scope_exit(&s);
    ASSERT_EQ(weft_chan_len(rx), 1);
    ASSERT_OK(weft_chan_recv(rx, &v));
    ASSERT_EQ(v, 1);
    ASSERT_EQ(weft_chan_try_recv(rx, &v), -EAGAIN);
    weft_chan_tx_free(tx);
    weft_chan_rx_free(rx);
    ASSERT_OK(weft_time_resume());
    return NULL;
}

TEST(plain_calls_in_deadline_scope)
{
    run(scope_body, NULL);
}

TEST_MAIN()
