/*
 * Channels: bounded and unbounded multi-producer queues of fixed-size
 * messages (weft_chan_*).
 *
 * One lock guards a ring buffer and two FIFO wait queues. The two sides wait
 * differently, each for its cancellation-safety rule (sync.h):
 *
 *  - A receiver waits only when the buffer is empty. A sender that finds one
 *    waiting copies its message straight into the receiver's `out` and
 *    claims it (Go's direct hand-off): the receiver's next poll finds the
 *    message there without taking the lock. If that receive future is
 *    dropped instead (it lost a select, its task was cancelled) the message
 *    goes back: to the next waiting receiver, or to the front of the buffer.
 *    The buffer may then hold more than `capacity` messages for a while;
 *    it grows for that (the only allocation on that path).
 *
 *  - A sender waits only when the buffer is full. A receiver that frees a
 *    slot reserves it for the oldest waiting sender and wakes it; the sender
 *    pushes its own message when it is polled. A send future dropped before
 *    that has sent nothing (so a send that loses a select keeps its
 *    message); its reservation passes to the next sender. Reserved slots
 *    count as taken, so a new sender cannot overtake a woken one.
 *
 * Invariants, under the lock: recvq non-empty => len == 0; sendq non-empty
 * => fewer than `batch` slots are free (grant_senders).
 */
#include "sync/sync.h"

/* Two cache lines. With a sender and a receiver on two workers every
 * operation moves the line it writes from the other CPU; the fields that
 * every send and receive writes (and the queue heads they test) share the
 * first line, and the second holds what they only read, which stays
 * cached on both CPUs. */
struct weft_chan {
    struct sync_lock lock;
    uint32_t receivers; /* handle count */
    size_t head, len;
    size_t reserved; /* free slots promised to woken senders */
    struct waitq recvq, sendq;
    /* read-mostly */
    char *buf __attribute__((aligned(64))); /* ring of `size` slots (a
                                               power of two) */
    size_t size;
    size_t elem;      /* message size in bytes */
    size_t cap;       /* SIZE_MAX when unbounded */
    size_t batch;     /* free slots needed before waiting senders are woken */
    uint32_t senders; /* handle count */
    void *mem;        /* the allocation this struct sits in */
} __attribute__((aligned(64)));

#define CHAN_ALLOC (sizeof(struct weft_chan) + 64)

#define CHAN_FIRST_SIZE 16

static inline struct weft_chan *chan_of_tx(weft_chan_tx *tx)
{
    return (struct weft_chan *)tx;
}

static inline struct weft_chan *chan_of_rx(const weft_chan_rx *rx)
{
    return (struct weft_chan *)rx;
}

/* ---- messages and the ring ---- */

/* Copies one message; the common sizes become a single move. */
static inline void copy_msg(void *dst, const void *src, size_t n)
{
    switch (n) {
    case 8:
        memcpy(dst, src, 8);
        break;
    case 4:
        memcpy(dst, src, 4);
        break;
    case 16:
        memcpy(dst, src, 16);
        break;
    default:
        memcpy(dst, src, n);
    }
}

static inline char *ring_slot(struct weft_chan *c, size_t i)
{
    return c->buf + ((c->head + i) & (c->size - 1)) * c->elem;
}

static size_t ring_bytes(const struct weft_chan *c, size_t slots)
{
    return c->elem ? slots * c->elem : 1;
}

/* Doubles the ring (or makes the first one). -ENOMEM leaves it as it was. */
static int ring_grow(struct weft_chan *c)
{
    size_t nsize = c->size ? c->size * 2 : CHAN_FIRST_SIZE;
    if (!c->size && c->cap < nsize) {
        nsize = 1;
        while (nsize < c->cap)
            nsize *= 2;
    }
    if (nsize <= c->size || (c->elem && nsize > SIZE_MAX / c->elem))
        return -ENOMEM;
    char *nb = weft__alloc(ring_bytes(c, nsize));
    if (!nb)
        return -ENOMEM;
    if (c->len) {
        size_t first = c->size - (c->head & (c->size - 1));
        if (first > c->len)
            first = c->len;
        memcpy(nb, ring_slot(c, 0), first * c->elem);
        memcpy(nb + first * c->elem, c->buf, (c->len - first) * c->elem);
    }
    if (c->buf)
        weft__free(c->buf, ring_bytes(c, c->size));
    c->buf = nb;
    c->size = nsize;
    c->head = 0;
    return 0;
}

