/*
 * The task state word, references, wakers, cancel and join.
 * See task.h for the bits and the transitions.
 */
#include "task/task.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rt/runtime.h"
#include "sched/park.h"
#include "sched/sched.h"

static inline uint64_t load_state(const struct weft_task *t)
{
    return atomic_load_explicit(&((struct weft_task *)t)->state,
                                memory_order_acquire);
}

static inline bool cas_state(struct weft_task *t, uint64_t *old, uint64_t new)
{
    return atomic_compare_exchange_weak_explicit(
        &t->state, old, new, memory_order_acq_rel, memory_order_acquire);
}

static void wake_joiners(struct weft_task *t);

extern const struct weft_task_vtable weft__coro_vtable, weft__future_vtable,
    weft__blocking_vtable;

const struct weft_task_vtable *const weft__task_vtables[3] = {
    [TASK_KIND_CORO] = &weft__coro_vtable,
    [TASK_KIND_FUTURE] = &weft__future_vtable,
    [TASK_KIND_BLOCKING] = &weft__blocking_vtable,
};

/* ---- references ---- */

void weft__task_ref(struct weft_task *t)
{
    uint64_t prev = atomic_fetch_add_explicit(&t->state, TASK_REF_ONE,
                                              memory_order_relaxed);
    WEFT_CHECK(prev >> TASK_REF_SHIFT != 0, "task reference from nothing");
}

void weft__task_unref_n(struct weft_task *t, uint64_t n)
{
    uint64_t prev = atomic_fetch_sub_explicit(&t->state, n * TASK_REF_ONE,
                                              memory_order_acq_rel);
    WEFT_CHECK(prev >> TASK_REF_SHIFT >= n, "task reference count underflow");
    if (prev >> TASK_REF_SHIFT == n) {
        weft__task_fini(t);
        weft__task_vt(t)->dealloc(t);
    }
}

void weft__task_unref(struct weft_task *t)
{
    weft__task_unref_n(t, 1);
}

/* ---- transitions ---- */

enum task_run weft__task_to_running(struct weft_task *t)
{
    uint64_t s = load_state(t);
    for (;;) {
        WEFT_CHECK(s & TASK_NOTIFIED, "polling a task that was not notified");
        if (s & TASK_COMPLETE) {
            /* Completed while queued (only a spurious queue entry can see
             * this): drop the entry's reference. */
            weft__task_unref(t);
            return RUN_GONE;
        }
        WEFT_CHECK(!(s & TASK_RUNNING), "task polled twice at once");
        uint64_t n = (s & ~(uint64_t)TASK_NOTIFIED) | TASK_RUNNING;
        if (cas_state(t, &s, n))
            return (n & TASK_CANCELLED) ? RUN_CANCELLED : RUN_OK;
    }
}

bool weft__task_to_idle(struct weft_task *t)
{
    uint64_t s = load_state(t);
    for (;;) {
        WEFT_DASSERT(s & TASK_RUNNING);
        uint64_t n = s & ~(uint64_t)TASK_RUNNING;
        if (!(s & TASK_NOTIFIED))
            n -= TASK_REF_ONE; /* the poll's reference */
        if (cas_state(t, &s, n))
            break;
    }
    if (s & TASK_NOTIFIED)
        return true; /* the caller re-queues; the poll's ref goes along */
    if ((s >> TASK_REF_SHIFT) == 1) {
        /* We dropped the last reference: impossible while the owned list
         * holds one, so this is a bug. */
        WEFT_CHECK(0, "idle task without references");
    }
    return false;
}

void weft__task_complete(struct weft_task *t, void *value, int err)
{
    t->value = value;
    *weft__task_err_slot(t) = err;
    weft__task_finish(t);
}

