/* weft: channels, sync primitives, select, task groups.
 * Included by <weft.h>; do not include directly.
 *
 * Every waiting operation here comes in the same forms:
 *
 *   weft_X(...)              from a coroutine task, as an ordinary call:
 *                            suspends the task (never its worker) while it
 *                            must wait. Returns -ECANCELED if the task is
 *                            cancelled (nothing was done), -ETIMEDOUT when
 *                            an enclosing deadline scope expires (idem),
 *                            -EPERM outside a coroutine task.
 *   weft_X_dl(..., deadline) the same with a deadline (weft_now() time,
 *                            ms): -ETIMEDOUT once it passes, the operation
 *                            not done. A deadline that has passed fails at
 *                            once (as weft_await_deadline()).
 *   weft_X_future(...)       a heap future (ready with err = what weft_X
 *                            returns), to await, select, join_all, time out
 *                            or spawn. NULL if memory is exhausted.
 *   weft_X_init(op, ...)     the same future in storage the caller owns (a
 *                            weft_sync_op), for stackless state machines:
 *                            no allocation (see weft_sync_op).
 *   weft_X_blocking(...)     from a thread that is not running a task (a
 *                            plain thread, the blocking pool): blocks the
 *                            thread (tokio's blocking_send). -EPERM from
 *                            inside a task, where it would block a worker.
 *   weft_<noun>_try_<verb>   never waits: -EAGAIN (or -EBUSY for locks)
 *                            where the waiting form would wait. Any
 *                            thread, any context.
 *
 * A call that does not have to wait allocates nothing, makes no system call
 * and takes only the primitive's own short lock. Operations that complete at
 * once spend the task's cooperative budget: a task whose channel is always
 * ready is rescheduled now and then so that other tasks run.
 *
 * Cancellation safety: an operation future that is dropped before it
 * completed (the loser of a weft_select(), a cancelled task, a timeout) has
 * done nothing, and every primitive stays consistent. Each function says
 * what "nothing" means for it: a receive loses no message (one that was
 * already handed to it goes back to the front of the channel), a send keeps
 * its message (the caller still has it; nothing was queued), a lock or a
 * permit that had been granted is passed on to the next waiter.
 *
 * A future here that returned PENDING refers to the task (or thread) that
 * polled it: poll it again or free it from that task before the task ends.
 * Awaiting, selecting, joining and spawning always do.
 *
 * Messages are copied in and out by value: a channel is created with an
 * element size, and send/receive take a pointer to that many bytes. Any C
 * struct travels; to send a pointer, send the pointer's bytes (&ptr).
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#ifdef __cplusplus
extern "C" {
#endif

/* Storage for one operation future in caller-owned memory (the *_init
 * functions), 88 bytes. Its first member is the future; the rest is weft's.
 * Keep it where it is (no memcpy) from initialisation until the operation
 * has finished or been freed. One weft_sync_op holds one operation at a
 * time. An operation that returned WEFT_READY holds nothing: initialise the
 * storage again for the next one, with or without weft_future_free() first
 * (a stackless loop saves the call). One that has not finished must be
 * freed with weft_future_free(), which cancels it and frees nothing. */
typedef struct weft_sync_op {
    weft_future base;
    void *opaque_[7];
} weft_sync_op;

/* ======================================================================== */
/* Channels: multi-producer queues, bounded or unbounded                    */
/* ======================================================================== */

/* A queue of fixed-size messages between tasks and threads. Senders and
 * receivers hold separate handles, both counted:
 *
 *   - once every sender handle has been freed, receivers drain what is
 *     buffered and then get -EPIPE;
 *   - once every receiver handle has been freed, sends return -EPIPE and
 *     the message stays the caller's; messages still buffered are discarded
 *     (receive them first if they own memory).
 *
 * Each message is delivered exactly once, to one receiver. Any number of
 * tasks may send, and any number may receive from one handle or from
 * clones (each message goes to one of them, waiting receivers served in
 * FIFO order); the usual shape is many senders and one receiver (tokio's
 * mpsc). Messages from one sender arrive in the order sent.
 *
 * Ownership: weft_chan_new() hands out one sender and one receiver handle;
 * clone them with weft_chan_tx_clone()/weft_chan_rx_clone() and free every
 * handle with weft_chan_tx_free()/weft_chan_rx_free(). The channel goes
 * when the last handle does. A handle must outlive the futures made from
 * it. Every function is safe from any thread. */
typedef struct weft_chan_tx weft_chan_tx;
typedef struct weft_chan_rx weft_chan_rx;

/* Creates a bounded channel: at most `capacity` messages (>= 1) wait in it;
 * a send to a full channel waits for room. Buffer memory grows on demand up
 * to the capacity.
 * Returns 0 and stores the handles in *tx and *rx, or
 *   -EINVAL  capacity is 0,
 *   -ENOMEM  memory is exhausted.
 * Any thread. */
WEFT_API int weft_chan_new(weft_chan_tx **tx, weft_chan_rx **rx,
                           size_t elem_size, size_t capacity);

/* Creates an unbounded channel: sends never wait (they fail with -ENOMEM
 * only when the buffer cannot grow). Returns as weft_chan_new(). */
WEFT_API int weft_chan_new_unbounded(weft_chan_tx **tx, weft_chan_rx **rx,
                                     size_t elem_size);

/* Adds a sender handle; returns it (the same pointer: a handle is a count,
 * not an object). Free it like the first. Any thread. */
WEFT_API weft_chan_tx *weft_chan_tx_clone(weft_chan_tx *tx);

/* Releases a sender handle. The last one closes the channel for receivers:
 * waiting receivers get -EPIPE (the buffer is empty when any wait), later
 * ones drain the buffer first. NULL is ignored. Any thread. */
WEFT_API void weft_chan_tx_free(weft_chan_tx *tx);

/* Adds a receiver handle and returns it, as weft_chan_tx_clone(). */
WEFT_API weft_chan_rx *weft_chan_rx_clone(weft_chan_rx *rx);

