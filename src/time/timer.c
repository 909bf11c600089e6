/*
 * Timers: the clock of a runtime, one wheel per worker, registering,
 * resetting and cancelling timer entries from any thread, and firing them.
 *
 * Locking: each wheel has one mutex, taken by its own worker to register
 * (uncontended), by whoever fires it (its worker at maintenance, or the
 * worker parked in the driver) and by the owner of a timer that cancels or
 * resets it from another thread. Firing hands the waker out under the lock
 * (marking the entry TW_FIRED), collects up to FIRE_BATCH of them, and wakes
 * them with the lock dropped, as tokio's process_at_time does: the entry may
 * be freed the moment TW_FIRED is visible, the waker clone lives on in the
 * batch. No waker is woken under a wheel lock.
 *
 * Waking the driver: the parked driver publishes the tick it sleeps until
 * (sleep_until) and then reads every wheel's `next`; a registration stores
 * its wheel's `next` and then reads sleep_until. Both sides use seq_cst, so
 * either the driver sees the new timer or the registering thread sees the
 * deadline and unparks the driver (one futex wake, only for a timer nearer
 * than every other).
 */
#include "time/time.h"

#include <stdlib.h>
#include <time.h>

#include "rt/runtime.h"
#include "sched/driver.h"
#include "sched/park.h"
#include "sched/sched.h"
#include "task/task.h"

/* Wakers collected under a wheel lock before it is dropped to wake them. */
#define FIRE_BATCH 32
/* While the clock is paused and some worker is busy, the driver looks
 * again this often (ns) whether all are idle, to auto-advance. */
#define PAUSED_POLL_NS 1000000

#define NS_PER_MS 1000000

_Static_assert(sizeof(struct weft__timer) <= sizeof(weft_timer),
               "weft_timer is too small for a timer entry");
_Static_assert(_Alignof(struct weft__timer) <= _Alignof(weft_timer),
               "weft_timer is not aligned enough for a timer entry");

static inline struct weft__timer *entry(weft_timer *t)
{
    return (struct weft__timer *)(void *)t;
}

/* ---- the clock ---- */

int64_t weft__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t weft__clock_ns(struct weft_clock *c)
{
    int64_t f = atomic_load_explicit(&c->frozen, memory_order_acquire);
    if (f != CLOCK_RUNNING)
        return f;
    return weft__mono_ns() +
           atomic_load_explicit(&c->offset, memory_order_acquire);
}

static inline int64_t ceil_ms(int64_t ns)
{
    return (ns + NS_PER_MS - 1) / NS_PER_MS;
}

/* Deadlines outside [0, TW_NEVER) are "due" or "never". */
static inline uint64_t tick_of(int64_t deadline)
{
    if (deadline <= 0)
        return 0;
    if ((uint64_t)deadline >= TW_NEVER)
        return TW_NEVER;
    return (uint64_t)deadline;
}

static inline int64_t add_ms(int64_t a, int64_t ms)
{
    if (ms <= 0)
        return a + ms;
    if (a > WEFT_TIME_NEVER - ms || (uint64_t)(a + ms) >= TW_NEVER)
        return WEFT_TIME_NEVER;
    return a + ms;
}

static struct weft_time *time_of(struct weft_worker *w)
{
    return weft__driver_time(w->rt->driver);
}

/* Reads the runtime clock on `w` and remembers it for weft_now(). */
static int64_t refresh(struct weft_time *tm, struct weft_worker *w)
{
    int64_t ns = weft__clock_ns(&tm->clock);
    w->now_ms = ns / NS_PER_MS;
    return ns;
}

int64_t weft__time_now_ms(struct weft_worker *w)
{
    struct weft_time *tm = time_of(w);
    int64_t f = atomic_load_explicit(&tm->clock.frozen, memory_order_acquire);
    if (f != CLOCK_RUNNING)
        return f / NS_PER_MS;
    if (weft_unlikely(w->now_ms == 0))
        refresh(tm, w);
    return w->now_ms;
}

