/*
 * weft-bench helpers: see common.h.
 */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

_Noreturn void bench_fail(int code, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("weft-bench: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

void bench_result(const char *fmt, ...)
{
    va_list ap;
    fputs("RESULT ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
}

void bench_parse_kind(const char *s, bench_kind *k)
{
    memset(k, 0, sizeof *k);
    k->name = s;
    size_t base = strlen(s);
    const char *dash = strchr(s, '-');
    if (dash) {
        base = (size_t)(dash - s);
        if (strcmp(dash, "-future") == 0)
            k->future = true;
        else if (strcmp(dash, "-remote") == 0)
            k->remote = true;
        else
            bench_fail(BENCH_EXIT_UNAVAILABLE,
                       "unknown kind variant '%s' in '%s' (known: -future, "
                       "-remote)",
                       dash, s);
    }
    if (base == 2 && strncmp(s, "ct", 2) == 0) {
        k->flavor = WEFT_CURRENT_THREAD;
        k->workers = 0;
    } else if (base >= 3 && base <= 5 && strncmp(s, "mt", 2) == 0 &&
               atoi(s + 2) > 0) {
        /* mt1, mt2, ... mt8 ...: the work-stealing runtime, N workers */
        k->flavor = WEFT_MULTI_THREAD;
        k->workers = atoi(s + 2);
    } else {
        bench_fail(BENCH_EXIT_UNAVAILABLE,
                   "unknown kind '%s' (want ct|mtN, optionally with "
                   "-future or -remote)",
                   s);
    }
    if (k->remote && k->flavor != WEFT_MULTI_THREAD)
        bench_fail(BENCH_EXIT_UNAVAILABLE,
                   "kind %s: -remote needs a multi-thread kind (a "
                   "current-thread runtime runs nothing outside block_on)",
                   s);
}

weft_runtime *bench_runtime_new(const bench_kind *k)
{
    weft_config cfg;
    weft_config_init(&cfg);
    cfg.flavor = k->flavor;
    cfg.workers = k->workers;
    weft_runtime *rt = NULL;
    int rc = weft_runtime_new(&rt, &cfg);
    if (rc == -ENOTSUP || rc == -EOPNOTSUPP)
        bench_fail(BENCH_EXIT_UNAVAILABLE,
                   "kind %s: this build of weft has no %s runtime yet "
                   "(weft_runtime_new: %s)",
                   k->name,
                   k->flavor == WEFT_MULTI_THREAD ? "multi-thread"
                                                  : "current-thread",
                   weft_strerror(rc));
    if (rc < 0)
        bench_fail(BENCH_EXIT_FAIL, "kind %s: weft_runtime_new: %s", k->name,
                   weft_strerror(rc));
    return rt;
}

void bench_block_on(weft_runtime *rt, weft_task_fn fn, void *arg)
{
    int rc = weft_block_on(rt, fn, arg, NULL);
    if (rc < 0)
        bench_fail(BENCH_EXIT_FAIL, "weft_block_on: %s", weft_strerror(rc));
    /* WEFT_BENCH_METRICS=1: the scheduler's counters on stderr, to see where
     * the tasks ran (stdout keeps only RESULT lines). */
    const char *e = getenv("WEFT_BENCH_METRICS");
    if (e && *e == '1') {
        weft_metrics m;
        weft_runtime_metrics(rt, &m);
        for (int i = 0; i < m.workers && i < WEFT_METRICS_MAX_WORKERS; i++)
            fprintf(stderr,
                    "worker %d: polls=%llu steals=%llu parks=%llu "
                    "overflows=%llu busy_ms=%.1f\n",
                    i, (unsigned long long)m.worker[i].polls,
                    (unsigned long long)m.worker[i].steals,
                    (unsigned long long)m.worker[i].parks,
                    (unsigned long long)m.worker[i].overflows,
                    (double)m.worker[i].busy_ns / 1e6);
    }
}

long bench_peak_rss_kb(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return ru.ru_maxrss;
}

long bench_cur_rss_kb(void)
{
    /* read(2) into a stack buffer: no stdio buffer is allocated, so reading
     * the figure does not change it. */
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = '\0';
    unsigned long size, resident;
    if (sscanf(buf, "%lu %lu", &size, &resident) != 2)
        return -1;
    long page = sysconf(_SC_PAGESIZE);
    return (long)(resident * (unsigned long)page / 1024);
}

uint64_t bench_arg_u64(int argc, char **argv, int i, uint64_t def)
{
    if (i >= argc)
        return def;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(argv[i], &end, 10);
    if (errno || end == argv[i] || *end || v == 0 || argv[i][0] == '-')
        bench_fail(BENCH_EXIT_UNAVAILABLE,
                   "argument %d '%s' is not a positive number", i, argv[i]);
    return (uint64_t)v;
}