/* Releases a receiver handle. The last one closes the channel for senders:
 * waiting senders get -EPIPE, keeping their messages; buffered messages are
 * discarded. No receive future of this handle may remain. NULL is ignored.
 * Any thread. */
WEFT_API void weft_chan_rx_free(weft_chan_rx *rx);

/* Sends a copy of the elem_size bytes at `msg`, waiting while the channel
 * is full. Waiting senders are served in FIFO order (a new send queues
 * behind them even if there is room), and woken once a quarter of the
 * capacity (at least one slot) is free, so that they run in batches rather
 * than one wake-up per message.
 * Returns
 *   0          sent (the channel holds its own copy),
 *   -EPIPE     every receiver is gone; nothing was sent,
 *   -ENOMEM    an unbounded channel could not grow; nothing was sent,
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call; nothing sent.
 * Cancellation safe: a send that did not return 0 did not send.
 * Suspends. */
WEFT_API int weft_chan_send(weft_chan_tx *tx, const void *msg);
WEFT_API int weft_chan_send_dl(weft_chan_tx *tx, const void *msg,
                               int64_t deadline);

/* Sends without waiting: as weft_chan_send(), or -EAGAIN when the channel is
 * full. Any thread, any context. */
WEFT_API int weft_chan_try_send(weft_chan_tx *tx, const void *msg);

/* weft_chan_send() for a plain thread: blocks the thread while the channel
 * is full. Returns 0, -EPIPE, -ENOMEM, or -EPERM from inside a task. */
WEFT_API int weft_chan_send_blocking(weft_chan_tx *tx, const void *msg);

/* A future that sends: ready with err as weft_chan_send() returns it (value
 * NULL). The message is copied into the future when it is created, so
 * `msg` need not outlive it. Dropping it unfinished sends nothing.
 * NULL if memory is exhausted. Any thread. */
WEFT_API weft_future *weft_chan_send_future_at(weft_chan_tx *tx,
                                               const void *msg,
                                               const weft_site *site);
#define weft_chan_send_future(tx, msg)                                         \
    weft_chan_send_future_at((tx), (msg), WEFT_HERE)

/* The send future in `op`. Borrows `msg`, which must stay valid and
 * unchanged until the future is freed. */
WEFT_API weft_future *weft_chan_send_init_at(weft_sync_op *op, weft_chan_tx *tx,
                                             const void *msg,
                                             const weft_site *site);
#define weft_chan_send_init(op, tx, msg)                                       \
    weft_chan_send_init_at((op), (tx), (msg), WEFT_HERE)

/* Receives the oldest message into the elem_size bytes at `out`, waiting
 * while the channel is empty.
 * Returns
 *   0          a message is in *out,
 *   -EPIPE     every sender is gone and the channel is drained,
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call.
 * Cancellation safe: a receive that did not return 0 took no message (one
 * that had already been handed to it goes back to the front of the
 * channel; *out may have been written). Suspends. */
WEFT_API int weft_chan_recv(weft_chan_rx *rx, void *out);
WEFT_API int weft_chan_recv_dl(weft_chan_rx *rx, void *out, int64_t deadline);

/* Receives without waiting: as weft_chan_recv(), or -EAGAIN when the
 * channel is empty (and senders remain). Any thread, any context. */
WEFT_API int weft_chan_try_recv(weft_chan_rx *rx, void *out);

/* weft_chan_recv() for a plain thread. Returns 0, -EPIPE, or -EPERM from
 * inside a task. */
WEFT_API int weft_chan_recv_blocking(weft_chan_rx *rx, void *out);

/* A future that receives into `out`, which must stay valid until the future
 * is freed: ready with err as weft_chan_recv() returns it (value NULL).
 * NULL if memory is exhausted. Any thread. */
WEFT_API weft_future *weft_chan_recv_future_at(weft_chan_rx *rx, void *out,
                                               const weft_site *site);
#define weft_chan_recv_future(rx, out)                                         \
    weft_chan_recv_future_at((rx), (out), WEFT_HERE)

/* The receive future in `op`. */
WEFT_API weft_future *weft_chan_recv_init_at(weft_sync_op *op, weft_chan_rx *rx,
                                             void *out, const weft_site *site);
#define weft_chan_recv_init(op, rx, out)                                       \
    weft_chan_recv_init_at((op), (rx), (out), WEFT_HERE)

/* Returns the number of messages buffered now (a snapshot). Any thread. */
WEFT_API size_t weft_chan_len(const weft_chan_rx *rx);

/* ======================================================================== */
/* Oneshot channels: one value, once                                        */
/* ======================================================================== */

/* A channel for exactly one message, from one sender handle to one receiver
 * handle: the reply slot of a request, the result of a job. One allocation
 * for the pair. Ownership: weft_oneshot_send() or weft_oneshot_tx_free()
 * releases the sender; weft_oneshot_rx_free() the receiver; the memory goes
 * with the last. Any thread. */
typedef struct weft_oneshot_tx weft_oneshot_tx;
typedef struct weft_oneshot_rx weft_oneshot_rx;

/* Creates a oneshot channel for one message of elem_size bytes (one
 * allocation of 8 bytes plus the message, or plus 16 bytes for a message of
 * 16 bytes or less: 24 bytes for a pointer or a u64).
 * Returns 0 and stores the handles, or
 *   -EINVAL  elem_size is over 64 MiB,
 *   -ENOMEM  memory is exhausted.
 * Any thread. */
WEFT_API int weft_oneshot_new(weft_oneshot_tx **tx, weft_oneshot_rx **rx,
                              size_t elem_size);

/* Sends a copy of the message and releases `tx` (whatever it returns). Never
 * waits.
 * Returns
 *   0       sent,
 *   -EPIPE  the receiver is gone; the message stays the caller's.
 * Any thread, any context. */
WEFT_API int weft_oneshot_send(weft_oneshot_tx *tx, const void *msg);

/* Releases `tx` without sending: the receiver gets -EPIPE. NULL is ignored.
 * Any thread. */
WEFT_API void weft_oneshot_tx_free(weft_oneshot_tx *tx);

