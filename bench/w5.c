/*
 * W5 timers (WORKLOADS.md): in the root task, spawn N tasks, task i
 * sleeping d_i = splitmix64(42) % 1000 ms (drawn in spawn order) and then
 * returning d_i; keep the join handles (array allocated after t0); join
 * them in spawn order summing the results into dsum. Each sleep takes its
 * deadline when the task first runs, as in tokio and Go.
 *
 *   KIND ct / mt*          coroutine tasks: weft_spawn(fn) with
 *                          fn = { weft_sleep(d); return d; }, default
 *                          spawn options (the runtime's default stack).
 *   KIND ct-future / mt*-future
 *                          stackless tasks: a weft_future of our own that
 *                          embeds a weft_timer (weft_timer_init_after(d):
 *                          the deadline is taken at the first poll) and is
 *                          ready with d; weft_future_new + weft_spawn_future.
 *                          The analog of tokio's `async move { sleep(d).await;
 *                          d }`.
 *
 * Output keys as the tokio anchor:
 *   n wall_ms overhead_ms spawn_ms dsum base_rss_kb peak_rss_kb rss_per_task_b
 * with wall = t1 - t0 (first spawn to last join), overhead = wall - 1000 ms,
 * rss_per_task_b = (peak - base) * 1024 / N.
 */
#include <stdint.h>
#include <stdlib.h>

#include "common.h"

struct w5 {
    uint64_t n;
    bool future;
    /* results */
    uint64_t dsum;
    uint64_t wall_ns, spawn_ns;
    long base_rss_kb, peak_rss_kb;
};

/* splitmix64, WORKLOADS.md W5 */
static uint64_t w5_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* ---- the task bodies ---- */

static void *w5_task(void *arg)
{
    int rc = weft_sleep((int64_t)(uintptr_t)arg);
    if (rc != 0)
        bench_fail(BENCH_EXIT_FAIL, "w5: weft_sleep: %s", weft_strerror(rc));
    return arg; /* d */
}

struct w5_future {
    weft_future base;
    weft_timer timer;
    uint64_t d;
};

static weft_poll w5_future_poll(weft_future *f, weft_cx *cx)
{
    struct w5_future *w = (struct w5_future *)f;
    if (weft_timer_poll(&w->timer, cx) == WEFT_PENDING)
        return WEFT_PENDING;
    return weft_future_set(f, (void *)(uintptr_t)w->d, 0);
}

static void w5_future_drop(weft_future *f)
{
    weft_timer_destroy(&((struct w5_future *)f)->timer);
}

static const weft_future_ops w5_future_ops = {
    .poll = w5_future_poll,
    .drop = w5_future_drop,
    .name = "w5",
};

/* ---- the root ---- */

static void spawn_one(weft_task **h, uint64_t d, bool future, uint64_t i)
{
    int rc;
    if (future) {
        struct w5_future *f =
            (struct w5_future *)weft_future_new(sizeof *f, &w5_future_ops);
        if (!f)
            bench_fail(BENCH_EXIT_FAIL,
                       "w5: weft_future_new #%llu: out of "
                       "memory",
                       (unsigned long long)i);
        f->d = d;
        weft_timer_init_after(&f->timer, (int64_t)d);
        rc = weft_spawn_future(NULL, h, &f->base, NULL);
    } else {
        rc = weft_spawn(NULL, h, w5_task, (void *)(uintptr_t)d);
    }
    if (rc < 0)
        bench_fail(BENCH_EXIT_FAIL, "w5: spawn #%llu: %s",
                   (unsigned long long)i, weft_strerror(rc));
}

static void *w5_root(void *arg)
{
    struct w5 *w = arg;
    uint64_t n = w->n, state = 42;
    w->base_rss_kb = bench_cur_rss_kb();

    uint64_t t0 = bench_now_ns();
    weft_task **hs = malloc(n * sizeof *hs);
    if (!hs)
        bench_fail(BENCH_EXIT_FAIL, "w5: no memory for %llu handles",
                   (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++)
        spawn_one(&hs[i], w5_next(&state) % 1000, w->future, i);
    w->spawn_ns = bench_now_ns() - t0;
    uint64_t dsum = 0;
    for (uint64_t i = 0; i < n; i++) {
        void *v = NULL;
        int rc = weft_join(hs[i], &v);
        if (rc != 0)
            bench_fail(BENCH_EXIT_FAIL, "w5: weft_join #%llu: %s",
                       (unsigned long long)i, weft_strerror(rc));
        dsum += (uint64_t)(uintptr_t)v;
        weft_task_free(hs[i]);
    }
    uint64_t t1 = bench_now_ns();

    free(hs);
    w->dsum = dsum;
    w->wall_ns = t1 - t0;
    w->peak_rss_kb = bench_peak_rss_kb();
    return NULL;
}

int bench_w5_run(const char *kind, long n)
{
    bench_kind k;
    bench_parse_kind(kind, &k);
    if (n <= 0)
        bench_fail(BENCH_EXIT_UNAVAILABLE, "w5: N must be positive");
    struct w5 w = {.n = (uint64_t)n, .future = k.future};
    weft_runtime *rt = bench_runtime_new(&k);
    bench_block_on(rt, w5_root, &w);
    double wall_ms = w.wall_ns / 1e6;
    long grown =
        w.peak_rss_kb > w.base_rss_kb ? w.peak_rss_kb - w.base_rss_kb : 0;
    bench_result("impl=weft-%s wl=w5 n=%llu wall_ms=%.3f overhead_ms=%.3f "
                 "spawn_ms=%.3f dsum=%llu base_rss_kb=%ld peak_rss_kb=%ld "
                 "rss_per_task_b=%.1f",
                 k.name, (unsigned long long)w.n, wall_ms, wall_ms - 1000.0,
                 w.spawn_ns / 1e6, (unsigned long long)w.dsum, w.base_rss_kb,
                 w.peak_rss_kb, (double)grown * 1024.0 / (double)w.n);
    weft_runtime_free(rt);
    return 0;
}

int bench_w5(int argc, char **argv)
{
    return bench_w5_run(argv[2], (long)bench_arg_u64(argc, argv, 3, 1000000));
}