static inline int ring_push(struct weft_chan *c, const void *msg)
{
    if (weft_unlikely(c->len == c->size) && ring_grow(c) < 0)
        return -ENOMEM;
    copy_msg(ring_slot(c, c->len), msg, c->elem);
    c->len++;
    return 0;
}

static inline void ring_pop(struct weft_chan *c, void *out)
{
    copy_msg(out, ring_slot(c, 0), c->elem);
    c->head = (c->head + 1) & (c->size - 1);
    c->len--;
}

/* ---- the two operations, under the lock ---- */

/* Hands free slots to waiting senders, oldest first, once a quarter of the
 * buffer is free (`batch`): waking a sender for every slot a receiver frees
 * costs a wake-up per message, usually across threads (an unpark: a futex
 * call), while waking them in batches lets each woken sender push a run of
 * messages on the fast path, and the receiver still has three quarters of
 * the buffer to drain meanwhile. (On W4 with 4 producers on two workers:
 * 6 M msgs/s waking per slot, 18 M at an eighth, 23 M at a quarter, 21 M
 * at a half.) */
static void grant_senders(struct weft_chan *c, struct wake_list *wl)
{
    if (c->len + c->reserved + c->batch > c->cap)
        return;
    while (c->sendq.head && c->len + c->reserved < c->cap) {
        c->reserved++;
        waitq_claim_one(&c->sendq, 1, wl);
    }
}

/* Whether a new send may take a buffer slot now: one is free and not
 * promised to a woken sender, and no sender waits ahead of it (FIFO). */
static inline bool slot_free(const struct weft_chan *c)
{
    return !c->sendq.head && c->len + c->reserved < c->cap;
}

/* Sends `msg` if that needs no wait. `reserved`: the caller held a slot
 * reservation (already given back), so capacity is not checked.
 * Returns 0, -EPIPE, -ENOMEM, or -EAGAIN (full). */
static inline __attribute__((always_inline)) int
send_locked(struct weft_chan *c, const void *msg, bool reserved,
            struct wake_list *wl)
{
    if (weft_unlikely(!c->receivers))
        return -EPIPE;
    struct waiter *r = c->recvq.head;
    if (r) {
        waitq_remove(&c->recvq, r);
        copy_msg(r->ptr, msg, c->elem);
        waiter_claim(r, 0, wl);
        return 0;
    }
    if (!reserved && !slot_free(c))
        return -EAGAIN;
    return ring_push(c, msg);
}

/* Receives into `out` if that needs no wait: 0, -EPIPE, or -EAGAIN. */
static inline __attribute__((always_inline)) int
recv_locked(struct weft_chan *c, void *out, struct wake_list *wl)
{
    if (c->len) {
        ring_pop(c, out);
        if (weft_unlikely(c->sendq.head != NULL))
            grant_senders(c, wl);
        return 0;
    }
    return c->senders ? -EAGAIN : -EPIPE;
}

/* A message handed to a receive future that was then dropped goes back: to
 * the next waiting receiver, or to the front of the buffer. */
static void put_back(struct weft_chan *c, const void *msg, struct wake_list *wl)
{
    struct waiter *r = c->recvq.head;
    if (r) {
        waitq_remove(&c->recvq, r);
        copy_msg(r->ptr, msg, c->elem);
        waiter_claim(r, 0, wl);
        return;
    }
    if (c->len == c->size && ring_grow(c) < 0)
        weft__panic(__FILE__, __LINE__,
                    "out of memory putting a message back in a channel");
    c->head = (c->head - 1) & (c->size - 1);
    copy_msg(ring_slot(c, 0), msg, c->elem);
    c->len++;
}

/* ---- the send future ---- */

/* The common case of a poll: the operation has not waited yet (the owner
 * set IDLE itself, so a relaxed load will do) and the budget is not spent. */
static inline bool op_fresh(struct sync_op *op, weft_cx *cx)
{
    return atomic_load_explicit(&op->w.state, memory_order_relaxed) == W_IDLE &&
           cx->budget > 0;
}

/* send_poll's every case but the common one, entered with the lock held
 * when `locked` (the operation has not been tried yet then). Out of line,
 * so that the common case keeps to a few registers. */
