/*
 * Semaphore, notify and barrier: counters with a FIFO wait queue.
 */
#include "sync/sync.h"

/* Takes `w` off `q` if it is still queued and then runs `regrant` under the
 * same lock (the node may have been holding back the waiters behind it).
 * Returns IDLE if it was taken off, DONE if a completer got it first. */
static uint32_t
cancel_and_regrant(struct sync_lock *l, struct waitq *q, struct waiter *w,
                   void (*regrant)(void *obj, struct wake_list *wl), void *obj)
{
    uint32_t s = atomic_load_explicit(&w->state, memory_order_acquire);
    if (s == W_IDLE)
        return W_IDLE;
    if (s == W_QUEUED) {
        struct wake_list wl = {NULL};
        sync_lock(l);
        if (atomic_load_explicit(&w->state, memory_order_relaxed) == W_QUEUED) {
            waitq_remove(q, w);
            waiter_reset(w);
            if (regrant)
                regrant(obj, &wl);
            sync_unlock(l);
            wake_list_run(&wl);
            return W_IDLE;
        }
        sync_unlock(l);
    }
    s = waiter_state(w);
    waiter_reset(w);
    return s;
}

/* ======================================================================== */
/* Semaphore                                                                */
/* ======================================================================== */

struct sem_impl {
    struct sync_lock lock;
    uint32_t pad_;
    size_t permits;
    struct waitq q; /* waiter.arg: permits wanted */
};

_Static_assert(sizeof(struct sem_impl) <= sizeof(weft_sem),
               "weft_sem too small");

static inline struct sem_impl *semx(weft_sem *s)
{
    return (struct sem_impl *)s;
}

void weft_sem_init(weft_sem *s, size_t permits)
{
    memset(s, 0, sizeof *s);
    semx(s)->permits = permits;
}

int weft_sem_destroy(weft_sem *s)
{
    struct sem_impl *x = semx(s);
    sync_lock(&x->lock);
    bool busy = x->q.head != NULL;
    sync_unlock(&x->lock);
    return busy ? -EBUSY : 0;
}

/* Grants permits to waiters in order while the head's request fits. */
static void sem_grant(void *obj, struct wake_list *wl)
{
    struct sem_impl *x = obj;
    struct waiter *w;
    while ((w = x->q.head) && x->permits >= w->arg) {
        x->permits -= w->arg;
        waitq_claim_one(&x->q, 0, wl);
    }
}

void weft_sem_release(weft_sem *s, size_t n)
{
    struct sem_impl *x = semx(s);
    struct wake_list wl = {NULL};
    sync_lock(&x->lock);
    WEFT_CHECK(x->permits <= SIZE_MAX - n, "semaphore permit overflow");
    x->permits += n;
    sem_grant(x, &wl);
    sync_unlock(&x->lock);
    wake_list_run(&wl);
}

size_t weft_sem_available(weft_sem *s)
{
    struct sem_impl *x = semx(s);
    sync_lock(&x->lock);
    size_t n = x->permits;
    sync_unlock(&x->lock);
    return n;
}

/* Under the lock: takes n permits if nobody waits and they are there. */
static inline bool sem_take(struct sem_impl *x, size_t n)
{
    if (n == 0)
        return true;
    if (x->q.head || x->permits < n)
        return false;
    x->permits -= n;
    return true;
}

int weft_sem_try_acquire(weft_sem *s, size_t n)
{
    struct sem_impl *x = semx(s);
    sync_lock(&x->lock);
    bool ok = sem_take(x, n);
    sync_unlock(&x->lock);
    return ok ? 0 : -EAGAIN;
}

static weft_poll acquire_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct sem_impl *x = op->obj;
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
    if (!sem_take(x, op->w.arg)) {
        waiter_enqueue(&x->q, &op->w, cx);
        sync_unlock(&x->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&x->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, 0);
}

static void acquire_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct sem_impl *x = op->obj;
    if (cancel_and_regrant(&x->lock, &x->q, &op->w, sem_grant, x) == W_DONE)
        weft_sem_release((weft_sem *)x, op->w.arg); /* granted and unused */
}

