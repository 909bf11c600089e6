/*
 * Oneshot channels: one message from one sender to one receiver.
 *
 * Sender, receiver and the message share one small allocation: 16 bytes of
 * header plus the message (32 bytes from malloc for a u64), since programs
 * keep one per outstanding request. At most one receive waits; a send that
 * finds it copies the message straight into its `out` (as chan.c does), and
 * a receive future dropped after that puts the message back.
 */
#include "sync/sync.h"

enum {
    OS_VALUE = 1u << 0,   /* a message is stored in value[] */
    OS_TAKEN = 1u << 1,   /* the message was received */
    OS_TX_GONE = 1u << 2, /* sent, or the sender was freed */
    OS_RX_GONE = 1u << 3, /* the receiver was freed */
    OS_FLAGS = 4,         /* the message size is stored above the flags */
};

#define OS_MAX_ELEM ((size_t)UINT32_MAX >> OS_FLAGS)

struct weft_oneshot {
    struct sync_lock lock;
    uint32_t word;         /* elem << OS_FLAGS | flags */
    struct waiter *waiter; /* the one waiting receive, if any */
    unsigned char value[]; /* only ever memcpy'd: no alignment needed */
};

static inline size_t os_elem(const struct weft_oneshot *o)
{
    return o->word >> OS_FLAGS;
}

static inline bool os_has(const struct weft_oneshot *o, uint32_t f)
{
    return (o->word & f) != 0;
}

static inline struct weft_oneshot *os_of_tx(weft_oneshot_tx *tx)
{
    return (struct weft_oneshot *)tx;
}

static inline struct weft_oneshot *os_of_rx(weft_oneshot_rx *rx)
{
    return (struct weft_oneshot *)rx;
}

static size_t os_size(size_t elem)
{
    return sizeof(struct weft_oneshot) + elem;
}

int weft_oneshot_new(weft_oneshot_tx **tx, weft_oneshot_rx **rx,
                     size_t elem_size)
{
    *tx = NULL;
    *rx = NULL;
    if (elem_size > OS_MAX_ELEM)
        return -EINVAL;
    struct weft_oneshot *o = weft__alloc(os_size(elem_size));
    if (!o)
        return -ENOMEM;
    memset(o, 0, sizeof *o);
    o->word = (uint32_t)elem_size << OS_FLAGS;
    *tx = (weft_oneshot_tx *)o;
    *rx = (weft_oneshot_rx *)o;
    return 0;
}

/* Releases one side (flag), unlocks, wakes, and frees the channel if both
 * sides are gone. */
static void os_release(struct weft_oneshot *o, uint32_t side,
                       struct wake_list *wl)
{
    o->word |= side;
    bool gone = os_has(o, OS_TX_GONE) && os_has(o, OS_RX_GONE);
    sync_unlock(&o->lock);
    wake_list_run(wl);
    if (gone) {
        WEFT_CHECK(!o->waiter, "oneshot freed with a receive waiting");
        weft__free(o, os_size(os_elem(o)));
    }
}

/* Under the lock: hands the waiting receive (if any) `result`. */
static void os_claim_waiter(struct weft_oneshot *o, int result,
                            struct wake_list *wl)
{
    struct waiter *w = o->waiter;
    if (w) {
        o->waiter = NULL;
        waiter_claim(w, result, wl);
    }
}

int weft_oneshot_send(weft_oneshot_tx *tx, const void *msg)
{
    struct weft_oneshot *o = os_of_tx(tx);
    struct wake_list wl = {NULL};
    int rc = 0;
    sync_lock(&o->lock);
    WEFT_CHECK(!os_has(o, OS_TX_GONE), "oneshot sender used after release");
    if (os_has(o, OS_RX_GONE)) {
        rc = -EPIPE;
    } else if (o->waiter) {
        memcpy(o->waiter->ptr, msg, os_elem(o));
        o->word |= OS_TAKEN;
        os_claim_waiter(o, 0, &wl);
    } else {
        memcpy(o->value, msg, os_elem(o));
        o->word |= OS_VALUE;
    }
    os_release(o, OS_TX_GONE, &wl);
    return rc;
}

void weft_oneshot_tx_free(weft_oneshot_tx *tx)
{
    if (!tx)
        return;
    struct weft_oneshot *o = os_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&o->lock);
    WEFT_CHECK(!os_has(o, OS_TX_GONE), "oneshot sender released twice");
    os_claim_waiter(o, -EPIPE, &wl);
    os_release(o, OS_TX_GONE, &wl);
}

