/*
 * weft.h - an async runtime for C: lazy futures, tasks and executors.
 *
 * This is the only header a weft program includes. Everything public is
 * declared and documented here.
 *
 * Conventions (they hold for every function below unless its comment says
 * otherwise):
 *
 *   Errors     A fallible function returns >= 0 on success and a negative
 *              errno value on failure (-ENOMEM, -ECANCELED, ...). weft never
 *              reports through errno, which is thread-local and meaningless
 *              across a suspension point. weft_strerror() names any code.
 *
 *   Ownership  Objects are either caller-owned storage (an _init and a
 *              _destroy function) or heap objects (_new and _free).
 *              Each type's comment says which,
 *              and who frees what. A function that "consumes" an argument
 *              takes over its ownership whatever it returns.
 *
 *   Threads    "Any thread" means any thread, including threads that weft did
 *              not create. "Task context" means called from inside a task
 *              (coroutine or future) running on a weft runtime; calling a
 *              task-context function elsewhere returns -EPERM.
 *
 *   Suspension A function marked "suspends" may switch the calling coroutine
 *              out and resume it later, possibly on another worker thread of
 *              the same runtime. Across a suspension point do not keep the
 *              address of a thread-local variable, a value of errno, or a
 *              thread identity: read them again afterwards. Beware that
 *              glibc declares pthread_self() const, so the compiler may
 *              call it once per function and reuse the result across a
 *              suspension; use syscall(SYS_gettid) or weft_task_self() to
 *              tell where a task runs. Every suspending call returns
 *              -ECANCELED once the calling task has been cancelled.
 */
#ifndef WEFT_H
#define WEFT_H

#include <stddef.h>
#include <stdint.h>

#include "weft/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(WEFT_STATIC_DEFINE)
#define WEFT_API
#elif defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

/* ------------------------------------------------------------------------ */
/* Version and errors                                                       */
/* ------------------------------------------------------------------------ */

/* Returns the version of the linked library as WEFT_VERSION_HEX encodes it.
 * Thread-safe. */
WEFT_API unsigned weft_version(void);

/* Returns the version of the linked library as "major.minor.patch", a static
 * string. Thread-safe. */
WEFT_API const char *weft_version_string(void);

/* Returns a static, human-readable description of `err`, which may be a
 * negative errno value as weft returns them, or 0 ("success"). Unknown values
 * give "unknown error". Thread-safe. */
WEFT_API const char *weft_strerror(int err);

/* ------------------------------------------------------------------------ */
/* Source sites                                                             */
/* ------------------------------------------------------------------------ */

/* A place in the source: where a task was spawned or a future created. Sites
 * are static and immutable; the diagnostics print them. */
typedef struct weft_site {
    const char *file;
    const char *func;
    int line;
} weft_site;

/* A pointer to a static weft_site naming the line where it is written. The
 * spawn and future-construction macros below use it. */
#if defined(__GNUC__) || defined(__clang__)
#define WEFT_HERE                                                              \
    (__extension__({                                                           \
        static const weft_site weft_site_here_ = {__FILE__, __func__,          \
                                                  __LINE__};                   \
        &weft_site_here_;                                                      \
    }))
#else
#define WEFT_HERE ((const weft_site *)0)
#endif

/* ------------------------------------------------------------------------ */
/* Wakers and the poll context                                              */
/* ------------------------------------------------------------------------ */

/* A waker is a handle that makes a task (or a blocked thread) runnable again.
 * It is a small value: copy it with weft_waker_clone(), never with `=` when
 * you mean to keep it, and release every clone exactly once with
 * weft_waker_wake() or weft_waker_drop().
 *
 * Wakers may be cloned, woken and dropped from any thread, including threads
 * that weft does not own. Waking a task that is already scheduled, running or
 * finished is harmless: a task is never run twice at the same time.
 *
 * To build a waker of your own (for a thread parker, say), fill a static
 * weft_waker_vtable; `data` is yours. A waker whose vtable is NULL is a no-op
 * waker. */
typedef struct weft_waker_vtable {
    /* Returns a new waker for the same target (typically bumps a refcount). */
    struct weft_waker (*clone)(void *data);
    /* Wakes the target and releases this waker. */
    void (*wake)(void *data);
    /* Wakes the target, keeping this waker. */
    void (*wake_by_ref)(void *data);
    /* Releases this waker without waking. */
    void (*drop)(void *data);
} weft_waker_vtable;

