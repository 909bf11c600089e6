/*
 * The common machinery of src/sync: the lock's slow path, the waiter
 * handshake's slow path, and the three ways of running an operation future.
 */
#include "sync/sync.h"

#include <sched.h>

#include "sched/park.h"

/* Spins before yielding the thread: the holder of a sync lock runs a few
 * dozen instructions, so a short spin nearly always wins; if it does not,
 * the holder was probably preempted and the thread should let it run. */
#define SPINS_BEFORE_YIELD 128

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

void weft__sync_lock_slow(struct sync_lock *l)
{
    unsigned spins = 0;
    for (;;) {
        while (atomic_load_explicit(&l->v, memory_order_relaxed)) {
            if (++spins < SPINS_BEFORE_YIELD) {
                cpu_relax();
            } else {
                sched_yield();
                spins = 0;
            }
        }
        if (!atomic_exchange_explicit(&l->v, 1, memory_order_acquire))
            return;
    }
}

uint32_t weft__waiter_settle(struct waiter *w)
{
    unsigned spins = 0;
    uint32_t s;
    while ((s = atomic_load_explicit(&w->state, memory_order_acquire)) ==
           W_CLAIMED) {
        if (++spins < SPINS_BEFORE_YIELD) {
            cpu_relax();
        } else {
            sched_yield();
            spins = 0;
        }
    }
    return s;
}

weft_future *weft__sync_op_new(size_t extra, const weft_future_ops *ops,
                               const weft_site *site, void *obj, void *ptr,
                               uint64_t arg)
{
    struct sync_op *op = (struct sync_op *)weft_future_new_at(
        sizeof(struct sync_op) + extra, ops, site);
    if (!op)
        return NULL;
    WEFT_DASSERT(!(ptr && arg));
    if (ptr)
        op->w.ptr = ptr;
    else
        op->w.arg = arg;
    op->obj = obj;
    return &op->base;
}

/* ---- where are we? ---- */

int weft__sync_context(void)
{
    struct weft_worker *w = weft__worker_current();
    if (!w)
        return 0;
    if (w->current && weft__task_is_coro(w->current))
        return 1;
    return -EPERM;
}

static inline bool task_cancelled(const struct weft_task *t)
{
    return atomic_load_explicit(&((struct weft_task *)t)->state,
                                memory_order_relaxed) &
           TASK_CANCELLED;
}

/* ---- coroutine form ---- */

int weft__sync_run(weft_future *f, void **value)
{
    struct weft_worker *w = weft__worker_current();
    if (weft_likely(w && w->current && weft__task_is_coro(w->current) &&
                    !task_cancelled(w->current))) {
        /* The first poll inline: the operation usually completes here. A
         * sync op that returned READY needs no drop. */
        f->flags |= FUT_POLLED;
        if (f->ops->poll(f, &w->cx) == WEFT_READY) {
            if (value)
                *value = f->value;
            return f->err;
        }
    }
    /* Pending (polling again costs no lock), or an error to report. */
    return weft_await(f, value);
}

/* ---- blocking form ---- */

int weft__sync_block(weft_future *f, void **value)
{
    struct weft_worker *w = weft__worker_current();
    if (w) {
        f->flags |= FUT_POLLED;
        weft_future_free(f);
        return -EPERM;
    }
    /* The waker is borrowed by the primitive only until the handshake ends
     * (sync.h), and this frame outlives it: a parker on the stack does. */
    struct weft_parker p;
    weft__parker_init(&p);
    struct weft_cx cx = {
        .waker = weft__parker_waker(&p), .task = NULL, .budget = INT_MAX};
    while (weft_future_poll(f, &cx) == WEFT_PENDING)
        weft__parker_park(&p);
    int err = f->err;
    if (value)
        *value = f->value;
    weft_future_free(f);
    return err;
}

/* ---- shielded form ---- */

int weft__sync_run_shielded(weft_future *f, void **value)
{
    int ctx = weft__sync_context();
    if (ctx == 0)
        return weft__sync_block(f, value);
    if (ctx < 0) {
        f->flags |= FUT_POLLED;
        weft_future_free(f);
        return -EPERM;
    }
    /* weft_await's loop without its cancellation check. The running
     * coroutine is the worker's host's; after each suspension we may be on
     * another worker, so everything is read again. */
    for (;;) {
        struct weft_worker *w = weft__worker_current();
        if (weft_future_poll(f, &w->cx) == WEFT_READY)
            break;
        weft__coro_suspend(w->host.running);
    }
    int err = f->err;
    if (value)
        *value = f->value;
    weft_future_free(f);
    return err;
}

_Static_assert(sizeof(weft_sync_op) >= sizeof(struct sync_op),
               "weft_sync_op too small for struct sync_op");
_Static_assert(_Alignof(weft_sync_op) >= _Alignof(struct sync_op),
               "weft_sync_op under-aligned");