int64_t weft_now(void)
{
    struct weft_worker *w = weft__tls_worker;
    if (!w)
        return weft__mono_ns() / NS_PER_MS;
    return weft__time_now_ms(w);
}

int64_t weft_now_precise(void)
{
    struct weft_worker *w = weft__tls_worker;
    if (!w)
        return weft__mono_ns() / NS_PER_MS;
    return refresh(time_of(w), w) / NS_PER_MS;
}

int64_t weft_deadline_after(int64_t ms)
{
    struct weft_worker *w = weft__tls_worker;
    int64_t ns = w ? refresh(time_of(w), w) : weft__mono_ns();
    return add_ms(ceil_ms(ns), ms);
}

/* ---- wheels ---- */

static struct weft_wheel *wheel_create(struct weft_worker *w)
{
    struct weft_time *tm = time_of(w);
    struct weft_wheel *wh = calloc(1, sizeof *wh);
    WEFT_CHECK(wh, "out of memory for a timing wheel");
    pthread_mutex_init(&wh->lock, NULL);
    wh->time = tm;
    atomic_init(&wh->next, UINT64_MAX);
    weft__wheel_init(&wh->core, (uint64_t)(refresh(tm, w) / NS_PER_MS));
    pthread_mutex_lock(&tm->wheels_lock);
    wh->next_wheel = atomic_load_explicit(&tm->wheels, memory_order_relaxed);
    atomic_store_explicit(&tm->wheels, wh, memory_order_release);
    pthread_mutex_unlock(&tm->wheels_lock);
    w->wheel = wh;
    return wh;
}

static inline struct weft_wheel *wheel_of(struct weft_worker *w)
{
    if (weft_likely(w->wheel))
        return w->wheel;
    return wheel_create(w);
}

static inline struct weft_wheel *first_wheel(struct weft_time *tm)
{
    return atomic_load_explicit(&tm->wheels, memory_order_acquire);
}

/* Lowers the wheel's published next tick to `when`. Under its lock. */
static inline void lower_next(struct weft_wheel *wh, uint64_t when)
{
    if (when < atomic_load_explicit(&wh->next, memory_order_relaxed))
        atomic_store_explicit(&wh->next, when, memory_order_seq_cst);
}

/* After registering a timer for `when`: wake the driver if it sleeps past
 * it. */
static inline void poke_driver(struct weft_time *tm, uint64_t when)
{
    if (when < atomic_load_explicit(&tm->sleep_until, memory_order_seq_cst))
        weft__parker_unpark(tm->parker);
}

/* The earliest tick any wheel needs attention at (UINT64_MAX: none). */
static uint64_t earliest(struct weft_time *tm)
{
    uint64_t min = UINT64_MAX;
    for (struct weft_wheel *wh = first_wheel(tm); wh; wh = wh->next_wheel) {
        uint64_t n = atomic_load_explicit(&wh->next, memory_order_seq_cst);
        if (n < min)
            min = n;
    }
    return min;
}

static void wake_batch(weft_waker *batch, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        weft_waker_wake(&batch[i]);
}

/* Fires every timer of `wh` due by tick `now`. With `try`, gives up if the
 * lock is taken (someone else is at it). Returns how many fired. */