typedef struct weft_waker {
    const weft_waker_vtable *vtable;
    void *data;
} weft_waker;

/* Returns a clone of `w` that the caller owns. Any thread. */
WEFT_API weft_waker weft_waker_clone(const weft_waker *w);

/* Wakes the target of `w` and releases `w` (it becomes a no-op waker). Any
 * thread. */
WEFT_API void weft_waker_wake(weft_waker *w);

/* Wakes the target of `w`; `w` stays valid. Any thread. */
WEFT_API void weft_waker_wake_by_ref(const weft_waker *w);

/* Releases `w` without waking (it becomes a no-op waker). Any thread. */
WEFT_API void weft_waker_drop(weft_waker *w);

/* Returns 1 if `a` and `b` wake the same target, else 0. Use it to skip
 * replacing a stored waker with an identical one. Any thread. */
WEFT_API int weft_waker_will_wake(const weft_waker *a, const weft_waker *b);

/* The context a future is polled with: the waker of the task being polled
 * and its cooperative budget. Owned by the executor and valid only during
 * the poll call it was passed to. */
typedef struct weft_cx weft_cx;

/* Returns the waker of the task being polled, borrowed: clone it to keep it
 * past the poll. */
WEFT_API const weft_waker *weft_cx_waker(weft_cx *cx);

/* Cooperative budget. A task may complete a bounded number of ready
 * operations in one poll (128); past that, leaf futures should answer
 * "pending" even when they could finish, so that one busy task cannot
 * starve the others. A leaf future calls weft_cx_proceed() right before it
 * would return WEFT_READY: 1 means go ahead (one unit of budget used); 0
 * means the budget is spent - return WEFT_PENDING without changing state:
 * the task has already been woken and goes to the back of the run queue,
 * and its next poll has a fresh budget. All of weft's own leaf futures
 * (joins, timers, channels, ...) do this. Only during a poll. */
WEFT_API int weft_cx_proceed(weft_cx *cx);

/* ------------------------------------------------------------------------ */
/* Futures                                                                  */
/* ------------------------------------------------------------------------ */

/* Result of a poll. */
typedef enum weft_poll {
    WEFT_READY = 0,  /* finished: f->value and f->err hold the result */
    WEFT_PENDING = 1 /* not yet: cx's waker will be woken on progress */
} weft_poll;

typedef struct weft_future weft_future;

/* What makes a future a future. Write these to create a leaf future of your
 * own (a socket wait, a device completion, ...).
 *
 * poll: advance the future. Return WEFT_READY after storing the result with
 *       weft_future_set(), or WEFT_PENDING after arranging for the waker of
 *       `cx` (cloned) to be woken when polling again can make progress. A
 *       future must not be polled again after it returned WEFT_READY.
 *       poll runs on a worker thread and must not block.
 * drop: release what the future holds (an outstanding registration, a
 *       stored waker, memory it allocated), whether or not it finished. May
 *       be NULL. Do not free the future itself: weft does that for futures
 *       made with weft_future_new().
 * name: a short name for diagnostics, e.g. "sleep". May be NULL. */
typedef struct weft_future_ops {
    weft_poll (*poll)(weft_future *f, weft_cx *cx);
    void (*drop)(weft_future *f);
    const char *name;
} weft_future_ops;

/* The common head of every future. Embed it as the first member of your
 * future's struct. Fields other than `value` and `err` are weft's. */
struct weft_future {
    const weft_future_ops *ops;
    const weft_site *site; /* where the future was created */
    void *value;           /* result value, valid after READY */
    int err;               /* result error: 0 or a negative errno value */
    uint32_t flags;        /* weft-internal */
};

/* Allocates a future of `size` bytes (>= sizeof(weft_future), the rest zeroed)
 * with the given operations. Nothing runs until it is polled: futures are
 * lazy. The caller owns it until it hands it to a consuming call (weft_await,
 * weft_spawn_future, combinators) or frees it with weft_future_free().
 * Use the weft_future_new() macro, which records the call site.
 * Returns NULL if memory is exhausted. Any thread. */
