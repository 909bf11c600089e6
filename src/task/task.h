/*
 * Tasks: the state word, references, wakers, join and cancel.
 */
#ifndef WEFT_TASK_H
#define WEFT_TASK_H

#include "internal.h"
#include "coro/coro.h"

/*
 * The task state word
 * -------------------
 * One atomic 64-bit word holds the task's state bits and its reference count
 * (tokio's runtime/task/state.rs has the same shape):
 *
 *   bit 0  RUNNING    a worker owns the task: it is being polled, or it
 *                     yielded and sits in a run queue still owned (see below)
 *   bit 1  COMPLETE   it finished; the result is stored; never polled again
 *   bit 2  NOTIFIED   it must be polled (again): it sits in a run queue, or,
 *                     while RUNNING, it will be queued when the poll ends
 *   bit 3  CANCELLED  cancellation was requested; sticky
 *   bit 4  JOIN_INTEREST  a join handle exists
 *   bit 5  JOIN_WAITERS some joiner has queued itself on `joiners` (a
 *                     list under a striped lock, task.c); the completing
 *                     side takes the lock and wakes them all
 *   bits 6..63        reference count (REF_ONE = 1 << 6)
 *
 * References are held by: the join handle (1, while JOIN_INTEREST), the
 * scheduler while the task is not COMPLETE (1: its entry in the owned list),
 * each run-queue entry (1: a NOTIFIED task, or a RUNNING one being polled),
 * and each waker clone (1 each). The last reference frees the task.
 *
 * Transitions, each one function in task.c returning what happened:
 *
 *   spawn                 -> NOTIFIED | JOIN_INTEREST?, refs = owned + queue
 *                            (+ handle)
 *   to_running            NOTIFIED, !RUNNING -> RUNNING; the queue's
 *                            reference becomes the poll's
 *   to_idle (poll pending) RUNNING -> !RUNNING; if NOTIFIED was set during
 *                            the poll the poll's reference goes back to a
 *                            queue entry, else it is dropped
 *   yield                 no change: the task stays RUNNING and goes to the
 *                            back of a run queue; the next pop skips
 *                            to_running (t->yielded says so). A yield costs
 *                            no atomic operation. A coroutine's weft_yield,
 *                            and any waker of a task woken on the very
 *                            thread that is polling it, take this path.
 *   wake                  idle -> NOTIFIED (+1 ref, submit to scheduler);
 *                            RUNNING -> RUNNING|NOTIFIED; NOTIFIED or
 *                            COMPLETE -> unchanged
 *   cancel                sets CANCELLED, then as wake
 *   complete              RUNNING -> COMPLETE; wakes the joiners if
 *                            JOIN_WAITERS; drops the owned and poll
 *                            references
 *   handle free           clears JOIN_INTEREST, drops the handle reference
 */
enum {
    TASK_RUNNING = 1u << 0,
    TASK_COMPLETE = 1u << 1,
    TASK_NOTIFIED = 1u << 2,
    TASK_CANCELLED = 1u << 3,
    TASK_JOIN_INTEREST = 1u << 4,
    TASK_JOIN_WAITERS = 1u << 5,
};
#define TASK_REF_SHIFT 6
#define TASK_REF_ONE ((uint64_t)1 << TASK_REF_SHIFT)
#define TASK_STATE_MASK (TASK_REF_ONE - 1)

struct weft_task;
struct join_waiter;

/* What differs between a coroutine task and a future task. */
struct weft_task_vtable {
    /* Polls the task once. On READY the result is in t->value / t->err. */
    weft_poll (*poll)(struct weft_task *t, weft_cx *cx);
    /* The task was cancelled before it could finish and will not be polled
     * again (future tasks: drop the future). NULL for coroutine tasks,
     * which always unwind through their own function. */
    void (*abandon)(struct weft_task *t);
    /* Frees the task's memory (the last reference is gone). */
    void (*dealloc)(struct weft_task *t);
};

/* 96 bytes: a million spawned tasks are a million of these (plus, for a
 * coroutine task, three words), so every field earns its place. */