static size_t fire_wheel(struct weft_wheel *wh, uint64_t now, bool try)
{
    if (atomic_load_explicit(&wh->next, memory_order_acquire) > now)
        return 0;
    if (try) {
        if (pthread_mutex_trylock(&wh->lock) != 0)
            return 0;
    } else {
        pthread_mutex_lock(&wh->lock);
    }
    weft_waker batch[FIRE_BATCH];
    unsigned n = 0;
    size_t fired = 0;
    struct weft__timer *t;
    while ((t = weft__wheel_poll(&wh->core, now))) {
        uint64_t when =
            TW_VALUE(atomic_load_explicit(&t->word, memory_order_relaxed));
        batch[n++] = t->waker;
        /* From here on the entry is its owner's again: do not touch it. */
        atomic_store_explicit(&t->word, TW_WORD(when, TW_FIRED),
                              memory_order_release);
        fired++;
        if (n == FIRE_BATCH) {
            pthread_mutex_unlock(&wh->lock);
            wake_batch(batch, n);
            n = 0;
            pthread_mutex_lock(&wh->lock);
        }
    }
    atomic_store_explicit(&wh->next, weft__wheel_next(&wh->core),
                          memory_order_seq_cst);
    pthread_mutex_unlock(&wh->lock);
    wake_batch(batch, n);
    return fired;
}

/* Fires what is due by `now` on every wheel; `self` (may be NULL) is
 * locked for sure, the others only if `try_others` fails to find them
 * busy. */
static size_t fire_all(struct weft_time *tm, uint64_t now,
                       struct weft_wheel *self, bool try_others)
{
    size_t fired = 0;
    for (struct weft_wheel *wh = first_wheel(tm); wh; wh = wh->next_wheel)
        fired += fire_wheel(wh, now, wh != self && try_others);
    return fired;
}

/* ---- timer entries ---- */

static inline uint64_t load_word(struct weft__timer *t, memory_order mo)
{
    return atomic_load_explicit(&t->word, mo);
}

static inline void store_word(struct weft__timer *t, uint64_t v)
{
    atomic_store_explicit(&t->word, v, memory_order_release);
}

/* Links `t` into the wheel of worker `w` for tick `when`. */
static weft_poll arm(struct weft__timer *t, struct weft_worker *w,
                     uint64_t when, const weft_waker *waker)
{
    struct weft_wheel *wh = wheel_of(w);
    weft_waker clone = weft_waker_clone(waker);
    pthread_mutex_lock(&wh->lock);
    if (!weft__wheel_insert(&wh->core, t, when)) {
        /* The wheel has been processed past it: due (see the FIRED path
         * of weft_timer_poll for the clock). */
        pthread_mutex_unlock(&wh->lock);
        weft_waker_drop(&clone);
        store_word(t, TW_WORD(when, TW_FIRED));
        if ((int64_t)when > w->now_ms)
            w->now_ms = (int64_t)when;
        return WEFT_READY;
    }
    t->wheel = wh;
    t->waker = clone;
    store_word(t, TW_WORD(when, TW_LINKED));
    lower_next(wh, when);
    pthread_mutex_unlock(&wh->lock);
    poke_driver(wh->time, when);
    return WEFT_PENDING;
}

/* `t` is linked, with a waker that will not wake `waker`'s target: swap. */
static weft_poll rewake(struct weft__timer *t, const weft_waker *waker)
{
    weft_waker clone = weft_waker_clone(waker), old = {0};
    weft_poll r = WEFT_READY;
    pthread_mutex_lock(&t->wheel->lock);
    if (load_word(t, memory_order_relaxed) & TW_LINKED) {
        old = t->waker;
        t->waker = clone;
        clone.vtable = NULL;
        r = WEFT_PENDING;
    }
    /* else it fired meanwhile (only we unlink it otherwise) */
    pthread_mutex_unlock(&t->wheel->lock);
    weft_waker_drop(&old);
    weft_waker_drop(&clone);
    return r;
}

