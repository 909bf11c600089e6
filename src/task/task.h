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
 *   bit 5  JOIN_WAITERS some joiner has queued itself in the table of
 *                     joiners (under a striped lock, task.c); the completing
 *                     side takes the lock and wakes them all
 *   bit 6  HAS_EXTRA  (not a state) the task has a side-table record
 *   bits 8..63        reference count (REF_ONE = 1 << 8)
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
 *                            to_running (TASK_W_YIELDED says so). A yield costs
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
 *
 * Resident tasks (every task of a current-thread runtime but blocking
 * jobs): one thread polls them all, so after its first poll such a task
 * stays RUNNING until it completes (no to_idle; the poll's reference stays
 * with it). While it waits it is "parked": RUNNING, not being polled, and
 * its yielded bit clear. On the runtime's thread a wake of a parked task
 * sets the yielded bit and queues it, with no atomic operation, and a wake
 * of a queued one does nothing. From another thread a wake sets NOTIFIED
 * and queues the task with a reference even though it is RUNNING (the
 * scheduler's wake_running); the owner takes that entry with
 * weft__task_remote_woken, unless a poll that starts first took NOTIFIED
 * (weft__task_take_notified).
 */
enum {
    TASK_RUNNING = 1u << 0,
    TASK_COMPLETE = 1u << 1,
    TASK_NOTIFIED = 1u << 2,
    TASK_CANCELLED = 1u << 3,
    TASK_JOIN_INTEREST = 1u << 4,
    TASK_JOIN_WAITERS = 1u << 5,
    /* Not part of the life cycle: the task has a record in the side table
     * of rarely used fields (its name, its id once asked for); see
     * task_extra in task.c. Set before the task is published (a name) or
     * with one fetch_or (an id). */
    TASK_HAS_EXTRA = 1u << 6,
};
#define TASK_REF_SHIFT 8
#define TASK_REF_ONE ((uint64_t)1 << TASK_REF_SHIFT)
#define TASK_STATE_MASK (TASK_REF_ONE - 1)

struct weft_task;

/* What differs between a coroutine task, a future task and a blocking job.
 * A task names its vtable by a 2-bit kind in its header (TASK_KIND_*), an
 * index into weft__task_vtables. */
struct weft_task_vtable {
    /* Polls the task once. On READY the result is stored (t->value and
     * the kind's error slot, weft__task_err_slot). */
    weft_poll (*poll)(struct weft_task *t, weft_cx *cx);
    /* The task was cancelled before it could finish and will not be polled
     * again (future tasks: drop the future). NULL for coroutine tasks,
     * which always unwind through their own function. */
    void (*abandon)(struct weft_task *t);
    /* Frees the task's memory (the last reference is gone). */
    void (*dealloc)(struct weft_task *t);
    /* Where the task's error code lives (the result's second half). */
    int *(*err_slot)(struct weft_task *t);
    /* The spawn site, or NULL. */
    const weft_site *(*site)(const struct weft_task *t);
};

enum {
    TASK_KIND_CORO = 0,
    TASK_KIND_FUTURE = 1,
    TASK_KIND_BLOCKING = 2,
};
extern const struct weft_task_vtable *const weft__task_vtables[3];

/* The sched word's low bits. A scheduler is allocated aligned to
 * WEFT_SCHED_ALIGN (weft__sched_alloc), which leaves them free. */
enum {
    TASK_W_KIND = 3u,           /* TASK_KIND_*: never changes */
    TASK_W_YIELDED = 1u << 2,   /* re-queued by a yield, still RUNNING */
    TASK_W_OWNED_SHIFT = 3,     /* which owned list holds the task: */
    TASK_W_OWNED = 0xffu << 3,  /* 0 none, else the list's number + 1 */
    TASK_W_RESIDENT = 1u << 11, /* resident (see the state word): set at
                                   submission, read by any thread without
                                   touching the scheduler */
    TASK_W_BITS = 0xfffu,
};
#define WEFT_SCHED_ALIGN 4096

/*
 * 40 bytes: a million spawned tasks are a million of these (plus, for a
 * coroutine task, 40 more bytes; for a future task, the future), so every
 * field earns its place. What only some tasks need lives elsewhere:
 *
 *   - the error code of the result: in the coroutine task, in the future's
 *     own header (a future task), in the blocking job;
 *   - the spawn site: in the coroutine task, or the future's header;
 *   - the name and the id: in a side table keyed by the task's address
 *     (TASK_HAS_EXTRA), the id assigned only when someone asks for it;
 *   - the joiners waiting for the task and the task it is itself joining
 *     (for deadlock detection): in the join futures, found through hash
 *     tables keyed by task address under striped locks (task.c), touched
 *     only by joins that have to wait;
 *   - the kind, "owned" and "yielded": in the low bits of the sched word.
 */
struct weft_task {
    _Atomic uint64_t state;
    union {
        struct weft_task *next; /* run-queue link, while queued */
        void *value;            /* result, once COMPLETE: a completed task
                                   is never in a queue */
    };
    /* The scheduler (never changes once submitted) | TASK_W_* bits. Only
     * the thread that owns the task (its spawner before it is queued, the
     * worker polling it) writes it, each time with a relaxed load and
     * store, which are plain moves: the other threads only read the
     * scheduler, which never changes. */
    _Atomic uintptr_t sched_word;
    struct weft_task *owned_prev, *owned_next; /* the scheduler's list */
};

static inline uintptr_t weft__task_word(const struct weft_task *t)
{
    return atomic_load_explicit(&((struct weft_task *)t)->sched_word,
                                memory_order_relaxed);
}

static inline struct weft_sched *weft__task_sched(const struct weft_task *t)
{
    return (struct weft_sched *)(weft__task_word(t) & ~(uintptr_t)TASK_W_BITS);
}

static inline unsigned weft__task_kind(const struct weft_task *t)
{
    return (unsigned)(weft__task_word(t) & TASK_W_KIND);
}

static inline const struct weft_task_vtable *
weft__task_vt(const struct weft_task *t)
{
    return weft__task_vtables[weft__task_kind(t)];
}

/* Sets or clears owner-written bits (see sched_word). */
static inline void weft__task_set_bits(struct weft_task *t, uintptr_t bits,
                                       bool on)
{
    uintptr_t w = weft__task_word(t);
    w = on ? w | bits : w & ~bits;
    atomic_store_explicit(&t->sched_word, w, memory_order_relaxed);
}

static inline bool weft__task_yielded(const struct weft_task *t)
{
    return (weft__task_word(t) & TASK_W_YIELDED) != 0;
}

/* The owned list holding the task, plus one; 0 if it is in none. A
 * scheduler with one list uses 1; the multi-thread one numbers its shards.
 * Written by whoever links or unlinks the task, under that list's lock. */
static inline unsigned weft__task_owned_no(const struct weft_task *t)
{
    return (unsigned)((weft__task_word(t) & TASK_W_OWNED) >>
                      TASK_W_OWNED_SHIFT);
}

static inline bool weft__task_owned(const struct weft_task *t)
{
    return (weft__task_word(t) & TASK_W_OWNED) != 0;
}

static inline void weft__task_set_owned_no(struct weft_task *t, unsigned no)
{
    uintptr_t w = weft__task_word(t) & ~(uintptr_t)TASK_W_OWNED;
    w |= ((uintptr_t)no << TASK_W_OWNED_SHIFT) & TASK_W_OWNED;
    atomic_store_explicit(&t->sched_word, w, memory_order_relaxed);
}

/* A key to spread tasks over locks or shards: the address, hashed. */
static inline size_t weft__task_hash(const struct weft_task *t)
{
    uintptr_t a = (uintptr_t)t >> 3;
    return (size_t)((a ^ (a >> 9) ^ (a >> 17)) * 0x9E3779B1u);
}

/* The task's error-code slot (what join reports next to t->value). */
static inline int *weft__task_err_slot(struct weft_task *t)
{
    return weft__task_vt(t)->err_slot(t);
}

const weft_site *weft__task_site(const struct weft_task *t);
/* The name, or NULL. `trylock`: for a signal handler, which must not wait
 * for a lock (NULL if it is taken). */
const char *weft__task_name(const struct weft_task *t, bool trylock);
/* The id if one was assigned (0 if none yet): for a signal handler. */
uint64_t weft__task_id_peek(const struct weft_task *t);

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

/* The same after a READY poll, which stored the result itself. */
void weft__task_finish(struct weft_task *t);

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

/* Initialises the common part of a new task of `kind` (TASK_KIND_*). */
void weft__task_init(struct weft_task *t, unsigned kind, bool handle);

/* Sets the name (copied). Returns 0 or -ENOMEM. */
int weft__task_set_name(struct weft_task *t, const char *name);

/* Releases what set_name and weft_task_id took (the side-table record). */
void weft__task_fini(struct weft_task *t);

/* Submits a task that was just spawned to `rt`'s scheduler and hands out the
 * handle. On failure the task is freed and *out is NULL. */
int weft__task_submit_new(weft_runtime *rt, struct weft_task *t,
                          weft_task **out);

/* The owner of a current-thread runtime takes a remote wake of a resident
 * task (the scheduler's wake_running): clears NOTIFIED and drops the
 * entry's reference. Returns true if the task was parked and must now be
 * queued (its yielded bit is set); false if it is queued already, has
 * finished, or a poll since the wake took NOTIFIED (that poll saw what the
 * wake announced). */
bool weft__task_remote_woken(struct weft_task *t);

/* The same for a task with NOTIFIED set by a remote wake that found no
 * memory for its entry (and so holds no reference). */
bool weft__task_rescan_woken(struct weft_task *t);

/* A poll of a resident task is about to start and NOTIFIED is set (a wake
 * from another thread is on its way): the poll takes it, so that the
 * remote entry will not poll the task once more for nothing. */
void weft__task_take_notified(struct weft_task *t);

/* Cancels (as weft_task_cancel) every task; used by shutdown. */
void weft__task_cancel(struct weft_task *t);

/* ---- coroutine tasks (coro_task.c) ---- */

/* Returns true if `t` is a coroutine task. */
bool weft__task_is_coro(const struct weft_task *t);

/* weft_await for a future the calling coroutine has just polled itself, to
 * PENDING, with its worker's context: suspends before polling it again
 * (the first poll would only find it still pending). */
int weft__await_pending(weft_future *f, void **value);

/* weft__await_pending for a caller-storage future whose READY needs no drop
 * or free (a sync operation on the coroutine's stack): after each wake it
 * calls the poll function itself, without weft_await's bookkeeping. A
 * deadline scope or a cancel hands over to weft__await_pending. Returns f's
 * error, -ECANCELED or -ETIMEDOUT. */
int weft__await_pending_leaf(weft_future *f);

/* ---- futures (future.c) ---- */

/* A future task's poll (its vtable's), called by the workers directly. */
weft_poll weft__ftask_poll(struct weft_task *t, weft_cx *cx);

/* weft_future.flags */
enum {
    FUT_HEAP = 1u << 0,    /* allocated by weft_future_new: free it */
    FUT_POLLED = 1u << 1,  /* polled at least once (or awaited) */
    FUT_READY = 1u << 2,   /* returned READY: must not be polled again */
    FUT_DROPPED = 1u << 3, /* drop has run */
    FUT_SPAWNED = 1u << 4, /* owned by a task */
};

#endif
