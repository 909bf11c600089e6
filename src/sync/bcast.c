/*
 * Broadcast channels: a ring of the last `capacity` messages, numbered by a
 * 64-bit sequence; each receiver keeps the number of the next message it
 * will read. A send overwrites the oldest message and wakes every waiting
 * receiver; receivers read under the lock, so a receive future that is
 * dropped has moved nothing and needs no undo.
 */
#include "sync/sync.h"

struct weft_bcast {
    struct sync_lock lock;
    uint32_t senders;
    size_t receivers;
    size_t elem;
    size_t cap;    /* messages kept */
    size_t size;   /* slots: a power of two >= cap */
    uint64_t tail; /* sequence number of the next message */
    char *buf;
    struct waitq q; /* receivers waiting for a message */
};

struct weft_bcast_rx {
    struct weft_bcast *b;
    uint64_t next; /* sequence number of the next message to read */
};

static inline struct weft_bcast *b_of_tx(weft_bcast_tx *tx)
{
    return (struct weft_bcast *)tx;
}

static size_t buf_bytes(const struct weft_bcast *b)
{
    return b->elem ? b->size * b->elem : 1;
}

static char *slot(struct weft_bcast *b, uint64_t seq)
{
    return b->buf + (size_t)(seq & (b->size - 1)) * b->elem;
}

static void bcast_free(struct weft_bcast *b)
{
    weft__free(b->buf, buf_bytes(b));
    weft__free(b, sizeof *b);
}

int weft_bcast_new(weft_bcast_tx **tx, weft_bcast_rx **rx, size_t elem_size,
                   size_t capacity)
{
    *tx = NULL;
    *rx = NULL;
    if (capacity == 0 || capacity > (SIZE_MAX >> 2))
        return -EINVAL;
    struct weft_bcast *b = weft__zalloc(sizeof *b);
    struct weft_bcast_rx *r = weft__alloc(sizeof *r);
    if (!b || !r)
        goto fail;
    b->elem = elem_size;
    b->cap = capacity;
    b->size = 1;
    while (b->size < capacity)
        b->size *= 2;
    if (elem_size && b->size > SIZE_MAX / elem_size)
        goto fail;
    b->buf = weft__alloc(buf_bytes(b));
    if (!b->buf)
        goto fail;
    b->senders = 1;
    b->receivers = 1;
    r->b = b;
    r->next = 0;
    *tx = (weft_bcast_tx *)b;
    *rx = r;
    return 0;
fail:
    weft__free(r, sizeof *r);
    weft__free(b, sizeof *b);
    return -ENOMEM;
}

weft_bcast_tx *weft_bcast_tx_clone(weft_bcast_tx *tx)
{
    struct weft_bcast *b = b_of_tx(tx);
    sync_lock(&b->lock);
    WEFT_CHECK(b->senders > 0 && b->senders < UINT32_MAX,
               "cloning a freed or overflowing broadcast sender");
    b->senders++;
    sync_unlock(&b->lock);
    return tx;
}

void weft_bcast_tx_free(weft_bcast_tx *tx)
{
    if (!tx)
        return;
    struct weft_bcast *b = b_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&b->lock);
    WEFT_CHECK(b->senders > 0, "broadcast sender freed too often");
    if (--b->senders == 0)
        waitq_claim_all(&b->q, 0, &wl); /* they drain, then see -EPIPE */
    bool gone = !b->senders && !b->receivers;
    sync_unlock(&b->lock);
    wake_list_run(&wl);
    if (gone)
        bcast_free(b);
}

int weft_bcast_subscribe(weft_bcast_tx *tx, weft_bcast_rx **rx)
{
    struct weft_bcast *b = b_of_tx(tx);
    *rx = NULL;
    struct weft_bcast_rx *r = weft__alloc(sizeof *r);
    if (!r)
        return -ENOMEM;
    sync_lock(&b->lock);
    if (!b->senders) {
        sync_unlock(&b->lock);
        weft__free(r, sizeof *r);
        return -EPIPE;
    }
    b->receivers++;
    r->b = b;
    r->next = b->tail;
    sync_unlock(&b->lock);
    *rx = r;
    return 0;
}