WEFT_API weft_future *weft_future_new_at(size_t size,
                                         const weft_future_ops *ops,
                                         const weft_site *site);
#define weft_future_new(size, ops) weft_future_new_at((size), (ops), WEFT_HERE)

/* Initialises a future in storage the caller owns (a struct on a coroutine's
 * stack, say). The caller keeps the storage alive until the future has been
 * finished with weft_future_free() (which then runs drop but frees nothing)
 * or a consuming call. Such futures can be awaited and combined but not
 * spawned. Use the weft_future_init() macro. */
WEFT_API void weft_future_init_at(weft_future *f, const weft_future_ops *ops,
                                  const weft_site *site);
#define weft_future_init(f, ops) weft_future_init_at((f), (ops), WEFT_HERE)

/* Finishes with `f`: runs its drop operation and frees it if weft allocated
 * it. NULL is ignored. A future freed without ever having been polled is
 * reported on stderr with the site where it was created, since that is
 * almost always a forgotten await; the report is on in debug builds and in
 * any build run with WEFT_DEBUG=1 in the environment. Any thread, but never
 * while the future is being polled. */
WEFT_API void weft_future_free(weft_future *f);

/* Polls `f` once with the context `cx`. Use it inside the poll function of a
 * combinator to drive child futures. Returns what f's poll returns. Calling
 * it on a future that already returned WEFT_READY is a bug and aborts. */
WEFT_API weft_poll weft_future_poll(weft_future *f, weft_cx *cx);

/* Stores the result of `f`; returns WEFT_READY so that a poll function can end
 * with `return weft_future_set(f, value, 0);`. */
static inline weft_poll weft_future_set(weft_future *f, void *value, int err)
{
    f->value = value;
    f->err = err;
    return WEFT_READY;
}

/* A future that is ready at its first poll with (value, err). Returns NULL if
 * memory is exhausted. Any thread. */
WEFT_API weft_future *weft_ready_at(void *value, int err,
                                    const weft_site *site);
#define weft_ready(value, err) weft_ready_at((value), (err), WEFT_HERE)

/* A future that returns WEFT_PENDING once (waking itself) and is ready at its
 * second poll with value NULL: yielding as a future. NULL if memory is
 * exhausted. Any thread. */
WEFT_API weft_future *weft_yield_future_at(const weft_site *site);
#define weft_yield_future() weft_yield_future_at(WEFT_HERE)

/* ------------------------------------------------------------------------ */
/* Runtime                                                                  */
/* ------------------------------------------------------------------------ */

typedef struct weft_runtime weft_runtime;

typedef enum weft_flavor {
    /* Every task runs on the thread that calls weft_block_on(). */
    WEFT_CURRENT_THREAD = 0,
    /* Tasks run on a pool of worker threads with work stealing. */
    WEFT_MULTI_THREAD = 1
} weft_flavor;

/* Runtime configuration. Always start from weft_config_init(), which sets
 * every field to its default, then change what you need; fields added in
 * later versions take their defaults that way. */
typedef struct weft_config {
    size_t struct_size; /* set by weft_config_init(); do not change */
    weft_flavor flavor; /* default WEFT_CURRENT_THREAD */
    int workers;        /* multi-thread only; 0 = the CPUs this process may
                           use, or $WEFT_WORKERS when set */
    size_t stack_size;  /* default coroutine stack size in bytes; 0 = 256 KiB
                           (or $WEFT_STACK_SIZE); rounded up to pages */
    int debug;          /* 1 = diagnostics on, 0 = off, -1 = default (on in
                           debug builds or when $WEFT_DEBUG=1) */
    int max_blocking_threads;      /* blocking pool cap; 0 = 512 */
    int64_t blocking_keepalive_ms; /* idle pool thread exits after; 0 = 10 s */
    uint64_t reserved[6];          /* room to grow; keep zero */
} weft_config;

/* Fills `cfg` with the defaults. */
WEFT_API void weft_config_init(weft_config *cfg);

/* Creates a runtime. `cfg` may be NULL for the defaults. Nothing runs until
 * weft_block_on() is called.
 * Returns 0 and stores the runtime in *out, or
 *   -EINVAL  a field of cfg is out of range,
 *   -ENOMEM  memory or threads could not be had.
 * Ownership: the caller frees the runtime with weft_runtime_free(). */