weft_poll weft_timer_poll(weft_timer *pub, weft_cx *cx)
{
    struct weft__timer *t = entry(pub);
    uint64_t word = load_word(t, memory_order_acquire);
    if (word & TW_FIRED) {
        /* The clock has reached the deadline: let this worker's weft_now()
         * say so too, whichever worker fired it. */
        struct weft_worker *w = weft__tls_worker;
        if (w && (int64_t)TW_VALUE(word) > w->now_ms)
            w->now_ms = (int64_t)TW_VALUE(word);
        return WEFT_READY;
    }
    if (word & TW_LINKED) {
        /* t->waker is ours to read: only we write it. */
        if (weft_waker_will_wake(&t->waker, &cx->waker))
            return WEFT_PENDING;
        return rewake(t, &cx->waker);
    }
    struct weft_worker *w = weft__tls_worker;
    WEFT_CHECK(w, "a weft timer was polled outside a runtime's worker");
    uint64_t when = TW_VALUE(word);
    if (word & TW_RELATIVE) {
        when = tick_of(weft_deadline_after((int64_t)when));
        store_word(t, TW_WORD(when, 0));
    }
    if (when >= TW_NEVER)
        return WEFT_PENDING; /* nothing will ever wake it but cancellation */
    if ((int64_t)when <= weft__time_now_ms(w)) {
        store_word(t, TW_WORD(when, TW_FIRED));
        return WEFT_READY;
    }
    return arm(t, w, when, &cx->waker);
}

void weft_timer_init(weft_timer *pub, int64_t deadline)
{
    struct weft__timer *t = entry(pub);
    t->link.next = t->link.prev = NULL;
    t->wheel = NULL;
    t->waker.vtable = NULL;
    t->waker.data = NULL;
    atomic_init(&t->word, TW_WORD(tick_of(deadline), 0));
}

void weft_timer_init_after(weft_timer *pub, int64_t ms)
{
    weft_timer_init(pub, 0);
    if (ms > 0)
        atomic_init(&entry(pub)->word,
                    TW_WORD(ms < (int64_t)TW_NEVER ? (uint64_t)ms : TW_NEVER,
                            TW_RELATIVE));
}

int64_t weft_timer_deadline(const weft_timer *pub)
{
    uint64_t word = load_word(entry((weft_timer *)pub), memory_order_acquire);
    if ((word & TW_RELATIVE) || TW_VALUE(word) >= TW_NEVER)
        return WEFT_TIME_NEVER;
    return (int64_t)TW_VALUE(word);
}

/* Unlinks a linked `t` under its wheel's lock; returns its waker (to drop
 * or wake outside the lock), or a no-op waker if it fired meanwhile. */
static weft_waker unlink_locked(struct weft__timer *t, uint64_t *word)
{
    weft_waker w = {0};
    *word = load_word(t, memory_order_relaxed);
    if (*word & TW_LINKED) {
        weft__wheel_remove(&t->wheel->core, t);
        w = t->waker;
        t->waker.vtable = NULL;
    }
    return w;
}

void weft_timer_reset(weft_timer *pub, int64_t deadline)
{
    struct weft__timer *t = entry(pub);
    uint64_t when = tick_of(deadline);
    if (load_word(t, memory_order_acquire) & TW_LINKED) {
        struct weft_wheel *wh = t->wheel;
        uint64_t word;
        pthread_mutex_lock(&wh->lock);
        weft_waker w = unlink_locked(t, &word);
        if (word & TW_LINKED) {
            if (when < TW_NEVER && weft__wheel_insert(&wh->core, t, when)) {
                t->waker = w;
                store_word(t, TW_WORD(when, TW_LINKED));
                lower_next(wh, when);
                pthread_mutex_unlock(&wh->lock);
                poke_driver(wh->time, when);
                return;
            }
            bool due = when < TW_NEVER;
            store_word(t, TW_WORD(when, due ? TW_FIRED : 0));
            pthread_mutex_unlock(&wh->lock);
            if (due)
                weft_waker_wake(&w);
            else
                weft_waker_drop(&w);
            return;
        }
        pthread_mutex_unlock(&wh->lock); /* it fired meanwhile */
    }
    store_word(t, TW_WORD(when, 0));
}