/* Waits for the message and copies it into `out`.
 * Returns
 *   0          the message is in *out,
 *   -EPIPE     the sender was freed without sending, or the message was
 *              received already,
 *   -EBUSY     another receive of this handle is waiting,
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call.
 * Cancellation safe (the message stays in the channel). Suspends. */
WEFT_API int weft_oneshot_recv(weft_oneshot_rx *rx, void *out);
WEFT_API int weft_oneshot_recv_dl(weft_oneshot_rx *rx, void *out,
                                  int64_t deadline);
/* Receives without waiting.
 * Returns 0 (message in *out), -EAGAIN (nothing sent yet), -EPIPE or -EBUSY
 * as weft_oneshot_recv(). Any thread, any context. */
WEFT_API int weft_oneshot_try_recv(weft_oneshot_rx *rx, void *out);
/* weft_oneshot_recv() for a thread that is not running a task: blocks it.
 * Returns 0, -EPIPE, -EBUSY, or -EPERM from inside a task. */
WEFT_API int weft_oneshot_recv_blocking(weft_oneshot_rx *rx, void *out);
/* The receive as a heap future (NULL if memory is exhausted) or in `op`:
 * ready with err as weft_oneshot_recv() returns it, value NULL. `out` must
 * stay valid until the future is finished or freed. Cancellation safe. */
WEFT_API weft_future *weft_oneshot_recv_future_at(weft_oneshot_rx *rx,
                                                  void *out,
                                                  const weft_site *site);
#define weft_oneshot_recv_future(rx, out)                                      \
    weft_oneshot_recv_future_at((rx), (out), WEFT_HERE)
WEFT_API weft_future *weft_oneshot_recv_init_at(weft_sync_op *op,
                                                weft_oneshot_rx *rx, void *out,
                                                const weft_site *site);
#define weft_oneshot_recv_init(op, rx, out)                                    \
    weft_oneshot_recv_init_at((op), (rx), (out), WEFT_HERE)

/* Receives from a future's poll function, with no operation future: the
 * lightest way for a stackless task to wait for a reply (tokio's
 * `Receiver::poll`). While it must wait, the channel itself keeps a clone of
 * the waker of `cx` (no waiter node, no weft_sync_op): a stackless future
 * that waits on a oneshot needs only the receiver handle in its state.
 * Returns
 *   0        the message is in *out,
 *   -EAGAIN  not yet: the waker of `cx` will be woken when the message is
 *            sent or the sender is freed (return WEFT_PENDING and poll
 *            again then), or when the task's cooperative budget is spent,
 *   -EPIPE   the sender was freed without sending, or the message was
 *            received already,
 *   -EBUSY   a receive future of this handle is waiting.
 * Polling again from another task moves the registration to it. Releasing
 * the receiver (weft_oneshot_rx_free()) drops a registration that is still
 * there, so a future that gives up needs no other cleanup. Only from poll
 * functions (it needs `cx`); the receiver is used by one task at a time. */
WEFT_API int weft_oneshot_poll_recv(weft_oneshot_rx *rx, weft_cx *cx,
                                    void *out);

/* Releases the receiver. A message sent and not received is discarded; a
 * later send returns -EPIPE. No receive future of it may remain. NULL is
 * ignored. Any thread. */
WEFT_API void weft_oneshot_rx_free(weft_oneshot_rx *rx);

/* ======================================================================== */
/* Broadcast channels: every receiver sees every message                    */
/* ======================================================================== */

/* A bounded ring of the last `capacity` messages; each receiver has its own
 * position. Sends never wait: when the ring is full the oldest message is
 * overwritten, and a receiver that had not read it yet is told how many it
 * missed (tokio's broadcast, with its Lagged error folded into the result).
 *
 * Ownership: weft_bcast_new() hands out a sender and a first receiver.
 * Senders are counted like weft_chan_tx (clone/free); each receiver is its
 * own small object (weft_bcast_subscribe() makes more) and is used by one
 * task at a time. The channel goes with the last handle. Closing as for
 * weft_chan: no senders -> receivers drain, then -EPIPE; no receivers ->
 * sends return -EPIPE. Any thread. */
typedef struct weft_bcast_tx weft_bcast_tx;
typedef struct weft_bcast_rx weft_bcast_rx;

/* Returns 0 and the handles, or -EINVAL (capacity 0), -ENOMEM. */
WEFT_API int weft_bcast_new(weft_bcast_tx **tx, weft_bcast_rx **rx,
                            size_t elem_size, size_t capacity);
WEFT_API weft_bcast_tx *weft_bcast_tx_clone(weft_bcast_tx *tx);
/* The last sender wakes every waiting receiver (they drain, then -EPIPE).
 * NULL is ignored. */
WEFT_API void weft_bcast_tx_free(weft_bcast_tx *tx);

/* A new receiver that will see the messages sent from now on.
 * Returns 0, -EPIPE (no sender remains), or -ENOMEM. Any thread. */
WEFT_API int weft_bcast_subscribe(weft_bcast_tx *tx, weft_bcast_rx **rx);

/* Frees a receiver; no receive future of it may remain. NULL is ignored. */
WEFT_API void weft_bcast_rx_free(weft_bcast_rx *rx);

/* Sends a copy of the message to every receiver. Never waits.
 * Returns 0, or -EPIPE when no receiver exists (nothing was stored).
 * Any thread, any context. */
WEFT_API int weft_bcast_send(weft_bcast_tx *tx, const void *msg);

/* Receives the next message this receiver has not seen into `out`.
 * Returns
 *   >= 0       a message is in *out; the value is the number of older
 *              messages this receiver missed because the ring overwrote
 *              them before it read them (0 normally; capped at INT_MAX),
 *   -EPIPE     every sender is gone and this receiver has seen everything,
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call.
 * Cancellation safe (the receiver's position does not move). Suspends. */
WEFT_API int weft_bcast_recv(weft_bcast_rx *rx, void *out);
WEFT_API int weft_bcast_recv_dl(weft_bcast_rx *rx, void *out, int64_t deadline);
/* Receives without waiting.
 * Returns >= 0 (missed count, message in *out), -EAGAIN (nothing new) or
 * -EPIPE. Any thread, any context (one user of rx at a time). */