WEFT_API int weft_runtime_new(weft_runtime **out, const weft_config *cfg);

/* Shuts the runtime down without freeing it: refuses new spawns (they
 * return -ESHUTDOWN), cancels every task still pending (each coroutine's
 * current or next suspension returns -ECANCELED so that it unwinds by
 * ordinary returns; each future task's future is dropped), and waits for
 * them to end - on the calling thread for a current-thread runtime, on the
 * workers for a multi-thread one - then stops the workers. Blocking-pool
 * work cannot be interrupted: it is waited for too.
 * timeout_ms bounds the wait (< 0: no limit). It cannot bound a
 * current-thread runtime's own tasks, which run on the calling thread.
 * Returns 0 once every task has ended, or
 *   -ETIMEDOUT some task (one that ignores cancellation and never
 *              suspends, or blocking work) is still running; the runtime
 *              stays usable for another weft_runtime_shutdown() call,
 *   -EPERM     called from inside a task.
 * Idempotent. Thread-safety: any one thread outside the runtime. */
WEFT_API int weft_runtime_shutdown(weft_runtime *rt, int64_t timeout_ms);

/* Shuts the runtime down (weft_runtime_shutdown() with no time limit,
 * unless a shutdown already succeeded) and frees it and all its memory.
 * Join handles still held stay valid (joining them returns the result or
 * -ECANCELED) until weft_task_free(). If an earlier weft_runtime_shutdown()
 * timed out and tasks are still running, the runtime is not freed (its
 * memory is in use) and a warning is printed. Call it from a thread outside
 * the runtime, never from a task (that aborts). NULL is ignored. */
WEFT_API void weft_runtime_free(weft_runtime *rt);

/* The coroutine entry point, like pthread_create's. */
typedef void *(*weft_task_fn)(void *arg);

/* Runs fn(arg) as the root task of `rt` on the calling thread (and, for a
 * multi-thread runtime, its workers) until it returns; other tasks run
 * meanwhile. Stores fn's return value in *result when result is not NULL.
 * Returns 0, or
 *   -EPERM     called from inside a task (it would deadlock),
 *   -EBUSY     another thread is inside weft_block_on() on a current-thread
 *              runtime,
 *   -ESHUTDOWN the runtime is shutting down,
 *   -ENOMEM    the root task could not be created.
 * Thread-safety: any thread outside the runtime. */
WEFT_API int weft_block_on(weft_runtime *rt, weft_task_fn fn, void *arg,
                           void **result);

/* Like weft_block_on() with a future as the root task. Consumes `f`. Returns
 * f's error (0 on success) and stores its value in *result when not NULL, or
 * one of weft_block_on()'s errors. */
WEFT_API int weft_block_on_future(weft_runtime *rt, weft_future *f,
                                  void **result);

/* Returns the runtime of the calling task, or NULL outside a task. */
WEFT_API weft_runtime *weft_runtime_current(void);

/* ------------------------------------------------------------------------ */
/* Tasks                                                                    */
/* ------------------------------------------------------------------------ */

/* A join handle: a counted reference to a task. Spawning gives the caller
 * one handle (unless it asked for none); the caller releases it with
 * weft_task_free(). Releasing the handle does not stop the task: a task runs
 * to its end whether or not anyone joins it (it is "detached"). */
typedef struct weft_task weft_task;

/* Per-spawn options; NULL means all defaults. Zero fields take defaults. */
typedef struct weft_spawn_opts {
    const char *name;  /* copied; shown by diagnostics. NULL = unnamed */
    size_t stack_size; /* coroutine stack size; 0 = the runtime's default */
} weft_spawn_opts;