static __attribute__((noinline)) weft_poll
send_poll_slow(weft_future *f, weft_cx *cx, bool locked)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    struct wake_list wl = {NULL};
    int rc;
    if (!locked) {
        uint32_t s = waiter_state(&op->w);
        if (s != W_IDLE) {
            if (s == W_QUEUED && waiter_repoll(&c->lock, &op->w, cx))
                return WEFT_PENDING;
            waiter_reset(&op->w);
            if (op->w.result < 0)
                return weft_future_set(f, NULL, op->w.result);
            /* Woken with a slot reserved for us. The message may go
             * straight to a receiver instead, leaving the slot free: pass
             * it on. */
            sync_lock(&c->lock);
            c->reserved--;
            rc = send_locked(c, op->w.ptr, true, &wl);
            grant_senders(c, &wl);
            sync_unlock(&c->lock);
            wake_list_run(&wl);
            budget_use(cx);
            return weft_future_set(f, NULL, rc);
        }
        if (budget_spent(cx))
            return WEFT_PENDING;
        sync_lock(&c->lock);
    }
    rc = send_locked(c, op->w.ptr, false, &wl);
    if (rc == -EAGAIN) {
        waiter_enqueue(&c->sendq, &op->w, cx);
        sync_unlock(&c->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    budget_use(cx);
    return weft_future_set(f, NULL, rc);
}

static weft_poll send_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    if (weft_unlikely(!op_fresh(op, cx)))
        return send_poll_slow(f, cx, false);
    /* The common case: room in the buffer and nobody waiting. */
    sync_lock(&c->lock);
    if (weft_unlikely(!c->receivers || c->recvq.head || !slot_free(c) ||
                      c->len == c->size))
        return send_poll_slow(f, cx, true);
    copy_msg(ring_slot(c, c->len), op->w.ptr, c->elem);
    c->len++;
    sync_unlock(&c->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, 0);
}

static void send_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    if (waiter_cancel(&c->lock, &c->sendq, &op->w) != W_DONE)
        return;
    waiter_reset(&op->w);
    if (op->w.result != 1)
        return;
    /* Woken but never sent: pass the reserved slot on. */
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    c->reserved--;
    grant_senders(c, &wl);
    sync_unlock(&c->lock);
    wake_list_run(&wl);
}

static const weft_future_ops send_ops = {
    .poll = send_poll,
    .drop = send_drop,
    .name = "chan_send",
};

/* ---- the receive future ---- */

/* A receive freed a slot with senders waiting: grants them what the batch
 * rule allows, unlocks, wakes them. Out of line (the waits are rare per
 * message). */
static __attribute__((noinline)) void grant_unlock(struct weft_chan *c)
{
    struct wake_list wl = {NULL};
    grant_senders(c, &wl);
    sync_unlock(&c->lock);
    wake_list_run(&wl);
}

/* recv_poll's every case but the common one (see send_poll_slow). */
static __attribute__((noinline)) weft_poll
recv_poll_slow(weft_future *f, weft_cx *cx, bool locked)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    struct wake_list wl = {NULL};
    if (!locked) {
        uint32_t s = waiter_state(&op->w);
        if (s != W_IDLE) {
            if (s == W_QUEUED && waiter_repoll(&c->lock, &op->w, cx))
                return WEFT_PENDING;
            /* A sender put the message in *out, or the channel closed. */
            waiter_reset(&op->w);
            budget_use(cx);
            return weft_future_set(f, NULL, op->w.result);
        }
        if (budget_spent(cx))
            return WEFT_PENDING;
        sync_lock(&c->lock);
    }
    int rc = recv_locked(c, op->w.ptr, &wl);
    if (rc == -EAGAIN) {
        waiter_enqueue(&c->recvq, &op->w, cx);
        sync_unlock(&c->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    budget_use(cx);
    return weft_future_set(f, NULL, rc);
}

static weft_poll recv_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    if (weft_unlikely(!op_fresh(op, cx)))
        return recv_poll_slow(f, cx, false);
    /* The common case: a message in the buffer. */
    sync_lock(&c->lock);
    if (weft_unlikely(!c->len))
        return recv_poll_slow(f, cx, true);
    ring_pop(c, op->w.ptr);
    if (weft_unlikely(c->sendq.head != NULL))
        grant_unlock(c);
    else
        sync_unlock(&c->lock);
    budget_use(cx);
    return weft_future_set(f, NULL, 0);
}

static void recv_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    if (waiter_cancel(&c->lock, &c->recvq, &op->w) != W_DONE)
        return;
    waiter_reset(&op->w);
    if (op->w.result != 0)
        return;
    /* A message was handed to us and nobody will read it: give it back. */
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    put_back(c, op->w.ptr, &wl);
    sync_unlock(&c->lock);
    wake_list_run(&wl);
}

static const weft_future_ops recv_ops = {
    .poll = recv_poll,
    .drop = recv_drop,
    .name = "chan_recv",
};

