/*
 * weft-bench: helpers shared by the workloads (timing, memory, arguments,
 * kinds, the RESULT line). The workloads themselves are defined in
 * ../shared/anchors/WORKLOADS.md; each lives in its own file (w1.c, w2.c,
 * w9.c, ...) and is listed in main.c.
 *
 * Rules every workload follows (WORKLOADS.md, "Rules common to all
 * workloads"):
 *   - the runtime is built before the clock starts and freed after it stops;
 *   - the body runs inside a root task (weft_block_on), so that the tasks it
 *     spawns are spawned from a worker;
 *   - the clock is CLOCK_MONOTONIC, started right before the first operation
 *     and stopped after the last result has been consumed;
 *   - peak RSS = getrusage(RUSAGE_SELF).ru_maxrss, current RSS = field 2 of
 *     /proc/self/statm x page size, both whole-process, nothing excluded;
 *   - one "RESULT key=value ..." line on stdout, with the keys of the tokio
 *     anchor (tokio/src/main.rs);
 *   - -O2 (bench/CMakeLists.txt).
 */
#ifndef WEFT_BENCH_COMMON_H
#define WEFT_BENCH_COMMON_H

#include <stdbool.h>
#include <stdint.h>

#include "weft.h"

/* Exit codes: 0 ok, 1 the workload failed (wrong result, error from weft),
 * 2 usage error or something not implemented / not available. */
enum { BENCH_EXIT_FAIL = 1, BENCH_EXIT_UNAVAILABLE = 2 };

/* An executor kind from the command line: "ct", "mt1", "mt2", optionally
 * with a variant suffix: "-future" = stackless future tasks instead of
 * coroutine tasks ("ct-future", "mt2-future"). */
typedef struct bench_kind {
    const char *name;   /* as given on the command line */
    weft_flavor flavor; /* WEFT_CURRENT_THREAD for ct, else WEFT_MULTI_THREAD */
    int workers;        /* 0 for ct, N for mtN */
    bool future;        /* "-future": task bodies are weft_futures */
    bool remote;        /* "-remote" (W1): spawn and join from a thread
                           outside the runtime instead of a root task */
} bench_kind;

/* Parses `s` into *k; on an unknown kind prints a message and exits 2. */
void bench_parse_kind(const char *s, bench_kind *k);

/* Builds the runtime for `k`. If the flavour is not available (yet) in this
 * build of weft, prints a clear message and exits 2; other errors exit 1. */
weft_runtime *bench_runtime_new(const bench_kind *k);

/* weft_block_on(rt, fn, arg) and exits 1 if it fails. */
void bench_block_on(weft_runtime *rt, weft_task_fn fn, void *arg);

/* Monotonic clock in nanoseconds. */
static inline uint64_t bench_now_ns(void);

/* Peak RSS of the process in KiB (getrusage ru_maxrss). */
long bench_peak_rss_kb(void);

/* Current RSS of the process in KiB (/proc/self/statm field 2 x page). */
long bench_cur_rss_kb(void);

/* argv[i] as an unsigned number, or `def` when absent; exits 2 when it is
 * not a positive number. */
uint64_t bench_arg_u64(int argc, char **argv, int i, uint64_t def);

/* Prints "weft-bench: <message>" on stderr and exits with `code`. */
_Noreturn void bench_fail(int code, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prints "RESULT <line>\n" on stdout and flushes it. */
void bench_result(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A workload: argv[1] is its name, argv[2] the kind, argv[3..] its
 * arguments. Returns the process exit code. */
typedef int (*bench_fn)(int argc, char **argv);

int bench_w1(int argc, char **argv);
int bench_w2(int argc, char **argv);
int bench_w5(int argc, char **argv);
int bench_w3(int argc, char **argv);
int bench_w4(int argc, char **argv);
int bench_w6(int argc, char **argv);
int bench_w9(int argc, char **argv);

/* ---- inline definitions ---- */

#include <time.h>

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
