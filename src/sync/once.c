/*
 * The once-cell: EMPTY -> RUNNING (one caller runs the initialiser) -> SET,
 * or back to EMPTY if the initialiser fails. Callers that find it RUNNING
 * wait on a queue; when the initialiser ends, all of them are woken and look
 * again (on failure one of them becomes the next initialiser; failures are
 * rare enough that waking everyone is simpler than passing the turn on).
 */
#include "sync/sync.h"

enum { ONCE_EMPTY = 0, ONCE_RUNNING = 1, ONCE_SET = 2 };

struct once_impl {
    struct sync_lock lock;
    uint32_t state;
    void *value;
    struct waitq q;
};

_Static_assert(sizeof(struct once_impl) <= sizeof(weft_once),
               "weft_once too small");

static inline struct once_impl *ox(weft_once *o)
{
    return (struct once_impl *)o;
}

void weft_once_init(weft_once *o)
{
    memset(o, 0, sizeof *o);
}

int weft_once_destroy(weft_once *o)
{
    struct once_impl *x = ox(o);
    sync_lock(&x->lock);
    bool busy = x->state == ONCE_RUNNING || x->q.head;
    sync_unlock(&x->lock);
    return busy ? -EBUSY : 0;
}

int weft_once_try_get(weft_once *o, void **value)
{
    struct once_impl *x = ox(o);
    sync_lock(&x->lock);
    bool set = x->state == ONCE_SET;
    if (set && value)
        *value = x->value;
    sync_unlock(&x->lock);
    return set ? 0 : -EAGAIN;
}

/* The initialiser finished with (rc, v): store or reopen, wake everyone. */
static void once_finish(struct once_impl *x, int rc, void *v)
{
    struct wake_list wl = {NULL};
    sync_lock(&x->lock);
    if (rc == 0) {
        x->state = ONCE_SET;
        x->value = v;
    } else {
        x->state = ONCE_EMPTY;
    }
    waitq_claim_all(&x->q, 0, &wl);
    sync_unlock(&x->lock);
    wake_list_run(&wl);
}

/* Under the lock: what a caller should do now. */
enum once_step { STEP_SET, STEP_INIT, STEP_WAIT };

static enum once_step once_look(struct once_impl *x, void **value)
{
    if (x->state == ONCE_SET) {
        if (value)
            *value = x->value;
        return STEP_SET;
    }
    if (x->state == ONCE_EMPTY) {
        x->state = ONCE_RUNNING;
        return STEP_INIT;
    }
    return STEP_WAIT;
}

/* ---- waiting for someone else's initialiser ---- */

static weft_poll wait_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct once_impl *x = op->obj;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&x->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w);
        return weft_future_set(f, NULL, 0);
    }
    sync_lock(&x->lock);
    if (x->state == ONCE_RUNNING) {
        waiter_enqueue(&x->q, &op->w, cx);
        sync_unlock(&x->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&x->lock);
    return weft_future_set(f, NULL, 0);
}

static void wait_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct once_impl *x = op->obj;
    if (waiter_cancel(&x->lock, &x->q, &op->w) == W_DONE)
        waiter_reset(&op->w);
}

static const weft_future_ops wait_ops = {
    .poll = wait_poll,
    .drop = wait_drop,
    .name = "once_wait",
};

enum once_mode { MODE_CORO, MODE_BLOCK, MODE_DEADLINE };

static int once_wait(struct once_impl *x, enum once_mode mode, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &wait_ops, NULL, x, NULL, 0);
    switch (mode) {
    case MODE_BLOCK:
        return weft__sync_block(&op.base, NULL);
    case MODE_DEADLINE:
        return weft_await_deadline(&op.base, NULL, deadline);
    default:
        return weft__sync_run(&op.base, NULL);
    }
}

