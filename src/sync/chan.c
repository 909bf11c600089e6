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

/* Three cache lines. With a sender and a receiver on two workers every
 * operation moves the line it writes from the other CPU; the fields that
 * every send writes (and the queue heads it tests) share the first line,
 * the second holds what operations only read, which stays cached on both
 * CPUs, and the third is the receive cache's, which the receivers of a
 * channel that has one write and the senders read only when the channel
 * looks full. */
struct weft_chan {
    struct sync_lock lock;
    uint32_t out; /* messages moved to the receive cache and not yet
                     credited back: they count against the capacity */
    size_t head, len;
    size_t reserved; /* free slots promised to woken senders */
    struct waitq recvq, sendq;
    /* read-mostly */
    char *buf __attribute__((aligned(64))); /* ring of `size` slots (a
                                               power of two) */
    size_t size;
    size_t elem;        /* message size in bytes */
    size_t cap;         /* SIZE_MAX when unbounded */
    size_t batch;       /* free slots needed before waiting senders are woken */
    uint32_t senders;   /* handle count */
    uint32_t receivers; /* handle count */
    void *mem;          /* the allocation this struct sits in */
    char *rbuf;         /* the receive cache: `rcap` slots, or NULL */
    /* the receive cache (channels with rbuf): the next messages in order,
     * taken from the ring `rcap` at a time under both locks, popped under
     * rlock alone */
    struct sync_lock rlock __attribute__((aligned(64)));
    uint32_t rcap, rhead, rlen;
    _Atomic size_t popped; /* messages popped from the cache, ever; written
                              under rlock, read under lock */
    size_t credited;       /* `popped` when `out` was last credited (lock) */
} __attribute__((aligned(64)));

#define CHAN_ALLOC (sizeof(struct weft_chan) + 64)

/* Receive cache: at most this many messages and bytes, and an eighth of the
 * capacity; a channel whose cache would hold fewer than RCACHE_MIN messages
 * has none (W3's capacity 1 keeps the one-lock path). */
#define RCACHE_MAX 64
#define RCACHE_BYTES 512
#define RCACHE_MIN 8

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

/* Puts `msg` at the front of the ring, which grows past the capacity if it
 * must (a message put back: see put_back). */
static void ring_push_front(struct weft_chan *c, const void *msg)
{
    if (c->len == c->size && ring_grow(c) < 0)
        weft__panic(__FILE__, __LINE__,
                    "out of memory putting a message back in a channel");
    c->head = (c->head - 1) & (c->size - 1);
    copy_msg(ring_slot(c, 0), msg, c->elem);
    c->len++;
}

/* ---- the receive cache ---- */

/* A receiver that finds the cache empty takes the channel lock once and
 * moves up to `rcap` messages from the front of the ring into the cache;
 * the next receives pop them under `rlock` alone. With the senders on
 * another CPU, the line holding the channel lock then crosses once per
 * batch instead of once per message. The cache holds the oldest messages
 * (FIFO: receivers empty it before they look at the ring), and they count
 * against the capacity (`out`) until credited back: by the next refill,
 * or by a sender that finds the channel full and reads `popped`, so a
 * try_send sees exactly the room a channel without a cache would have.
 * Invariants, under both locks: out == rlen + (popped - credited);
 * recvq non-empty => len == 0 and rlen == 0. Lock order: rlock, then lock. */

static inline char *cache_slot(struct weft_chan *c, uint32_t i)
{
    return c->rbuf + (size_t)((c->rhead + i) & (c->rcap - 1)) * c->elem;
}

/* Under rlock: pops the oldest cached message. */
static inline void cache_pop(struct weft_chan *c, void *out)
{
    copy_msg(out, cache_slot(c, 0), c->elem);
    c->rhead++;
    c->rlen--;
    atomic_store_explicit(
        &c->popped, atomic_load_explicit(&c->popped, memory_order_relaxed) + 1,
        memory_order_release);
}

/* Under lock: gives back the capacity of the messages popped from the
 * cache since the last credit. */
static inline void cache_credit(struct weft_chan *c)
{
    size_t p = atomic_load_explicit(&c->popped, memory_order_acquire);
    c->out -= (uint32_t)(p - c->credited);
    c->credited = p;
}

/* Under both locks, cache empty and ring not: moves up to `rcap` messages
 * from the front of the ring to the cache. */