WEFT_API int weft_bcast_try_recv(weft_bcast_rx *rx, void *out);
/* weft_bcast_recv() for a thread that is not running a task: blocks it.
 * Returns >= 0, -EPIPE, or -EPERM from inside a task. */
WEFT_API int weft_bcast_recv_blocking(weft_bcast_rx *rx, void *out);
/* The receive as a heap future (NULL if memory is exhausted) or in `op`:
 * ready with err 0 and value (void *)(uintptr_t)missed, or err -EPIPE.
 * `out` must stay valid until the future is finished or freed.
 * Cancellation safe. */
WEFT_API weft_future *weft_bcast_recv_future_at(weft_bcast_rx *rx, void *out,
                                                const weft_site *site);
#define weft_bcast_recv_future(rx, out)                                        \
    weft_bcast_recv_future_at((rx), (out), WEFT_HERE)
WEFT_API weft_future *weft_bcast_recv_init_at(weft_sync_op *op,
                                              weft_bcast_rx *rx, void *out,
                                              const weft_site *site);
#define weft_bcast_recv_init(op, rx, out)                                      \
    weft_bcast_recv_init_at((op), (rx), (out), WEFT_HERE)

/* ======================================================================== */
/* Watch channels: receivers see the latest value                           */
/* ======================================================================== */

/* One value that senders replace and receivers observe: configuration,
 * state, progress. Values in between two looks are skipped, never queued.
 * Each receiver remembers the version it saw last.
 *
 * Ownership: weft_watch_new() hands out a sender and a receiver; senders
 * are counted (clone/free), each receiver is its own object
 * (weft_watch_rx_clone() makes more). The channel goes with the last handle.
 * Any thread. */
typedef struct weft_watch_tx weft_watch_tx;
typedef struct weft_watch_rx weft_watch_rx;

/* Creates a watch channel holding a copy of `initial` (elem_size bytes),
 * which the first receiver counts as seen. Returns 0, or -ENOMEM. */
WEFT_API int weft_watch_new(weft_watch_tx **tx, weft_watch_rx **rx,
                            size_t elem_size, const void *initial);
WEFT_API weft_watch_tx *weft_watch_tx_clone(weft_watch_tx *tx);
/* The last sender wakes every waiting receiver with -EPIPE. NULL ignored. */
WEFT_API void weft_watch_tx_free(weft_watch_tx *tx);
/* A new receiver that has seen what `rx` has seen. Returns 0 or -ENOMEM. */
WEFT_API int weft_watch_rx_clone(weft_watch_rx *rx, weft_watch_rx **out);
/* Frees a receiver; no receive future of it may remain. NULL ignored. */
WEFT_API void weft_watch_rx_free(weft_watch_rx *rx);

/* Replaces the value with a copy of `msg` and wakes every waiting receiver.
 * Never waits. Returns 0, or -EPIPE when no receiver exists (the value is
 * not replaced). Any thread, any context. */
WEFT_API int weft_watch_send(weft_watch_tx *tx, const void *msg);

/* Copies the current value into `out` without marking it seen. Never waits.
 * Returns 0. Any thread. */
WEFT_API int weft_watch_get(weft_watch_rx *rx, void *out);

/* Waits until the value is one this receiver has not seen, copies it into
 * `out` and marks it seen.
 * Returns
 *   0          a new value is in *out,
 *   -EPIPE     every sender is gone and nothing new remains,
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call.
 * Cancellation safe (nothing is marked seen). Suspends. */
WEFT_API int weft_watch_recv(weft_watch_rx *rx, void *out);
WEFT_API int weft_watch_recv_dl(weft_watch_rx *rx, void *out, int64_t deadline);
/* Receives without waiting.
 * Returns 0 (new value in *out, marked seen), -EAGAIN (nothing new) or
 * -EPIPE. Any thread, any context. */
WEFT_API int weft_watch_try_recv(weft_watch_rx *rx, void *out);
/* weft_watch_recv() for a thread that is not running a task: blocks it.
 * Returns 0, -EPIPE, or -EPERM from inside a task. */
WEFT_API int weft_watch_recv_blocking(weft_watch_rx *rx, void *out);
/* The receive as a heap future (NULL if memory is exhausted) or in `op`:
 * ready with err as weft_watch_recv() returns it, value NULL. `out` must
 * stay valid until the future is finished or freed. Cancellation safe. */
WEFT_API weft_future *weft_watch_recv_future_at(weft_watch_rx *rx, void *out,
                                                const weft_site *site);
#define weft_watch_recv_future(rx, out)                                        \
    weft_watch_recv_future_at((rx), (out), WEFT_HERE)
WEFT_API weft_future *weft_watch_recv_init_at(weft_sync_op *op,
                                              weft_watch_rx *rx, void *out,
                                              const weft_site *site);
#define weft_watch_recv_init(op, rx, out)                                      \
    weft_watch_recv_init_at((op), (rx), (out), WEFT_HERE)

/* ======================================================================== */
/* Sync primitives                                                          */
/* ======================================================================== */

/* The primitives below are caller-owned storage: embed them anywhere,
 * initialise with *_init() (or the static initialiser where there is one),
 * finish with *_destroy() once nothing uses or waits on them. None of them
 * ever blocks a worker thread: a task that waits is suspended. All of their
 * functions are safe from any thread. Ownership of a lock or a permit
 * belongs to whoever acquired it, not to a task: another task may release
 * it. */

/* ---- mutex ------------------------------------------------------------- */

/* An async mutex with FIFO hand-off: unlocking passes the lock directly to
 * the oldest waiter, so no waiter can be overtaken or starved. Hold it
 * across suspensions freely (that is what it is for; a pthread mutex must
 * not be). */
typedef struct weft_mutex {
    void *opaque_[4];
} weft_mutex;

/* A statically initialised, unlocked mutex (all-zero). */
/* clang-format off */
#define WEFT_MUTEX_INIT {{0}}
/* clang-format on */

/* Initialises `m` unlocked. */
WEFT_API void weft_mutex_init(weft_mutex *m);