void weft__task_finish(struct weft_task *t)
{
    /* RUNNING -> COMPLETE. The release ordering publishes value/err to the
     * joiner, which reads them after seeing COMPLETE. */
    uint64_t s = atomic_fetch_xor_explicit(
        &t->state, TASK_RUNNING | TASK_COMPLETE, memory_order_acq_rel);
    WEFT_CHECK((s & (TASK_RUNNING | TASK_COMPLETE)) == TASK_RUNNING,
               "completing a task that is not running");
    if (s & TASK_JOIN_WAITERS)
        wake_joiners(t);
    if (weft__task_owned(t)) {
        struct weft_sched *sc = weft__task_sched(t);
        sc->ops->release(sc, t);
    }
    /* The owned reference and the poll's reference. */
    weft__task_unref_n(t, 2);
}

/* Tasks of a current-thread runtime are resident (task.h); blocking jobs,
 * which run on pool threads, are not. Read from the task's own word: a
 * waker may outlive the runtime, whose scheduler must then not be read. */
static bool resident(const struct weft_task *t)
{
    return (weft__task_word(t) & TASK_W_RESIDENT) != 0;
}

/* A resident task that is RUNNING and not being polled is either queued
 * (its yielded bit set) or parked. Claims a parked one for the run queue
 * (sets the bit); returns false if it was queued already. On the
 * runtime's own thread only. */
static bool claim_parked(struct weft_task *t)
{
    if (weft__task_yielded(t))
        return false;
    weft__task_set_bits(t, TASK_W_YIELDED, true);
    return true;
}

/* A wake of a resident task on the runtime's own thread. Only this thread
 * sets RUNNING or COMPLETE on such a task, so one plain load tells its
 * state: not yet started (it is queued), finished, being polled, queued
 * again (the yielded bit), or parked. Only a parked task needs queueing,
 * and that is a queue push with the yielded bit set: no atomic operation. */
static void wake_local(struct weft_task *t, struct weft_worker *w,
                       struct weft_sched *sc)
{
    uint64_t s = load_state(t);
    if (!(s & TASK_RUNNING)) {
        /* Not started (NOTIFIED, queued) or COMPLETE. */
        WEFT_DASSERT(s & (TASK_NOTIFIED | TASK_COMPLETE));
        return;
    }
    /* Woken from its own poll, it is re-queued when the poll ends. */
    if (claim_parked(t) && w->current != t)
        sc->ops->schedule(sc, t);
}

/* Wake by reference: no reference is consumed. */
void weft__task_wake(struct weft_task *t)
{
    struct weft_sched *sc = weft__task_sched(t);
    bool res = resident(t);
    if (res) {
        struct weft_worker *w = weft__tls_worker;
        if (w && w->sched == sc) {
            wake_local(t, w, sc);
            return;
        }
    }
    /* From another thread, a resident task is queued even while RUNNING
     * (it may be parked), with a reference, as a bell (wake_running): the
     * owner takes it with weft__task_remote_woken. The scheduler is read
     * only once the state word showed the task unfinished (a waker may
     * outlive its runtime). */
    uint64_t s = load_state(t);
    bool queue;
    for (;;) {
        if (s & (TASK_COMPLETE | TASK_NOTIFIED))
            return;
        uint64_t n = s | TASK_NOTIFIED;
        queue = res || !(s & TASK_RUNNING);
        if (queue)
            n += TASK_REF_ONE; /* the queue entry's reference */
        if (cas_state(t, &s, n))
            break;
    }
    if (!queue)
        return;
    if (res && (s & TASK_RUNNING))
        sc->ops->wake_running(sc, t);
    else
        sc->ops->schedule(sc, t);
}

bool weft__task_remote_woken(struct weft_task *t)
{
    /* Takes the wake unless a poll took it first (weft__task_take_notified)
     * or the task finished meanwhile, then drops the entry's reference,
     * which may be the last one of a finished task. */
    uint64_t s = atomic_fetch_and_explicit(&t->state, ~(uint64_t)TASK_NOTIFIED,
                                           memory_order_acq_rel);
    bool queue = (s & TASK_NOTIFIED) && (s & TASK_RUNNING) && claim_parked(t);
    weft__task_unref(t); /* a queued task is RUNNING: not the last */
    return queue;
}

bool weft__task_rescan_woken(struct weft_task *t)
{
    uint64_t s = load_state(t);
    if ((s & (TASK_RUNNING | TASK_NOTIFIED)) != (TASK_RUNNING | TASK_NOTIFIED))
        return false;
    weft__task_take_notified(t);
    return claim_parked(t);
}

