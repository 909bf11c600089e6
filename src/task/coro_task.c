/*
 * Coroutine tasks: a task whose poll resumes a coroutine. Inside it,
 * weft_await() polls a future and suspends the coroutine while it is
 * pending; weft_yield() re-queues it.
 *
 * The stack is taken from the pool at the first poll, not at spawn, and goes
 * back when the function returns: a million spawned-but-not-yet-run tasks
 * cost a million small headers, not a million stacks, and tasks that run to
 * completion without suspending all reuse the same warm stack.
 */
#include <stdio.h>
#include <string.h>

#include "rt/runtime.h"
#include "sched/sched.h"
#include "task/coro_task.h"
#include "time/time.h"

#define FRAME_SIZE ((sizeof(struct coro_frame) + 63) & ~(size_t)63)

bool weft__task_is_coro(const struct weft_task *t)
{
    return weft__task_kind(t) == TASK_KIND_CORO;
}

static void coro_entry(void *arg)
{
    struct coro_frame *fr = arg;
    struct coro_task *ct = fr->task;
    ct->task.value = ct->fn(ct->arg);
    WEFT_CHECK(!fr->scope, "a task returned inside a deadline scope "
                           "(missing weft_scope_exit)");
    ct->err = 0;
    fr->finished = true;
    weft__coro_exit(&fr->coro);
}

/* Takes a stack and sets up the frame at its top. NULL if none. */
static struct coro_frame *frame_new(weft_runtime *rt, struct coro_task *ct)
{
    weft_stack *st = weft__stack_get(rt->stacks, (size_t)ct->stack_kib * 1024);
    if (!st)
        return NULL;
    struct coro_frame *fr =
        (struct coro_frame *)(st->lo + st->size - FRAME_SIZE);
    fr->view = *st;
    fr->view.size -= FRAME_SIZE;
    fr->stack = st;
    fr->task = ct;
    fr->scope = NULL;
    fr->finished = false;
    weft__coro_init(&fr->coro, &fr->view, coro_entry, fr);
    return fr;
}

struct coro_frame *weft__coro_task_start(struct coro_task *ct)
{
    struct coro_frame *fr = ct->frame =
        frame_new(weft__task_sched(&ct->task)->rt, ct);
    if (!fr) {
        /* fn never ran: report it through the join. */
        ct->task.value = NULL;
        ct->err = -ENOMEM;
    }
    return fr;
}

void weft__coro_task_finish(struct coro_task *ct)
{
    struct coro_frame *fr = ct->frame;
    weft__coro_release(&fr->coro);
    weft__stack_put(weft__task_sched(&ct->task)->rt->stacks, fr->stack);
    ct->frame = NULL;
}

/* The schedulers call weft__coro_task_poll directly; this is for any other
 * caller of the vtable. */
static weft_poll coro_poll(struct weft_task *t, weft_cx *cx)
{
    (void)cx;
    return weft__coro_task_poll(t, &weft__worker_current()->host);
}

static void coro_dealloc(struct weft_task *t)
{
    weft__free(t, sizeof(struct coro_task));
}

static int *coro_err_slot(struct weft_task *t)
{
    return &((struct coro_task *)t)->err;
}

static const weft_site *coro_site(const struct weft_task *t)
{
    return ((const struct coro_task *)t)->site;
}

const struct weft_task_vtable weft__coro_vtable = {
    .poll = coro_poll,
    .abandon = NULL, /* coroutines always unwind through their function */
    .dealloc = coro_dealloc,
    .err_slot = coro_err_slot,
    .site = coro_site,
};

int weft_spawn_at(weft_runtime *rt, weft_task **out, weft_task_fn fn, void *arg,
                  const weft_spawn_opts *opts, const weft_site *site)
{
    if (out)
        *out = NULL;
    if (!rt)
        rt = weft_runtime_current();
    if (!rt)
        return -EPERM;
    size_t stack = rt->stack_size;
    if (opts && opts->stack_size) {
        if (opts->stack_size < WEFT_MIN_STACK ||
            opts->stack_size > WEFT_MAX_STACK)
            return -EINVAL;
        stack = opts->stack_size;
    }
    struct coro_task *ct = weft__alloc(sizeof *ct);
    if (!ct)
        return -ENOMEM;
    weft__task_init(&ct->task, TASK_KIND_CORO, out != NULL);
    /* Whole KiB, rounded up; the pool rounds to pages. */
    ct->stack_kib = (uint16_t)((stack + 1023) / 1024);
    ct->fn = fn;
    ct->arg = arg;
    ct->frame = NULL;
    ct->site = site;
    ct->err = 0;
    if (opts && weft__task_set_name(&ct->task, opts->name) < 0) {
        coro_dealloc(&ct->task);
        return -ENOMEM;
    }
    return weft__task_submit_new(rt, &ct->task, out);
}

/* The coroutine task running on this thread, or NULL. */
static struct coro_task *current_coro(struct weft_worker *w)
{
    if (!w || !w->current || weft__task_kind(w->current) != TASK_KIND_CORO)
        return NULL;
    return (struct coro_task *)w->current;
}

static bool cancelled(const struct coro_task *ct)
{
    return atomic_load_explicit(&ct->task.state, memory_order_relaxed) &
           TASK_CANCELLED;
}

/* weft_await's body. `pending`: the caller polled `f` itself, with this
 * task's context, and it returned PENDING (the fast path of a sync
 * primitive that had to queue): suspend before polling again. */