void weft_timer_destroy(weft_timer *pub)
{
    struct weft__timer *t = entry(pub);
    uint64_t word = load_word(t, memory_order_acquire);
    if (!(word & TW_LINKED))
        return;
    pthread_mutex_lock(&t->wheel->lock);
    weft_waker w = unlink_locked(t, &word);
    if (word & TW_LINKED)
        store_word(t, TW_WORD(TW_VALUE(word), 0));
    pthread_mutex_unlock(&t->wheel->lock);
    weft_waker_drop(&w);
}

/* ---- the time driver ---- */

int weft__time_init(struct weft_time *tm, struct weft_parker *parker)
{
    atomic_init(&tm->clock.frozen, CLOCK_RUNNING);
    atomic_init(&tm->clock.offset, 0);
    atomic_init(&tm->wheels, NULL);
    atomic_init(&tm->sleep_until, NOT_SLEEPING);
    tm->parker = parker;
    return pthread_mutex_init(&tm->wheels_lock, NULL) == 0 ? 0 : -ENOMEM;
}

void weft__time_fini(struct weft_time *tm)
{
    struct weft_wheel *wh = first_wheel(tm);
    while (wh) {
        struct weft_wheel *next = wh->next_wheel;
        struct weft__timer *t;
        pthread_mutex_lock(&wh->lock);
        while ((t = weft__wheel_take_any(&wh->core))) {
            /* A timer nobody cancelled (its owner outlives the runtime):
             * release what it holds; it reads as fired from now on. */
            uint64_t when = TW_VALUE(load_word(t, memory_order_relaxed));
            weft_waker w = t->waker;
            store_word(t, TW_WORD(when, TW_FIRED));
            weft_waker_drop(&w);
        }
        pthread_mutex_unlock(&wh->lock);
        pthread_mutex_destroy(&wh->lock);
        free(wh);
        wh = next;
    }
    pthread_mutex_destroy(&tm->wheels_lock);
}

size_t weft__time_registered(struct weft_time *tm)
{
    size_t n = 0;
    for (struct weft_wheel *wh = first_wheel(tm); wh; wh = wh->next_wheel) {
        pthread_mutex_lock(&wh->lock);
        n += wh->core.count;
        pthread_mutex_unlock(&wh->lock);
    }
    return n;
}

/* Moves a paused clock forward to `ns` (never back). */
static void clock_jump(struct weft_clock *c, int64_t ns)
{
    int64_t f = atomic_load_explicit(&c->frozen, memory_order_acquire);
    while (f != CLOCK_RUNNING && f < ns &&
           !atomic_compare_exchange_weak_explicit(
               &c->frozen, &f, ns, memory_order_acq_rel, memory_order_acquire))
        ;
}

static int64_t min_timeout(int64_t a, int64_t b)
{
    if (a < 0)
        return b;
    if (b < 0)
        return a;
    return a < b ? a : b;
}

/* Parking while paused: when every task is idle and nothing is pending,
 * jump to the next deadline and fire it instead of sleeping. */
static int64_t park_paused(struct weft_time *tm, struct weft_worker *w,
                           int64_t timeout_ns, bool all_idle)
{
    if (!all_idle)
        return min_timeout(timeout_ns, PAUSED_POLL_NS);
    /* An unpark already pending means work is on its way: no jump. */
    if (weft__parker_park_timeout(tm->parker, 0))
        return 0;
    uint64_t next = earliest(tm);
    if (next == UINT64_MAX)
        return timeout_ns; /* no timer at all: wait to be woken */
    clock_jump(&tm->clock, (int64_t)next * NS_PER_MS);
    fire_all(tm, (uint64_t)(refresh(tm, w) / NS_PER_MS), w->wheel, false);
    return 0;
}