static const weft_future_ops acquire_ops = {
    .poll = acquire_poll,
    .drop = acquire_drop,
    .name = "sem_acquire",
};

int weft_sem_acquire(weft_sem *s, size_t n)
{
    struct sync_op op;
    sync_op_init(&op, &acquire_ops, NULL, s, NULL, n);
    return weft__sync_run(&op.base, NULL);
}

int weft_sem_acquire_blocking(weft_sem *s, size_t n)
{
    struct sync_op op;
    sync_op_init(&op, &acquire_ops, NULL, s, NULL, n);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_sem_acquire_future_at(weft_sem *s, size_t n,
                                        const weft_site *site)
{
    return weft__sync_op_new(0, &acquire_ops, site, s, NULL, n);
}

weft_future *weft_sem_acquire_init_at(weft_sync_op *op, weft_sem *s, size_t n,
                                      const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &acquire_ops, site, s, NULL, n);
}

/* ======================================================================== */
/* Notify                                                                   */
/* ======================================================================== */

enum { NOTIFIED_ONE = 1, NOTIFIED_ALL = 2 };

struct notify_impl {
    struct sync_lock lock;
    uint32_t permit;
    struct waitq q;
};

_Static_assert(sizeof(struct notify_impl) <= sizeof(weft_notify),
               "weft_notify too small");

static inline struct notify_impl *nx(weft_notify *n)
{
    return (struct notify_impl *)n;
}

void weft_notify_init(weft_notify *n)
{
    memset(n, 0, sizeof *n);
}

int weft_notify_destroy(weft_notify *n)
{
    struct notify_impl *x = nx(n);
    sync_lock(&x->lock);
    bool busy = x->q.head != NULL;
    sync_unlock(&x->lock);
    return busy ? -EBUSY : 0;
}

void weft_notify_one(weft_notify *n)
{
    struct notify_impl *x = nx(n);
    struct wake_list wl = {NULL};
    sync_lock(&x->lock);
    if (!waitq_claim_one(&x->q, NOTIFIED_ONE, &wl))
        x->permit = 1;
    sync_unlock(&x->lock);
    wake_list_run(&wl);
}

void weft_notify_all(weft_notify *n)
{
    struct notify_impl *x = nx(n);
    struct wake_list wl = {NULL};
    sync_lock(&x->lock);
    waitq_claim_all(&x->q, NOTIFIED_ALL, &wl);
    sync_unlock(&x->lock);
    wake_list_run(&wl);
}

int weft_notify_try_wait(weft_notify *n)
{
    struct notify_impl *x = nx(n);
    sync_lock(&x->lock);
    int rc = x->permit ? 0 : -EAGAIN;
    x->permit = 0;
    sync_unlock(&x->lock);
    return rc;
}

static weft_poll wait_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct notify_impl *x = op->obj;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&x->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w);
        return weft_future_set(f, NULL, 0);
    }
    sync_lock(&x->lock);
    if (!x->permit) {
        waiter_enqueue(&x->q, &op->w, cx);
        sync_unlock(&x->lock);
        return WEFT_PENDING;
    }
    x->permit = 0;
    sync_unlock(&x->lock);
    return weft_future_set(f, NULL, 0);
}

static void wait_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct notify_impl *x = op->obj;
    if (waiter_cancel(&x->lock, &x->q, &op->w) != W_DONE)
        return;
    waiter_reset(&op->w);
    if (op->w.result == NOTIFIED_ONE)
        weft_notify_one((weft_notify *)x); /* pass the notification on */
}

static const weft_future_ops wait_ops = {
    .poll = wait_poll,
    .drop = wait_drop,
    .name = "notify_wait",
};