/* Finishes with `m`. Returns 0, or -EBUSY if it is locked or waited on (it
 * is left as it is). */
WEFT_API int weft_mutex_destroy(weft_mutex *m);

/* Locks `m`, waiting for it in FIFO order.
 * Returns 0 (the caller holds the lock), or -ECANCELED, -ETIMEDOUT, -EPERM
 * as every suspending call (the caller does not hold it).
 * Cancellation safe: a lock future dropped after the lock was handed to it
 * passes the lock on. Suspends. */
WEFT_API int weft_mutex_lock(weft_mutex *m);
WEFT_API int weft_mutex_lock_dl(weft_mutex *m, int64_t deadline);
/* Locks `m` if it is free and nobody waits.
 * Returns
 *   0       the caller holds the lock,
 *   -EBUSY  it is held.
 * Any thread, any context. */
WEFT_API int weft_mutex_try_lock(weft_mutex *m);
/* weft_mutex_lock() for a thread that is not running a task: blocks it in
 * the same FIFO queue as tasks. Returns 0, or -EPERM from inside a task. */
WEFT_API int weft_mutex_lock_blocking(weft_mutex *m);
/* The lock as a heap future (NULL if memory is exhausted) or in `op`: ready
 * with err 0 holding the lock. Cancellation safe as weft_mutex_lock(). */
WEFT_API weft_future *weft_mutex_lock_future_at(weft_mutex *m,
                                                const weft_site *site);
#define weft_mutex_lock_future(m) weft_mutex_lock_future_at((m), WEFT_HERE)
WEFT_API weft_future *weft_mutex_lock_init_at(weft_sync_op *op, weft_mutex *m,
                                              const weft_site *site);
#define weft_mutex_lock_init(op, m)                                            \
    weft_mutex_lock_init_at((op), (m), WEFT_HERE)

/* Unlocks `m`, handing it to the oldest waiter if there is one. Unlocking a
 * mutex that is not locked aborts. Never waits. */
WEFT_API void weft_mutex_unlock(weft_mutex *m);

/* ---- read-write lock --------------------------------------------------- */

/* Many readers or one writer, granted in FIFO order: a writer waits for the
 * readers ahead of it, and readers that arrive after a waiting writer wait
 * behind it, so neither side starves. Consecutive waiting readers are
 * granted together. */
typedef struct weft_rwlock {
    void *opaque_[4];
} weft_rwlock;

/* A statically initialised, free rwlock (all-zero). */
/* clang-format off */
#define WEFT_RWLOCK_INIT {{0}}
/* clang-format on */

/* Initialises `rw` free. */
WEFT_API void weft_rwlock_init(weft_rwlock *rw);
/* Finishes with `rw`. Returns 0, or -EBUSY if it is held or waited on. */
WEFT_API int weft_rwlock_destroy(weft_rwlock *rw);

/* Takes a read lock, waiting behind any writer that holds it or waits.
 * Returns 0 (a read lock is held), or -ECANCELED, -ETIMEDOUT, -EPERM as
 * every suspending call (nothing is held).
 * Cancellation safe: a read lock granted to a dropped future is released.
 * Suspends. */
WEFT_API int weft_rwlock_read(weft_rwlock *rw);
WEFT_API int weft_rwlock_read_dl(weft_rwlock *rw, int64_t deadline);
/* Takes a read lock if no writer holds it or waits.
 * Returns 0, or -EBUSY. Any thread, any context. */
WEFT_API int weft_rwlock_try_read(weft_rwlock *rw);
/* weft_rwlock_read() blocking a thread that is not running a task.
 * Returns 0, or -EPERM from inside a task. */
WEFT_API int weft_rwlock_read_blocking(weft_rwlock *rw);
/* The read lock as a heap future (NULL if memory is exhausted) or in `op`:
 * ready with err 0 holding a read lock. */
WEFT_API weft_future *weft_rwlock_read_future_at(weft_rwlock *rw,
                                                 const weft_site *site);
#define weft_rwlock_read_future(rw) weft_rwlock_read_future_at((rw), WEFT_HERE)
WEFT_API weft_future *weft_rwlock_read_init_at(weft_sync_op *op,
                                               weft_rwlock *rw,
                                               const weft_site *site);
#define weft_rwlock_read_init(op, rw)                                          \
    weft_rwlock_read_init_at((op), (rw), WEFT_HERE)

/* Takes the write lock, waiting for every holder and every earlier waiter.
 * Returns 0 (the write lock is held), or -ECANCELED, -ETIMEDOUT, -EPERM
 * (nothing is held). Cancellation safe: a write lock granted to a dropped
 * future is released. Suspends. */
WEFT_API int weft_rwlock_write(weft_rwlock *rw);
WEFT_API int weft_rwlock_write_dl(weft_rwlock *rw, int64_t deadline);
/* Takes the write lock if it is free and nobody waits.
 * Returns 0, or -EBUSY. Any thread, any context. */
WEFT_API int weft_rwlock_try_write(weft_rwlock *rw);
/* weft_rwlock_write() blocking a thread that is not running a task.
 * Returns 0, or -EPERM from inside a task. */
WEFT_API int weft_rwlock_write_blocking(weft_rwlock *rw);
/* The write lock as a heap future (NULL if memory is exhausted) or in
 * `op`: ready with err 0 holding the write lock. */
WEFT_API weft_future *weft_rwlock_write_future_at(weft_rwlock *rw,
                                                  const weft_site *site);
#define weft_rwlock_write_future(rw)                                           \
    weft_rwlock_write_future_at((rw), WEFT_HERE)
WEFT_API weft_future *weft_rwlock_write_init_at(weft_sync_op *op,
                                                weft_rwlock *rw,
                                                const weft_site *site);
#define weft_rwlock_write_init(op, rw)                                         \
    weft_rwlock_write_init_at((op), (rw), WEFT_HERE)

/* Releases one read lock, or the write lock, whichever is held (the lock
 * knows which kind), granting waiters in order. Releasing a lock that is
 * not held aborts. Never waits. */
WEFT_API void weft_rwlock_unlock(weft_rwlock *rw);