void weft__task_take_notified(struct weft_task *t)
{
    atomic_fetch_and_explicit(&t->state, ~(uint64_t)TASK_NOTIFIED,
                              memory_order_acq_rel);
}

void weft__task_cancel(struct weft_task *t)
{
    uint64_t s = load_state(t);
    do {
        if (s & (TASK_COMPLETE | TASK_CANCELLED))
            return;
    } while (!cas_state(t, &s, s | TASK_CANCELLED));
    /* Then it is woken like any other event would wake it: queued if idle
     * or parked (resident), NOTIFIED if it is being polled, left alone if
     * it is queued already. */
    weft__task_wake(t);
}

/* ---- the task waker ---- */

static weft_waker task_waker_clone(void *data)
{
    weft__task_ref(data);
    return weft__task_waker(data);
}

/* A task that wakes itself while it is being polled (a yield, a spent
 * budget) needs no atomic operation: it is RUNNING and owned by this
 * worker, which re-queues it like a yielded coroutine (see task.h). */
static bool wake_self(struct weft_task *t)
{
    struct weft_worker *w = weft__tls_worker;
    if (w && w->current == t) {
        weft__task_set_bits(t, TASK_W_YIELDED, true);
        return true;
    }
    return false;
}

static void task_waker_wake_by_ref(void *data)
{
    if (!wake_self(data))
        weft__task_wake(data);
}

static void task_waker_wake(void *data)
{
    if (!wake_self(data))
        weft__task_wake(data);
    weft__task_unref(data);
}

static void task_waker_drop(void *data)
{
    weft__task_unref(data);
}

const weft_waker_vtable weft__task_waker_vtable = {
    .clone = task_waker_clone,
    .wake = task_waker_wake,
    .wake_by_ref = task_waker_wake_by_ref,
    .drop = task_waker_drop,
};

weft_waker weft_waker_clone(const weft_waker *w)
{
    if (!w->vtable)
        return *w;
    return w->vtable->clone(w->data);
}

void weft_waker_wake(weft_waker *w)
{
    const weft_waker_vtable *vt = w->vtable;
    w->vtable = NULL;
    if (vt)
        vt->wake(w->data);
}

void weft_waker_wake_by_ref(const weft_waker *w)
{
    if (w->vtable)
        w->vtable->wake_by_ref(w->data);
}

void weft_waker_drop(weft_waker *w)
{
    const weft_waker_vtable *vt = w->vtable;
    w->vtable = NULL;
    if (vt)
        vt->drop(w->data);
}

int weft_waker_will_wake(const weft_waker *a, const weft_waker *b)
{
    return a->vtable == b->vtable && a->data == b->data;
}

const weft_waker *weft_cx_waker(weft_cx *cx)
{
    return &cx->waker;
}

int weft_cx_proceed(weft_cx *cx)
{
    return weft__coop_proceed(cx);
}

/* ---- creation ---- */

void weft__task_init(struct weft_task *t, unsigned kind, bool handle)
{
    uint64_t refs = handle ? 3 : 2; /* owned + queue (+ handle) */
    uint64_t bits = TASK_NOTIFIED | (handle ? TASK_JOIN_INTEREST : 0);
    atomic_init(&t->state, bits | refs * TASK_REF_ONE);
    t->next = NULL; /* also clears value */
    atomic_init(&t->sched_word, (uintptr_t)kind);
    t->owned_prev = t->owned_next = NULL;
}

/*
 * The side table of rarely used fields: a task's name and its id live in a
 * record found by the task's address, so that the many tasks that have
 * neither pay nothing for them. TASK_HAS_EXTRA says a record exists.
 */
struct task_extra {
    struct task_extra *next; /* in its bucket */
    const struct weft_task *task;
    uint64_t id; /* 0 until asked for */
    size_t size; /* of this allocation */
    char name[]; /* "" if none */
};

