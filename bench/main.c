/*
 * weft-bench: the project's benchmark binary, driven by
 * ../shared/anchors/run.sh (WEFT_BENCH=...). Same arguments as the tokio
 * anchor binary, one "RESULT key=value ..." line per run:
 *
 *   weft-bench w1 KIND [N=1000000]       W1 spawn + join
 *   weft-bench w2 KIND [N=10000000]      W2 yield
 *   weft-bench w3 KIND [N=1000000]       W3 ping-pong
 *   weft-bench w4 KIND P [N=10000000]    W4 channel throughput
 *   weft-bench w5 KIND [N=1000000]       W5 timers
 *   weft-bench w6 KIND [N=100000]        W6 parked tasks
 *   weft-bench w9 KIND [N=10000000]      W9 raw switch, N round trips
 *   weft-bench echo KIND PORT            W7 echo server          (not yet)
 *   weft-bench http KIND PORT            W8 HTTP server          (not yet)
 *
 * KIND: ct | mt1 | mt2, optionally -future (stackless future tasks). W9 has
 * its own kinds (see w9.c). Exit status 2: usage error, unimplemented
 * workload, or a kind this build of weft does not have.
 *
 * To add a workload: write bench/wN.c with `int bench_wN(int, char **)`,
 * declare it in common.h and put it in the table below.
 */
#include <stdio.h>
#include <string.h>

#include "common.h"

static const struct {
    const char *name;
    bench_fn fn; /* NULL: not implemented yet */
    const char *what;
} workloads[] = {
    {"w1", bench_w1, "W1 spawn"},
    {"w2", bench_w2, "W2 yield"},
    {"w3", bench_w3, "W3 ping-pong"},
    {"w4", bench_w4, "W4 channel throughput"},
    {"w5", bench_w5, "W5 timers"},
    {"w6", bench_w6, "W6 parked tasks"},
    {"w9", bench_w9, "W9 raw context switch"},
    {"echo", NULL, "W7 TCP echo server"},
    {"http", NULL, "W8 HTTP server"},
};

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s <w1|w2|w3|w4|w5|w6|w9|echo|http> KIND [args]\n"
            "  KIND = ct | mt1 | mt2, optionally with -future "
            "(e.g. ct-future)\n"
            "  w9 KIND = ct (raw weft__ctx_switch) | coro "
            "(weft__coro_resume/suspend)\n"
            "  WEFT_BENCH_METRICS=1: each worker's counters on stderr\n"
            "see ../shared/anchors/WORKLOADS.md\n",
            argv0);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        usage(argv[0]);
        return BENCH_EXIT_UNAVAILABLE;
    }
    for (size_t i = 0; i < sizeof workloads / sizeof workloads[0]; i++) {
        if (strcmp(argv[1], workloads[i].name) != 0)
            continue;
        if (!workloads[i].fn)
            bench_fail(BENCH_EXIT_UNAVAILABLE, "%s (%s) is not implemented yet",
                       workloads[i].name, workloads[i].what);
        return workloads[i].fn(argc, argv);
    }
    fprintf(stderr, "weft-bench: unknown workload '%s'\n", argv[1]);
    usage(argv[0]);
    return BENCH_EXIT_UNAVAILABLE;
}
