/*
 * W2 yield (WORKLOADS.md): one task yields N times; nothing else is
 * runnable; the loop is timed.
 *
 *   KIND ct / mt*   the root task (a coroutine) calls weft_yield() N times.
 *                   weft_yield puts the task at the back of the run queue
 *                   and does NOT poll for I/O (weft.h); no system call.
 *   KIND *-future   a future task of our own: each poll but the last wakes
 *                   its own waker by reference (weft_waker_wake_by_ref on
 *                   weft_cx_waker) and returns WEFT_PENDING, so the executor
 *                   re-queues it at the back of the run queue; poll N+1 is
 *                   READY. This is weft_yield_future's mechanism without
 *                   allocating a new child future per yield (awaiting
 *                   weft_yield_future N times from a combinator would add one
 *                   weft_future_new/free pair per yield). The future reads
 *                   the clock at its first poll (before the first yield) and
 *                   when it becomes ready (after the last). The root
 *                   coroutine spawns it and joins it, parked meanwhile, so
 *                   nothing else is runnable.
 *
 * Output keys as the tokio anchor: n wall_ms ns_per_yield
 */
#include <stdint.h>

#include "common.h"

struct w2 {
    uint64_t n;
    bool future;
    uint64_t wall_ns;
};

/* ---- coroutine form ---- */

static void yield_loop(struct w2 *w)
{
    uint64_t n = w->n;
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        int rc = weft_yield();
        if (rc != 0)
            bench_fail(BENCH_EXIT_FAIL, "w2: weft_yield: %s",
                       weft_strerror(rc));
    }
    w->wall_ns = bench_now_ns() - t0;
}

/* ---- future form ---- */

struct w2_future {
    weft_future base;
    struct w2 *w;
    uint64_t left;
    uint64_t t0;
    bool started;
};

static weft_poll w2_future_poll(weft_future *f, weft_cx *cx)
{
    struct w2_future *y = (struct w2_future *)f;
    if (__builtin_expect(!y->started, 0)) {
        y->started = true;
        y->t0 = bench_now_ns();
    }
    if (__builtin_expect(y->left == 0, 0)) {
        y->w->wall_ns = bench_now_ns() - y->t0;
        return weft_future_set(f, NULL, 0);
    }
    y->left--;
    weft_waker_wake_by_ref(weft_cx_waker(cx));
    return WEFT_PENDING;
}

static const weft_future_ops w2_future_ops = {
    .poll = w2_future_poll,
    .drop = NULL,
    .name = "w2-yield",
};

static void yield_future(struct w2 *w)
{
    struct w2_future *f =
        (struct w2_future *)weft_future_new(sizeof *f, &w2_future_ops);
    if (!f)
        bench_fail(BENCH_EXIT_FAIL, "w2: weft_future_new: out of memory");
    f->w = w;
    f->left = w->n;
    weft_task *t;
    int rc = weft_spawn_future(NULL, &t, &f->base, NULL);
    if (rc < 0)
        bench_fail(BENCH_EXIT_FAIL, "w2: weft_spawn_future: %s",
                   weft_strerror(rc));
    rc = weft_join(t, NULL);
    if (rc != 0)
        bench_fail(BENCH_EXIT_FAIL, "w2: weft_join: %s", weft_strerror(rc));
    weft_task_free(t);
}

static void *w2_root(void *arg)
{
    struct w2 *w = arg;
    if (w->future)
        yield_future(w);
    else
        yield_loop(w);
    return NULL;
}

int bench_w2(int argc, char **argv)
{
    bench_kind k;
    bench_parse_kind(argv[2], &k);
    struct w2 w = {.n = bench_arg_u64(argc, argv, 3, 10000000),
                   .future = k.future};
    weft_runtime *rt = bench_runtime_new(&k);
    bench_block_on(rt, w2_root, &w);
    bench_result("impl=weft-%s wl=w2 n=%llu wall_ms=%.3f ns_per_yield=%.2f",
                 k.name, (unsigned long long)w.n, w.wall_ns / 1e6,
                 (double)w.wall_ns / (double)w.n);
    weft_runtime_free(rt);
    return 0;
}
