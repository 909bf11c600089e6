/*
 * Futures: allocation, polling, the never-polled report, and future tasks.
 *
 * Every heap future is allocated with room for a task header in front of it
 * (the "prefix"), so that weft_spawn_future() turns it into a task in place,
 * with no second allocation:
 *
 *     [ struct future_task (task header) ][ user's future ... ]
 *                                           ^ weft_future *f
 *
 * The prefix is the 40-byte task header. A future whose size is a multiple
 * of 16 may need 16-byte alignment, so it gets 8 bytes of padding more (a
 * 48-byte prefix, FUT_PAD16) in a 16-aligned block; any other future is at
 * most 8-aligned, which the 40-byte prefix keeps.
 */
#include <stdio.h>
#include <string.h>

#include "rt/runtime.h"
#include "sched/sched.h"
#include "task/task.h"

struct future_task {
    struct weft_task task;
};

_Static_assert(sizeof(struct future_task) % 8 == 0, "prefix alignment");

/* A heap future's allocation size, in 8-byte units, lives in the upper bits
 * of its flags: no extra word per future. */
#define FUT_SIZE_SHIFT 8
#define FUT_PAD16 (1u << 7) /* the prefix has 8 bytes of padding */

static size_t alloc_size_of(const weft_future *f)
{
    return (size_t)(f->flags >> FUT_SIZE_SHIFT) * 8;
}

#define PREFIX sizeof(struct future_task)

static size_t prefix_size(const weft_future *f)
{
    return PREFIX + ((f->flags & FUT_PAD16) ? 8 : 0);
}

/* The start of the allocation (the task header is at its end). */
static char *block_of(weft_future *f)
{
    return (char *)f - prefix_size(f);
}

static struct future_task *prefix_of(weft_future *f)
{
    return (struct future_task *)((char *)f - PREFIX);
}

weft_future *weft_future_new_at(size_t size, const weft_future_ops *ops,
                                const weft_site *site)
{
    if (size < sizeof(weft_future))
        size = sizeof(weft_future);
    size = (size + 7) & ~(size_t)7;
    /* A size that is a multiple of 16 may hold a 16-aligned object. */
    size_t pad = (size % 16 == 0 && PREFIX % 16 != 0) ? 8 : 0;
    size_t total = PREFIX + pad + size;
    if (total >> (32 - FUT_SIZE_SHIFT + 3))
        return NULL; /* over 128 MiB: not a future */
    char *block = weft__alloc(total);
    if (!block)
        return NULL;
    weft_future *f = (weft_future *)(block + pad + PREFIX);
    memset(f, 0, size);
    weft_future_init_at(f, ops, site);
    f->flags = FUT_HEAP | (pad ? FUT_PAD16 : 0) |
               (uint32_t)(total / 8) << FUT_SIZE_SHIFT;
    return f;
}

void weft_future_init_at(weft_future *f, const weft_future_ops *ops,
                         const weft_site *site)
{
    f->ops = ops;
    f->site = site;
    f->value = NULL;
    f->err = 0;
    f->flags = 0;
}

/* Inside a task, the runtime's setting (weft_config.debug); elsewhere the
 * build type and WEFT_DEBUG. */
static bool diagnostics_on(void)
{
    struct weft_worker *w = weft__tls_worker;
    return w ? w->rt->debug : weft__debug_enabled();
}

static void report_never_polled(const weft_future *f)
{
    const char *name = f->ops && f->ops->name ? f->ops->name : "future";
    if (f->site)
        fprintf(stderr,
                "weft: %s future created at %s:%d (in %s) was freed without "
                "ever being polled: a missing weft_await?\n",
                name, f->site->file, f->site->line, f->site->func);
    else
        fprintf(stderr,
                "weft: %s future was freed without ever being polled: a "
                "missing weft_await?\n",
                name);
}

static void future_drop(weft_future *f)
{
    if (f->flags & FUT_DROPPED)
        return;
    f->flags |= FUT_DROPPED;
    if (f->ops->drop)
        f->ops->drop(f);
}

void weft_future_free(weft_future *f)
{
    if (!f)
        return;
    WEFT_CHECK(!(f->flags & FUT_SPAWNED), "freeing a spawned future");
    if (!(f->flags & FUT_POLLED) && diagnostics_on())
        report_never_polled(f);
    future_drop(f);
    if (f->flags & FUT_HEAP)
        weft__free(block_of(f), alloc_size_of(f));
}