struct weft_task {
    _Atomic uint64_t state;
    union {
        struct weft_task *next; /* run-queue link, while queued */
        void *value;            /* result, once COMPLETE: a completed task
                                   is never in a queue */
    };
    struct weft_sched *sched; /* never changes */
    const struct weft_task_vtable *vt;
    struct weft_task *owned_prev, *owned_next; /* the scheduler's list */
    struct join_waiter *joiners;               /* see JOIN_WAITERS */
    int err;
    uint8_t yielded;    /* re-queued by weft_yield, still RUNNING */
    uint8_t owned;      /* linked in the owned list */
    uint16_t stack_kib; /* coroutine tasks: stack size in KiB */
    uint64_t id;
    /* The spawn site, or - low bit set - a struct task_named holding the
     * site and the name: most tasks have no name and pay nothing for it. */
    uintptr_t info;
    struct weft_task *awaiting; /* the task this one is joining, or NULL */
};

struct task_named {
    const weft_site *site;
    size_t size; /* of this allocation */
    char name[];
};

static inline const weft_site *weft__task_site(const struct weft_task *t)
{
    if (t->info & 1)
        return ((const struct task_named *)(t->info - 1))->site;
    return (const weft_site *)t->info;
}

static inline const char *weft__task_name(const struct weft_task *t)
{
    if (t->info & 1)
        return ((const struct task_named *)(t->info - 1))->name;
    return NULL;
}

/* The poll context handed to futures. One per worker, refilled per poll. */
struct weft_cx {
    weft_waker waker;
    struct weft_task *task;
    int budget;
};

/* The cooperative budget (weft_cx_proceed), inline for weft's own leaf
 * futures. */
static inline bool weft__coop_proceed(weft_cx *cx)
{
    if (weft_likely(cx->budget > 0)) {
        cx->budget--;
        return true;
    }
    weft_waker_wake_by_ref(&cx->waker);
    return false;
}

/* ---- state transitions (task.c) ---- */

enum task_run { RUN_OK, RUN_CANCELLED, RUN_GONE };
/* Pop side: claim a NOTIFIED task for polling. RUN_GONE: it completed while
 * queued; the queue's reference has been dropped, do nothing. */
enum task_run weft__task_to_running(struct weft_task *t);

/* After a PENDING poll. Returns true if the task was notified meanwhile and
 * must be queued again (the poll's reference goes with it). */
bool weft__task_to_idle(struct weft_task *t);

/* After a READY poll, or when a cancelled task is abandoned: stores the
 * result, wakes the joiner, unlinks and drops the owned and poll references. */
void weft__task_complete(struct weft_task *t, void *value, int err);

void weft__task_ref(struct weft_task *t);
void weft__task_unref(struct weft_task *t);
/* Drops `n` references at once. */
void weft__task_unref_n(struct weft_task *t, uint64_t n);

/* Wake `t` from any thread (by reference: no reference is consumed). */
void weft__task_wake(struct weft_task *t);

/* A waker for `t` that the caller borrows (no reference taken). */
static inline weft_waker weft__task_waker(struct weft_task *t)
{
    extern const weft_waker_vtable weft__task_waker_vtable;
    weft_waker w = {&weft__task_waker_vtable, t};
    return w;
}

/* Initialises the common part of a new task and gives it an id. */
void weft__task_init(struct weft_task *t, const struct weft_task_vtable *vt,
                     const weft_site *site, bool handle);

/* Sets the name (copied). Returns 0 or -ENOMEM. */
int weft__task_set_name(struct weft_task *t, const char *name);

/* Releases what weft__task_init and set_name took (name). */
void weft__task_fini(struct weft_task *t);

/* Submits a task that was just spawned to `rt`'s scheduler and hands out the
 * handle. On failure the task is freed and *out is NULL. */
int weft__task_submit_new(weft_runtime *rt, struct weft_task *t,
                          weft_task **out);

/* Cancels (as weft_task_cancel) every task; used by shutdown. */
void weft__task_cancel(struct weft_task *t);

/* ---- coroutine tasks (coro_task.c) ---- */

/* Returns true if `t` is a coroutine task. */
bool weft__task_is_coro(const struct weft_task *t);

/* weft_await for a future the calling coroutine has just polled itself, to
 * PENDING, with its worker's context: suspends before polling it again
 * (the first poll would only find it still pending). */
int weft__await_pending(weft_future *f, void **value);

/* ---- futures (future.c) ---- */

/* weft_future.flags */
enum {
    FUT_HEAP = 1u << 0,    /* allocated by weft_future_new: free it */
    FUT_POLLED = 1u << 1,  /* polled at least once (or awaited) */
    FUT_READY = 1u << 2,   /* returned READY: must not be polled again */
    FUT_DROPPED = 1u << 3, /* drop has run */
    FUT_SPAWNED = 1u << 4, /* owned by a task */
};

#endif
