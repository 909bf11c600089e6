/*
 * W4 channel throughput (WORKLOADS.md): one bounded channel of capacity 1024
 * carrying u64, N messages in total from P producers (per = N/P each, values
 * 0..per-1, waiting when full) to one consumer that receives until the
 * channel is closed (every producer has freed its sender), counting and
 * summing. t0 before spawning (the consumer first, then the producers); t1
 * when the consumer has returned its count.
 *
 *   KIND ct / mt*          coroutine tasks: weft_chan_send / weft_chan_recv.
 *   KIND ct-future / mt*-future
 *                          stackless tasks driving channel futures kept in a
 *                          weft_sync_op (weft_chan_send_init /
 *                          weft_chan_recv_init + weft_future_poll): one
 *                          future per message, no allocation.
 *
 * Output keys as the tokio anchor: p n msgs_per_s ns_per_msg wall_ms
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

#define W4_CAP 1024

struct w4 {
    uint64_t n, per;
    unsigned p;
    bool future;
    weft_chan_tx *tx;
    weft_chan_rx *rx;
    uint64_t count, sum;
    uint64_t wall_ns;
};

static void fail_rc(const char *what, int rc)
{
    bench_fail(BENCH_EXIT_FAIL, "w4: %s: %s", what, weft_strerror(rc));
}

/* ---- coroutine form ---- */

static void *consumer(void *arg)
{
    struct w4 *w = arg;
    uint64_t v, count = 0, sum = 0;
    int rc;
    while ((rc = weft_chan_recv(w->rx, &v)) == 0) {
        count++;
        sum += v;
    }
    if (rc != -EPIPE)
        fail_rc("recv", rc);
    w->count = count;
    w->sum = sum;
    return NULL;
}

static void *producer(void *arg)
{
    struct w4 *w = arg;
    for (uint64_t i = 0; i < w->per; i++) {
        int rc = weft_chan_send(w->tx, &i);
        if (rc != 0)
            fail_rc("send", rc);
    }
    weft_chan_tx_free(w->tx);
    return NULL;
}

/* ---- future form ---- */

struct w4_future {
    weft_future base;
    struct w4 *w;
    bool consumer;
    bool active;
    uint64_t i, v, count, sum;
    weft_sync_op op;
};

static weft_poll w4_poll(weft_future *f, weft_cx *cx)
{
    struct w4_future *p = (struct w4_future *)f;
    struct w4 *w = p->w;
    for (;;) {
        if (!p->active) {
            if (p->consumer) {
                weft_chan_recv_init(&p->op, w->rx, &p->v);
            } else {
                if (p->i == w->per) {
                    weft_chan_tx_free(w->tx);
                    return weft_future_set(f, NULL, 0);
                }
                weft_chan_send_init(&p->op, w->tx, &p->i);
            }
            p->active = true;
        }
        if (weft_future_poll(&p->op.base, cx) == WEFT_PENDING)
            return WEFT_PENDING;
        int rc = p->op.base.err; /* finished: the op needs no free */
        p->active = false;
        if (p->consumer) {
            if (rc == -EPIPE) {
                w->count = p->count;
                w->sum = p->sum;
                return weft_future_set(f, NULL, 0);
            }
            if (rc != 0)
                fail_rc("recv", rc);
            p->count++;
            p->sum += p->v;
        } else {
            if (rc != 0)
                fail_rc("send", rc);
            p->i++;
        }
    }
}

static void w4_drop(weft_future *f)
{
    struct w4_future *p = (struct w4_future *)f;
    if (p->active)
        weft_future_free(&p->op.base);
}

static const weft_future_ops w4_ops = {
    .poll = w4_poll,
    .drop = w4_drop,
    .name = "w4",
};

static weft_task *spawn_w4(struct w4 *w, bool is_consumer)
{
    weft_task *t = NULL;
    int rc;
    if (w->future) {
        struct w4_future *p =
            (struct w4_future *)weft_future_new(sizeof *p, &w4_ops);
        if (!p)
            bench_fail(BENCH_EXIT_FAIL, "w4: out of memory");
        p->w = w;
        p->consumer = is_consumer;
        rc = weft_spawn_future(NULL, is_consumer ? &t : NULL, &p->base, NULL);
    } else {
        rc = weft_spawn(NULL, is_consumer ? &t : NULL,
                        is_consumer ? consumer : producer, w);
    }
    if (rc < 0)
        fail_rc("spawn", rc);
    return t;
}

/* ---- the root ---- */

static void *w4_root(void *arg)
{
    struct w4 *w = arg;
    int rc = weft_chan_new(&w->tx, &w->rx, sizeof(uint64_t), W4_CAP);
    if (rc < 0)
        fail_rc("weft_chan_new", rc);
    uint64_t t0 = bench_now_ns();
    weft_task *c = spawn_w4(w, true);
    /* One sender handle per producer; each frees its own when done. The
     * handle is a count, so every producer uses the same pointer. */
    for (unsigned i = 0; i < w->p; i++) {
        weft_chan_tx_clone(w->tx);
        spawn_w4(w, false);
    }
    weft_chan_tx_free(w->tx); /* the root's own */
    if ((rc = weft_join(c, NULL)) != 0)
        fail_rc("join", rc);
    w->wall_ns = bench_now_ns() - t0;
    weft_task_free(c);
    weft_chan_rx_free(w->rx);
    return NULL;
}

int bench_w4(int argc, char **argv)
{
    bench_kind k;
    bench_parse_kind(argv[2], &k);
    struct w4 w = {.p = (unsigned)bench_arg_u64(argc, argv, 3, 1),
                   .n = bench_arg_u64(argc, argv, 4, 10000000),
                   .future = k.future};
    w.per = w.n / w.p;
    w.n = w.per * w.p;
    weft_runtime *rt = bench_runtime_new(&k);
    bench_block_on(rt, w4_root, &w);
    uint64_t want = w.p * (w.per * (w.per - 1) / 2);
    if (w.count != w.n || w.sum != want)
        bench_fail(BENCH_EXIT_FAIL, "w4: count %llu sum %llu, want %llu %llu",
                   (unsigned long long)w.count, (unsigned long long)w.sum,
                   (unsigned long long)w.n, (unsigned long long)want);
    double secs = (double)w.wall_ns / 1e9;
    bench_result("impl=weft-%s wl=w4 p=%u n=%llu msgs_per_s=%.0f "
                 "ns_per_msg=%.2f wall_ms=%.3f",
                 k.name, w.p, (unsigned long long)w.n, (double)w.n / secs,
                 (double)w.wall_ns / (double)w.n, w.wall_ns / 1e6);
    weft_runtime_free(rt);
    return 0;
}
