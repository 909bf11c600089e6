/*
 * Deadline scopes: a deadline over a block of a coroutine task.
 *
 * A coroutine task holds a pointer to its innermost scope (coro_task.c);
 * each scope points to the one around it. The scope caches the nearest
 * deadline of the chain (`effective_`) and which scope owns it
 * (`owner_`), so that nested scopes with later deadlines cost nothing.
 * weft_await checks the effective deadline before every poll and, before
 * suspending, polls the owner's timer with the task's waker so that the
 * task is woken when the deadline passes; the timer lives in the scope, on
 * the coroutine's stack, and is registered only if the task actually
 * suspends inside the scope. The timer's TW_FIRED state is the authority
 * for "passed": it is set by the wheel, whose clock cannot be behind the
 * worker's cached one.
 *
 * The semantics are trio's cancel scopes (checked at every suspension
 * point, before the operation), with the deadline as the only cause.
 */
#include "time/time.h"

#include "rt/runtime.h"
#include "sched/park.h"
#include "sched/sched.h"
#include "task/task.h"

static bool timer_fired(const weft_timer *t)
{
    const struct weft__timer *e = (const struct weft__timer *)(const void *)t;
    return atomic_load_explicit(&((struct weft__timer *)e)->word,
                                memory_order_acquire) &
           TW_FIRED;
}

void weft_scope_enter(weft_scope *s, int64_t deadline)
{
    s->deadline = deadline;
    s->effective_ = deadline;
    s->outer_ = NULL;
    s->owner_ = s;
    s->task_ = NULL;
    weft_timer_init(&s->timer_, deadline);
    weft_scope **slot = weft__coro_scope_slot();
    if (!slot)
        return; /* not a coroutine task: a no-op scope */
    weft_scope *outer = *slot;
    if (outer && outer->effective_ <= deadline) {
        s->effective_ = outer->effective_;
        s->owner_ = outer->owner_;
    }
    s->outer_ = outer;
    s->task_ = slot;
    *slot = s;
}

void weft_scope_exit(weft_scope *s)
{
    if (s->task_) {
        weft_scope **slot = weft__coro_scope_slot();
        WEFT_CHECK(slot == s->task_ && *slot == s,
                   "weft_scope_exit: not the innermost scope of this task");
        *slot = s->outer_;
        s->task_ = NULL;
    }
    weft_timer_destroy(&s->timer_);
}

int weft_scope_expired(const weft_scope *s)
{
    if (s->deadline == WEFT_TIME_NEVER)
        return 0;
    return timer_fired(&s->timer_) || s->deadline <= weft_now();
}

bool weft__scope_expired(weft_scope *s)
{
    if (s->effective_ == WEFT_TIME_NEVER)
        return false;
    if (timer_fired(&s->owner_->timer_))
        return true;
    return s->effective_ <= weft__time_now_ms(weft__tls_worker);
}

bool weft__scope_arm(weft_scope *s, weft_cx *cx)
{
    if (s->effective_ == WEFT_TIME_NEVER)
        return false;
    return weft_timer_poll(&s->owner_->timer_, cx) == WEFT_READY;
}

int weft_await_deadline(weft_future *f, void **value, int64_t deadline)
{
    weft_scope s;
    weft_scope_enter(&s, deadline);
    int rc = weft_await(f, value);
    weft_scope_exit(&s);
    return rc;
}

/* A plain thread joins with a deadline: poll a join future with a parker's
 * waker, sleeping on the parker until woken or the deadline. */
static int join_blocking_deadline(weft_task *t, void **result, int64_t deadline)
{
    struct weft_parker *p = weft__parker_new();
    weft_future *f = p ? weft_join_future(t) : NULL;
    if (!f) {
        if (p)
            weft__parker_unref(p);
        return -ENOMEM;
    }
    weft_cx cx = {.waker = weft__parker_waker(p),
                  .task = NULL,
                  .budget = WEFT_COOP_BUDGET};
    int rc;
    for (;;) {
        if (weft_future_poll(f, &cx) == WEFT_READY) {
            rc = f->err;
            if (result && rc == 0)
                *result = f->value;
            break;
        }
        int64_t now = weft__mono_ns() / 1000000;
        if (now >= deadline) {
            rc = -ETIMEDOUT;
            break;
        }
        int64_t wait =
            deadline == WEFT_TIME_NEVER || deadline - now > INT64_MAX / 1000000
                ? -1
                : (deadline - now) * 1000000;
        weft__parker_park_timeout(p, wait);
    }
    weft_future_free(f);
    weft__parker_unref(p);
    return rc;
}

int weft_join_deadline(weft_task *t, void **result, int64_t deadline)
{
    if (weft_task_done(t))
        return weft_join(t, result);
    struct weft_worker *w = weft__tls_worker;
    if (!w || !w->current)
        return join_blocking_deadline(t, result, deadline);
    weft_scope s;
    weft_scope_enter(&s, deadline);
    int rc = weft_join(t, result);
    weft_scope_exit(&s);
    return rc;
}
