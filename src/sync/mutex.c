/*
 * The async mutex and the read-write lock.
 *
 * Both hand the lock over instead of releasing it: an unlock with waiters
 * marks the oldest as the new holder (under the lock) and wakes it, so a
 * task that arrives later cannot take the lock first (no barging, no
 * starvation; Go's sync.Mutex enters this "starvation mode" only after a
 * waiter has waited 1 ms, tokio's Mutex always works this way). A lock
 * future dropped after it was handed the lock unlocks, passing it on.
 */
#include "sync/sync.h"

/* ---- mutex ---- */

struct mutex_impl {
    struct sync_lock lock;
    uint32_t locked;
    struct waitq q;
};

_Static_assert(sizeof(struct mutex_impl) <= sizeof(weft_mutex),
               "weft_mutex too small");

static inline struct mutex_impl *mx(weft_mutex *m)
{
    return (struct mutex_impl *)m;
}

void weft_mutex_init(weft_mutex *m)
{
    memset(m, 0, sizeof *m);
}

int weft_mutex_destroy(weft_mutex *m)
{
    struct mutex_impl *x = mx(m);
    sync_lock(&x->lock);
    bool busy = x->locked || x->q.head;
    sync_unlock(&x->lock);
    return busy ? -EBUSY : 0;
}

void weft_mutex_unlock(weft_mutex *m)
{
    struct mutex_impl *x = mx(m);
    struct wake_list wl = {NULL};
    sync_lock(&x->lock);
    WEFT_CHECK(x->locked, "unlocking a weft_mutex that is not locked");
    if (!waitq_claim_one(&x->q, 0, &wl))
        x->locked = 0; /* else it stays locked: the waiter holds it now */
    sync_unlock(&x->lock);
    wake_list_run(&wl);
}

int weft_mutex_try_lock(weft_mutex *m)
{
    struct mutex_impl *x = mx(m);
    sync_lock(&x->lock);
    int rc = x->locked ? -EBUSY : 0;
    x->locked = 1;
    sync_unlock(&x->lock);
    return rc;
}

static weft_poll lock_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct mutex_impl *x = op->obj;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&x->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w); /* handed over: we hold it */
        budget_use(cx);
        return weft_future_set(f, NULL, 0);
    }
    if (budget_spent(cx))
        return WEFT_PENDING;
    sync_lock(&x->lock);
    if (x->locked) {
        waiter_enqueue(&x->q, &op->w, cx);
        sync_unlock(&x->lock);
        return WEFT_PENDING;
    }
    x->locked = 1;
    sync_unlock(&x->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, 0);
}

static void lock_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct mutex_impl *x = op->obj;
    if (waiter_cancel(&x->lock, &x->q, &op->w) != W_DONE)
        return;
    waiter_reset(&op->w);
    weft_mutex_unlock((weft_mutex *)x); /* pass it on */
}

static const weft_future_ops lock_ops = {
    .poll = lock_poll,
    .drop = lock_drop,
    .name = "mutex_lock",
};