int64_t weft__time_park_begin(struct weft_time *tm, struct weft_worker *w,
                              int64_t timeout_ns, bool all_idle)
{
    uint64_t now = (uint64_t)(refresh(tm, w) / NS_PER_MS);
    if (fire_all(tm, now, w->wheel, false) || timeout_ns == 0)
        return 0;
    if (weft__clock_paused(&tm->clock))
        return park_paused(tm, w, timeout_ns, all_idle);
    uint64_t next = earliest(tm);
    atomic_store_explicit(&tm->sleep_until, next, memory_order_seq_cst);
    uint64_t again = earliest(tm);
    if (again < next) {
        /* Registered meanwhile: whoever registered saw the old value and
         * may have unparked us already, which is harmless. */
        next = again;
        atomic_store_explicit(&tm->sleep_until, next, memory_order_seq_cst);
    }
    if (next == UINT64_MAX)
        return timeout_ns;
    int64_t wait = (int64_t)next * NS_PER_MS - weft__clock_ns(&tm->clock);
    return min_timeout(timeout_ns, wait > 0 ? wait : 0);
}

void weft__time_park_end(struct weft_time *tm, struct weft_worker *w)
{
    atomic_store_explicit(&tm->sleep_until, NOT_SLEEPING, memory_order_seq_cst);
    uint64_t now = (uint64_t)(refresh(tm, w) / NS_PER_MS);
    fire_all(tm, now, w->wheel, false);
}

void weft__time_maintain(struct weft_time *tm, struct weft_worker *w)
{
    uint64_t now = (uint64_t)(refresh(tm, w) / NS_PER_MS);
    if (weft__clock_paused(&tm->clock))
        return; /* paused time moves only by advancing */
    fire_all(tm, now, w->wheel, true);
}

/* ---- paused time ---- */

static struct weft_time *caller_time(void)
{
    struct weft_worker *w = weft__tls_worker;
    return w && w->current ? time_of(w) : NULL;
}

int weft_time_pause(void)
{
    struct weft_time *tm = caller_time();
    if (!tm)
        return -EPERM;
    struct weft_clock *c = &tm->clock;
    int64_t expect = CLOCK_RUNNING;
    int64_t ns = ceil_ms(weft__clock_ns(c)) * NS_PER_MS;
    atomic_compare_exchange_strong_explicit(
        &c->frozen, &expect, ns, memory_order_acq_rel, memory_order_acquire);
    return 0;
}

int weft_time_resume(void)
{
    struct weft_time *tm = caller_time();
    if (!tm)
        return -EPERM;
    struct weft_clock *c = &tm->clock;
    int64_t f = atomic_load_explicit(&c->frozen, memory_order_acquire);
    while (f != CLOCK_RUNNING) {
        atomic_store_explicit(&c->offset, f - weft__mono_ns(),
                              memory_order_release);
        if (atomic_compare_exchange_weak_explicit(&c->frozen, &f, CLOCK_RUNNING,
                                                  memory_order_acq_rel,
                                                  memory_order_acquire))
            break;
    }
    weft__parker_unpark(tm->parker); /* re-plan its sleep in real time */
    return 0;
}

int weft_time_advance(int64_t ms)
{
    struct weft_worker *w = weft__tls_worker;
    struct weft_time *tm = caller_time();
    if (!tm)
        return -EPERM;
    struct weft_clock *c = &tm->clock;
    if (ms < 0)
        return -EINVAL;
    int64_t f = atomic_load_explicit(&c->frozen, memory_order_acquire);
    for (;;) {
        if (f == CLOCK_RUNNING)
            return -EINVAL;
        int64_t to = f + ms * NS_PER_MS;
        if (ms > (INT64_MAX - f) / NS_PER_MS)
            to = INT64_MAX - NS_PER_MS;
        if (atomic_compare_exchange_weak_explicit(
                &c->frozen, &f, to, memory_order_acq_rel, memory_order_acquire))
            break;
    }
    fire_all(tm, (uint64_t)(refresh(tm, w) / NS_PER_MS), w->wheel, false);
    if (weft__coro_scope_slot())
        (void)weft_yield(); /* let what just fired run first */
    return 0;
}

int weft_time_paused(void)
{
    struct weft_time *tm = caller_time();
    return tm && weft__clock_paused(&tm->clock);
}
