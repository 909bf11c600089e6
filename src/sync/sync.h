/*
 * What every channel and sync primitive is built from: a small spin lock,
 * intrusive waiter nodes that live in the waiting future, FIFO wait queues,
 * and the helpers that turn one future into the three ways of calling a
 * primitive (coroutine call, future, blocking call from a plain thread).
 *
 * The waiter protocol
 * -------------------
 * A primitive's state (its buffer, its counts, its wait queues) is guarded by
 * its sync_lock. A future that must wait puts the waiter node embedded in it
 * on a wait queue, with the waker of the task polling it. The waker is
 * *borrowed*, not cloned: a clone and its release cost two atomic operations
 * on the task's state word per wait, which is a third of a ping-pong round
 * trip. Borrowing is safe because of the handshake below, which keeps the
 * node (and so the future, and so the task or thread that owns it) alive
 * until the waker call has returned:
 *
 *   state    who sets it             meaning
 *   IDLE     the owner               not queued; free to (re)try the operation
 *   QUEUED   the owner, under lock   on a wait queue with a waker
 *   CLAIMED  a completer, under lock taken off the queue, `result` (and any
 *                                    payload) written; the completer will
 *                                    wake it and then set DONE
 *   DONE     the completer, release  finished with the node: it may go away
 *
 * The completer unlocks before waking (a wake may take a scheduler lock or
 * make a futex call, which should not lengthen the primitive's critical
 * section) and stores DONE only after the waker call returned. The owner
 * therefore never lets the node go (returns READY, or returns from drop)
 * while it is CLAIMED: it waits for DONE, which is a window of one wake call
 * on another thread and cannot happen at all on a single thread, since the
 * completer does not suspend in between.
 *
 * The rule this imposes on callers (sync.h says it publicly): a future that
 * returned PENDING refers to the task that polled it, so it must be polled
 * again or freed by that task (or thread) before the task ends. Every way of
 * running a future in weft (await, select, join_all, spawn) does that.
 */
#ifndef WEFT_SYNC_INTERNAL_H
#define WEFT_SYNC_INTERNAL_H

#include <limits.h>
#include <string.h>

#include "internal.h"
#include "sched/sched.h"
#include "task/task.h"

/* ---- the lock ------------------------------------------------------------ */

/* A test-and-test-and-set spin lock: one atomic exchange to take, a plain
 * release store to give back. Critical sections in src/sync are a few list
 * operations and a memcpy of one element, never a wake or an allocation on
 * the hot path, so spinning (then yielding the thread, in case the holder
 * was preempted) costs less than sleeping. An all-zero lock is unlocked. */
struct sync_lock {
    _Atomic uint32_t v;
};

void weft__sync_lock_slow(struct sync_lock *l);

static inline void sync_lock(struct sync_lock *l)
{
    if (weft_likely(!atomic_exchange_explicit(&l->v, 1, memory_order_acquire)))
        return;
    weft__sync_lock_slow(l);
}

static inline void sync_unlock(struct sync_lock *l)
{
    atomic_store_explicit(&l->v, 0, memory_order_release);
}

/* ---- waiters ------------------------------------------------------------- */

enum { W_IDLE = 0, W_QUEUED, W_CLAIMED, W_DONE };

struct waiter {
    struct waiter *next, *prev; /* queue links; `next` also chains claimed
                                   nodes until they are woken */
    weft_waker waker;           /* borrowed; see above */
    _Atomic uint32_t state;
    int32_t result;   /* written by the completer before DONE */
    union {           /* per primitive, one or the other (no operation needs
                         both; a word saved in every weft_sync_op): */
        uint64_t arg; /* permits, reader/writer, ... */
        void *ptr;    /* where a message goes */
    };
};

struct waitq {
    struct waiter *head, *tail;
};

