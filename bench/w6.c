/*
 * W6 idle (parked) tasks (WORKLOADS.md): `before` = current RSS; for each of
 * N tasks create a oneshot channel (u64), keep its sender, spawn a task that
 * counts itself started and then awaits its receive, keep its handle; wait
 * until every task has started (looking every 1 ms), sleep 50 ms more so
 * that all are parked; `parked` = current RSS; report
 * bytes_per_task = (parked - before) * 1024 / N. Then send i on every
 * sender, join all, check the sum.
 *
 * Everything the workload allocates counts: the arrays of senders and
 * handles are allocated after `before`, and the oneshot channels, tasks,
 * stacks and futures are all in the delta.
 *
 *   KIND ct / mt*          coroutine tasks parked in weft_oneshot_recv (the
 *                          receive future lives on the coroutine's stack).
 *   KIND ct-future / mt*-future
 *                          stackless tasks: a future of our own holding only
 *                          the receiver, which it polls with
 *                          weft_oneshot_poll_recv (the channel keeps the
 *                          waker: no receive future, no weft_sync_op), as a
 *                          tokio async block holds its oneshot::Receiver.
 *
 * Output keys as the tokio anchor: n rss_before_kb rss_parked_kb
 * bytes_per_task sum
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

struct w6 {
    uint64_t n;
    bool future;
    long before_kb, parked_kb;
    uint64_t sum;
};

static atomic_ulong started;

static void fail_rc(const char *what, int rc)
{
    bench_fail(BENCH_EXIT_FAIL, "w6: %s: %s", what, weft_strerror(rc));
}

/* ---- the parked task, both forms ---- */

static void *parked_coro(void *arg)
{
    weft_oneshot_rx *rx = arg;
    uint64_t v = 0;
    atomic_fetch_add_explicit(&started, 1, memory_order_relaxed);
    int rc = weft_oneshot_recv(rx, &v);
    if (rc != 0)
        fail_rc("recv", rc);
    weft_oneshot_rx_free(rx);
    return (void *)(uintptr_t)v;
}

/* The state of the stackless form: the receiver, and whether it started.
 * The future's `value` is its own until it is READY, so it doubles as the
 * "started" mark: the whole state is 8 bytes after the 32-byte future head
 * (a tokio async block holds the same: the receiver and a state byte). */
struct parked_future {
    weft_future base;
    weft_oneshot_rx *rx;
};

static weft_poll parked_poll(weft_future *f, weft_cx *cx)
{
    struct parked_future *p = (struct parked_future *)f;
    if (!p->base.value) {
        atomic_fetch_add_explicit(&started, 1, memory_order_relaxed);
        p->base.value = p; /* started */
    }
    uint64_t v = 0;
    int rc = weft_oneshot_poll_recv(p->rx, cx, &v);
    if (rc == -EAGAIN)
        return WEFT_PENDING;
    if (rc != 0)
        fail_rc("recv", rc);
    weft_oneshot_rx_free(p->rx);
    p->rx = NULL;
    return weft_future_set(f, (void *)(uintptr_t)v, 0);
}

static void parked_drop(weft_future *f)
{
    struct parked_future *p = (struct parked_future *)f;
    weft_oneshot_rx_free(p->rx); /* drops a waiting registration too */
}

static const weft_future_ops parked_ops = {
    .poll = parked_poll,
    .drop = parked_drop,
    .name = "w6-parked",
};

/* ---- the root ---- */

static void wait_a_little(int64_t ms)
{
    int rc = weft_sleep(ms);
    if (rc != 0)
        fail_rc("sleep", rc);
}

static void *w6_root(void *arg)
{
    struct w6 *w = arg;
    uint64_t n = w->n;
    w->before_kb = bench_cur_rss_kb();
    weft_oneshot_tx **txs = malloc(n * sizeof *txs);
    weft_task **hs = malloc(n * sizeof *hs);
    if (!txs || !hs)
        bench_fail(BENCH_EXIT_FAIL, "w6: out of memory");
    for (uint64_t i = 0; i < n; i++) {
        weft_oneshot_rx *rx;
        int rc = weft_oneshot_new(&txs[i], &rx, sizeof(uint64_t));
        if (rc < 0)
            fail_rc("weft_oneshot_new", rc);
        if (w->future) {
            struct parked_future *p =
                (struct parked_future *)weft_future_new(sizeof *p, &parked_ops);
            if (!p)
                bench_fail(BENCH_EXIT_FAIL, "w6: out of memory");
            p->rx = rx;
            rc = weft_spawn_future(NULL, &hs[i], &p->base, NULL);
        } else {
            rc = weft_spawn(NULL, &hs[i], parked_coro, rx);
        }
        if (rc < 0)
            fail_rc("spawn", rc);
    }
    while (atomic_load_explicit(&started, memory_order_relaxed) < n)
        wait_a_little(1);
    wait_a_little(50);
    w->parked_kb = bench_cur_rss_kb();
    for (uint64_t i = 0; i < n; i++) {
        int rc = weft_oneshot_send(txs[i], &i);
        if (rc != 0)
            fail_rc("send", rc);
    }
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        void *v = NULL;
        int rc = weft_join(hs[i], &v);
        if (rc != 0)
            fail_rc("join", rc);
        sum += (uint64_t)(uintptr_t)v;
        weft_task_free(hs[i]);
    }
    w->sum = sum;
    free(txs);
    free(hs);
    return NULL;
}

int bench_w6(int argc, char **argv)
{
    bench_kind k;
    bench_parse_kind(argv[2], &k);
    struct w6 w = {.n = bench_arg_u64(argc, argv, 3, 100000),
                   .future = k.future};
    weft_runtime *rt = bench_runtime_new(&k);
    bench_block_on(rt, w6_root, &w);
    if (w.sum != w.n * (w.n - 1) / 2)
        bench_fail(BENCH_EXIT_FAIL, "w6: sum %llu, want %llu",
                   (unsigned long long)w.sum,
                   (unsigned long long)(w.n * (w.n - 1) / 2));
    long delta = w.parked_kb - w.before_kb;
    bench_result("impl=weft-%s wl=w6 n=%llu rss_before_kb=%ld "
                 "rss_parked_kb=%ld bytes_per_task=%.1f sum=%llu",
                 k.name, (unsigned long long)w.n, w.before_kb, w.parked_kb,
                 (double)(delta > 0 ? delta : 0) * 1024.0 / (double)w.n,
                 (unsigned long long)w.sum);
    weft_runtime_free(rt);
    return 0;
}
