/*
 * Oneshot channels: one message from one sender to one receiver.
 *
 * Sender, receiver and the message share one small allocation: 8 bytes of
 * header plus 16 bytes (or the message, if larger) that hold, one at a time,
 * whatever the receiving side needs:
 *
 *   OS_WAITING  a pointer to the waiting receive future's waiter node (the
 *               weft_oneshot_recv* forms): a send copies the message
 *               straight into its `out` (as chan.c does), and a receive
 *               future dropped after that puts the message back;
 *   OS_WAKER    the waker of a weft_oneshot_poll_recv() caller (a clone,
 *               owned by the channel): the receiver needs no waiter node at
 *               all, which is what a stackless task parked on a reply wants
 *               (W6: 24 bytes for a u64 channel);
 *   OS_VALUE    the message, sent and not yet received.
 *
 * The three exclude each other: a receive waits only while no message is
 * stored, and a send takes the waiter or the waker out before it stores the
 * message. At most one receive waits.
 */
#include "sync/sync.h"

enum {
    OS_VALUE = 1u << 0,   /* a message is stored in the slot */
    OS_TAKEN = 1u << 1,   /* the message was received */
    OS_TX_GONE = 1u << 2, /* sent, or the sender was freed */
    OS_RX_GONE = 1u << 3, /* the receiver was freed */
    OS_WAITING = 1u << 4, /* slot.waiter: a receive future waits */
    OS_WAKER = 1u << 5,   /* slot.waker: a poll_recv caller waits */
    OS_FLAGS = 6,         /* the message size is stored above the flags */
};

#define OS_MAX_ELEM ((size_t)UINT32_MAX >> OS_FLAGS)

struct weft_oneshot {
    struct sync_lock lock;
    uint32_t word; /* elem << OS_FLAGS | flags */
    union {
        struct waiter *waiter;                   /* OS_WAITING */
        weft_waker waker;                        /* OS_WAKER */
        unsigned char value[sizeof(weft_waker)]; /* OS_VALUE; the message may
                                                    run past this (only ever
                                                    memcpy'd) */
    } slot;
};

static inline size_t os_elem(const struct weft_oneshot *o)
{
    return o->word >> OS_FLAGS;
}

static inline bool os_has(const struct weft_oneshot *o, uint32_t f)
{
    return (o->word & f) != 0;
}

