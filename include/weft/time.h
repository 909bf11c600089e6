/* weft: time: clock, sleep, intervals, timeouts, deadline scopes.
 * Included by <weft.h>; do not include directly.
 *
 * Times are int64_t milliseconds on weft's monotonic clock: the system's
 * CLOCK_MONOTONIC, read in whole milliseconds, shifted forward by whatever a
 * paused runtime was advanced by (weft_time_advance). A deadline is such a
 * time; a duration ("ms") is a difference of two. WEFT_TIME_NEVER is a
 * deadline that never comes.
 *
 * Timers have a resolution of 1 ms and never fire early: a timer for
 * deadline D fires once the clock reads D or later, and a relative timer of
 * `ms` milliseconds fires no sooner than `ms` full milliseconds after it
 * started (its deadline is rounded up). On an idle runtime a timer fires
 * within about 1 ms of its deadline plus the time the OS takes to wake a
 * thread. Each worker thread keeps its own timing wheel, so timers never
 * contend on one lock; any thread may cancel or reset one.
 *
 * Every suspending call in weft has a deadline form: weft_sleep_until,
 * weft_await_deadline (any future), weft_join_deadline, and deadline scopes
 * put one deadline over a whole block of calls.
 */
#ifndef WEFT_TIME_H
#define WEFT_TIME_H