#define EXTRA_BUCKETS 1024
#define EXTRA_LOCKS 64
static struct task_extra *extra_buckets[EXTRA_BUCKETS];
static pthread_mutex_t extra_locks[EXTRA_LOCKS] = {
    [0 ... EXTRA_LOCKS - 1] = PTHREAD_MUTEX_INITIALIZER};

static size_t extra_bucket(const struct weft_task *t)
{
    return weft__task_hash(t) % EXTRA_BUCKETS;
}

static pthread_mutex_t *extra_lock(size_t bucket)
{
    return &extra_locks[bucket % EXTRA_LOCKS];
}

/* Under the bucket's lock. */
static struct task_extra **extra_find(const struct weft_task *t, size_t b)
{
    struct task_extra **pp = &extra_buckets[b];
    while (*pp && (*pp)->task != t)
        pp = &(*pp)->next;
    return pp;
}

/* A new record for `t` (which has none), with `name` (may be NULL). */
static struct task_extra *extra_new(struct weft_task *t, const char *name)
{
    size_t n = name ? strlen(name) + 1 : 1;
    size_t size = sizeof(struct task_extra) + n;
    struct task_extra *e = weft__alloc(size);
    if (!e)
        return NULL;
    e->task = t;
    e->id = 0;
    e->size = size;
    memcpy(e->name, name ? name : "", n);
    return e;
}

static void extra_link(size_t b, struct task_extra *e)
{
    e->next = extra_buckets[b];
    extra_buckets[b] = e;
}

int weft__task_set_name(struct weft_task *t, const char *name)
{
    if (!name)
        return 0;
    /* Before the task is published: it has no record yet. */
    struct task_extra *e = extra_new(t, name);
    if (!e)
        return -ENOMEM;
    size_t b = extra_bucket(t);
    pthread_mutex_lock(extra_lock(b));
    extra_link(b, e);
    pthread_mutex_unlock(extra_lock(b));
    atomic_fetch_or_explicit(&t->state, TASK_HAS_EXTRA, memory_order_relaxed);
    return 0;
}

void weft__task_fini(struct weft_task *t)
{
    if (!(load_state(t) & TASK_HAS_EXTRA))
        return;
    size_t b = extra_bucket(t);
    pthread_mutex_lock(extra_lock(b));
    struct task_extra **pp = extra_find(t, b), *e = *pp;
    if (e)
        *pp = e->next;
    pthread_mutex_unlock(extra_lock(b));
    atomic_fetch_and_explicit(&t->state, ~(uint64_t)TASK_HAS_EXTRA,
                              memory_order_relaxed);
    if (e)
        weft__free(e, e->size);
}

const char *weft__task_name(const struct weft_task *t, bool trylock)
{
    if (!(load_state(t) & TASK_HAS_EXTRA))
        return NULL;
    size_t b = extra_bucket(t);
    pthread_mutex_t *l = extra_lock(b);
    if (trylock) {
        if (pthread_mutex_trylock(l) != 0)
            return NULL;
    } else {
        pthread_mutex_lock(l);
    }
    struct task_extra *e = *extra_find(t, b);
    pthread_mutex_unlock(l);
    /* The record lives as long as the task. */
    return e && e->name[0] ? e->name : NULL;
}

const weft_site *weft__task_site(const struct weft_task *t)
{
    return weft__task_vt(t)->site(t);
}

/* Ids are handed out in blocks per thread so that naming tasks does not
 * contend on one counter. */
#define ID_BLOCK 1024
static _Atomic uint64_t next_id_block = 1;
static __thread uint64_t tls_id_next, tls_id_end;

static uint64_t new_id(void)
{
    if (weft_unlikely(tls_id_next == tls_id_end)) {
        uint64_t b =
            atomic_fetch_add_explicit(&next_id_block, 1, memory_order_relaxed);
        tls_id_next = b * ID_BLOCK;
        tls_id_end = tls_id_next + ID_BLOCK;
    }
    return tls_id_next++;
}