static inline unsigned char *os_value(struct weft_oneshot *o)
{
    return o->slot.value;
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
    size_t slot = elem > sizeof(weft_waker) ? elem : sizeof(weft_waker);
    return offsetof(struct weft_oneshot, slot) + slot;
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

/* Releases one side (flag), unlocks, wakes (the claimed waiter of `wl`, the
 * taken waker `wk`), and frees the channel if both sides are gone. */
static void os_release(struct weft_oneshot *o, uint32_t side,
                       struct wake_list *wl, weft_waker *wk)
{
    o->word |= side;
    bool gone = os_has(o, OS_TX_GONE) && os_has(o, OS_RX_GONE);
    WEFT_CHECK(!gone || !os_has(o, OS_WAITING | OS_WAKER),
               "oneshot freed with a receive waiting");
    sync_unlock(&o->lock);
    wake_list_run(wl);
    weft_waker_wake(wk);
    if (gone)
        weft__free(o, os_size(os_elem(o)));
}

/* Under the lock: hands the waiting receive future (if any) `result`, or
 * moves a poll_recv caller's waker to *wk, to be woken after unlocking. */
static void os_claim_waiter(struct weft_oneshot *o, int result,
                            struct wake_list *wl, weft_waker *wk)
{
    if (os_has(o, OS_WAITING)) {
        struct waiter *w = o->slot.waiter;
        o->word &= ~(uint32_t)OS_WAITING;
        waiter_claim(w, result, wl);
    } else if (os_has(o, OS_WAKER)) {
        *wk = o->slot.waker;
        o->word &= ~(uint32_t)OS_WAKER;
    }
}

int weft_oneshot_send(weft_oneshot_tx *tx, const void *msg)
{
    struct weft_oneshot *o = os_of_tx(tx);
    struct wake_list wl = {NULL};
    weft_waker wk = {0};
    int rc = 0;
    sync_lock(&o->lock);
    WEFT_CHECK(!os_has(o, OS_TX_GONE), "oneshot sender used after release");
    if (os_has(o, OS_RX_GONE)) {
        rc = -EPIPE;
    } else if (os_has(o, OS_WAITING)) {
        memcpy(o->slot.waiter->ptr, msg, os_elem(o));
        o->word |= OS_TAKEN;
        os_claim_waiter(o, 0, &wl, &wk);
    } else {
        os_claim_waiter(o, 0, &wl, &wk); /* a poll_recv waker, if any */
        memcpy(os_value(o), msg, os_elem(o));
        o->word |= OS_VALUE;
    }
    os_release(o, OS_TX_GONE, &wl, &wk);
    return rc;
}

void weft_oneshot_tx_free(weft_oneshot_tx *tx)
{
    if (!tx)
        return;
    struct weft_oneshot *o = os_of_tx(tx);
    struct wake_list wl = {NULL};
    weft_waker wk = {0};
    sync_lock(&o->lock);
    WEFT_CHECK(!os_has(o, OS_TX_GONE), "oneshot sender released twice");
    os_claim_waiter(o, -EPIPE, &wl, &wk);
    os_release(o, OS_TX_GONE, &wl, &wk);
}

void weft_oneshot_rx_free(weft_oneshot_rx *rx)
{
    if (!rx)
        return;
    struct weft_oneshot *o = os_of_rx(rx);
    struct wake_list wl = {NULL};
    weft_waker wk = {0}, drop = {0};
    sync_lock(&o->lock);
    WEFT_CHECK(!os_has(o, OS_RX_GONE), "oneshot receiver released twice");
    WEFT_CHECK(!os_has(o, OS_WAITING),
               "oneshot receiver freed while a receive waits");
    if (os_has(o, OS_WAKER)) {
        drop = o->slot.waker; /* a poll_recv that will not poll again */
        o->word &= ~(uint32_t)OS_WAKER;
    }
    o->word &= ~(uint32_t)OS_VALUE; /* discarded */
    os_release(o, OS_RX_GONE, &wl, &wk);
    weft_waker_drop(&drop);
}

/* Under the lock: 0 (message in out), -EPIPE, -EBUSY or -EAGAIN. */
static int os_recv_locked(struct weft_oneshot *o, void *out)
{
    if (os_has(o, OS_VALUE)) {
        memcpy(out, os_value(o), os_elem(o));
        o->word = (o->word & ~(uint32_t)OS_VALUE) | OS_TAKEN;
        return 0;
    }
    if (os_has(o, OS_TAKEN | OS_TX_GONE))
        return -EPIPE;
    return os_has(o, OS_WAITING | OS_WAKER) ? -EBUSY : -EAGAIN;
}

int weft_oneshot_poll_recv(weft_oneshot_rx *rx, weft_cx *cx, void *out)
{
    struct weft_oneshot *o = os_of_rx(rx);
    if (budget_spent(cx))
        return -EAGAIN; /* woken already: poll again soon */
    weft_waker old = {0};
    sync_lock(&o->lock);
    int rc;
    if (os_has(o, OS_WAKER)) {
        /* Our own registration (a second receive would be the -EBUSY of a
         * receive future): nothing can have arrived, a send takes it. */
        if (!weft_waker_will_wake(&o->slot.waker, &cx->waker)) {
            old = o->slot.waker;
            o->slot.waker = weft_waker_clone(&cx->waker);
        }
        rc = -EAGAIN;
    } else {
        rc = os_recv_locked(o, out);
        if (rc == -EAGAIN) {
            o->slot.waker = weft_waker_clone(&cx->waker);
            o->word |= OS_WAKER;
        }
    }
    sync_unlock(&o->lock);
    weft_waker_drop(&old);
    if (rc != -EAGAIN)
        budget_use(cx);
    return rc;
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
        o->slot.waiter = &op->w;
        o->word |= OS_WAITING;
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
            o->word &= ~(uint32_t)OS_WAITING;
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
    memcpy(os_value(o), op->w.ptr, os_elem(o));
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
