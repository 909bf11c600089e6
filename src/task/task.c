/*
 * The task state word, references, wakers, cancel and join.
 * See task.h for the bits and the transitions.
 */
#include "task/task.h"

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
        weft_waker_drop(&t->join_waker);
        weft__task_fini(t);
        t->vt->dealloc(t);
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
    t->err = err;
    /* RUNNING -> COMPLETE. The release ordering publishes value/err to the
     * joiner, which reads them after seeing COMPLETE. */
    uint64_t s = atomic_fetch_xor_explicit(
        &t->state, TASK_RUNNING | TASK_COMPLETE, memory_order_acq_rel);
    WEFT_CHECK((s & (TASK_RUNNING | TASK_COMPLETE)) == TASK_RUNNING,
               "completing a task that is not running");
    if ((s & TASK_JOIN_INTEREST) && (s & TASK_JOIN_WAKER))
        weft_waker_wake_by_ref(&t->join_waker);
    if (t->owned)
        t->sched->ops->release(t->sched, t);
    /* The owned reference and the poll's reference. */
    weft__task_unref_n(t, 2);
}

/* Wake by reference: no reference is consumed. */
void weft__task_wake(struct weft_task *t)
{
    uint64_t s = load_state(t);
    for (;;) {
        if (s & (TASK_COMPLETE | TASK_NOTIFIED))
            return;
        uint64_t n = s | TASK_NOTIFIED;
        if (!(s & TASK_RUNNING))
            n += TASK_REF_ONE; /* the queue entry's reference */
        if (cas_state(t, &s, n))
            break;
    }
    if (!(s & TASK_RUNNING))
        t->sched->ops->schedule(t->sched, t);
}

void weft__task_cancel(struct weft_task *t)
{
    uint64_t s = load_state(t);
    for (;;) {
        if (s & (TASK_COMPLETE | TASK_CANCELLED))
            return;
        uint64_t n = s | TASK_CANCELLED | TASK_NOTIFIED;
        bool submit = !(s & (TASK_RUNNING | TASK_NOTIFIED));
        if (submit)
            n += TASK_REF_ONE;
        if (cas_state(t, &s, n)) {
            if (submit)
                t->sched->ops->schedule(t->sched, t);
            return;
        }
    }
}

/* ---- the task waker ---- */

static weft_waker task_waker_clone(void *data)
{
    weft__task_ref(data);
    return weft__task_waker(data);
}

static void task_waker_wake_by_ref(void *data)
{
    weft__task_wake(data);
}