uint64_t weft__task_id_peek(const struct weft_task *t)
{
    if (!(load_state(t) & TASK_HAS_EXTRA))
        return 0;
    size_t b = extra_bucket(t);
    pthread_mutex_t *l = extra_lock(b);
    if (pthread_mutex_trylock(l) != 0)
        return 0;
    struct task_extra *e = *extra_find(t, b);
    uint64_t id = e ? e->id : 0;
    pthread_mutex_unlock(l);
    return id;
}

/* The id, assigned at the first call: most tasks are never asked. */
static uint64_t task_id(struct weft_task *t)
{
    size_t b = extra_bucket(t);
    pthread_mutex_t *l = extra_lock(b);
    pthread_mutex_lock(l);
    struct task_extra *e = *extra_find(t, b);
    if (!e) {
        e = extra_new(t, NULL);
        if (!e) {
            pthread_mutex_unlock(l);
            return 0;
        }
        extra_link(b, e);
        atomic_fetch_or_explicit(&t->state, TASK_HAS_EXTRA,
                                 memory_order_relaxed);
    }
    if (!e->id)
        e->id = new_id();
    uint64_t id = e->id;
    pthread_mutex_unlock(l);
    return id;
}

int weft__task_submit_new(weft_runtime *rt, struct weft_task *t,
                          weft_task **out)
{
    /* The schedulers whose tasks are resident take their remote wakes
     * through wake_running (task.h). */
    uintptr_t res =
        rt->sched->ops->wake_running && weft__task_kind(t) != TASK_KIND_BLOCKING
            ? TASK_W_RESIDENT
            : 0;
    atomic_store_explicit(&t->sched_word,
                          weft__task_word(t) | (uintptr_t)rt->sched | res,
                          memory_order_relaxed);
    /* Publish the handle before the task can run: a task may read its own
     * handle from where its spawner stored it. */
    if (out)
        *out = t;
    int rc = rt->sched->ops->spawn(rt->sched, t);
    if (rc < 0) {
        if (out)
            *out = NULL;
        const struct weft_task_vtable *vt = weft__task_vt(t);
        if (vt->abandon)
            vt->abandon(t);
        weft__task_fini(t);
        vt->dealloc(t);
    }
    return rc;
}

/* ---- the public task API ---- */

void weft_task_free(weft_task *t)
{
    if (!t)
        return;
    uint64_t s = atomic_fetch_and_explicit(
        &t->state, ~(uint64_t)TASK_JOIN_INTEREST, memory_order_acq_rel);
    WEFT_CHECK(s & TASK_JOIN_INTEREST, "join handle freed twice");
    weft__task_unref(t);
}

void weft_task_cancel(weft_task *t)
{
    if (t)
        weft__task_cancel(t);
}

int weft_task_done(const weft_task *t)
{
    return (load_state(t) & TASK_COMPLETE) != 0;
}

uint64_t weft_task_id(const weft_task *t)
{
    return task_id((struct weft_task *)t);
}

const char *weft_task_name(const weft_task *t)
{
    return weft__task_name(t, false);
}

const weft_site *weft_task_site(const weft_task *t)
{
    return weft__task_site(t);
}

weft_task *weft_task_self(void)
{
    struct weft_worker *w = weft__worker_current();
    return w ? w->current : NULL;
}

int weft_task_cancelled(void)
{
    weft_task *t = weft_task_self();
    return t && (load_state(t) & TASK_CANCELLED) != 0;
}

/* ---- join ---- */

/* The outcome of a completed task as join reports it. */
static int join_result(struct weft_task *t, void **result)
{
    uint64_t s = load_state(t);
    if (s & TASK_CANCELLED)
        return -ECANCELED;
    if (result)
        *result = t->value;
    return *weft__task_err_slot(t);
}

/*
 * Joiners. Any number of tasks and threads may join one task at once (a
 * handle is a plain pointer and can be shared), so each waiting joiner
 * queues a node that lives in its join future (or on its stack). The nodes
 * are not hung off the task (that would cost every task a pointer for the
 * few that are ever waited for) but kept in a hash table keyed by the
 * target's address, each bucket a list under one of a few striped locks;
 * the JOIN_WAITERS bit tells the completing side to look. A joiner sets the
 * bit with the same atomic operation that tells it whether the task
 * completed, so either the completer sees the bit or the joiner sees
 * COMPLETE.
 */
