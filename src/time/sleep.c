/*
 * The leaf futures of time: sleep, timeout and interval ticks, each a
 * weft_timer (48 bytes, no allocation of its own) plus what it needs.
 *
 *   sleep    = future header + timer                    80 bytes
 *   timeout  = future header + inner future + timer     88 bytes
 *   interval = timer + period + policy (heap object)    64 bytes
 */
#include "time/time.h"

#include "rt/runtime.h"
#include "sched/sched.h"
#include "task/task.h"

/* A tick taken this late (ms) or later counts as missed (tokio's 5 ms). */
#define INTERVAL_SLACK_MS 5

/* ---- sleep ---- */

struct sleep_future {
    weft_future base;
    weft_timer timer;
};

static weft_poll sleep_poll(weft_future *f, weft_cx *cx)
{
    struct sleep_future *s = (struct sleep_future *)f;
    if (weft_timer_poll(&s->timer, cx) == WEFT_PENDING)
        return WEFT_PENDING;
    return weft_future_set(f, NULL, 0);
}

static void sleep_drop(weft_future *f)
{
    weft_timer_destroy(&((struct sleep_future *)f)->timer);
}

static const weft_future_ops sleep_ops = {
    .poll = sleep_poll,
    .drop = sleep_drop,
    .name = "sleep",
};

weft_future *weft_sleep_future_at(int64_t ms, const weft_site *site)
{
    struct sleep_future *s =
        (struct sleep_future *)weft_future_new_at(sizeof *s, &sleep_ops, site);
    if (s)
        weft_timer_init_after(&s->timer, ms);
    return s ? &s->base : NULL;
}

weft_future *weft_sleep_until_future_at(int64_t deadline, const weft_site *site)
{
    struct sleep_future *s =
        (struct sleep_future *)weft_future_new_at(sizeof *s, &sleep_ops, site);
    if (s)
        weft_timer_init(&s->timer, deadline);
    return s ? &s->base : NULL;
}

int weft_sleep(int64_t ms)
{
    struct sleep_future s;
    weft_future_init_at(&s.base, &sleep_ops, NULL);
    weft_timer_init_after(&s.timer, ms);
    return weft_await(&s.base, NULL);
}

int weft_sleep_until(int64_t deadline)
{
    struct sleep_future s;
    weft_future_init_at(&s.base, &sleep_ops, NULL);
    weft_timer_init(&s.timer, deadline);
    return weft_await(&s.base, NULL);
}

/* ---- timeout ---- */

struct timeout_future {
    weft_future base;
    weft_future *inner; /* NULL once finished with */
    weft_timer timer;
};

static void drop_inner(struct timeout_future *t)
{
    if (!t->inner)
        return;
    t->inner->flags |= FUT_POLLED; /* reported through the wrapper if at all */
    weft_future_free(t->inner);
    t->inner = NULL;
}

static weft_poll timeout_poll(weft_future *f, weft_cx *cx)
{
    struct timeout_future *t = (struct timeout_future *)f;
    if (weft_future_poll(t->inner, cx) == WEFT_READY) {
        void *value = t->inner->value;
        int err = t->inner->err;
        drop_inner(t);
        weft_timer_destroy(&t->timer);
        return weft_future_set(f, value, err);
    }
    if (weft_timer_poll(&t->timer, cx) == WEFT_PENDING)
        return WEFT_PENDING;
    drop_inner(t);
    return weft_future_set(f, NULL, -ETIMEDOUT);
}

static void timeout_drop(weft_future *f)
{
    struct timeout_future *t = (struct timeout_future *)f;
    drop_inner(t);
    weft_timer_destroy(&t->timer);
}

static const weft_future_ops timeout_ops = {
    .poll = timeout_poll,
    .drop = timeout_drop,
    .name = "timeout",
};

static struct timeout_future *timeout_new(weft_future *f, const weft_site *site)
{
    if (!f)
        return NULL;
    struct timeout_future *t = (struct timeout_future *)weft_future_new_at(
        sizeof *t, &timeout_ops, site);
    if (!t) {
        f->flags |= FUT_POLLED; /* not forgotten: we failed */
        weft_future_free(f);
        return NULL;
    }
    t->inner = f;
    return t;
}

