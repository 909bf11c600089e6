/*
 * Oneshot channels: one message from one sender to one receiver.
 *
 * Sender, receiver and the message share one small allocation (32 bytes of
 * header plus the message). At most one receive waits; a send finding it
 * copies the message straight into its `out` (as chan.c does), and a
 * receive future dropped after that puts the message back.
 */
#include "sync/sync.h"

enum {
    OS_VALUE = 1u << 0,   /* a message is stored in value[] */
    OS_TAKEN = 1u << 1,   /* the message was received */
    OS_TX_GONE = 1u << 2, /* sent, or the sender was freed */
    OS_RX_GONE = 1u << 3, /* the receiver was freed */
};

struct weft_oneshot {
    struct sync_lock lock;
    uint32_t flags;
    size_t elem;
    struct waitq q; /* the one waiting receive, if any */
    _Alignas(16) unsigned char value[];
};

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
    if (elem_size > SIZE_MAX - sizeof(struct weft_oneshot))
        return -ENOMEM;
    struct weft_oneshot *o = weft__alloc(os_size(elem_size));
    if (!o)
        return -ENOMEM;
    memset(o, 0, sizeof *o);
    o->elem = elem_size;
    *tx = (weft_oneshot_tx *)o;
    *rx = (weft_oneshot_rx *)o;
    return 0;
}

/* Releases one side (flag) and frees the channel if both are gone. */
static void os_release(struct weft_oneshot *o, uint32_t side,
                       struct wake_list *wl)
{
    o->flags |= side;
    bool gone =
        (o->flags & (OS_TX_GONE | OS_RX_GONE)) == (OS_TX_GONE | OS_RX_GONE);
    sync_unlock(&o->lock);
    wake_list_run(wl);
    if (gone) {
        WEFT_CHECK(!o->q.head, "oneshot freed with a receive waiting");
        weft__free(o, os_size(o->elem));
    }
}

int weft_oneshot_send(weft_oneshot_tx *tx, const void *msg)
{
    struct weft_oneshot *o = os_of_tx(tx);
    struct wake_list wl = {NULL};
    int rc = 0;
    sync_lock(&o->lock);
    WEFT_CHECK(!(o->flags & OS_TX_GONE), "oneshot sender used after release");
    if (o->flags & OS_RX_GONE) {
        rc = -EPIPE;
    } else if (o->q.head) {
        struct waiter *w = waitq_pop(&o->q);
        memcpy(w->ptr, msg, o->elem);
        o->flags |= OS_TAKEN;
        waiter_claim(w, 0, &wl);
    } else {
        memcpy(o->value, msg, o->elem);
        o->flags |= OS_VALUE;
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
    WEFT_CHECK(!(o->flags & OS_TX_GONE), "oneshot sender released twice");
    waitq_claim_all(&o->q, -EPIPE, &wl);
    os_release(o, OS_TX_GONE, &wl);
}

void weft_oneshot_rx_free(weft_oneshot_rx *rx)
{
    if (!rx)
        return;
    struct weft_oneshot *o = os_of_rx(rx);
    struct wake_list wl = {NULL};
    sync_lock(&o->lock);
    WEFT_CHECK(!(o->flags & OS_RX_GONE), "oneshot receiver released twice");
    WEFT_CHECK(!o->q.head, "oneshot receiver freed while a receive waits");
    o->flags &= ~(uint32_t)OS_VALUE; /* discarded */
    os_release(o, OS_RX_GONE, &wl);
}

/* Under the lock: 0 (message in out), -EPIPE, -EBUSY or -EAGAIN. */
static int os_recv_locked(struct weft_oneshot *o, void *out)
{
    if (o->flags & OS_VALUE) {
        memcpy(out, o->value, o->elem);
        o->flags = (o->flags & ~(uint32_t)OS_VALUE) | OS_TAKEN;
        return 0;
    }
    if (o->flags & (OS_TAKEN | OS_TX_GONE))
        return -EPIPE;
    return o->q.head ? -EBUSY : -EAGAIN;
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
        waiter_enqueue(&o->q, &op->w, cx);
        sync_unlock(&o->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&o->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, rc);
}

static void os_recv_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_oneshot *o = op->obj;
    if (waiter_cancel(&o->lock, &o->q, &op->w) != W_DONE)
        return;
    waiter_reset(&op->w);
    if (op->w.result != 0)
        return;
    /* The message was handed to us and will not be read: keep it. */
    sync_lock(&o->lock);
    memcpy(o->value, op->w.ptr, o->elem);
    o->flags = (o->flags & ~(uint32_t)OS_TAKEN) | OS_VALUE;
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