struct join_waiter {
    struct join_waiter *next, *prev; /* in the bucket */
    struct weft_task *target;
    weft_waker waker;
    bool linked;
};

#define JOIN_BUCKETS 1024
#define JOIN_LOCKS 64
static struct join_waiter *join_buckets[JOIN_BUCKETS];
static pthread_mutex_t join_locks[JOIN_LOCKS] = {[0 ... JOIN_LOCKS - 1] =
                                                     PTHREAD_MUTEX_INITIALIZER};

static struct join_waiter **join_bucket(const struct weft_task *t)
{
    return &join_buckets[weft__task_hash(t) % JOIN_BUCKETS];
}

static pthread_mutex_t *join_lock(const struct weft_task *t)
{
    return &join_locks[(weft__task_hash(t) % JOIN_BUCKETS) % JOIN_LOCKS];
}

static void waiter_unlink(struct join_waiter *n)
{
    if (n->prev)
        n->prev->next = n->next;
    else
        *join_bucket(n->target) = n->next;
    if (n->next)
        n->next->prev = n->prev;
    n->linked = false;
}

static void wake_joiners(struct weft_task *t)
{
    pthread_mutex_t *l = join_lock(t);
    pthread_mutex_lock(l);
    struct join_waiter *n = *join_bucket(t);
    while (n) {
        struct join_waiter *next = n->next;
        if (n->target == t) {
            waiter_unlink(n);
            /* The node's owner drops its waker after taking this lock. */
            weft_waker_wake_by_ref(&n->waker);
        }
        n = next;
    }
    pthread_mutex_unlock(l);
}

/* Queues `n` (with a clone of `w`) to be woken when `t` completes. Returns
 * false if `t` has completed (nothing stays queued then). */
static bool join_wait(struct weft_task *t, struct join_waiter *n,
                      const weft_waker *w)
{
    if (load_state(t) & TASK_COMPLETE)
        return false;
    pthread_mutex_t *l = join_lock(t);
    pthread_mutex_lock(l);
    if (!n->linked) {
        struct join_waiter **head = join_bucket(t);
        n->target = t;
        n->prev = NULL;
        n->next = *head;
        if (*head)
            (*head)->prev = n;
        *head = n;
        n->linked = true;
    }
    if (!weft_waker_will_wake(&n->waker, w)) {
        weft_waker_drop(&n->waker);
        n->waker = weft_waker_clone(w);
    }
    uint64_t s = atomic_fetch_or_explicit(&t->state, TASK_JOIN_WAITERS,
                                          memory_order_acq_rel);
    bool pending = !(s & TASK_COMPLETE);
    if (!pending)
        waiter_unlink(n);
    pthread_mutex_unlock(l);
    return pending;
}

/* Leaves the queue (if still in it) and releases the node's waker. */
static void join_unwait(struct weft_task *t, struct join_waiter *n)
{
    /* n->waker is the owner's alone; n->linked is the completer's too and
     * is read only under the lock. A node that never got a waker was never
     * queued. */
    if (n->waker.vtable) {
        pthread_mutex_t *l = join_lock(t);
        pthread_mutex_lock(l);
        if (n->linked)
            waiter_unlink(n);
        pthread_mutex_unlock(l);
    }
    weft_waker_drop(&n->waker);
}

/*
 * The join graph, for deadlock detection: which task each task is joining.
 * An edge is a node in the joining task's join future, in a hash table keyed
 * by the joining task's address, all under one lock that only joins that
 * have to wait take.
 */
struct join_edge {
    struct join_edge *next, *prev;
    struct weft_task *from, *to;
};

#define EDGE_BUCKETS 256
static pthread_mutex_t join_graph_lock = PTHREAD_MUTEX_INITIALIZER;
static struct join_edge *edge_buckets[EDGE_BUCKETS];

static struct join_edge **edge_bucket(const struct weft_task *t)
{
    return &edge_buckets[weft__task_hash(t) % EDGE_BUCKETS];
}