void weft_bcast_rx_free(weft_bcast_rx *rx)
{
    if (!rx)
        return;
    struct weft_bcast *b = rx->b;
    sync_lock(&b->lock);
    WEFT_CHECK(b->receivers > 0, "broadcast receiver freed too often");
    b->receivers--;
    bool gone = !b->senders && !b->receivers;
    sync_unlock(&b->lock);
    weft__free(rx, sizeof *rx);
    if (gone)
        bcast_free(b);
}

int weft_bcast_send(weft_bcast_tx *tx, const void *msg)
{
    struct weft_bcast *b = b_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&b->lock);
    if (!b->receivers) {
        sync_unlock(&b->lock);
        return -EPIPE;
    }
    memcpy(slot(b, b->tail), msg, b->elem);
    b->tail++;
    waitq_claim_all(&b->q, 0, &wl);
    sync_unlock(&b->lock);
    wake_list_run(&wl);
    return 0;
}

/* Under the lock: the number missed (>= 0, message in out), -EPIPE or
 * -EAGAIN. */
static int recv_locked(struct weft_bcast_rx *r, void *out)
{
    struct weft_bcast *b = r->b;
    uint64_t oldest = b->tail > b->cap ? b->tail - b->cap : 0;
    uint64_t missed = 0;
    if (r->next < oldest) {
        missed = oldest - r->next;
        r->next = oldest;
    }
    if (r->next < b->tail) {
        memcpy(out, slot(b, r->next), b->elem);
        r->next++;
        return missed > INT_MAX ? INT_MAX : (int)missed;
    }
    return b->senders ? -EAGAIN : -EPIPE;
}

static weft_poll recv_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_bcast_rx *r = op->obj;
    struct weft_bcast *b = r->b;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&b->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w); /* a message came, or the senders went */
    }
    if (budget_spent(cx))
        return WEFT_PENDING;
    sync_lock(&b->lock);
    int rc = recv_locked(r, op->w.ptr);
    if (rc == -EAGAIN) {
        waiter_enqueue(&b->q, &op->w, cx);
        sync_unlock(&b->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&b->lock);
    budget_use(cx);
    if (rc < 0)
        return weft_future_set(f, NULL, rc);
    return weft_future_set(f, (void *)(uintptr_t)rc, 0);
}

static void recv_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_bcast_rx *r = op->obj;
    /* A wake-up we did not use is nobody else's: each receiver has its
     * own position. */
    if (waiter_cancel(&r->b->lock, &r->b->q, &op->w) == W_DONE)
        waiter_reset(&op->w);
}

static const weft_future_ops recv_ops = {
    .poll = recv_poll,
    .drop = recv_drop,
    .name = "bcast_recv",
};

static int missed_of(int rc, void *v)
{
    return rc < 0 ? rc : (int)(uintptr_t)v;
}

int weft_bcast_try_recv(weft_bcast_rx *rx, void *out)
{
    sync_lock(&rx->b->lock);
    int rc = recv_locked(rx, out);
    sync_unlock(&rx->b->lock);
    return rc;
}

int weft_bcast_recv(weft_bcast_rx *rx, void *out)
{
    struct sync_op op;
    void *v = NULL;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    int rc = weft__sync_run(&op.base, &v);
    return missed_of(rc, v);
}

int weft_bcast_recv_blocking(weft_bcast_rx *rx, void *out)
{
    struct sync_op op;
    void *v = NULL;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    int rc = weft__sync_block(&op.base, &v);
    return missed_of(rc, v);
}

weft_future *weft_bcast_recv_future_at(weft_bcast_rx *rx, void *out,
                                       const weft_site *site)
{
    return weft__sync_op_new(0, &recv_ops, site, rx, out, 0);
}

weft_future *weft_bcast_recv_init_at(weft_sync_op *op, weft_bcast_rx *rx,
                                     void *out, const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &recv_ops, site, rx, out, 0);
}

int weft_bcast_recv_dl(weft_bcast_rx *rx, void *out, int64_t deadline)
{
    struct sync_op op;
    void *v = NULL;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    int rc = weft_await_deadline(&op.base, &v, deadline);
    return missed_of(rc, v);
}