static void task_waker_wake(void *data)
{
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

/* ---- creation ---- */

/* Ids are handed out in blocks per thread so that spawning does not contend
 * on one counter. */
#define ID_BLOCK 1024
static _Atomic uint64_t next_id_block = 1;
static __thread uint64_t tls_id_next, tls_id_end;

static uint64_t new_id(void)
{
    if (weft_unlikely(tls_id_next == tls_id_end)) {
        uint64_t b = atomic_fetch_add_explicit(&next_id_block, 1,
                                               memory_order_relaxed);
        tls_id_next = b * ID_BLOCK;
        tls_id_end = tls_id_next + ID_BLOCK;
    }
    return tls_id_next++;
}

void weft__task_init(struct weft_task *t, const struct weft_task_vtable *vt,
                     const weft_site *site, bool handle)
{
    uint64_t refs = handle ? 3 : 2; /* owned + queue (+ handle) */
    uint64_t bits = TASK_NOTIFIED | (handle ? TASK_JOIN_INTEREST : 0);
    atomic_init(&t->state, bits | refs * TASK_REF_ONE);
    t->next = NULL;
    t->sched = NULL;
    t->vt = vt;
    t->owned_prev = t->owned_next = NULL;
    t->join_waker.vtable = NULL;
    t->join_waker.data = NULL;
    t->value = NULL;
    t->err = 0;
    t->yielded = 0;
    t->owned = 0;
    t->id = new_id();
    t->site = site;
    t->name = NULL;
    t->awaiting = NULL;
}

int weft__task_set_name(struct weft_task *t, const char *name)
{
    if (!name)
        return 0;
    size_t n = strlen(name) + 1;
    t->name = weft__alloc(n);
    if (!t->name)
        return -ENOMEM;
    memcpy(t->name, name, n);
    return 0;
}

void weft__task_fini(struct weft_task *t)
{
    if (t->name)
        weft__free(t->name, strlen(t->name) + 1);
    t->name = NULL;
}

int weft__task_submit_new(weft_runtime *rt, struct weft_task *t,
                          weft_task **out)
{
    bool handle = out != NULL;
    t->sched = rt->sched;
    int rc = rt->sched->ops->spawn(rt->sched, t);
    if (rc < 0) {
        if (t->vt->abandon)
            t->vt->abandon(t);
        weft__task_fini(t);
        t->vt->dealloc(t);
        if (out)
            *out = NULL;
        return rc;
    }
    if (handle)
        *out = t;
    return 0;
}

/* ---- the public task API ---- */

void weft_task_free(weft_task *t)
{
    if (!t)
        return;
    uint64_t s = load_state(t);
    for (;;) {
        WEFT_CHECK(s & TASK_JOIN_INTEREST, "join handle freed twice");
        uint64_t n = s & ~(uint64_t)TASK_JOIN_INTEREST;
        if (!(s & TASK_COMPLETE))
            n &= ~(uint64_t)TASK_JOIN_WAKER;
        if (cas_state(t, &s, n))
            break;
    }
    /* If we cleared JOIN_WAKER on an unfinished task, the waker is ours
     * again. On a completed task the completing thread may still be waking
     * it: the last reference drops it then. */
    if ((s & TASK_JOIN_WAKER) && !(s & TASK_COMPLETE))
        weft_waker_drop(&t->join_waker);
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
    return t->id;
}

const char *weft_task_name(const weft_task *t)
{
    return t->name;
}

const weft_site *weft_task_site(const weft_task *t)
{
    return t->site;
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
    return t->err;
}

/* Does following the chain of joins from `t` lead back to `self`? */
static bool join_cycle(struct weft_task *self, struct weft_task *t)
{
    for (int depth = 0; t && depth < 64; depth++) {
        if (t == self)
            return true;
        t = atomic_load_explicit((_Atomic(struct weft_task *) *)&t->awaiting,
                                 memory_order_acquire);
    }
    return false;
}

/* Registers `w` as the join waker of `t`. Returns false if `t` completed
 * meanwhile (the caller then reads the result). */
static bool join_set_waker(struct weft_task *t, const weft_waker *w)
{
    uint64_t s = load_state(t);
    if (s & TASK_COMPLETE)
        return false;
    if (s & TASK_JOIN_WAKER) {
        if (weft_waker_will_wake(&t->join_waker, w))
            return true;
        /* Take the field back before replacing it. */
        for (;;) {
            if (s & TASK_COMPLETE)
                return false;
            if (cas_state(t, &s, s & ~(uint64_t)TASK_JOIN_WAKER))
                break;
        }
        weft_waker_drop(&t->join_waker);
    }
    t->join_waker = weft_waker_clone(w);
    for (;;) {
        if (s & TASK_COMPLETE) {
            weft_waker_drop(&t->join_waker);
            return false;
        }
        if (cas_state(t, &s, s | TASK_JOIN_WAKER))
            return true;
    }
}

struct join_future {
    weft_future base;
    struct weft_task *target;
    struct weft_task *joiner; /* set while this future records a join edge */
};

static weft_poll join_poll(weft_future *f, weft_cx *cx)
{
    struct join_future *jf = (struct join_future *)f;
    struct weft_task *t = jf->target;
    if (cx->task && cx->task == t)
        return weft_future_set(f, NULL, -EDEADLK);
    if (!(load_state(t) & TASK_COMPLETE)) {
        if (cx->task && !jf->joiner) {
            if (join_cycle(cx->task, t))
                return weft_future_set(f, NULL, -EDEADLK);
            jf->joiner = cx->task;
            atomic_store_explicit(
                (_Atomic(struct weft_task *) *)&cx->task->awaiting, t,
                memory_order_release);
        }
        if (join_set_waker(t, &cx->waker))
            return WEFT_PENDING;
    }
    void *v = NULL;
    int err = join_result(t, &v);
    return weft_future_set(f, v, err);
}

static void join_drop(weft_future *f)
{
    struct join_future *jf = (struct join_future *)f;
    if (jf->joiner)
        atomic_store_explicit(
            (_Atomic(struct weft_task *) *)&jf->joiner->awaiting, NULL,
            memory_order_release);
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
    while (join_set_waker(t, &w))
        weft__parker_park(p);
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
    struct join_future jf;
    weft_future_init(&jf.base, &join_ops);
    jf.target = t;
    jf.joiner = NULL;
    return weft_await(&jf.base, result);
}