/* Under join_graph_lock: the task `t` is joining, or NULL. */
static struct weft_task *join_awaiting(const struct weft_task *t)
{
    for (struct join_edge *e = *edge_bucket(t); e; e = e->next)
        if (e->from == t)
            return e->to;
    return NULL;
}

/* Under join_graph_lock: does following the chain of joins from `t` lead
 * back to `self`? */
static bool join_cycle(struct weft_task *self, struct weft_task *t)
{
    for (int depth = 0; t && depth < 64; depth++) {
        if (t == self)
            return true;
        t = join_awaiting(t);
    }
    return false;
}

static void edge_link(struct join_edge *e)
{
    struct join_edge **head = edge_bucket(e->from);
    e->prev = NULL;
    e->next = *head;
    if (*head)
        (*head)->prev = e;
    *head = e;
}

static void edge_unlink(struct join_edge *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        *edge_bucket(e->from) = e->next;
    if (e->next)
        e->next->prev = e->prev;
}

struct join_future {
    weft_future base;
    struct weft_task *target;
    struct join_edge edge; /* edge.from set while this future records a join
                              edge */
    struct join_waiter node;
};

static weft_poll join_poll(weft_future *f, weft_cx *cx)
{
    struct join_future *jf = (struct join_future *)f;
    struct weft_task *t = jf->target;
    if (cx->task && cx->task == t)
        return weft_future_set(f, NULL, -EDEADLK);
    if (!(load_state(t) & TASK_COMPLETE)) {
        if (cx->task && !jf->edge.from) {
            /* Checking for a cycle and adding the edge must be one step, or
             * two tasks closing a cycle on two workers could both miss it
             * (or both see it). Only joins that wait take this lock. */
            pthread_mutex_lock(&join_graph_lock);
            bool cycle = join_cycle(cx->task, t);
            if (!cycle) {
                jf->edge.from = cx->task;
                jf->edge.to = t;
                edge_link(&jf->edge);
            }
            pthread_mutex_unlock(&join_graph_lock);
            if (cycle)
                return weft_future_set(f, NULL, -EDEADLK);
        }
        if (join_wait(t, &jf->node, &cx->waker))
            return WEFT_PENDING;
    }
    if (!weft__coop_proceed(cx))
        return WEFT_PENDING;
    void *v = NULL;
    int err = join_result(t, &v);
    return weft_future_set(f, v, err);
}

static void join_drop(weft_future *f)
{
    struct join_future *jf = (struct join_future *)f;
    join_unwait(jf->target, &jf->node);
    if (jf->edge.from) {
        pthread_mutex_lock(&join_graph_lock);
        edge_unlink(&jf->edge);
        pthread_mutex_unlock(&join_graph_lock);
        jf->edge.from = NULL;
    }
}

static const weft_future_ops join_ops = {
    .poll = join_poll,
    .drop = join_drop,
    .name = "join",
};

weft_future *weft_join_future_at(weft_task *t, const weft_site *site)
{
    struct join_future *jf =
        (struct join_future *)weft_future_new_at(sizeof *jf, &join_ops, site);
    if (!jf)
        return NULL;
    jf->target = t;
    return &jf->base;
}

/* Joining from a plain thread: park the thread until the task completes. */
static int join_blocking(struct weft_task *t, void **result)
{
    struct weft_parker *p = weft__parker_new();
    if (!p)
        return -ENOMEM;
    weft_waker w = weft__parker_waker(p);
    struct join_waiter node = {0};
    while (join_wait(t, &node, &w))
        weft__parker_park(p);
    join_unwait(t, &node);
    weft__parker_unref(p);
    return join_result(t, result);
}

int weft_join(weft_task *t, void **result)
{
    struct weft_worker *w = weft__worker_current();
    if (w && w->current == t)
        return -EDEADLK;
    if (load_state(t) & TASK_COMPLETE)
        return join_result(t, result); /* no future needed */
    if (!w || !w->current)
        return join_blocking(t, result);
    struct join_future jf = {0};
    weft_future_init(&jf.base, &join_ops);
    jf.target = t;
    return weft_await(&jf.base, result);
}