/* Spawns fn(arg) as a coroutine task: it runs on its own stack and may call
 * suspending functions as if they were blocking calls. Like a future, a new
 * task does nothing until the executor first polls it; unlike a future, it
 * needs no await to start.
 * rt:   the runtime; NULL = the caller's runtime (task context only).
 * out:  receives the join handle; NULL = detach at once.
 * opts: NULL for defaults.
 * Returns 0, or
 *   -EPERM     rt is NULL outside a task,
 *   -ESHUTDOWN the runtime is shutting down,
 *   -EINVAL    a stack size too small to run (below 16 KiB),
 *   -ENOMEM    memory is exhausted.
 * On error nothing was spawned and *out is set to NULL. *out is written
 * before the task can first run, so a task may read its own handle from
 * where its spawner stored it.
 * A cancelled coroutine task still runs its function (its suspending calls
 * return -ECANCELED), so that it can release what `arg` carries. The one
 * exception: the stack is taken when the task first runs, and if no stack
 * can be had then, fn does not run and joining returns -ENOMEM.
 * Scheduling: on a current-thread runtime the new task runs once the
 * spawner suspends (awaits, joins, yields or returns); on a multi-thread
 * runtime an idle worker may start it at once.
 * Thread-safety: any thread. */
WEFT_API int weft_spawn_at(weft_runtime *rt, weft_task **out, weft_task_fn fn,
                           void *arg, const weft_spawn_opts *opts,
                           const weft_site *site);
#define weft_spawn(rt, out, fn, arg)                                           \
    weft_spawn_at((rt), (out), (fn), (arg), NULL, WEFT_HERE)
#define weft_spawn_opts(rt, out, fn, arg, opts)                                \
    weft_spawn_at((rt), (out), (fn), (arg), (opts), WEFT_HERE)

/* Spawns the future `f` as a stackless task. Consumes `f`, which must have
 * been made by weft_future_new() (or a weft constructor that returns a heap
 * future). A cancelled future task is dropped at its next poll, never polled
 * again. Returns and thread-safety as weft_spawn_at(); -EINVAL also for a
 * future in caller-owned storage. The site is the future's creation site. */
WEFT_API int weft_spawn_future(weft_runtime *rt, weft_task **out,
                               weft_future *f, const weft_spawn_opts *opts);

/* Waits for `t` to finish and stores its value in *result (if not NULL).
 * Suspends (task context), or blocks the calling thread when called outside
 * any runtime (a task of a current-thread runtime only progresses while
 * some thread is inside weft_block_on() on it). Does not release the
 * handle: joining twice gives the same result twice.
 * Returns
 *   0          the task finished; *result holds fn's return value,
 *   -ECANCELED the task was cancelled (whatever it returned: a cancelled
 *              task that returns memory must free it itself, checking
 *              weft_task_cancelled()), or the caller was cancelled while
 *              waiting,
 *   -ENOMEM    a coroutine task whose stack could not be allocated (its
 *              function never ran),
 *   -EDEADLK   t is the calling task itself, which would wait forever,
 *   <0         for a future task, the error its future finished with. */
WEFT_API int weft_join(weft_task *t, void **result);

/* A future that joins `t`: ready with t's value and error, as weft_join()
 * gives them. Borrows `t`, which must outlive the future. NULL if memory is
 * exhausted. Any thread. */
WEFT_API weft_future *weft_join_future_at(weft_task *t, const weft_site *site);
#define weft_join_future(t) weft_join_future_at((t), WEFT_HERE)

/* Releases the handle `t`. The task keeps running if it has not finished
 * (detached). NULL is ignored. Any thread. */
WEFT_API void weft_task_free(weft_task *t);

/* Requests cancellation of `t`: its current suspension (or its next one, if
 * it is running) returns -ECANCELED, and so does every later one. A future
 * task is dropped at its next poll. Joining a cancelled task returns
 * -ECANCELED. Cancelling a finished task does nothing. Any thread. */
WEFT_API void weft_task_cancel(weft_task *t);

/* Returns 1 if the task has finished (returned or was cancelled and ended),
 * else 0. Any thread. */
WEFT_API int weft_task_done(const weft_task *t);

/* Returns the task's id: unique within the process, never 0 except as below.
 * Ids are assigned at the first call (most tasks are never asked, and keep
 * no id), so the first call for a task takes a short lock and records the
 * id in a small side allocation; if that allocation fails, 0 is returned
 * and a later call tries again. Any thread. */
WEFT_API uint64_t weft_task_id(const weft_task *t);

/* Returns the task's name, or NULL if it has none. The string lives as long as
 * the task. Any thread. */
WEFT_API const char *weft_task_name(const weft_task *t);