void weft_oneshot_rx_free(weft_oneshot_rx *rx)
{
    if (!rx)
        return;
    struct weft_oneshot *o = os_of_rx(rx);
    struct wake_list wl = {NULL};
    sync_lock(&o->lock);
    WEFT_CHECK(!os_has(o, OS_RX_GONE), "oneshot receiver released twice");
    WEFT_CHECK(!o->waiter, "oneshot receiver freed while a receive waits");
    o->word &= ~(uint32_t)OS_VALUE; /* discarded */
    os_release(o, OS_RX_GONE, &wl);
}

/* Under the lock: 0 (message in out), -EPIPE, -EBUSY or -EAGAIN. */
static int os_recv_locked(struct weft_oneshot *o, void *out)
{
    if (os_has(o, OS_VALUE)) {
        memcpy(out, o->value, os_elem(o));
        o->word = (o->word & ~(uint32_t)OS_VALUE) | OS_TAKEN;
        return 0;
    }
    if (os_has(o, OS_TAKEN | OS_TX_GONE))
        return -EPIPE;
    return o->waiter ? -EBUSY : -EAGAIN;
}

static weft_poll os_recv_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_oneshot *o = op->obj;
    uint32_t s = waiter_state(&op->w);
    if (weft_unlikely(s != W_IDLE)) {
        if (s == W_QUEUED && waiter_repoll(&o->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w);
        budget_use(cx);
        return weft_future_set(f, NULL, op->w.result);
    }
    if (budget_spent(cx))
        return WEFT_PENDING;
    sync_lock(&o->lock);
    int rc = os_recv_locked(o, op->w.ptr);
    if (rc == -EAGAIN) {
        op->w.waker = cx->waker;
        atomic_store_explicit(&op->w.state, W_QUEUED, memory_order_relaxed);
        o->waiter = &op->w;
        sync_unlock(&o->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&o->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, rc);
}

/* Takes the receive off the channel if it still waits: IDLE, or DONE if
 * the sender (or the sender's release) got to it first. */
static uint32_t os_cancel(struct weft_oneshot *o, struct waiter *w)
{
    uint32_t s = atomic_load_explicit(&w->state, memory_order_acquire);
    if (s == W_QUEUED) {
        sync_lock(&o->lock);
        if (atomic_load_explicit(&w->state, memory_order_relaxed) == W_QUEUED) {
            o->waiter = NULL;
            waiter_reset(w);
            sync_unlock(&o->lock);
            return W_IDLE;
        }
        sync_unlock(&o->lock);
    }
    return s == W_IDLE ? W_IDLE : waiter_state(w);
}

static void os_recv_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_oneshot *o = op->obj;
    if (os_cancel(o, &op->w) != W_DONE)
        return;
    waiter_reset(&op->w);
    if (op->w.result != 0)
        return;
    /* The message was handed to us and will not be read: keep it. */
    sync_lock(&o->lock);
    memcpy(o->value, op->w.ptr, os_elem(o));
    o->word = (o->word & ~(uint32_t)OS_TAKEN) | OS_VALUE;
    sync_unlock(&o->lock);
}

static const weft_future_ops os_recv_ops = {
    .poll = os_recv_poll,
    .drop = os_recv_drop,
    .name = "oneshot_recv",
};

int weft_oneshot_try_recv(weft_oneshot_rx *rx, void *out)
{
    struct weft_oneshot *o = os_of_rx(rx);
    sync_lock(&o->lock);
    int rc = os_recv_locked(o, out);
    sync_unlock(&o->lock);
    return rc;
}

int weft_oneshot_recv(weft_oneshot_rx *rx, void *out)
{
    struct sync_op op;
    sync_op_init(&op, &os_recv_ops, NULL, rx, out, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_oneshot_recv_blocking(weft_oneshot_rx *rx, void *out)
{
    struct sync_op op;
    sync_op_init(&op, &os_recv_ops, NULL, rx, out, 0);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_oneshot_recv_future_at(weft_oneshot_rx *rx, void *out,
                                         const weft_site *site)
{
    return weft__sync_op_new(0, &os_recv_ops, site, rx, out, 0);
}

weft_future *weft_oneshot_recv_init_at(weft_sync_op *op, weft_oneshot_rx *rx,
                                       void *out, const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &os_recv_ops, site, rx, out, 0);
}

int weft_oneshot_recv_dl(weft_oneshot_rx *rx, void *out, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &os_recv_ops, NULL, rx, out, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}
