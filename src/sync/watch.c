/*
 * Watch channels: one value and a version number. A send replaces the value,
 * bumps the version and wakes every waiting receiver; each receiver keeps the
 * version it saw last and reads under the lock, so dropping a receive future
 * needs no undo.
 */
#include "sync/sync.h"

struct weft_watch {
    struct sync_lock lock;
    uint32_t senders;
    size_t receivers;
    size_t elem;
    uint64_t version;
    struct waitq q;
    _Alignas(16) unsigned char value[];
};

struct weft_watch_rx {
    struct weft_watch *w;
    uint64_t seen;
};

static inline struct weft_watch *w_of_tx(weft_watch_tx *tx)
{
    return (struct weft_watch *)tx;
}

static size_t watch_size(size_t elem)
{
    return sizeof(struct weft_watch) + elem;
}

int weft_watch_new(weft_watch_tx **tx, weft_watch_rx **rx, size_t elem_size,
                   const void *initial)
{
    *tx = NULL;
    *rx = NULL;
    if (elem_size > SIZE_MAX - sizeof(struct weft_watch))
        return -ENOMEM;
    struct weft_watch *w = weft__alloc(watch_size(elem_size));
    struct weft_watch_rx *r = weft__alloc(sizeof *r);
    if (!w || !r) {
        weft__free(w, watch_size(elem_size));
        weft__free(r, sizeof *r);
        return -ENOMEM;
    }
    memset(w, 0, sizeof *w);
    memcpy(w->value, initial, elem_size);
    w->elem = elem_size;
    w->senders = 1;
    w->receivers = 1;
    r->w = w;
    r->seen = 0;
    *tx = (weft_watch_tx *)w;
    *rx = r;
    return 0;
}

static void watch_release(struct weft_watch *w, struct wake_list *wl)
{
    bool gone = !w->senders && !w->receivers;
    sync_unlock(&w->lock);
    wake_list_run(wl);
    if (gone)
        weft__free(w, watch_size(w->elem));
}

weft_watch_tx *weft_watch_tx_clone(weft_watch_tx *tx)
{
    struct weft_watch *w = w_of_tx(tx);
    sync_lock(&w->lock);
    WEFT_CHECK(w->senders > 0 && w->senders < UINT32_MAX,
               "cloning a freed or overflowing watch sender");
    w->senders++;
    sync_unlock(&w->lock);
    return tx;
}

void weft_watch_tx_free(weft_watch_tx *tx)
{
    if (!tx)
        return;
    struct weft_watch *w = w_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&w->lock);
    WEFT_CHECK(w->senders > 0, "watch sender freed too often");
    if (--w->senders == 0)
        waitq_claim_all(&w->q, 0, &wl);
    watch_release(w, &wl);
}

int weft_watch_rx_clone(weft_watch_rx *rx, weft_watch_rx **out)
{
    struct weft_watch *w = rx->w;
    struct weft_watch_rx *r = weft__alloc(sizeof *r);
    *out = NULL;
    if (!r)
        return -ENOMEM;
    sync_lock(&w->lock);
    w->receivers++;
    r->w = w;
    r->seen = rx->seen;
    sync_unlock(&w->lock);
    *out = r;
    return 0;
}

void weft_watch_rx_free(weft_watch_rx *rx)
{
    if (!rx)
        return;
    struct weft_watch *w = rx->w;
    struct wake_list wl = {NULL};
    sync_lock(&w->lock);
    WEFT_CHECK(w->receivers > 0, "watch receiver freed too often");
    w->receivers--;
    weft__free(rx, sizeof *rx);
    watch_release(w, &wl);
}

int weft_watch_send(weft_watch_tx *tx, const void *msg)
{
    struct weft_watch *w = w_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&w->lock);
    if (!w->receivers) {
        sync_unlock(&w->lock);
        return -EPIPE;
    }
    memcpy(w->value, msg, w->elem);
    w->version++;
    waitq_claim_all(&w->q, 0, &wl);
    sync_unlock(&w->lock);
    wake_list_run(&wl);
    return 0;
}

int weft_watch_get(weft_watch_rx *rx, void *out)
{
    struct weft_watch *w = rx->w;
    sync_lock(&w->lock);
    memcpy(out, w->value, w->elem);
    sync_unlock(&w->lock);
    return 0;
}

/* Under the lock: 0 (new value in out), -EPIPE or -EAGAIN. */
static int recv_locked(struct weft_watch_rx *r, void *out)
{
    struct weft_watch *w = r->w;
    if (w->version != r->seen) {
        memcpy(out, w->value, w->elem);
        r->seen = w->version;
        return 0;
    }
    return w->senders ? -EAGAIN : -EPIPE;
}

static weft_poll recv_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_watch_rx *r = op->obj;
    struct weft_watch *w = r->w;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&w->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w);
    }
    if (budget_spent(cx))
        return WEFT_PENDING;
    sync_lock(&w->lock);
    int rc = recv_locked(r, op->w.ptr);
    if (rc == -EAGAIN) {
        waiter_enqueue(&w->q, &op->w, cx);
        sync_unlock(&w->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&w->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, rc);
}

static void recv_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_watch_rx *r = op->obj;
    if (waiter_cancel(&r->w->lock, &r->w->q, &op->w) == W_DONE)
        waiter_reset(&op->w);
}

static const weft_future_ops recv_ops = {
    .poll = recv_poll,
    .drop = recv_drop,
    .name = "watch_recv",
};

int weft_watch_try_recv(weft_watch_rx *rx, void *out)
{
    sync_lock(&rx->w->lock);
    int rc = recv_locked(rx, out);
    sync_unlock(&rx->w->lock);
    return rc;
}

int weft_watch_recv(weft_watch_rx *rx, void *out)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_watch_recv_blocking(weft_watch_rx *rx, void *out)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_watch_recv_future_at(weft_watch_rx *rx, void *out,
                                       const weft_site *site)
{
    return weft__sync_op_new(0, &recv_ops, site, rx, out, 0);
}

weft_future *weft_watch_recv_init_at(weft_sync_op *op, weft_watch_rx *rx,
                                     void *out, const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &recv_ops, site, rx, out, 0);
}

int weft_watch_recv_dl(weft_watch_rx *rx, void *out, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}