static void cache_fill(struct weft_chan *c)
{
    size_t n = c->len < c->rcap ? c->len : c->rcap;
    size_t first = c->size - c->head;
    if (first > n)
        first = n;
    memcpy(c->rbuf, ring_slot(c, 0), first * c->elem);
    memcpy(c->rbuf + first * c->elem, c->buf, (n - first) * c->elem);
    c->head = (c->head + n) & (c->size - 1);
    c->len -= n;
    c->out += (uint32_t)n;
    c->rhead = 0;
    c->rlen = (uint32_t)n;
}

/* Under both locks: puts `msg` in front of every cached message. A full
 * cache first gives its newest message back to the front of the ring. */
static void cache_push_front(struct weft_chan *c, const void *msg)
{
    cache_credit(c);
    if (c->rlen == c->rcap) {
        ring_push_front(c, cache_slot(c, c->rlen - 1));
        c->rlen--;
        c->out--;
    }
    c->rhead--;
    copy_msg(cache_slot(c, 0), msg, c->elem);
    c->rlen++;
    c->out++;
}

/* ---- the two operations, under the lock ---- */

/* Slots taken: messages in the ring and the cache, and reservations. */
static inline size_t chan_taken(const struct weft_chan *c)
{
    return c->len + c->out + c->reserved;
}

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
    if (chan_taken(c) + c->batch > c->cap)
        return;
    while (c->sendq.head && chan_taken(c) < c->cap) {
        c->reserved++;
        waitq_claim_one(&c->sendq, 1, wl);
    }
}

/* The channel looks full to a sender with nobody queued before it: the
 * receivers may have popped cached messages since they were last credited.
 * Returns true if there is room after all. */
