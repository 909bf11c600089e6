/*
 * W9 raw context switch (WORKLOADS.md): a main context and one coroutine
 * switch back and forth N times; one round trip = two switches. As in the
 * Boost anchor (c/ctxswitch.cpp), N counts round trips, the coroutine loops
 * forever switching back to its caller, one warm-up round trip runs before
 * the clock starts, and each timed loop sits in its own noinline function.
 *
 * W9 involves no executor, so its kinds name the switch path, not a
 * scheduler:
 *   KIND ct (or raw)  weft__ctx_switch / weft__ctx_make directly (the
 *                     internal assembly switch, src/coro/switch-*.S), on a
 *                     64 KiB malloc'd stack like fcontext's. This is the
 *                     figure to compare with boost-fcontext.
 *   KIND coro         weft__coro_resume / weft__coro_suspend: the path a
 *                     coroutine task takes (host bookkeeping and sanitizer /
 *                     valgrind annotations around the same switch), on a
 *                     64 KiB stack from weft's stack pool (guarded mapping).
 * Kinds mt1/mt2/-future are refused (exit 2): the figure does not depend on
 * the executor, and stackless futures have no switch.
 *
 * Output keys as the Boost anchor: n wall_ms ns_per_switch ns_per_roundtrip
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "coro/coro.h"

#define W9_STACK (64 * 1024)

/* ---- raw switch ---- */

static void *raw_main_sp, *raw_co_sp;

static void raw_entry(void *arg)
{
    for (;;)
        arg = weft__ctx_switch(&raw_co_sp, raw_main_sp, arg);
}

__attribute__((noinline)) static uint64_t bench_raw(uint64_t n)
{
    char *stack = malloc(W9_STACK);
    if (!stack)
        bench_fail(BENCH_EXIT_FAIL, "w9: no memory for the stack");
    raw_co_sp = weft__ctx_make(stack + W9_STACK, W9_STACK, raw_entry);
    weft__ctx_switch(&raw_main_sp, raw_co_sp, NULL); /* warm: in and back */
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++)
        weft__ctx_switch(&raw_main_sp, raw_co_sp, NULL);
    return bench_now_ns() - t0;
    /* the stack is leaked on purpose: the coroutine never finishes */
}

/* ---- coroutine layer ---- */

static void coro_entry(void *arg)
{
    weft_coro *c = arg;
    for (;;)
        weft__coro_suspend(c);
}

__attribute__((noinline)) static uint64_t bench_coro(uint64_t n)
{
    static weft_coro_host host;
    static weft_coro co;
    weft_stack_pool *pool;
    if (weft__stack_pool_new(&pool) < 0)
        bench_fail(BENCH_EXIT_FAIL, "w9: weft__stack_pool_new failed");
    if (weft__coro_host_init(&host) < 0)
        bench_fail(BENCH_EXIT_FAIL, "w9: weft__coro_host_init failed");
    weft_stack *st = weft__stack_get(pool, W9_STACK);
    if (!st)
        bench_fail(BENCH_EXIT_FAIL, "w9: weft__stack_get failed");
    weft__coro_init(&co, st, coro_entry, &co);
    weft__coro_resume(&host, &co); /* warm: in and back */
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++)
        weft__coro_resume(&host, &co);
    return bench_now_ns() - t0;
    /* coroutine, stack and pool are leaked on purpose (never finishes) */
}

int bench_w9(int argc, char **argv)
{
    const char *kind = argv[2];
    uint64_t n = bench_arg_u64(argc, argv, 3, 10000000);
    uint64_t el;
    if (strcmp(kind, "ct") == 0 || strcmp(kind, "raw") == 0)
        el = bench_raw(n);
    else if (strcmp(kind, "coro") == 0)
        el = bench_coro(n);
    else
        bench_fail(BENCH_EXIT_UNAVAILABLE,
                   "w9 measures the context switch itself, which does not "
                   "depend on the executor (and futures have none): use KIND "
                   "ct (raw weft__ctx_switch) or coro "
                   "(weft__coro_resume/suspend), not '%s'",
                   kind);
    bench_result("impl=weft-%s wl=w9 n=%llu wall_ms=%.3f ns_per_switch=%.2f "
                 "ns_per_roundtrip=%.2f",
                 kind, (unsigned long long)n, el / 1e6,
                 (double)el / (2.0 * (double)n), (double)el / (double)n);
    return 0;
}