weft_poll weft_future_poll(weft_future *f, weft_cx *cx)
{
    WEFT_CHECK(!(f->flags & FUT_READY), "future polled after it was ready");
    f->flags |= FUT_POLLED;
    weft_poll r = f->ops->poll(f, cx);
    if (r == WEFT_READY)
        f->flags |= FUT_READY;
    return r;
}

/* ---- simple futures ---- */

static weft_poll ready_poll(weft_future *f, weft_cx *cx)
{
    (void)f;
    if (!weft__coop_proceed(cx))
        return WEFT_PENDING;
    return WEFT_READY; /* value and err were stored at creation */
}

static const weft_future_ops ready_ops = {.poll = ready_poll, .name = "ready"};

weft_future *weft_ready_at(void *value, int err, const weft_site *site)
{
    weft_future *f = weft_future_new_at(sizeof *f, &ready_ops, site);
    if (f) {
        f->value = value;
        f->err = err;
    }
    return f;
}

struct yield_future {
    weft_future base;
    int yielded;
};

static weft_poll yield_poll(weft_future *f, weft_cx *cx)
{
    struct yield_future *y = (struct yield_future *)f;
    if (y->yielded)
        return weft_future_set(f, NULL, 0);
    y->yielded = 1;
    weft_waker_wake_by_ref(weft_cx_waker(cx));
    return WEFT_PENDING;
}

static const weft_future_ops yield_ops = {.poll = yield_poll, .name = "yield"};

weft_future *weft_yield_future_at(const weft_site *site)
{
    return weft_future_new_at(sizeof(struct yield_future), &yield_ops, site);
}

/* ---- future tasks ---- */

static weft_future *future_of(struct weft_task *t)
{
    return (weft_future *)((char *)t + PREFIX);
}

weft_poll weft__ftask_poll(struct weft_task *t, weft_cx *cx)
{
    weft_future *f = future_of(t);
    if (weft_future_poll(f, cx) == WEFT_PENDING)
        return WEFT_PENDING;
    t->value = f->value; /* the error stays in f->err (ftask_err_slot) */
    future_drop(f);      /* release resources now, memory with the task */
    return WEFT_READY;
}

static void ftask_abandon(struct weft_task *t)
{
    future_drop(future_of(t));
}

static void ftask_dealloc(struct weft_task *t)
{
    weft_future *f = future_of(t);
    weft__free(block_of(f), alloc_size_of(f));
}

static int *ftask_err_slot(struct weft_task *t)
{
    return &future_of(t)->err;
}

static const weft_site *ftask_site(const struct weft_task *t)
{
    return future_of((struct weft_task *)t)->site;
}

const struct weft_task_vtable weft__future_vtable = {
    .poll = weft__ftask_poll,
    .abandon = ftask_abandon,
    .dealloc = ftask_dealloc,
    .err_slot = ftask_err_slot,
    .site = ftask_site,
};

/* Turns heap future `f` into a task (not yet submitted). */
static struct weft_task *ftask_make(weft_future *f, bool handle)
{
    struct weft_task *t = &prefix_of(f)->task;
    weft__task_init(t, TASK_KIND_FUTURE, handle);
    f->flags |= FUT_SPAWNED;
    return t;
}

/* Undoes ftask_make for a spawn that failed before submission. */
static void ftask_unmake(weft_future *f)
{
    f->flags &= ~(uint32_t)FUT_SPAWNED;
    weft__task_fini(&prefix_of(f)->task);
}

static weft_runtime *spawn_target(weft_runtime *rt)
{
    return rt ? rt : weft_runtime_current();
}

int weft_spawn_future(weft_runtime *rt, weft_task **out, weft_future *f,
                      const weft_spawn_opts *opts)
{
    if (out)
        *out = NULL;
    if (!f)
        return -EINVAL;
    rt = spawn_target(rt);
    if (!rt || !(f->flags & FUT_HEAP) || (f->flags & FUT_SPAWNED)) {
        int rc = !rt ? -EPERM : -EINVAL;
        weft_future_free(f);
        return rc;
    }
    struct weft_task *t = ftask_make(f, out != NULL);
    if (opts && weft__task_set_name(t, opts->name) < 0) {
        ftask_unmake(f);
        weft_future_free(f);
        return -ENOMEM;
    }
    /* A spawned future that never runs (refused) is no forgotten await. */
    f->flags |= FUT_POLLED;
    return weft__task_submit_new(rt, t, out);
}