/* ---- semaphore --------------------------------------------------------- */

/* A counter of permits. Waiters are served in FIFO order: a large request
 * at the head is not overtaken by smaller ones behind it. */
typedef struct weft_sem {
    void *opaque_[4];
} weft_sem;

/* Initialises `s` with `permits` permits. */
WEFT_API void weft_sem_init(weft_sem *s, size_t permits);
/* Finishes with `s`. Returns 0, or -EBUSY if someone waits on it. */
WEFT_API int weft_sem_destroy(weft_sem *s);

/* Acquires `n` permits (n = 0 succeeds at once).
 * Returns 0 (the caller holds them), or -ECANCELED, -ETIMEDOUT, -EPERM
 * (nothing held). Cancellation safe: permits granted to a dropped future are
 * released again. Suspends. */
WEFT_API int weft_sem_acquire(weft_sem *s, size_t n);
WEFT_API int weft_sem_acquire_dl(weft_sem *s, size_t n, int64_t deadline);
/* Acquires `n` permits if they are there and nobody waits first.
 * Returns 0, or -EAGAIN. Any thread, any context. */
WEFT_API int weft_sem_try_acquire(weft_sem *s, size_t n);
/* weft_sem_acquire() blocking a thread that is not running a task, in the
 * same FIFO queue as tasks. Returns 0, or -EPERM from inside a task. */
WEFT_API int weft_sem_acquire_blocking(weft_sem *s, size_t n);
/* The acquisition as a heap future (NULL if memory is exhausted) or in
 * `op`: ready with err 0 holding the n permits. Cancellation safe. */
WEFT_API weft_future *weft_sem_acquire_future_at(weft_sem *s, size_t n,
                                                 const weft_site *site);
#define weft_sem_acquire_future(s, n)                                          \
    weft_sem_acquire_future_at((s), (n), WEFT_HERE)
WEFT_API weft_future *weft_sem_acquire_init_at(weft_sync_op *op, weft_sem *s,
                                               size_t n, const weft_site *site);
#define weft_sem_acquire_init(op, s, n)                                        \
    weft_sem_acquire_init_at((op), (s), (n), WEFT_HERE)

/* Adds `n` permits, granting waiters in order. Never waits. */
WEFT_API void weft_sem_release(weft_sem *s, size_t n);

/* Returns the permits available now (a snapshot). */
WEFT_API size_t weft_sem_available(weft_sem *s);

/* ---- notify ------------------------------------------------------------ */

/* Wakes waiting tasks, tokio's Notify: weft_notify_one() wakes the oldest
 * waiter or, if none waits, stores one permit that the next wait consumes
 * at once (so a notification sent just before a task starts waiting is not
 * lost); weft_notify_all() wakes everyone waiting now and stores nothing. */
typedef struct weft_notify {
    void *opaque_[4];
} weft_notify;

/* A statically initialised notify (all-zero). */
/* clang-format off */
#define WEFT_NOTIFY_INIT {{0}}
/* clang-format on */

/* Initialises `n` with no permit and no waiter. */
WEFT_API void weft_notify_init(weft_notify *n);
/* Finishes with `n`. Returns 0, or -EBUSY if someone waits on it. */
WEFT_API int weft_notify_destroy(weft_notify *n);

/* Waits for a notification (or consumes the stored permit).
 * Returns 0, or -ECANCELED, -ETIMEDOUT, -EPERM.
 * Cancellation safe: a notify_one() delivered to a dropped waiter is passed
 * to the next waiter (or stored). Suspends. */
WEFT_API int weft_notify_wait(weft_notify *n);
WEFT_API int weft_notify_wait_dl(weft_notify *n, int64_t deadline);
/* Consumes the stored permit.
 * Returns 0, or -EAGAIN if there is none. Any thread, any context. */
WEFT_API int weft_notify_try_wait(weft_notify *n);
/* weft_notify_wait() blocking a thread that is not running a task.
 * Returns 0, or -EPERM from inside a task. */
WEFT_API int weft_notify_wait_blocking(weft_notify *n);
/* The wait as a heap future (NULL if memory is exhausted) or in `op`:
 * ready with err 0 once notified. Cancellation safe. */
WEFT_API weft_future *weft_notify_wait_future_at(weft_notify *n,
                                                 const weft_site *site);
#define weft_notify_wait_future(n) weft_notify_wait_future_at((n), WEFT_HERE)
WEFT_API weft_future *weft_notify_wait_init_at(weft_sync_op *op, weft_notify *n,
                                               const weft_site *site);
#define weft_notify_wait_init(op, n)                                           \
    weft_notify_wait_init_at((op), (n), WEFT_HERE)

/* Wakes the oldest waiter, or stores a permit (at most one). Never waits. */
WEFT_API void weft_notify_one(weft_notify *n);
/* Wakes every current waiter; stores nothing. Never waits. */
WEFT_API void weft_notify_all(weft_notify *n);

/* ---- barrier ----------------------------------------------------------- */

/* Lets `n` parties wait for each other: the n-th arrival releases them all,
 * and the barrier is ready for the next round. */
typedef struct weft_barrier {
    void *opaque_[4];
} weft_barrier;

/* Initialises `b` for `n` parties.
 * Returns
 *   0        initialised,
 *   -EINVAL  n is 0. */
WEFT_API int weft_barrier_init(weft_barrier *b, unsigned n);
/* Finishes with `b`. Returns 0, or -EBUSY if someone waits on it. */
WEFT_API int weft_barrier_destroy(weft_barrier *b);

/* Arrives and waits for the round to complete.
 * Returns
 *   1          the caller arrived last and released the round (exactly one
 *              party per round gets 1: pthread's SERIAL_THREAD),
 *   0          the round completed,
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call: the caller
 *              has left the round (its arrival is withdrawn).
 * Cancellation safe in that sense. Suspends. */
WEFT_API int weft_barrier_wait(weft_barrier *b);
WEFT_API int weft_barrier_wait_dl(weft_barrier *b, int64_t deadline);
/* weft_barrier_wait() blocking a thread that is not running a task (a
 * thread may be one of the parties). Returns 1, 0, or -EPERM from inside a
 * task. */