/* ---- handles ---- */

static int chan_create(weft_chan_tx **tx, weft_chan_rx **rx, size_t elem,
                       size_t cap)
{
    *tx = NULL;
    *rx = NULL;
    char *mem = weft__alloc(CHAN_ALLOC);
    if (!mem)
        return -ENOMEM;
    struct weft_chan *c =
        (struct weft_chan *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    memset(c, 0, sizeof *c);
    c->mem = mem;
    c->senders = c->receivers = 1;
    c->elem = elem;
    c->cap = cap;
    c->batch = cap == SIZE_MAX ? 1 : cap / 4 ? cap / 4 : 1;
    *tx = (weft_chan_tx *)c;
    *rx = (weft_chan_rx *)c;
    return 0;
}

int weft_chan_new(weft_chan_tx **tx, weft_chan_rx **rx, size_t elem_size,
                  size_t capacity)
{
    if (capacity == 0 || capacity == SIZE_MAX) {
        *tx = NULL;
        *rx = NULL;
        return -EINVAL;
    }
    return chan_create(tx, rx, elem_size, capacity);
}

int weft_chan_new_unbounded(weft_chan_tx **tx, weft_chan_rx **rx,
                            size_t elem_size)
{
    return chan_create(tx, rx, elem_size, SIZE_MAX);
}

static void chan_free(struct weft_chan *c)
{
    WEFT_CHECK(!c->recvq.head && !c->sendq.head,
               "channel freed with operations waiting on it");
    if (c->buf)
        weft__free(c->buf, ring_bytes(c, c->size));
    weft__free(c->mem, CHAN_ALLOC);
}

weft_chan_tx *weft_chan_tx_clone(weft_chan_tx *tx)
{
    struct weft_chan *c = chan_of_tx(tx);
    sync_lock(&c->lock);
    WEFT_CHECK(c->senders > 0 && c->senders < UINT32_MAX,
               "cloning a freed or overflowing sender handle");
    c->senders++;
    sync_unlock(&c->lock);
    return tx;
}

weft_chan_rx *weft_chan_rx_clone(weft_chan_rx *rx)
{
    struct weft_chan *c = chan_of_rx(rx);
    sync_lock(&c->lock);
    WEFT_CHECK(c->receivers > 0 && c->receivers < UINT32_MAX,
               "cloning a freed or overflowing receiver handle");
    c->receivers++;
    sync_unlock(&c->lock);
    return rx;
}

void weft_chan_tx_free(weft_chan_tx *tx)
{
    if (!tx)
        return;
    struct weft_chan *c = chan_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    WEFT_CHECK(c->senders > 0, "sender handle freed too often");
    if (--c->senders == 0)
        waitq_claim_all(&c->recvq, -EPIPE, &wl); /* buffer is empty */
    bool gone = !c->senders && !c->receivers;
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    if (gone)
        chan_free(c);
}

void weft_chan_rx_free(weft_chan_rx *rx)
{
    if (!rx)
        return;
    struct weft_chan *c = chan_of_rx(rx);
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    WEFT_CHECK(c->receivers > 0, "receiver handle freed too often");
    if (--c->receivers == 0) {
        waitq_claim_all(&c->sendq, -EPIPE, &wl);
        c->len = 0; /* nobody can receive them now */
        c->head = 0;
    }
    bool gone = !c->senders && !c->receivers;
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    if (gone)
        chan_free(c);
}

size_t weft_chan_len(const weft_chan_rx *rx)
{
    struct weft_chan *c = chan_of_rx(rx);
    sync_lock(&c->lock);
    size_t n = c->len;
    sync_unlock(&c->lock);
    return n;
}

/* ---- sending ---- */

int weft_chan_try_send(weft_chan_tx *tx, const void *msg)
{
    struct weft_chan *c = chan_of_tx(tx);
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    int rc = send_locked(c, msg, false, &wl);
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    return rc;
}

/* The worker whose coroutine task may take the fast path of a channel
 * call, or NULL: sync_fast_worker's test, reading the thread-local
 * directly. That is safe here because the calling functions read nothing
 * after they suspend: waiting happens in the out-of-line *_wait functions,
 * which go through weft__worker_current() like everything else. */
static inline struct weft_worker *chan_fast_worker(void)
{
    return sync_fast_test(weft__tls_worker);
}

/* The send must wait (called with the lock held): queue a future on this
 * coroutine's stack and suspend. */
static __attribute__((noinline)) int
send_wait(struct weft_chan *c, const void *msg, struct weft_worker *w)
{
    struct sync_op op;
    sync_op_init(&op, &send_ops, NULL, c, (void *)msg, 0);
    waiter_enqueue(&c->sendq, &op.w, &w->cx);
    sync_unlock(&c->lock);
    return sync_await_queued(&op);
}

static __attribute__((noinline)) int send_slow(struct weft_chan *c,
                                               const void *msg)
{
    struct sync_op op;
    sync_op_init(&op, &send_ops, NULL, c, (void *)msg, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_chan_send(weft_chan_tx *tx, const void *msg)
{
    struct weft_chan *c = chan_of_tx(tx);
    struct weft_worker *w = chan_fast_worker();
    if (weft_unlikely(w == NULL))
        return send_slow(c, msg);
    /* send_poll's first poll, without building the future unless it has
     * to wait. */
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    int rc = send_locked(c, msg, false, &wl);
    if (weft_unlikely(rc == -EAGAIN))
        return send_wait(c, msg, w);
    sync_unlock(&c->lock);
    if (wl.head)
        wake_list_run(&wl);
    budget_use(&w->cx);
    return rc;
}

int weft_chan_send_blocking(weft_chan_tx *tx, const void *msg)
{
    struct sync_op op;
    sync_op_init(&op, &send_ops, NULL, tx, (void *)msg, 0);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_chan_send_future_at(weft_chan_tx *tx, const void *msg,
                                      const weft_site *site)
{
    struct weft_chan *c = chan_of_tx(tx);
    weft_future *f = weft__sync_op_new(c->elem, &send_ops, site, c, NULL, 0);
    if (!f)
        return NULL;
    struct sync_op *op = (struct sync_op *)f;
    op->w.ptr = op + 1; /* the message travels in the future */
    memcpy(op->w.ptr, msg, c->elem);
    return f;
}

weft_future *weft_chan_send_init_at(weft_sync_op *op, weft_chan_tx *tx,
                                    const void *msg, const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &send_ops, site, tx, (void *)msg,
                        0);
}

/* ---- receiving ---- */

int weft_chan_try_recv(weft_chan_rx *rx, void *out)
{
    struct weft_chan *c = chan_of_rx(rx);
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    int rc = recv_locked(c, out, &wl);
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    return rc;
}

static __attribute__((noinline)) int recv_wait(struct weft_chan *c, void *out,
                                               struct weft_worker *w)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, c, out, 0);
    waiter_enqueue(&c->recvq, &op.w, &w->cx);
    sync_unlock(&c->lock);
    return sync_await_queued(&op);
}

static __attribute__((noinline)) int recv_slow(struct weft_chan *c, void *out)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, c, out, 0);
    return weft__sync_run(&op.base, NULL);
}