/* Returns the site where the task was spawned. Any thread. */
WEFT_API const weft_site *weft_task_site(const weft_task *t);

/* Returns the calling task (borrowed, valid while it runs), or NULL outside a
 * task. */
WEFT_API weft_task *weft_task_self(void);

/* Returns 1 if the calling task has been cancelled, else 0 (also outside a
 * task). */
WEFT_API int weft_task_cancelled(void);

/* Runs fn(arg) on the runtime's blocking pool, a set of threads apart from
 * the workers, for calls that block (file I/O, DNS, heavy computation): a
 * worker must never block, or every task queued behind it waits. Threads
 * are created on demand up to cfg.max_blocking_threads; jobs queue beyond
 * that; an idle pool thread exits after cfg.blocking_keepalive_ms.
 * The handle works like a task's: weft_join() (suspends a task, blocks a
 * plain thread), weft_join_future(), weft_task_free(). weft_task_cancel()
 * before the job starts means it never runs (its join returns -ECANCELED);
 * a running job cannot be interrupted and runs to its end (its join still
 * returns -ECANCELED).
 * rt: NULL = the caller's runtime (task context only).
 * Returns 0, or
 *   -EPERM     rt is NULL outside a task,
 *   -ESHUTDOWN the runtime is shutting down,
 *   -EAGAIN    no pool thread could be created and none exists,
 *   -ENOMEM    memory is exhausted.
 * Thread-safety: any thread. */
WEFT_API int weft_spawn_blocking(weft_runtime *rt, weft_task **out,
                                 weft_task_fn fn, void *arg);

/* ------------------------------------------------------------------------ */
/* Metrics                                                                  */
/* ------------------------------------------------------------------------ */

#define WEFT_METRICS_MAX_WORKERS 64

/* Counters of one worker since the runtime started. */
typedef struct weft_worker_metrics {
    uint64_t polls;     /* tasks polled */
    uint64_t steals;    /* tasks stolen from other workers */
    uint64_t parks;     /* times it went idle */
    uint64_t overflows; /* times its full local queue spilled half to the
                           global queue */
    uint64_t busy_ns;   /* time not parked */
    uint64_t local_queue_depth; /* tasks in its local queue now */
    uint64_t reserved[4];
} weft_worker_metrics;

/* A snapshot of a runtime's counters. Values are read without stopping
 * the workers, so they are individually exact but not a consistent cut. */
typedef struct weft_metrics {
    size_t struct_size;          /* set by weft_runtime_metrics */
    int workers;                 /* 1 for a current-thread runtime */
    uint64_t live_tasks;         /* spawned and not yet finished */
    uint64_t global_queue_depth; /* injection (remote) queue */
    uint64_t blocking_threads;   /* blocking pool threads alive */
    uint64_t blocking_idle;      /* of which idle */
    uint64_t blocking_queue_depth;
    uint64_t reserved[8];
    weft_worker_metrics worker[WEFT_METRICS_MAX_WORKERS]; /* first
                                                   min(workers, 64) valid */
} weft_metrics;

/* Fills *out with the runtime's counters. Returns 0. Any thread. */
WEFT_API int weft_runtime_metrics(weft_runtime *rt, weft_metrics *out);

/* ------------------------------------------------------------------------ */
/* Inside a coroutine task                                                  */
/* ------------------------------------------------------------------------ */

/* Awaits `f`: polls it, suspending the calling coroutine while it is pending.
 * Consumes `f` (drops and frees it, whatever is returned). Stores its value
 * in *value when value is not NULL and the future finished.
 * Returns f's error (0 on success), or
 *   -ECANCELED the calling task was cancelled (f is dropped unfinished),
 *   -EPERM     not called from a coroutine task.
 * Suspends. */
WEFT_API int weft_await(weft_future *f, void **value);

/* Gives up the worker: the calling task goes to the back of the run queue and
 * other runnable tasks run first. Does not poll for I/O. Returns 0, or
 * -ECANCELED (without yielding) once the task is cancelled, or -EPERM outside
 * a coroutine task. Suspends. */
WEFT_API int weft_yield(void);

#ifdef __cplusplus
}
#endif

/* The subsystems, each in its own file but part of this one header. */
#include "weft/time.h"
#include "weft/sync.h"

#endif /* WEFT_H */