int weft_mutex_lock(weft_mutex *m)
{
    struct sync_op op;
    sync_op_init(&op, &lock_ops, NULL, m, NULL, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_mutex_lock_blocking(weft_mutex *m)
{
    struct sync_op op;
    sync_op_init(&op, &lock_ops, NULL, m, NULL, 0);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_mutex_lock_future_at(weft_mutex *m, const weft_site *site)
{
    return weft__sync_op_new(0, &lock_ops, site, m, NULL, 0);
}

weft_future *weft_mutex_lock_init_at(weft_sync_op *op, weft_mutex *m,
                                     const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &lock_ops, site, m, NULL, 0);
}

/* ---- read-write lock ---- */

struct rwlock_impl {
    struct sync_lock lock;
    uint32_t writer; /* a writer holds it */
    size_t readers;  /* readers holding it */
    struct waitq q;  /* waiter.arg: 1 for a writer, 0 for a reader */
};

_Static_assert(sizeof(struct rwlock_impl) <= sizeof(weft_rwlock),
               "weft_rwlock too small");

static inline struct rwlock_impl *rwx(weft_rwlock *rw)
{
    return (struct rwlock_impl *)rw;
}

void weft_rwlock_init(weft_rwlock *rw)
{
    memset(rw, 0, sizeof *rw);
}

int weft_rwlock_destroy(weft_rwlock *rw)
{
    struct rwlock_impl *x = rwx(rw);
    sync_lock(&x->lock);
    bool busy = x->writer || x->readers || x->q.head;
    sync_unlock(&x->lock);
    return busy ? -EBUSY : 0;
}

/* Grants the lock to waiters at the head that can have it now: one writer,
 * or every reader up to the next writer. */
static void rw_grant(struct rwlock_impl *x, struct wake_list *wl)
{
    struct waiter *w;
    while ((w = x->q.head)) {
        if (w->arg) {
            if (x->writer || x->readers)
                return;
            x->writer = 1;
            waitq_claim_one(&x->q, 0, wl);
            return;
        }
        if (x->writer)
            return;
        x->readers++;
        waitq_claim_one(&x->q, 0, wl);
    }
}

void weft_rwlock_unlock(weft_rwlock *rw)
{
    struct rwlock_impl *x = rwx(rw);
    struct wake_list wl = {NULL};
    sync_lock(&x->lock);
    if (x->writer) {
        x->writer = 0;
    } else {
        WEFT_CHECK(x->readers > 0, "unlocking a weft_rwlock that is not held");
        x->readers--;
    }
    rw_grant(x, &wl);
    sync_unlock(&x->lock);
    wake_list_run(&wl);
}

/* Can a new arrival of this kind take the lock now? Only if nobody waits:
 * arrivals queue behind waiters. */
static inline bool rw_free_for(struct rwlock_impl *x, bool write)
{
    if (x->writer || x->q.head)
        return false;
    return !write || !x->readers;
}

static inline void rw_take(struct rwlock_impl *x, bool write)
{
    if (write)
        x->writer = 1;
    else
        x->readers++;
}

static int rw_try(weft_rwlock *rw, bool write)
{
    struct rwlock_impl *x = rwx(rw);
    sync_lock(&x->lock);
    bool ok = rw_free_for(x, write);
    if (ok)
        rw_take(x, write);
    sync_unlock(&x->lock);
    return ok ? 0 : -EBUSY;
}

int weft_rwlock_try_read(weft_rwlock *rw)
{
    return rw_try(rw, false);
}

int weft_rwlock_try_write(weft_rwlock *rw)
{
    return rw_try(rw, true);
}

static weft_poll rw_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct rwlock_impl *x = op->obj;
    bool write = op->w.arg != 0;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&x->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w); /* granted */
        budget_use(cx);
        return weft_future_set(f, NULL, 0);
    }
    if (budget_spent(cx))
        return WEFT_PENDING;
    sync_lock(&x->lock);
    if (!rw_free_for(x, write)) {
        waiter_enqueue(&x->q, &op->w, cx);
        sync_unlock(&x->lock);
        return WEFT_PENDING;
    }
    rw_take(x, write);
    sync_unlock(&x->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, 0);
}

static void rw_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct rwlock_impl *x = op->obj;
    struct wake_list wl = {NULL};
    uint32_t s = atomic_load_explicit(&op->w.state, memory_order_acquire);
    if (s == W_IDLE)
        return;
    if (s == W_QUEUED) {
        sync_lock(&x->lock);
        if (atomic_load_explicit(&op->w.state, memory_order_relaxed) ==
            W_QUEUED) {
            /* A waiting writer at the head may have held back readers. */
            waitq_remove(&x->q, &op->w);
            waiter_reset(&op->w);
            rw_grant(x, &wl);
            sync_unlock(&x->lock);
            wake_list_run(&wl);
            return;
        }
        sync_unlock(&x->lock);
    }
    waiter_state(&op->w);
    waiter_reset(&op->w);
    weft_rwlock_unlock((weft_rwlock *)x); /* granted and unused */
}

static const weft_future_ops rw_ops = {
    .poll = rw_poll,
    .drop = rw_drop,
    .name = "rwlock",
};

int weft_rwlock_read(weft_rwlock *rw)
{
    struct sync_op op;
    sync_op_init(&op, &rw_ops, NULL, rw, NULL, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_rwlock_write(weft_rwlock *rw)
{
    struct sync_op op;
    sync_op_init(&op, &rw_ops, NULL, rw, NULL, 1);
    return weft__sync_run(&op.base, NULL);
}

int weft_rwlock_read_blocking(weft_rwlock *rw)
{
    struct sync_op op;
    sync_op_init(&op, &rw_ops, NULL, rw, NULL, 0);
    return weft__sync_block(&op.base, NULL);
}

int weft_rwlock_write_blocking(weft_rwlock *rw)
{
    struct sync_op op;
    sync_op_init(&op, &rw_ops, NULL, rw, NULL, 1);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_rwlock_read_future_at(weft_rwlock *rw, const weft_site *site)
{
    return weft__sync_op_new(0, &rw_ops, site, rw, NULL, 0);
}

weft_future *weft_rwlock_write_future_at(weft_rwlock *rw, const weft_site *site)
{
    return weft__sync_op_new(0, &rw_ops, site, rw, NULL, 1);
}

weft_future *weft_rwlock_read_init_at(weft_sync_op *op, weft_rwlock *rw,
                                      const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &rw_ops, site, rw, NULL, 0);
}

weft_future *weft_rwlock_write_init_at(weft_sync_op *op, weft_rwlock *rw,
                                       const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &rw_ops, site, rw, NULL, 1);
}

int weft_mutex_lock_dl(weft_mutex *m, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &lock_ops, NULL, m, NULL, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}

int weft_rwlock_read_dl(weft_rwlock *rw, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &rw_ops, NULL, rw, NULL, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}

int weft_rwlock_write_dl(weft_rwlock *rw, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &rw_ops, NULL, rw, NULL, 1);
    return weft_await_deadline(&op.base, NULL, deadline);
}
