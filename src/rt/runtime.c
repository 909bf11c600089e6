/*
 * The runtime object and its entry points.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "rt/runtime.h"
#include "sched/blocking.h"
#include "sched/driver.h"
#include "sched/mt.h"
#include "sched/sched.h"
#include "task/task.h"

void weft_config_init(weft_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->struct_size = sizeof *cfg;
    cfg->flavor = WEFT_CURRENT_THREAD;
    cfg->workers = 0;
    cfg->stack_size = 0;
    cfg->debug = -1;
}

static size_t env_size(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v)
        return 0;
    char *end;
    unsigned long long n = strtoull(v, &end, 10);
    if (*end == 'k' || *end == 'K')
        n *= 1024;
    else if (*end == 'm' || *end == 'M')
        n *= 1024 * 1024;
    return (size_t)n;
}

static size_t page_round(size_t n)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    return (n + page - 1) & ~(page - 1);
}

static int configure(weft_runtime *rt, const weft_config *cfg)
{
    if (cfg) {
        if (cfg->struct_size != sizeof *cfg)
            return -EINVAL;
        rt->cfg = *cfg;
    } else {
        weft_config_init(&rt->cfg);
    }
    if (rt->cfg.flavor != WEFT_CURRENT_THREAD &&
        rt->cfg.flavor != WEFT_MULTI_THREAD)
        return -EINVAL;
    if (rt->cfg.workers < 0 || rt->cfg.debug < -1 || rt->cfg.debug > 1 ||
        rt->cfg.max_blocking_threads < 0 || rt->cfg.blocking_keepalive_ms < 0)
        return -EINVAL;
    size_t stack = rt->cfg.stack_size;
    if (!stack)
        stack = env_size("WEFT_STACK_SIZE");
    if (!stack)
        stack = WEFT_DEFAULT_STACK;
    if (stack < WEFT_MIN_STACK || stack > WEFT_MAX_STACK)
        return -EINVAL;
    rt->stack_size = page_round(stack);
    rt->debug = rt->cfg.debug < 0 ? weft__debug_enabled() : rt->cfg.debug;
    return 0;
}

int weft_runtime_new(weft_runtime **out, const weft_config *cfg)
{
    *out = NULL;
    weft_runtime *rt = calloc(1, sizeof *rt);
    if (!rt)
        return -ENOMEM;
    int rc = configure(rt, cfg);
    if (rc < 0)
        goto fail;
    rc = weft__stack_pool_new(&rt->stacks);
    if (rc < 0)
        goto fail;
    rc = weft__driver_new(rt, &rt->driver);
    if (rc < 0)
        goto fail;
    rc = weft__blocking_pool_new(&rt->cfg, &rt->blocking);
    if (rc < 0)
        goto fail;
    if (rt->cfg.flavor == WEFT_MULTI_THREAD)
        rc = weft__multi_thread_new(rt, rt->cfg.workers, &rt->sched);
    else
        rc = weft__current_thread_new(rt, &rt->sched);
    if (rc < 0)
        goto fail;
    *out = rt;
    return 0;
fail:
    if (rt->blocking)
        weft__blocking_pool_free(rt->blocking);
    if (rt->driver)
        weft__driver_free(rt->driver);
    if (rt->stacks)
        weft__stack_pool_free(rt->stacks);
    free(rt);
    return rc;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int weft_runtime_shutdown(weft_runtime *rt, int64_t timeout_ms)
{
    if (weft__worker_current())
        return -EPERM;
    if (rt->shut_down)
        return 0;
    atomic_store(&rt->closed, true);
    rt->shutdown_tried = true;
    int64_t deadline = timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
    int rc = rt->sched->ops->shutdown(rt->sched, timeout_ms);
    if (rc < 0)
        return rc;
    /* What is left of the caller's time (none left: just look). */
    int64_t left = -1;
    if (deadline >= 0) {
        left = deadline - now_ms();
        if (left < 0)
            left = 0;
    }
    rc = weft__blocking_pool_shutdown(rt->blocking, left);
    if (rc < 0)
        return rc;
    rt->shut_down = true;
    return 0;
}

void weft_runtime_free(weft_runtime *rt)
{
    if (!rt)
        return;
    WEFT_CHECK(!weft__worker_current(),
               "weft_runtime_free called from inside a runtime");
    /* After a shutdown that timed out, look once more but do not wait. */
    if (!rt->shut_down &&
        weft_runtime_shutdown(rt, rt->shutdown_tried ? 0 : -1) < 0) {
        fprintf(stderr,
                "weft: runtime %p still has running tasks after "
                "shutdown; not freeing it\n",
                (void *)rt);
        return;
    }
    rt->sched->ops->free(rt->sched);
    weft__blocking_pool_free(rt->blocking);
    weft__driver_free(rt->driver);
    weft__stack_pool_free(rt->stacks);
    free(rt);
}

weft_runtime *weft_runtime_current(void)
{
    struct weft_worker *w = weft__worker_current();
    return w ? w->rt : NULL;
}

/* Runs the spawned root `t` to completion and collects its result. */
static int run_root(weft_runtime *rt, struct weft_task *t, void **result)
{
    int rc = rt->sched->ops->block_on(rt->sched, t);
    if (rc == 0)
        rc = weft_join(t, result);
    else
        weft_task_cancel(t); /* it runs, cancelled, at shutdown */
    weft_task_free(t);
    return rc;
}

static int block_on_check(weft_runtime *rt)
{
    if (weft__worker_current())
        return -EPERM;
    if (atomic_load(&rt->closed))
        return -ESHUTDOWN;
    return 0;
}

int weft_block_on(weft_runtime *rt, weft_task_fn fn, void *arg, void **result)
{
    int rc = block_on_check(rt);
    if (rc < 0)
        return rc;
    weft_task *t;
    weft_spawn_opts opts = {.name = "root"};
    rc = weft_spawn_at(rt, &t, fn, arg, &opts, NULL);
    if (rc < 0)
        return rc;
    return run_root(rt, t, result);
}

int weft_block_on_future(weft_runtime *rt, weft_future *f, void **result)
{
    int rc = block_on_check(rt);
    if (rc < 0) {
        weft_future_free(f);
        return rc;
    }
    weft_task *t;
    rc = weft_spawn_future(rt, &t, f, NULL);
    if (rc < 0)
        return rc;
    return run_root(rt, t, result);
}

int weft_runtime_metrics(weft_runtime *rt, weft_metrics *out)
{
    memset(out, 0, sizeof *out);
    out->struct_size = sizeof *out;
    rt->sched->ops->metrics(rt->sched, out);
    int threads, idle;
    size_t queued;
    weft__blocking_pool_stats(rt->blocking, &threads, &idle, &queued);
    out->blocking_threads = (uint64_t)threads;
    out->blocking_idle = (uint64_t)idle;
    out->blocking_queue_depth = queued;
    return 0;
}