static __attribute__((noinline)) bool send_room(struct weft_chan *c)
{
    if (!c->out)
        return false;
    cache_credit(c);
    return chan_taken(c) < c->cap;
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
    /* Queue behind waiting senders even when there is room (FIFO). */
    if (!reserved && (chan_taken(c) >= c->cap || c->sendq.head != NULL) &&
        (c->sendq.head != NULL || !send_room(c)))
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

/* recv_locked for a channel with a receive cache, its cache found empty
 * (under both locks): the first message to `out`, the next ones to the
 * cache. */
static int recv_refill(struct weft_chan *c, void *out, struct wake_list *wl)
{
    cache_credit(c);
    if (!c->len)
        return c->senders ? -EAGAIN : -EPIPE;
    ring_pop(c, out);
    if (c->len)
        cache_fill(c);
    if (c->sendq.head != NULL)
        grant_senders(c, wl);
    return 0;
}

static __attribute__((noinline)) int
recv_start_cached(struct weft_chan *c, void *out, struct wake_list *wl)
{
    sync_lock(&c->rlock);
    if (weft_likely(c->rlen)) {
        cache_pop(c, out);
        sync_unlock(&c->rlock);
        return 0;
    }
    sync_lock(&c->lock);
    int rc = recv_refill(c, out, wl);
    sync_unlock(&c->rlock);
    if (rc != -EAGAIN)
        sync_unlock(&c->lock);
    return rc;
}

/* Receives into `out` if that needs no wait. Returns 0 or -EPIPE with no
 * lock held, or -EAGAIN with the channel lock held (the caller queues a
 * waiter and unlocks). */
static inline __attribute__((always_inline)) int
recv_start(struct weft_chan *c, void *out, struct wake_list *wl)
{
    if (c->rbuf)
        return recv_start_cached(c, out, wl);
    sync_lock(&c->lock);
    int rc = recv_locked(c, out, wl);
    if (rc != -EAGAIN)
        sync_unlock(&c->lock);
    return rc;
}

/* A message handed to a receive future that was then dropped goes back: to
 * the next waiting receiver, or to the front of the buffer (ahead of the
 * cached messages). Under the lock, and rlock if the channel has a cache. */
static void put_back(struct weft_chan *c, const void *msg, struct wake_list *wl)
{
    struct waiter *r = c->recvq.head;
    if (r) {
        waitq_remove(&c->recvq, r);
        copy_msg(r->ptr, msg, c->elem);
        waiter_claim(r, 0, wl);
        return;
    }
    if (c->rbuf)
        cache_push_front(c, msg);
    else
        ring_push_front(c, msg);
}

/* ---- the send future ---- */

static weft_poll send_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    struct wake_list wl = {NULL};
    int rc;
    uint32_t s = waiter_state(&op->w);
    if (weft_unlikely(s != W_IDLE)) {
        if (s == W_QUEUED && waiter_repoll(&c->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w);
        if (op->w.result < 0)
            return weft_future_set(f, NULL, op->w.result);
        /* Woken with a slot reserved for us. The message may go straight
         * to a receiver instead, leaving the slot free: pass it on. */
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

static weft_poll recv_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_chan *c = op->obj;
    struct wake_list wl = {NULL};
    uint32_t s = waiter_state(&op->w);
    if (weft_unlikely(s != W_IDLE)) {
        if (s == W_QUEUED && waiter_repoll(&c->lock, &op->w, cx))
            return WEFT_PENDING;
        /* A sender put the message in *out, or the channel closed. */
        waiter_reset(&op->w);
        budget_use(cx);
        return weft_future_set(f, NULL, op->w.result);
    }
    if (budget_spent(cx))
        return WEFT_PENDING;
    int rc = recv_start(c, op->w.ptr, &wl);
    if (rc == -EAGAIN) {
        waiter_enqueue(&c->recvq, &op->w, cx);
        sync_unlock(&c->lock);
        return WEFT_PENDING;
    }
    wake_list_run(&wl);
    budget_use(cx);
    return weft_future_set(f, NULL, rc);
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
    if (c->rbuf)
        sync_lock(&c->rlock);
    sync_lock(&c->lock);
    put_back(c, op->w.ptr, &wl);
    sync_unlock(&c->lock);
    if (c->rbuf)
        sync_unlock(&c->rlock);
    wake_list_run(&wl);
}

static const weft_future_ops recv_ops = {
    .poll = recv_poll,
    .drop = recv_drop,
    .name = "chan_recv",
};

/* ---- handles ---- */

/* The receive cache's size for messages of `elem` bytes and capacity `cap`:
 * a power of two, or 0 for none. */
static uint32_t cache_size(size_t elem, size_t cap)
{
    uint32_t n = RCACHE_MAX;
    while (n >= RCACHE_MIN && ((size_t)n * elem > RCACHE_BYTES || n > cap / 8))
        n /= 2;
    return n >= RCACHE_MIN ? n : 0;
}

static size_t chan_alloc_size(size_t elem, uint32_t rcap)
{
    return CHAN_ALLOC + (size_t)rcap * elem;
}

static int chan_create(weft_chan_tx **tx, weft_chan_rx **rx, size_t elem,
                       size_t cap)
{
    *tx = NULL;
    *rx = NULL;
    uint32_t rcap = cache_size(elem, cap);
    char *mem = weft__alloc(chan_alloc_size(elem, rcap));
    if (!mem)
        return -ENOMEM;
    struct weft_chan *c =
        (struct weft_chan *)(((uintptr_t)mem + 63) & ~(uintptr_t)63);
    memset(c, 0, sizeof *c);
    c->mem = mem;
    if (rcap) {
        c->rcap = rcap;
        c->rbuf = (char *)(c + 1);
    }
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
    weft__free(c->mem, chan_alloc_size(c->elem, c->rcap));
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
    if (c->rbuf)
        sync_lock(&c->rlock);
    sync_lock(&c->lock);
    WEFT_CHECK(c->receivers > 0, "receiver handle freed too often");
    if (--c->receivers == 0) {
        waitq_claim_all(&c->sendq, -EPIPE, &wl);
        c->len = 0; /* nobody can receive them now */
        c->head = 0;
        cache_credit(c);
        c->out = 0;
        c->rlen = 0;
    }
    bool gone = !c->senders && !c->receivers;
    /* rlock first: once the lock is free, the last sender may free c. */
    if (c->rbuf)
        sync_unlock(&c->rlock);
    sync_unlock(&c->lock);
    wake_list_run(&wl);
    if (gone)
        chan_free(c);
}

size_t weft_chan_len(const weft_chan_rx *rx)
{
    struct weft_chan *c = chan_of_rx(rx);
    if (c->rbuf)
        sync_lock(&c->rlock);
    sync_lock(&c->lock);
    size_t n = c->len + c->rlen;
    sync_unlock(&c->lock);
    if (c->rbuf)
        sync_unlock(&c->rlock);
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
    return sync_await_queued(&op, NULL);
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
    int rc = recv_start(c, out, &wl);
    if (rc == -EAGAIN)
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
    return sync_await_queued(&op, NULL);
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
    int rc = recv_start(c, out, &wl);
    if (weft_unlikely(rc == -EAGAIN))
        return recv_wait(c, out, w);
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