WEFT_API int weft_barrier_wait_blocking(weft_barrier *b);
/* The wait as a heap future (NULL if memory is exhausted) or in `op`: ready
 * with err 0 and value (void *)1 for the releasing party, NULL for the
 * others. Dropped unfinished, it withdraws its arrival. */
WEFT_API weft_future *weft_barrier_wait_future_at(weft_barrier *b,
                                                  const weft_site *site);
#define weft_barrier_wait_future(b) weft_barrier_wait_future_at((b), WEFT_HERE)
WEFT_API weft_future *weft_barrier_wait_init_at(weft_sync_op *op,
                                                weft_barrier *b,
                                                const weft_site *site);
#define weft_barrier_wait_init(op, b)                                          \
    weft_barrier_wait_init_at((op), (b), WEFT_HERE)

/* ---- once-cell --------------------------------------------------------- */

/* A value initialised once, asynchronously: the first caller runs the
 * initialiser (which may suspend), concurrent callers wait for it, and
 * everyone afterwards gets the stored value at once. If the initialiser
 * fails (or its caller is cancelled), the cell stays empty and the next
 * waiter runs its own initialiser. */
typedef struct weft_once {
    void *opaque_[4];
} weft_once;

/* A statically initialised, empty cell (all-zero). */
/* clang-format off */
#define WEFT_ONCE_INIT {{0}}
/* clang-format on */

/* An initialiser: returns 0 and stores the value in *value, or a negative
 * errno value. Runs on the caller's task (or thread). */
typedef int (*weft_once_fn)(void *arg, void **value);

/* Initialises `o` empty. */
WEFT_API void weft_once_init(weft_once *o);
/* Finishes with `o`. Returns 0, or -EBUSY while an initialiser runs or
 * someone waits. The stored value is the caller's to release. */
WEFT_API int weft_once_destroy(weft_once *o);

/* Returns the value, running init(arg, value) first if the cell is empty and
 * nobody else is initialising it, or waiting if someone is.
 * Returns
 *   0          *value holds the cell's value,
 *   <0         init's error (this caller ran it; the cell stays empty),
 *   -ECANCELED, -ETIMEDOUT, -EPERM  as every suspending call (while
 *              waiting for another initialiser).
 * Cancellation: a waiter that is cancelled leaves; an initialiser's task
 * that is cancelled gets -ECANCELED from its own suspending calls, and if
 * init then fails the cell stays empty for the next caller. Any number of
 * tasks and threads may call it at once. Suspends. */
WEFT_API int weft_once_get(weft_once *o, weft_once_fn init, void *arg,
                           void **value);
/* The deadline bounds the wait for another caller's initialiser; it does
 * not interrupt an initialiser this call runs (put a scope inside init). */
WEFT_API int weft_once_get_dl(weft_once *o, weft_once_fn init, void *arg,
                              void **value, int64_t deadline);
/* weft_once_get() for a thread that is not running a task: init runs on
 * the thread, and waiting for another initialiser blocks it. Returns as
 * weft_once_get(), or -EPERM from inside a task (init is not run). */
WEFT_API int weft_once_get_blocking(weft_once *o, weft_once_fn init, void *arg,
                                    void **value);
/* As a future: if the cell is empty and free when polled, calls make(arg)
 * and polls the future it returns as the initialiser (its value is stored
 * if its err is 0). Ready with the cell's value (err 0) or the
 * initialiser's error. Dropping it while its initialiser runs drops the
 * initialiser and leaves the cell empty for the next waiter. NULL if memory
 * is exhausted. */
WEFT_API weft_future *weft_once_get_future_at(weft_once *o,
                                              weft_future *(*make)(void *arg),
                                              void *arg, const weft_site *site);
#define weft_once_get_future(o, make, arg)                                     \
    weft_once_get_future_at((o), (make), (arg), WEFT_HERE)
/* Reads the value if the cell is set.
 * Returns 0 (*value set if value is not NULL), or -EAGAIN (empty or being
 * initialised). Never waits. Any thread. */
WEFT_API int weft_once_try_get(weft_once *o, void **value);

/* ======================================================================== */
/* Select and join                                                          */
/* ======================================================================== */

/* Waits for the first of the n futures fs[0..n-1] to finish and drops the
 * others. Consumes every future (each fs[i] is set to NULL). Futures are
 * polled in index order each time: when several are ready, the lowest index
 * wins (give priority by order). Stores the winner's index in *index and
 * its value in *value (either may be NULL).
 * Returns
 *   the winner's error (0 on success),
 *   -ENOMEM     some fs[i] is NULL (a constructor failed); *index = n,
 *   -EINVAL     n is 0,
 *   -ECANCELED, -ETIMEDOUT  as every suspending call: all were dropped,
 *               *index = n.
 * The losers are dropped as their own cancellation-safety rules say: a
 * receive that loses takes no message, a send that loses sends nothing, a
 * lock that loses holds nothing. Futures that do not promise that may have
 * done part of their work.
 * Suspends (coroutine task), or blocks a plain thread outside any runtime
 * (then only futures that need no runtime - weft's channel and sync futures
 * - may be used). */
WEFT_API int weft_select(weft_future **fs, size_t n, size_t *index,
                         void **value);

/* The same as a future: consumes the futures (the array itself is copied and
 * stays the caller's), stores the winner's index in *index (which must
 * outlive the future) and is ready with the winner's value and error.
 * Dropping it drops every future. NULL if memory is exhausted or n is 0
 * (every future is freed then). */
WEFT_API weft_future *weft_select_future_at(weft_future **fs, size_t n,
                                            size_t *index,
                                            const weft_site *site);
#define weft_select_future(fs, n, index)                                       \
    weft_select_future_at((fs), (n), (index), WEFT_HERE)