int weft_chan_recv(weft_chan_rx *rx, void *out)
{
    struct weft_chan *c = chan_of_rx(rx);
    struct weft_worker *w = chan_fast_worker();
    if (weft_unlikely(w == NULL))
        return recv_slow(c, out);
    /* recv_poll's first poll, inline (see weft_chan_send). */
    struct wake_list wl = {NULL};
    sync_lock(&c->lock);
    int rc = recv_locked(c, out, &wl);
    if (weft_unlikely(rc == -EAGAIN))
        return recv_wait(c, out, w);
    sync_unlock(&c->lock);
    if (wl.head)
        wake_list_run(&wl);
    budget_use(&w->cx);
    return rc;
}

int weft_chan_recv_blocking(weft_chan_rx *rx, void *out)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    return weft__sync_block(&op.base, NULL);
}

weft_future *weft_chan_recv_future_at(weft_chan_rx *rx, void *out,
                                      const weft_site *site)
{
    return weft__sync_op_new(0, &recv_ops, site, rx, out, 0);
}

weft_future *weft_chan_recv_init_at(weft_sync_op *op, weft_chan_rx *rx,
                                    void *out, const weft_site *site)
{
    return sync_op_init((struct sync_op *)op, &recv_ops, site, rx, out, 0);
}

/* ---- deadline forms ---- */

int weft_chan_send_dl(weft_chan_tx *tx, const void *msg, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &send_ops, NULL, tx, (void *)msg, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}

int weft_chan_recv_dl(weft_chan_rx *rx, void *out, int64_t deadline)
{
    struct sync_op op;
    sync_op_init(&op, &recv_ops, NULL, rx, out, 0);
    return weft_await_deadline(&op.base, NULL, deadline);
}