static int once_get(weft_once *o, weft_once_fn init, void *arg, void **value,
                    enum once_mode mode, int64_t deadline)
{
    struct once_impl *x = ox(o);
    if (mode == MODE_BLOCK && weft__sync_context() != 0)
        return -EPERM;
    for (;;) {
        sync_lock(&x->lock);
        enum once_step step = once_look(x, value);
        sync_unlock(&x->lock);
        if (step == STEP_SET)
            return 0;
        if (step == STEP_INIT) {
            void *v = NULL;
            int rc = init(arg, &v);
            once_finish(x, rc, v);
            if (rc == 0 && value)
                *value = v;
            return rc;
        }
        int rc = once_wait(x, mode, deadline);
        if (rc < 0)
            return rc;
    }
}

int weft_once_get(weft_once *o, weft_once_fn init, void *arg, void **value)
{
    return once_get(o, init, arg, value, MODE_CORO, 0);
}

int weft_once_get_blocking(weft_once *o, weft_once_fn init, void *arg,
                           void **value)
{
    return once_get(o, init, arg, value, MODE_BLOCK, 0);
}

int weft_once_get_dl(weft_once *o, weft_once_fn init, void *arg, void **value,
                     int64_t deadline)
{
    return once_get(o, init, arg, value, MODE_DEADLINE, deadline);
}

/* ---- the future form ---- */

struct once_future {
    struct sync_op op; /* obj: the cell; ptr: make's arg */
    weft_future *(*make)(void *arg);
    weft_future *inner; /* the initialiser, while this future runs it */
};

static weft_poll get_poll(weft_future *f, weft_cx *cx)
{
    struct once_future *of = (struct once_future *)f;
    struct once_impl *x = of->op.obj;
    for (;;) {
        if (of->inner) {
            if (weft_future_poll(of->inner, cx) == WEFT_PENDING)
                return WEFT_PENDING;
            int rc = of->inner->err;
            void *v = of->inner->value;
            weft_future_free(of->inner);
            of->inner = NULL;
            once_finish(x, rc, v);
            return weft_future_set(f, rc ? NULL : v, rc);
        }
        uint32_t s = waiter_state(&of->op.w);
        if (s != W_IDLE) {
            if (s == W_QUEUED && waiter_repoll(&x->lock, &of->op.w, cx))
                return WEFT_PENDING;
            waiter_reset(&of->op.w); /* the initialiser ended: look again */
        }
        void *v = NULL;
        sync_lock(&x->lock);
        enum once_step step = once_look(x, &v);
        if (step == STEP_WAIT)
            waiter_enqueue(&x->q, &of->op.w, cx);
        sync_unlock(&x->lock);
        if (step == STEP_SET)
            return weft_future_set(f, v, 0);
        if (step == STEP_WAIT)
            return WEFT_PENDING;
        of->inner = of->make(of->op.w.ptr);
        if (!of->inner) {
            once_finish(x, -ENOMEM, NULL);
            return weft_future_set(f, NULL, -ENOMEM);
        }
    }
}

static void get_drop(weft_future *f)
{
    struct once_future *of = (struct once_future *)f;
    struct once_impl *x = of->op.obj;
    if (of->inner) {
        /* Dropped while initialising: the cell reopens for the next. */
        weft_future_free(of->inner);
        of->inner = NULL;
        once_finish(x, -ECANCELED, NULL);
        return;
    }
    if (waiter_cancel(&x->lock, &x->q, &of->op.w) == W_DONE)
        waiter_reset(&of->op.w);
}

static const weft_future_ops get_ops = {
    .poll = get_poll,
    .drop = get_drop,
    .name = "once_get",
};

weft_future *weft_once_get_future_at(weft_once *o,
                                     weft_future *(*make)(void *arg), void *arg,
                                     const weft_site *site)
{
    struct once_future *of = (struct once_future *)weft__sync_op_new(
        sizeof *of - sizeof of->op, &get_ops, site, o, arg, 0);
    if (!of)
        return NULL;
    of->make = make;
    of->inner = NULL;
    return &of->op.base;
}
