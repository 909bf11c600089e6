/*
 * W1 spawn (WORKLOADS.md): in the root task, spawn N tasks whose body just
 * returns i, keeping every join handle in an array allocated after t0; then
 * join them in spawn order (weft_join, then weft_task_free), summing the
 * results, and check sum == N(N-1)/2.
 *
 *   KIND ct / mt*          coroutine tasks: weft_spawn(fn) with fn(i) = i,
 *                          default spawn options (the runtime's default
 *                          stack size; stacks come from the pool at first
 *                          poll and go back when fn returns).
 *   KIND ct-future / mt*-future
 *                          stackless tasks: weft_ready(i), weft's future
 *                          that is ready at its first poll with value i,
 *                          spawned with weft_spawn_future (the future's
 *                          memory becomes the task: one allocation).
 *
 * The root task is a coroutine (weft_block_on) in both cases, and joins with
 * weft_join. Output keys as the tokio anchor:
 *   n wall_ms ns_per_task sum base_rss_kb peak_rss_kb
 */
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

struct w1 {
    uint64_t n;
    bool future;
    /* results */
    uint64_t sum;
    uint64_t wall_ns;
    long base_rss_kb;
    long peak_rss_kb;
};

/* ---- the task bodies ---- */

static void *w1_task(void *arg)
{
    return arg; /* i */
}

/* ---- the root ---- */

/* NULL: spawn on the calling task's runtime. Set for "-remote", where the
 * body runs on a plain thread outside the runtime (tokio's remote spawn):
 * spawns go through the injection queue, joins block the thread. */
static weft_runtime *spawn_rt;

static void spawn_coro(weft_task **hs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        int rc = weft_spawn(spawn_rt, &hs[i], w1_task, (void *)(uintptr_t)i);
        if (rc < 0)
            bench_fail(BENCH_EXIT_FAIL, "w1: weft_spawn #%llu: %s",
                       (unsigned long long)i, weft_strerror(rc));
    }
}

static void spawn_future(weft_task **hs, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        /* The task's body "returns i": a future ready at its first poll
         * with value i, weft's own ready future. */
        weft_future *f = weft_ready((void *)(uintptr_t)i, 0);
        if (!f)
            bench_fail(BENCH_EXIT_FAIL,
                       "w1: weft_ready #%llu: out of "
                       "memory",
                       (unsigned long long)i);
        int rc = weft_spawn_future(spawn_rt, &hs[i], f, NULL);
        if (rc < 0)
            bench_fail(BENCH_EXIT_FAIL, "w1: weft_spawn_future #%llu: %s",
                       (unsigned long long)i, weft_strerror(rc));
    }
}

static void *w1_root(void *arg)
{
    struct w1 *w = arg;
    uint64_t n = w->n;
    w->base_rss_kb = bench_cur_rss_kb();

    uint64_t t0 = bench_now_ns();
    weft_task **hs = malloc(n * sizeof *hs);
    if (!hs)
        bench_fail(BENCH_EXIT_FAIL, "w1: no memory for %llu handles",
                   (unsigned long long)n);
    if (w->future)
        spawn_future(hs, n);
    else
        spawn_coro(hs, n);
    uint64_t sum = 0;
    for (uint64_t i = 0; i < n; i++) {
        void *v = NULL;
        int rc = weft_join(hs[i], &v);
        if (rc != 0)
            bench_fail(BENCH_EXIT_FAIL, "w1: weft_join #%llu: %s",
                       (unsigned long long)i, weft_strerror(rc));
        sum += (uint64_t)(uintptr_t)v;
        weft_task_free(hs[i]);
    }
    uint64_t t1 = bench_now_ns();

    free(hs);
    w->sum = sum;
    w->wall_ns = t1 - t0;
    w->peak_rss_kb = bench_peak_rss_kb();
    return NULL;
}

int bench_w1(int argc, char **argv)
{
    bench_kind k;
    bench_parse_kind(argv[2], &k);
    struct w1 w = {.n = bench_arg_u64(argc, argv, 3, 1000000),
                   .future = k.future};
    weft_runtime *rt = bench_runtime_new(&k);
    if (k.remote) {
        spawn_rt = rt;
        w1_root(&w);
    } else {
        bench_block_on(rt, w1_root, &w);
    }
    uint64_t want = w.n * (w.n - 1) / 2;
    if (w.sum != want)
        bench_fail(BENCH_EXIT_FAIL, "w1: sum %llu, want %llu",
                   (unsigned long long)w.sum, (unsigned long long)want);
    bench_result("impl=weft-%s wl=w1 n=%llu wall_ms=%.3f ns_per_task=%.1f "
                 "sum=%llu base_rss_kb=%ld peak_rss_kb=%ld",
                 k.name, (unsigned long long)w.n, w.wall_ns / 1e6,
                 (double)w.wall_ns / (double)w.n, (unsigned long long)w.sum,
                 w.base_rss_kb, w.peak_rss_kb);
    weft_runtime_free(rt);
    return 0;
}