/* Waits for all n futures, running them concurrently. Consumes them (each
 * fs[i] is set to NULL). Stores each value in values[i] and each error in
 * errs[i] (either array may be NULL).
 * Returns
 *   0          every future finished with err 0,
 *   <0         the error of the lowest-index future that failed (all ran
 *              to their end),
 *   -ENOMEM    some fs[i] is NULL (the others are dropped unrun),
 *   -ECANCELED, -ETIMEDOUT  as every suspending call: the unfinished ones
 *              were dropped.
 * Suspends (coroutine), or blocks a plain thread (as weft_select()). */
WEFT_API int weft_join_all(weft_future **fs, size_t n, void **values,
                           int *errs);

/* The same as a future, ready with err as weft_join_all() returns it;
 * values and errs must outlive it. NULL if memory is exhausted. */
WEFT_API weft_future *weft_join_all_future_at(weft_future **fs, size_t n,
                                              void **values, int *errs,
                                              const weft_site *site);
#define weft_join_all_future(fs, n, values, errs)                              \
    weft_join_all_future_at((fs), (n), (values), (errs), WEFT_HERE)

/* ======================================================================== */
/* Task groups                                                              */
/* ======================================================================== */

/* A group owns the tasks spawned into it (tokio's JoinSet, Trio's nursery,
 * Go's errgroup): wait for the next one or for all, cancel them all, and
 * never let one outlive the group: freeing it cancels and joins every
 * child. With a limit, at most `limit` children run at once, and spawning
 * into a full group waits for a slot (backpressure); weft_group_try_spawn()
 * returns -EAGAIN instead.
 *
 * Children report success or failure as an int, like errgroup's functions:
 * a coroutine child is `int fn(void *arg)`, a future child's result is its
 * err. With cancel_on_error, the first child to fail (a negative result
 * other than -ECANCELED) cancels the rest and the group refuses new spawns.
 *
 * Ownership: heap object, weft_group_new() / weft_group_free(). One task or
 * thread at a time waits on a group (next/wait); spawning and cancelling
 * are safe from any number of tasks and threads. */
typedef struct weft_group weft_group;

typedef struct weft_group_opts {
    size_t limit;        /* most children running at once; 0 = no limit */
    int cancel_on_error; /* 1: the first failure cancels the others */
} weft_group_opts;

/* A coroutine child. */
typedef int (*weft_group_fn)(void *arg);

/* Creates a group whose children run on `rt` (NULL: the caller's runtime).
 * opts may be NULL (no limit, no cancel on error).
 * Returns 0, or -EPERM (rt NULL outside a task), -ENOMEM. Any thread. */
WEFT_API int weft_group_new(weft_group **out, weft_runtime *rt,
                            const weft_group_opts *opts);

/* Spawns fn(arg) as a coroutine child, waiting for a slot if the group is
 * full (slots are handed out in FIFO order).
 * Returns
 *   0          spawned,
 *   -ECANCELED the group was cancelled (explicitly or by a failure), or
 *              the caller was cancelled while waiting,
 *   -ETIMEDOUT an enclosing scope expired while waiting,
 *   -ESHUTDOWN the runtime is shutting down,
 *   -ENOMEM    memory is exhausted.
 * On error nothing was spawned (arg is still the caller's). Suspends in a
 * coroutine task; blocks a plain thread. */
WEFT_API int weft_group_spawn(weft_group *g, weft_group_fn fn, void *arg);
WEFT_API int weft_group_spawn_dl(weft_group *g, weft_group_fn fn, void *arg,
                                 int64_t deadline);
/* Spawns like weft_group_spawn() if a slot is free, else returns -EAGAIN.
 * Returns 0, -EAGAIN, -ECANCELED (the group was cancelled), -ESHUTDOWN or
 * -ENOMEM. Never waits. Any thread, any context. */
WEFT_API int weft_group_try_spawn(weft_group *g, weft_group_fn fn, void *arg);

/* Spawns the heap future `f` as a stackless child, consuming it whatever
 * the result (a NULL f gives -ENOMEM). Its err is the child's result, its
 * value what weft_group_next() reports. Waits for a slot and returns like
 * weft_group_spawn(); on error f was freed unpolled. */
WEFT_API int weft_group_spawn_future(weft_group *g, weft_future *f);
/* weft_group_spawn_future() if a slot is free, else -EAGAIN (f is consumed
 * all the same). Never waits. Any thread, any context. */
WEFT_API int weft_group_try_spawn_future(weft_group *g, weft_future *f);

/* Waits for the next child to finish (in finishing order) and reaps it.
 * Stores its result in *result and, for a coroutine child, its arg (for a
 * future child, its value) in *value; either may be NULL.
 * Returns
 *   0          a child was reaped,
 *   -ECHILD    the group has no children left,
 *   -ECANCELED, -ETIMEDOUT  the caller was cancelled or timed out (children
 *              are unaffected).
 * Suspends in a coroutine task; blocks a plain thread. */
WEFT_API int weft_group_next(weft_group *g, int *result, void **value);
WEFT_API int weft_group_next_dl(weft_group *g, int *result, void **value,
                                int64_t deadline);

/* Waits for every child and reaps them all.
 * Returns 0, the first failure of a child (a negative result other than
 * -ECANCELED), or -ECANCELED / -ETIMEDOUT if the caller was cancelled or
 * timed out. Suspends in a coroutine task; blocks a plain thread. */
WEFT_API int weft_group_wait(weft_group *g);
WEFT_API int weft_group_wait_dl(weft_group *g, int64_t deadline);

/* Cancels every child (each one's current or next suspension returns
 * -ECANCELED; future children are dropped) and makes later spawns fail with
 * -ECANCELED. Never waits. Any thread. */
WEFT_API void weft_group_cancel(weft_group *g);

/* Returns the number of children not yet reaped (running or finished). */
WEFT_API size_t weft_group_len(weft_group *g);

/* Cancels every child, waits until all have ended (even when the caller is
 * itself cancelled: no child outlives its group), reaps them and frees the
 * group. Must not be called by one of the group's own children (it would
 * wait for itself). NULL is ignored. Suspends in a coroutine task; blocks a
 * plain thread (which needs the runtime to be running the children). */
WEFT_API void weft_group_free(weft_group *g);

#ifdef __cplusplus
}
#endif

#endif
