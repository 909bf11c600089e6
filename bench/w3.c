/*
 * W3 ping-pong (WORKLOADS.md): two bounded channels of capacity 1 carrying
 * u64, `ab` and `ba`. Task B (spawned first) loops { v = recv(ab) (stop when
 * closed); send(ba, v) }; task A times N round trips { send(ab, i);
 * v = recv(ba); check v == i } and then closes ab (frees its sender). The
 * root task spawns both and joins them.
 *
 *   KIND ct / mt*          coroutine tasks calling weft_chan_send and
 *                          weft_chan_recv (their futures live on the
 *                          coroutine's stack: no allocation per message).
 *   KIND ct-future / mt*-future
 *                          stackless tasks: each is a state machine of our
 *                          own that keeps one weft_sync_op and drives the
 *                          channel futures in it (weft_chan_send_init,
 *                          weft_chan_recv_init, weft_future_poll).
 *
 * Output keys as the tokio anchor: rt wall_ms ns_per_rt
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

struct w3 {
    uint64_t n;
    bool future;
    weft_chan_tx *ab_tx, *ba_tx;
    weft_chan_rx *ab_rx, *ba_rx;
    uint64_t wall_ns;
};

static void fail_rc(const char *what, int rc)
{
    bench_fail(BENCH_EXIT_FAIL, "w3: %s: %s", what, weft_strerror(rc));
}

/* ---- coroutine form ---- */

static void *ponger(void *arg)
{
    struct w3 *w = arg;
    uint64_t v;
    int rc;
    while ((rc = weft_chan_recv(w->ab_rx, &v)) == 0)
        if ((rc = weft_chan_send(w->ba_tx, &v)) != 0)
            fail_rc("ponger send", rc);
    if (rc != -EPIPE)
        fail_rc("ponger recv", rc);
    weft_chan_tx_free(w->ba_tx);
    return NULL;
}

static void *pinger(void *arg)
{
    struct w3 *w = arg;
    uint64_t n = w->n, v;
    int rc;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        if ((rc = weft_chan_send(w->ab_tx, &i)) != 0)
            fail_rc("pinger send", rc);
        if ((rc = weft_chan_recv(w->ba_rx, &v)) != 0)
            fail_rc("pinger recv", rc);
        if (v != i)
            bench_fail(BENCH_EXIT_FAIL, "w3: got %llu, want %llu",
                       (unsigned long long)v, (unsigned long long)i);
    }
    w->wall_ns = bench_now_ns() - t0;
    weft_chan_tx_free(w->ab_tx);
    return NULL;
}

/* ---- future form ---- */

/* One stackless task: alternately a receive and a send, each a channel
 * future in `op`. The pinger sends first and counts; the ponger receives
 * first and stops at -EPIPE. */
struct pp_future {
    weft_future base;
    struct w3 *w;
    bool pinger;
    bool sending; /* the operation in op is a send */
    bool active;  /* op holds an initialised future */
    uint64_t i, v;
    uint64_t t0;
    weft_sync_op op;
};

static weft_future *pp_start(struct pp_future *p)
{
    struct w3 *w = p->w;
    p->active = true;
    if (p->sending)
        return weft_chan_send_init(&p->op, p->pinger ? w->ab_tx : w->ba_tx,
                                   p->pinger ? &p->i : &p->v);
    return weft_chan_recv_init(&p->op, p->pinger ? w->ba_rx : w->ab_rx, &p->v);
}

static weft_poll pp_poll(weft_future *f, weft_cx *cx)
{
    struct pp_future *p = (struct pp_future *)f;
    struct w3 *w = p->w;
    if (p->pinger && p->t0 == 0)
        p->t0 = bench_now_ns();
    for (;;) {
        if (p->pinger && !p->active && p->sending && p->i == w->n) {
            w->wall_ns = bench_now_ns() - p->t0;
            weft_chan_tx_free(w->ab_tx);
            return weft_future_set(f, NULL, 0);
        }
        weft_future *op = p->active ? &p->op.base : pp_start(p);
        if (weft_future_poll(op, cx) == WEFT_PENDING)
            return WEFT_PENDING;
        int rc = op->err; /* finished: the op needs no free */
        p->active = false;
        if (rc == -EPIPE && !p->pinger && !p->sending) {
            weft_chan_tx_free(w->ba_tx);
            return weft_future_set(f, NULL, 0);
        }
        if (rc != 0)
            fail_rc(p->sending ? "send" : "recv", rc);
        if (p->pinger && !p->sending) {
            if (p->v != p->i)
                bench_fail(BENCH_EXIT_FAIL, "w3: got %llu, want %llu",
                           (unsigned long long)p->v, (unsigned long long)p->i);
            p->i++;
        }
        p->sending = !p->sending;
    }
}

static void pp_drop(weft_future *f)
{
    struct pp_future *p = (struct pp_future *)f;
    if (p->active)
        weft_future_free(&p->op.base);
}

static const weft_future_ops pp_ops = {
    .poll = pp_poll,
    .drop = pp_drop,
    .name = "w3-pingpong",
};

static weft_task *spawn_pp(struct w3 *w, bool pinger)
{
    struct pp_future *p =
        (struct pp_future *)weft_future_new(sizeof *p, &pp_ops);
    if (!p)
        bench_fail(BENCH_EXIT_FAIL, "w3: out of memory");
    p->w = w;
    p->pinger = pinger;
    p->sending = pinger;
    weft_task *t;
    int rc = weft_spawn_future(NULL, &t, &p->base, NULL);
    if (rc < 0)
        fail_rc("weft_spawn_future", rc);
    return t;
}

/* ---- the root ---- */

static void *w3_root(void *arg)
{
    struct w3 *w = arg;
    int rc;
    if ((rc = weft_chan_new(&w->ab_tx, &w->ab_rx, sizeof(uint64_t), 1)) < 0 ||
        (rc = weft_chan_new(&w->ba_tx, &w->ba_rx, sizeof(uint64_t), 1)) < 0)
        fail_rc("weft_chan_new", rc);
    weft_task *b = NULL, *a = NULL;
    if (w->future) {
        b = spawn_pp(w, false);
        a = spawn_pp(w, true);
    } else {
        if ((rc = weft_spawn(NULL, &b, ponger, w)) < 0 ||
            (rc = weft_spawn(NULL, &a, pinger, w)) < 0)
            fail_rc("weft_spawn", rc);
    }
    if ((rc = weft_join(b, NULL)) != 0 || (rc = weft_join(a, NULL)) != 0)
        fail_rc("weft_join", rc);
    weft_task_free(a);
    weft_task_free(b);
    weft_chan_rx_free(w->ab_rx);
    weft_chan_rx_free(w->ba_rx);
    return NULL;
}

int bench_w3(int argc, char **argv)
{
    bench_kind k;
    bench_parse_kind(argv[2], &k);
    struct w3 w = {.n = bench_arg_u64(argc, argv, 3, 1000000),
                   .future = k.future};
    weft_runtime *rt = bench_runtime_new(&k);
    bench_block_on(rt, w3_root, &w);
    bench_result("impl=weft-%s wl=w3 rt=%llu wall_ms=%.3f ns_per_rt=%.1f",
                 k.name, (unsigned long long)w.n, w.wall_ns / 1e6,
                 (double)w.wall_ns / (double)w.n);
    weft_runtime_free(rt);
    return 0;
}