static inline __attribute__((always_inline)) int
await_body(weft_future *f, void **value, bool pending)
{
    if (!f)
        return -ENOMEM; /* the constructor that made it failed */
    struct weft_worker *w = weft__worker_current();
    struct coro_task *ct = current_coro(w);
    if (!ct) {
        f->flags |= FUT_POLLED; /* awaited in the wrong place, not forgotten */
        weft_future_free(f);
        return -EPERM;
    }
    for (;;) {
        if (cancelled(ct)) {
            f->flags |= FUT_POLLED; /* it was awaited, not forgotten */
            weft_future_free(f);
            return -ECANCELED;
        }
        if (ct->frame->scope && weft__scope_expired(ct->frame->scope)) {
            f->flags |= FUT_POLLED;
            weft_future_free(f);
            return -ETIMEDOUT;
        }
        if (!pending && weft_future_poll(f, &w->cx) == WEFT_READY)
            break;
        pending = false;
        /* Inside a scope, be woken at its deadline too. */
        if (ct->frame->scope && weft__scope_arm(ct->frame->scope, &w->cx))
            continue;
        weft__coro_suspend_inline(&ct->frame->coro);
        w = weft__worker_current(); /* we may be on another thread now */
    }
    int err = f->err;
    if (value)
        *value = f->value;
    weft_future_free(f);
    return err;
}

int weft_await(weft_future *f, void **value)
{
    return await_body(f, value, false);
}

int weft__await_pending(weft_future *f, void **value)
{
    f->flags |= FUT_POLLED;
    return await_body(f, value, true);
}

int weft__await_pending_leaf(weft_future *f)
{
    struct coro_task *ct = current_coro(weft__worker_current());
    struct coro_frame *fr = ct ? ct->frame : NULL;
    /* A scope arms its timer before each suspension: the general loop. */
    if (weft_likely(fr && !fr->scope)) {
        while (!cancelled(ct)) {
            weft__coro_suspend_inline(&fr->coro);
            if (cancelled(ct))
                break;
            /* We may be on another worker now: its context. */
            if (f->ops->poll(f, &weft__worker_current()->cx) == WEFT_READY)
                return f->err;
        }
    }
    return weft__await_pending(f, NULL);
}

int weft_yield(void)
{
    struct weft_worker *w = weft__worker_current();
    if (!w || !w->current)
        return -EPERM;
    /* Only this thread writes the word while the task runs: load it once. */
    uintptr_t word = weft__task_word(w->current);
    if ((word & TASK_W_KIND) != TASK_KIND_CORO)
        return -EPERM;
    struct coro_task *ct = (struct coro_task *)w->current;
    if (cancelled(ct))
        return -ECANCELED;
    struct coro_frame *fr = ct->frame;
    if (fr->scope && weft__scope_expired(fr->scope))
        return -ETIMEDOUT;
    atomic_store_explicit(&ct->task.sched_word, word | TASK_W_YIELDED,
                          memory_order_relaxed);
    weft__coro_suspend_inline(&fr->coro);
    if (cancelled(ct))
        return -ECANCELED;
    return fr->scope && weft__scope_expired(fr->scope) ? -ETIMEDOUT : 0;
}

weft_scope **weft__coro_scope_slot(void)
{
    struct coro_task *ct = current_coro(weft__worker_current());
    return ct ? &ct->frame->scope : NULL;
}

/* ---- stack overflow report ---- */

/* Appends `s` to buf (signal-safe: no stdio). */
static size_t put_str(char *buf, size_t len, size_t at, const char *s)
{
    while (s && *s && at + 1 < len)
        buf[at++] = *s++;
    buf[at < len ? at : len - 1] = '\0';
    return at;
}

static size_t put_u64(char *buf, size_t len, size_t at, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    char out[24];
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
    return put_str(buf, len, at, out);
}

static size_t put_hex(char *buf, size_t len, size_t at, uintptr_t v)
{
    char out[2 * sizeof v + 1];
    int n = 0;
    for (int sh = (int)(8 * sizeof v) - 4; sh >= 0; sh -= 4)
        if ((v >> sh) || n || sh == 0)
            out[n++] = "0123456789abcdef"[(v >> sh) & 15];
    out[n] = '\0';
    return put_str(buf, len, at, out);
}

void weft__coro_describe(const weft_coro *c, char *buf, size_t len)
{
    const struct coro_frame *fr = container_of(c, struct coro_frame, coro);
    const struct weft_task *t = &fr->task->task;
    size_t at = put_str(buf, len, 0, "task ");
    /* In a signal handler: no lock is waited for, no id assigned. */
    uint64_t id = weft__task_id_peek(t);
    if (id)
        at = put_u64(buf, len, at, id);
    else
        at = put_str(buf, len, at, "at 0x"),
        at = put_hex(buf, len, at, (uintptr_t)t);
    at = put_str(buf, len, at, " (");
    const char *name = weft__task_name(t, true);
    const weft_site *site = weft__task_site(t);
    at = put_str(buf, len, at, name ? name : "unnamed");
    if (site) {
        at = put_str(buf, len, at, ", spawned at ");
        at = put_str(buf, len, at, site->file);
        at = put_str(buf, len, at, ":");
        at = put_u64(buf, len, at, (uint64_t)site->line);
    }
    put_str(buf, len, at, ")");
}