int weft_notify_wait(weft_notify *n)
{
    struct sync_op op;
    sync_op_init(&op, &wait_ops, NULL, n, NULL, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_notify_wait_blocking(weft_notify *n)
{
    struct sync_op op;
    sync_op_init(&op, &wait_ops, NULL, n, NULL, 0);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_notify_wait_future_at(weft_notify *n, const weft_site *site)
{
    return weft__sync_op_new(0, &wait_ops, site, n, NULL, 0);
}

weft_future *weft_notify_wait_init_at(weft_sync_op *op, weft_notify *n,
                                      const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &wait_ops, site, n, NULL, 0);
}

/* ======================================================================== */
/* Barrier                                                                  */
/* ======================================================================== */

struct barrier_impl {
    struct sync_lock lock;
    uint32_t n;       /* parties per round */
    uint32_t arrived; /* in the current round */
    uint32_t pad_;
    struct waitq q;
};

_Static_assert(sizeof(struct barrier_impl) <= sizeof(weft_barrier),
               "weft_barrier too small");

static inline struct barrier_impl *bx(weft_barrier *b)
{
    return (struct barrier_impl *)b;
}

int weft_barrier_init(weft_barrier *b, unsigned n)
{
    memset(b, 0, sizeof *b);
    if (n == 0)
        return -EINVAL;
    bx(b)->n = n;
    return 0;
}

int weft_barrier_destroy(weft_barrier *b)
{
    struct barrier_impl *x = bx(b);
    sync_lock(&x->lock);
    bool busy = x->q.head != NULL;
    sync_unlock(&x->lock);
    return busy ? -EBUSY : 0;
}

static weft_poll barrier_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct barrier_impl *x = op->obj;
    struct wake_list wl = {NULL};
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&x->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w); /* the round completed */
        return weft_future_set(f, NULL, 0);
    }
    sync_lock(&x->lock);
    if (++x->arrived < x->n) {
        waiter_enqueue(&x->q, &op->w, cx);
        sync_unlock(&x->lock);
        return WEFT_PENDING;
    }
    x->arrived = 0;
    waitq_claim_all(&x->q, 0, &wl);
    sync_unlock(&x->lock);
    wake_list_run(&wl);
    return weft_future_set(f, (void *)1, 0);
}

static void barrier_withdraw(void *obj, struct wake_list *wl)
{
    (void)wl;
    ((struct barrier_impl *)obj)->arrived--;
}

static void barrier_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct barrier_impl *x = op->obj;
    /* Still waiting: withdraw the arrival. Released: nothing to undo. */
    cancel_and_regrant(&x->lock, &x->q, &op->w, barrier_withdraw, x);
}

static const weft_future_ops barrier_ops = {
    .poll = barrier_poll,
    .drop = barrier_drop,
    .name = "barrier_wait",
};

static int leader_of(int rc, void *v)
{
    return rc < 0 ? rc : v != NULL;
}

int weft_barrier_wait(weft_barrier *b)
{
    struct sync_op op;
    void *v = NULL;
    sync_op_init(&op, &barrier_ops, NULL, b, NULL, 0);
    int rc = weft__sync_run(&op.base, &v);
    return leader_of(rc, v);
}

int weft_barrier_wait_blocking(weft_barrier *b)
{
    struct sync_op op;
    void *v = NULL;
    sync_op_init(&op, &barrier_ops, NULL, b, NULL, 0);
    int rc = weft__sync_block(&op.base, &v);
    return leader_of(rc, v);
}

weft_future *weft_barrier_wait_future_at(weft_barrier *b, const weft_site *site)
{
    return weft__sync_op_new(0, &barrier_ops, site, b, NULL, 0);
}

weft_future *weft_barrier_wait_init_at(weft_sync_op *op, weft_barrier *b,
                                       const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &barrier_ops, site, b, NULL, 0);
}

/* ---- deadline forms ---- */

int weft_sem_acquire_dl(weft_sem *s, size_t n, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &acquire_ops, NULL, s, NULL, n);
    return weft_await_deadline(&op.base, NULL, deadline);
}

int weft_notify_wait_dl(weft_notify *n, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &wait_ops, NULL, n, NULL, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}

int weft_barrier_wait_dl(weft_barrier *b, int64_t deadline)
{
    struct sync_op op;
    void *v = NULL;
    sync_op_init(&op, &barrier_ops, NULL, b, NULL, 0);
    int rc = weft_await_deadline(&op.base, &v, deadline);
    return leader_of(rc, v);
}