#ifdef __cplusplus
extern "C" {
#endif

/* A deadline that never comes (sleeping until it sleeps until cancelled). */
#define WEFT_TIME_NEVER INT64_MAX

/* ------------------------------------------------------------------------ */
/* The clock                                                                */
/* ------------------------------------------------------------------------ */

/* Returns the time, cheaply (no clock read): in a task, the time the calling
 * worker last read the clock - when it last woke from idle, at its periodic
 * maintenance (every 31 polls on a current-thread runtime, 61 on a
 * multi-thread one), when weft_block_on() started, or at its last
 * weft_now_precise(), weft_deadline_after() or relative timer; so a task
 * that computes for long without suspending sees it stand still. On a
 * paused runtime, the paused clock. Outside any runtime, the monotonic
 * clock now. Never ahead of the true time. For a deadline relative to now,
 * use weft_deadline_after(), which reads the clock. Any thread. */
WEFT_API int64_t weft_now(void);

/* Returns the time now, reading the clock (a vDSO call, ~30 ns). In a task
 * of a paused runtime, the paused clock. Any thread. */
WEFT_API int64_t weft_now_precise(void);

/* Returns the deadline `ms` milliseconds from now, rounded up so that a
 * timer for it cannot fire before `ms` full milliseconds have passed:
 * ceil(precise now) + ms. ms <= 0 gives a deadline that has passed; a sum
 * that would overflow gives WEFT_TIME_NEVER. Any thread. */
WEFT_API int64_t weft_deadline_after(int64_t ms);

/* ------------------------------------------------------------------------ */
/* Sleeping                                                                 */
/* ------------------------------------------------------------------------ */

/* Suspends the calling coroutine for at least `ms` milliseconds (ms <= 0:
 * returns at once). Only the task sleeps; its worker runs other tasks.
 * Returns
 *   0          the time has passed,
 *   -ECANCELED the task was cancelled,
 *   -ETIMEDOUT the deadline of an enclosing scope passed first,
 *   -EPERM     not called from a coroutine task.
 * Suspends. */
WEFT_API int weft_sleep(int64_t ms);

/* Like weft_sleep() until the clock reads `deadline` (a deadline that has
 * passed returns 0 at once; WEFT_TIME_NEVER sleeps until cancelled or until
 * a scope's deadline). Suspends. */
WEFT_API int weft_sleep_until(int64_t deadline);

/* A future that is ready (value NULL, err 0) `ms` milliseconds after its
 * first poll: the deadline is taken when it is first polled, not when it is
 * created, so a task spawned with it starts its sleep when it first runs.
 * Usable from stackless tasks (spawn it, or poll it from your own future).
 * Dropping it unfinished cancels the timer. Returns NULL if memory is
 * exhausted. Ownership as weft_future_new(). Any thread; it must be polled
 * on a worker of a runtime (polling it elsewhere aborts). */
WEFT_API weft_future *weft_sleep_future_at(int64_t ms, const weft_site *site);
#define weft_sleep_future(ms) weft_sleep_future_at((ms), WEFT_HERE)

/* A future that is ready (value NULL, err 0) once the clock reads
 * `deadline`. As weft_sleep_future() otherwise. */
WEFT_API weft_future *weft_sleep_until_future_at(int64_t deadline,
                                                 const weft_site *site);
#define weft_sleep_until_future(deadline)                                      \
    weft_sleep_until_future_at((deadline), WEFT_HERE)

/* ------------------------------------------------------------------------ */
/* Timeouts                                                                 */
/* ------------------------------------------------------------------------ */

/* Wraps `f` in a future that is ready with f's value and error if f finishes
 * within `ms` milliseconds of the wrapper's first poll, or else with
 * -ETIMEDOUT (value NULL) once they have passed, having dropped and freed f.
 * Each poll polls f first, then the timer: a result that is ready by the
 * deadline is never lost. Consumes `f` (a NULL f gives NULL). Returns NULL
 * if memory is exhausted (f is freed then). Ownership as weft_future_new();
 * f may be a heap future or caller-owned storage that outlives the wrapper.
 * Any thread; polled on a worker. */
WEFT_API weft_future *weft_timeout_at(weft_future *f, int64_t ms,
                                      const weft_site *site);
#define weft_timeout(f, ms) weft_timeout_at((f), (ms), WEFT_HERE)

/* Like weft_timeout() with an absolute deadline. */
WEFT_API weft_future *weft_timeout_until_at(weft_future *f, int64_t deadline,
                                            const weft_site *site);
#define weft_timeout_until(f, deadline)                                        \
    weft_timeout_until_at((f), (deadline), WEFT_HERE)

/* ------------------------------------------------------------------------ */
/* Intervals                                                                */
/* ------------------------------------------------------------------------ */

/* What an interval does when ticks were missed: when its tick is taken more
 * than 5 ms after it was due (the task was busy, or the machine stalled).
 * The 5 ms of slack keep ordinary wake-up latency from counting as a miss,
 * as in tokio. With period 10 ms, ticks due at 0, 10, 20, ..., and the task
 * taking the tick due at 10 only at 37: */
typedef enum weft_missed_tick {
    /* Catch up: the ticks due at 20 and 30 complete at once, then 40, 50...
     * The schedule never shifts; the number of ticks is what it should be. */
    WEFT_TICK_BURST = 0,
    /* Restart from now: the next ticks are due at 47, 57, ... (every later
     * tick at least one period after the one before). */
    WEFT_TICK_DELAY = 1,
    /* Drop the missed ones: the next tick is due at 40, then 50, ... (the
     * schedule keeps its phase). */
    WEFT_TICK_SKIP = 2
} weft_missed_tick;

/* A periodic timer. Heap object: weft_interval_new() / weft_interval_free().
 * One task at a time takes its ticks. */
typedef struct weft_interval weft_interval;

/* Creates an interval whose first tick is due at once (weft_now()) and every
 * `period_ms` after that.
 * Returns 0 and stores it in *out, or
 *   -EINVAL  period_ms <= 0 or an unknown policy,
 *   -ENOMEM  memory is exhausted.
 * The caller frees it with weft_interval_free(). Any thread. */
WEFT_API int weft_interval_new(weft_interval **out, int64_t period_ms,
                               weft_missed_tick policy);

/* Like weft_interval_new() with the first tick due at `start`. */
WEFT_API int weft_interval_new_at(weft_interval **out, int64_t start,
                                  int64_t period_ms, weft_missed_tick policy);

/* Waits for the next tick of `iv` and stores the time it was due in *due
 * (if not NULL).
 * Returns
 *   0          a tick,
 *   -ECANCELED the task was cancelled (no tick is consumed),
 *   -ETIMEDOUT the deadline of an enclosing scope passed first (idem),
 *   -EPERM     not called from a coroutine task.
 * Suspends. */
WEFT_API int weft_interval_tick(weft_interval *iv, int64_t *due);

/* A future for the next tick of `iv`: ready with value (void *)(intptr_t)due
 * and err 0. Borrows iv, which must outlive it; one tick future per interval
 * at a time. Dropping it unfinished consumes no tick. NULL if memory is
 * exhausted. Any thread; polled on a worker. */
WEFT_API weft_future *weft_interval_tick_future_at(weft_interval *iv,
                                                   const weft_site *site);
#define weft_interval_tick_future(iv)                                          \
    weft_interval_tick_future_at((iv), WEFT_HERE)

/* Restarts the schedule: the next tick is due one period from now. Not
 * while a tick future of iv is being polled. Any thread. */
WEFT_API void weft_interval_reset(weft_interval *iv);

/* Returns the period of `iv` in milliseconds. Any thread. */
WEFT_API int64_t weft_interval_period(const weft_interval *iv);

/* Cancels and frees `iv`. No tick future of it may remain. NULL is ignored.
 * Any thread. */
WEFT_API void weft_interval_free(weft_interval *iv);

/* ------------------------------------------------------------------------ */
/* Timers for leaf futures of your own                                      */
/* ------------------------------------------------------------------------ */

/* A timer entry to embed in a future of your own (a protocol timeout, a
 * retransmission timer): what weft's sleep is built from. Caller-owned
 * storage, 48 bytes, no allocation: weft_timer_init() or
 * weft_timer_init_after(), then weft_timer_poll() from your poll function,
 * and weft_timer_destroy() from your drop function. The storage must stay
 * where it is (no memcpy) from the first poll until weft_timer_destroy().
 * One owner at a time calls these (like a future: polled on one thread at a
 * time, handed over with the future), on any thread. */
typedef struct weft_timer {
    uint64_t opaque_[6];
} weft_timer;

/* Initialises `t` for an absolute deadline. Nothing is registered until the
 * first poll. */
WEFT_API void weft_timer_init(weft_timer *t, int64_t deadline);

/* Initialises `t` to fire `ms` milliseconds after its first poll (the
 * deadline is weft_deadline_after(ms) taken then; ms <= 0: due at once). */
WEFT_API void weft_timer_init_after(weft_timer *t, int64_t ms);

/* Returns WEFT_READY once the deadline has been reached (and on every poll
 * after that, until a reset), else WEFT_PENDING having arranged for cx's
 * waker to be woken when it is reached (a poll with a different waker
 * replaces the one registered). The first poll registers the timer with the
 * calling worker's wheel. Must be called on a worker (from a poll
 * function); elsewhere it aborts. */
WEFT_API weft_poll weft_timer_poll(weft_timer *t, weft_cx *cx);

/* Moves the deadline of `t`, registered or not, fired or not. A registered
 * timer is re-registered at once with the waker it has, which is woken if
 * the new deadline has already passed; otherwise the next poll registers.
 * Any thread (the owner). */
WEFT_API void weft_timer_reset(weft_timer *t, int64_t deadline);

/* Returns the deadline of `t`, or WEFT_TIME_NEVER for a relative timer not
 * yet polled. */
WEFT_API int64_t weft_timer_deadline(const weft_timer *t);

/* Deregisters `t` (dropping the waker it holds) so that its storage may be
 * reused or freed. Cheap when the timer is not registered. `t` may be
 * initialised again afterwards. Any thread (the owner). */
WEFT_API void weft_timer_destroy(weft_timer *t);

/* ------------------------------------------------------------------------ */
/* Deadline scopes                                                          */
/* ------------------------------------------------------------------------ */

/* A deadline over a block of code in a coroutine task:
 *
 *     weft_scope s;
 *     weft_scope_enter(&s, weft_deadline_after(500));
 *     rc = weft_sleep(1000);            // -ETIMEDOUT after ~500 ms
 *     ...every suspending call here...  // -ETIMEDOUT from now on
 *     weft_scope_exit(&s);
 *
 * Inside a scope, every suspending call (weft_await and everything built on
 * it: weft_sleep, weft_join, channel operations...; weft_yield too) returns
 * -ETIMEDOUT once the deadline has passed - the one it was suspended in, and
 * every later one, at once, without polling its future - and -ECANCELED if
 * the task is cancelled (cancellation is checked first). Calls that complete
 * without suspending (weft_join of a finished task) are unaffected. Scopes
 * nest; the nearest (earliest) deadline of all enclosing scopes is the one
 * that applies. The task unwinds by ordinary returns and must exit every
 * scope it entered, innermost first, before its function returns (a task
 * that returns inside a scope aborts with a message).
 *
 * Caller-owned storage on the coroutine's stack; valid from
 * weft_scope_enter() to weft_scope_exit(). Fields other than `deadline` are
 * weft's. Coroutine tasks only: in a future task or outside a task, enter
 * and exit do nothing (stackless code puts weft_timeout() around futures). */
typedef struct weft_scope {
    int64_t deadline; /* as given to weft_scope_enter(); read-only */
    int64_t effective_;
    struct weft_scope *outer_;
    struct weft_scope *owner_;
    void *task_;
    weft_timer timer_;
} weft_scope;

/* Enters a scope with `deadline` (WEFT_TIME_NEVER: no deadline of its own,
 * useful to mark a block). Needs no allocation and cannot fail. A deadline
 * that has passed makes the next suspending call fail. Task context. */
WEFT_API void weft_scope_enter(weft_scope *s, int64_t deadline);

/* Leaves the scope `s`, which must be the innermost one (else aborts), and
 * releases its timer. Task context. */
WEFT_API void weft_scope_exit(weft_scope *s);

/* Returns 1 if the deadline of `s` itself has passed (so that after an
 * -ETIMEDOUT a caller can tell its own scope's deadline from an enclosing
 * one's), else 0. Task context. */
WEFT_API int weft_scope_expired(const weft_scope *s);

/* Awaits `f` with a deadline: weft_await() inside a scope of its own.
 * Consumes `f`. Returns as weft_await(), or -ETIMEDOUT once `deadline` (or
 * an enclosing scope's, if nearer) has passed, f dropped unfinished. A
 * deadline that has already passed fails at once without polling f.
 * Suspends. */
WEFT_API int weft_await_deadline(weft_future *f, void **value,
                                 int64_t deadline);

/* Like weft_join() with a deadline: -ETIMEDOUT if `t` has not finished when
 * `deadline` passes (t keeps running). A finished task is reported at once
 * whatever the deadline. Suspends (task context), or blocks a plain thread
 * (which waits until the deadline at most). */
WEFT_API int weft_join_deadline(weft_task *t, void **result, int64_t deadline);

/* ------------------------------------------------------------------------ */
/* Paused time, for tests                                                   */
/* ------------------------------------------------------------------------ */

/* The clock of a runtime can be paused, so that tests of timeouts run in
 * milliseconds and give the same order of events on every run. While it is
 * paused, the clock moves only when weft_time_advance() moves it, and when
 * every task of the runtime is idle (all waiting, none runnable): then it
 * jumps straight to the next timer's deadline and fires it. Works on both
 * executors. The state belongs to the runtime of the calling task; other
 * runtimes and plain threads keep the real clock. Call these from a task,
 * best at the start of a test, before timers are pending. */

/* Pauses the clock of the caller's runtime at the current time rounded up
 * to a whole millisecond. Returns 0 (also when already paused), or -EPERM
 * outside a task. */
WEFT_API int weft_time_pause(void);

/* Moves the paused clock forward by `ms` and fires every timer that is due
 * then; from a coroutine task, then yields once (as weft_yield) so that
 * the tasks it woke run first on a current-thread runtime. Returns 0, or
 *   -EINVAL  the clock is not paused, or ms < 0,
 *   -EPERM   outside a task.
 * May suspend (coroutine tasks). */
WEFT_API int weft_time_advance(int64_t ms);

/* Lets the clock run again from where it stands (it never goes back:
 * advanced time stays added). Returns 0 (also when not paused), or -EPERM
 * outside a task. */
WEFT_API int weft_time_resume(void);

/* Returns 1 if the clock of the caller's runtime is paused, else 0 (also
 * outside a task). */
WEFT_API int weft_time_paused(void);

#ifdef __cplusplus
}
#endif

#endif