static inline void waitq_push(struct waitq *q, struct waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static inline void waitq_remove(struct waitq *q, struct waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
    w->next = w->prev = NULL;
}

static inline struct waiter *waitq_pop(struct waitq *q)
{
    struct waiter *w = q->head;
    if (w)
        waitq_remove(q, w);
    return w;
}

/* Queues `w` (state IDLE) with the waker of `cx`. Under the lock. */
static inline void waiter_enqueue(struct waitq *q, struct waiter *w,
                                  weft_cx *cx)
{
    w->waker = cx->waker;
    atomic_store_explicit(&w->state, W_QUEUED, memory_order_relaxed);
    waitq_push(q, w);
}

/* A list of claimed waiters, woken after the lock is released. */
struct wake_list {
    struct waiter *head;
};

/* Under the lock: `w` (already unlinked) is finished with `result`; chains it
 * on `wl` to be woken by wake_list_run() once the lock is released. */
static inline void waiter_claim(struct waiter *w, int result,
                                struct wake_list *wl)
{
    w->result = result;
    atomic_store_explicit(&w->state, W_CLAIMED, memory_order_relaxed);
    w->next = wl->head;
    wl->head = w;
}

/* Pops the head of `q` and claims it. Returns it, or NULL if q is empty. */
static inline struct waiter *waitq_claim_one(struct waitq *q, int result,
                                             struct wake_list *wl)
{
    struct waiter *w = waitq_pop(q);
    if (w)
        waiter_claim(w, result, wl);
    return w;
}

/* Claims every waiter of `q`, in order. */
static inline void waitq_claim_all(struct waitq *q, int result,
                                   struct wake_list *wl)
{
    struct waiter *w;
    while ((w = waitq_pop(q)))
        waiter_claim(w, result, wl);
}

/* After unlocking: wakes every claimed waiter, then lets it go (DONE). */
static inline void wake_list_run(struct wake_list *wl)
{
    struct waiter *w = wl->head;
    while (w) {
        struct waiter *next = w->next;
        const weft_waker_vtable *vt = w->waker.vtable;
        if (vt)
            vt->wake_by_ref(w->waker.data);
        atomic_store_explicit(&w->state, W_DONE, memory_order_release);
        w = next;
    }
}

uint32_t weft__waiter_settle(struct waiter *w);

/* The owner's view of its node: IDLE, QUEUED or DONE (a CLAIMED node is
 * waited out). */
static inline uint32_t waiter_state(struct waiter *w)
{
    uint32_t s = atomic_load_explicit(&w->state, memory_order_acquire);
    if (weft_unlikely(s == W_CLAIMED))
        s = weft__waiter_settle(w);
    return s;
}

/* The owner takes the node back after DONE (or to reset). */
static inline void waiter_reset(struct waiter *w)
{
    atomic_store_explicit(&w->state, W_IDLE, memory_order_relaxed);
}

/* The owner polls a QUEUED node again: refreshes its waker if another one
 * polls it now. Returns true if the node is still queued (PENDING), false if
 * it was claimed meanwhile (then it is DONE). */
static inline bool waiter_repoll(struct sync_lock *l, struct waiter *w,
                                 weft_cx *cx)
{
    if (weft_likely(weft_waker_will_wake(&w->waker, &cx->waker)))
        return true;
    sync_lock(l);
    bool queued =
        atomic_load_explicit(&w->state, memory_order_relaxed) == W_QUEUED;
    if (queued)
        w->waker = cx->waker;
    sync_unlock(l);
    if (!queued)
        waiter_state(w);
    return queued;
}

/* The owner cancels: takes `w` off `q` if it is still queued. Returns the
 * state afterwards: IDLE (it was taken off, or never queued) or DONE (a
 * completer got there first; the caller undoes what it was given). */
static inline uint32_t waiter_cancel(struct sync_lock *l, struct waitq *q,
                                     struct waiter *w)
{
    uint32_t s = atomic_load_explicit(&w->state, memory_order_acquire);
    if (s == W_IDLE)
        return W_IDLE;
    if (s == W_QUEUED) {
        sync_lock(l);
        if (atomic_load_explicit(&w->state, memory_order_relaxed) == W_QUEUED) {
            waitq_remove(q, w);
            waiter_reset(w);
            sync_unlock(l);
            return W_IDLE;
        }
        sync_unlock(l);
    }
    return waiter_state(w);
}

/* ---- cooperative budget -------------------------------------------------- */

/* A leaf operation that could complete at once asks first: with the budget
 * spent, the task is rescheduled (woken and PENDING) instead, so that a task
 * that always finds its channel ready still lets the others run. */
static inline bool budget_spent(weft_cx *cx)
{
    if (weft_likely(cx->budget > 0))
        return false;
    weft_waker_wake_by_ref(&cx->waker);
    return true;
}

static inline void budget_use(weft_cx *cx)
{
    cx->budget--;
}

/* ---- operation futures --------------------------------------------------- */

/* The state of one operation on one primitive: the future every public
 * constructor returns (heap) or initialises (weft_sync_op storage, a
 * coroutine's stack). */
struct sync_op {
    weft_future base;
    struct waiter w; /* w.ptr: the message buffer (or another pointer the
                        operation needs), or w.arg: a per-operation number */
    void *obj;       /* the primitive */
};

/* Initialises `op` in caller storage (no allocation). */
static inline weft_future *sync_op_init(struct sync_op *op,
                                        const weft_future_ops *ops,
                                        const weft_site *site, void *obj,
                                        void *ptr, uint64_t arg)
{
    /* weft_future_init_at(), inline: this runs once per operation. */
    op->base.ops = ops;
    op->base.site = site;
    op->base.value = NULL;
    op->base.err = 0;
    op->base.flags = 0;
    atomic_init(&op->w.state, W_IDLE);
    op->w.waker.vtable = NULL;
    WEFT_DASSERT(!(ptr && arg));
    if (ptr)
        op->w.ptr = ptr;
    else
        op->w.arg = arg;
    op->obj = obj;
    return &op->base;
}

/* A heap operation future with `extra` more bytes after the op (for a copy
 * of the message). NULL on exhaustion. */
weft_future *weft__sync_op_new(size_t extra, const weft_future_ops *ops,
                               const weft_site *site, void *obj, void *ptr,
                               uint64_t arg);

/* The fast path of a coroutine-form call: `w`, the calling thread's worker,
 * if the caller is a coroutine task that has not been cancelled and has budget
 * left, so that an operation that completes at once may skip building a future;
 * NULL otherwise (then the call goes through weft__sync_run, which reports
 * -EPERM or -ECANCELED, or reschedules the task when the budget is spent). */
static inline struct weft_worker *sync_fast_test(struct weft_worker *w)
{
    /* host.running is the coroutine this worker has resumed, if any: set
     * exactly while a coroutine task runs (cheaper than asking the task). */
    if (weft_likely(
            w && w->host.running && w->cx.budget > 0 &&
            !(atomic_load_explicit(&w->current->state, memory_order_relaxed) &
              TASK_CANCELLED)))
        return w;
    return NULL;
}

/* sync_fast_test of the worker read through weft__worker_current(). */
static inline struct weft_worker *sync_fast_worker(void)
{
    return sync_fast_test(weft__worker_current());
}

/* The fast path enqueued `op` with this task's waker (as its first poll
 * would have): await it, suspending first. */
static inline int sync_await_queued(struct sync_op *op)
{
    return weft__await_pending_leaf(&op->base);
}

/* Runs `f` (caller storage, already initialised) to the end from the
 * calling coroutine: the common body of every coroutine-form call. Polls it
 * once inline (most operations complete there, without weft_await's
 * bookkeeping), then awaits it. Returns f's error, -ECANCELED, or -EPERM
 * outside a coroutine task; stores f's value in *value if not NULL. */
int weft__sync_run(weft_future *f, void **value);

/* The same with a deadline (weft_await_deadline): -ETIMEDOUT when it
 * passes. */
int weft__sync_run_dl(weft_future *f, void **value, int64_t deadline);

/* Runs `f` on a plain thread, parking it while `f` is pending. -EPERM from
 * inside a task (it would block a worker). */
int weft__sync_block(weft_future *f, void **value);

/* Awaits `f` from the calling coroutine even if the task is cancelled: for
 * cleanup that must wait (freeing a group joins its children). Falls back
 * to weft__sync_block on a plain thread. */
int weft__sync_run_shielded(weft_future *f, void **value);

/* Is the caller a coroutine task (1), a plain thread outside any task (0),
 * or something else that may not block (-EPERM)? */
int weft__sync_context(void);

#endif