weft_future *weft_timeout_at(weft_future *f, int64_t ms, const weft_site *site)
{
    struct timeout_future *t = timeout_new(f, site);
    if (!t)
        return NULL;
    weft_timer_init_after(&t->timer, ms);
    return &t->base;
}

weft_future *weft_timeout_until_at(weft_future *f, int64_t deadline,
                                   const weft_site *site)
{
    struct timeout_future *t = timeout_new(f, site);
    if (!t)
        return NULL;
    weft_timer_init(&t->timer, deadline);
    return &t->base;
}

/* ---- intervals ---- */

struct weft_interval {
    weft_timer timer; /* its deadline is the next tick's */
    int64_t period;
    weft_missed_tick policy;
};

int weft_interval_new_at(weft_interval **out, int64_t start, int64_t period_ms,
                         weft_missed_tick policy)
{
    *out = NULL;
    if (period_ms <= 0 ||
        (policy != WEFT_TICK_BURST && policy != WEFT_TICK_DELAY &&
         policy != WEFT_TICK_SKIP))
        return -EINVAL;
    weft_interval *iv = weft__zalloc(sizeof *iv);
    if (!iv)
        return -ENOMEM;
    weft_timer_init(&iv->timer, start);
    iv->period = period_ms;
    iv->policy = policy;
    *out = iv;
    return 0;
}

int weft_interval_new(weft_interval **out, int64_t period_ms,
                      weft_missed_tick policy)
{
    return weft_interval_new_at(out, weft_now(), period_ms, policy);
}

int64_t weft_interval_period(const weft_interval *iv)
{
    return iv->period;
}

void weft_interval_reset(weft_interval *iv)
{
    weft_timer_reset(&iv->timer, weft_deadline_after(iv->period));
}

void weft_interval_free(weft_interval *iv)
{
    if (!iv)
        return;
    weft_timer_destroy(&iv->timer);
    weft__free(iv, sizeof *iv);
}

/* The tick after the one due at `due`, taken at `now` (tokio's
 * MissedTickBehavior::next_timeout). */
static int64_t next_tick(const weft_interval *iv, int64_t due, int64_t now)
{
    if (now <= due + INTERVAL_SLACK_MS)
        return due + iv->period;
    switch (iv->policy) {
    case WEFT_TICK_DELAY:
        return now + iv->period;
    case WEFT_TICK_SKIP:
        return now + iv->period - (now - due) % iv->period;
    case WEFT_TICK_BURST:
    default:
        return due + iv->period;
    }
}

struct tick_future {
    weft_future base;
    weft_interval *iv;
};

static weft_poll tick_poll(weft_future *f, weft_cx *cx)
{
    weft_interval *iv = ((struct tick_future *)f)->iv;
    if (weft_timer_poll(&iv->timer, cx) == WEFT_PENDING)
        return WEFT_PENDING;
    int64_t due = weft_timer_deadline(&iv->timer);
    weft_timer_reset(&iv->timer, next_tick(iv, due, weft_now_precise()));
    return weft_future_set(f, (void *)(intptr_t)due, 0);
}

static void tick_drop(weft_future *f)
{
    /* Unfinished: keep the deadline, release the registration (and the
     * waker of a task that may no longer care). */
    struct tick_future *t = (struct tick_future *)f;
    if (!(f->flags & FUT_READY))
        weft_timer_destroy(&t->iv->timer);
}

static const weft_future_ops tick_ops = {
    .poll = tick_poll,
    .drop = tick_drop,
    .name = "interval tick",
};

weft_future *weft_interval_tick_future_at(weft_interval *iv,
                                          const weft_site *site)
{
    struct tick_future *t =
        (struct tick_future *)weft_future_new_at(sizeof *t, &tick_ops, site);
    if (t)
        t->iv = iv;
    return t ? &t->base : NULL;
}

int weft_interval_tick(weft_interval *iv, int64_t *due)
{
    struct tick_future t;
    weft_future_init_at(&t.base, &tick_ops, NULL);
    t.iv = iv;
    void *v = NULL;
    int rc = weft_await(&t.base, &v);
    if (rc == 0 && due)
        *due = (int64_t)(intptr_t)v;
    return rc;
}
