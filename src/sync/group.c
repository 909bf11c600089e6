/*
 * Task groups: a set of children with an optional concurrency limit.
 *
 * Each child has a record (struct child) on the group's `live` list while
 * it runs and on the `done` list once it has finished, until a
 * weft_group_next() reaps it. A coroutine child runs through a trampoline
 * and a future child inside a wrapper future; either way the last thing the
 * child does with the group is child_done(): release its slot, move to
 * `done`, wake whoever waits in next/wait. The limit is a semaphore of
 * `limit` permits: a spawner takes one before spawning (waiting in FIFO
 * order when the group is full) and the child gives it back in child_done.
 *
 * All of a record's fields are read and written under the group's lock,
 * including the join handle, which the spawner stores after weft_spawn()
 * returns (the child may have finished by then, so a finished child without
 * a handle yet is not reaped until the spawner has stored it).
 */
#include "sync/sync.h"

struct child {
    struct child *next, *prev;
    struct weft_group *g;
    weft_group_fn fn;
    void *arg;
    weft_task *task; /* join handle, once the spawner has stored it */
    int result;
    void *value;
    bool done;
};

struct clist {
    struct child *head, *tail;
};

struct weft_group {
    struct sync_lock lock;
    bool cancelled;
    bool cancel_on_error;
    bool limited;
    int first_err;
    weft_runtime *rt;
    weft_sem slots;
    struct clist live, done;
    size_t nlive, ndone;
    struct waitq q; /* next/wait callers waiting for a child to finish */
};

static void clist_push(struct clist *l, struct child *c)
{
    c->next = NULL;
    c->prev = l->tail;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

static void clist_remove(struct clist *l, struct child *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->next = c->prev = NULL;
}

int weft_group_new(weft_group **out, weft_runtime *rt,
                   const weft_group_opts *opts)
{
    *out = NULL;
    if (!rt)
        rt = weft_runtime_current();
    if (!rt)
        return -EPERM;
    struct weft_group *g = weft__zalloc(sizeof *g);
    if (!g)
        return -ENOMEM;
    g->rt = rt;
    if (opts) {
        g->cancel_on_error = opts->cancel_on_error != 0;
        g->limited = opts->limit > 0;
        weft_sem_init(&g->slots, opts->limit);
    }
    *out = g;
    return 0;
}

size_t weft_group_len(weft_group *g)
{
    sync_lock(&g->lock);
    size_t n = g->nlive + g->ndone;
    sync_unlock(&g->lock);
    return n;
}

/* Under the lock: cancels every live child whose handle is known (the
 * spawner cancels the others when it stores their handles). */
static void cancel_live(struct weft_group *g)
{
    g->cancelled = true;
    for (struct child *c = g->live.head; c; c = c->next)
        if (c->task)
            weft_task_cancel(c->task);
}

void weft_group_cancel(weft_group *g)
{
    sync_lock(&g->lock);
    cancel_live(g);
    sync_unlock(&g->lock);
}

/* The child is finished with (result, value). The last touch of the group by
 * the child: after the unlock the group may be freed. */
static void child_done(struct child *c, int result, void *value)
{
    struct weft_group *g = c->g;
    struct wake_list wl = {NULL};
    if (g->limited)
        weft_sem_release(&g->slots, 1);
    sync_lock(&g->lock);
    c->result = result;
    c->value = value;
    c->done = true;
    clist_remove(&g->live, c);
    g->nlive--;
    clist_push(&g->done, c);
    g->ndone++;
    if (result < 0 && result != -ECANCELED) {
        if (!g->first_err)
            g->first_err = result;
        if (g->cancel_on_error && !g->cancelled)
            cancel_live(g);
    }
    waitq_claim_all(&g->q, 0, &wl);
    sync_unlock(&g->lock);
    wake_list_run(&wl);
}

/* ---- children ---- */

static void *child_trampoline(void *arg)
{
    struct child *c = arg;
    int rc = c->fn(c->arg);
    child_done(c, rc, c->arg);
    return NULL;
}

struct child_future {
    weft_future base;
    struct child *c;
    weft_future *inner;
    bool finished;
};

static weft_poll child_poll(weft_future *f, weft_cx *cx)
{
    struct child_future *cf = (struct child_future *)f;
    if (weft_future_poll(cf->inner, cx) == WEFT_PENDING)
        return WEFT_PENDING;
    int err = cf->inner->err;
    void *v = cf->inner->value;
    weft_future_free(cf->inner);
    cf->inner = NULL;
    cf->finished = true;
    child_done(cf->c, err, v);
    return weft_future_set(f, v, err);
}

static void child_drop(weft_future *f)
{
    struct child_future *cf = (struct child_future *)f;
    if (cf->inner) {
        cf->inner->flags |= FUT_POLLED; /* cancelled, not forgotten */
        weft_future_free(cf->inner);
        cf->inner = NULL;
    }
    if (!cf->finished) {
        cf->finished = true;
        child_done(cf->c, -ECANCELED, NULL);
    }
}

static const weft_future_ops child_ops = {
    .poll = child_poll,
    .drop = child_drop,
    .name = "group_child",
};

/* ---- spawning ---- */

enum spawn_mode { SPAWN_WAIT, SPAWN_DEADLINE, SPAWN_TRY };

static int take_slot(struct weft_group *g, enum spawn_mode mode,
                     int64_t deadline)
{
    if (!g->limited)
        return 0;
    switch (mode) {
    case SPAWN_TRY:
        return weft_sem_try_acquire(&g->slots, 1);
    case SPAWN_DEADLINE:
        return weft_sem_acquire_dl(&g->slots, 1, deadline);
    default:
        if (weft__sync_context() == 0)
            return weft_sem_acquire_blocking(&g->slots, 1);
        return weft_sem_acquire(&g->slots, 1);
    }
}

/* Forgets a child whose spawn failed, after child_done() ran for it. */
static void child_forget(struct child *c)
{
    struct weft_group *g = c->g;
    struct wake_list wl = {NULL};
    sync_lock(&g->lock);
    clist_remove(&g->done, c);
    g->ndone--;
    waitq_claim_all(&g->q, 0, &wl); /* the group may be empty now */
    sync_unlock(&g->lock);
    wake_list_run(&wl);
    weft__free(c, sizeof *c);
}

static int group_spawn(struct weft_group *g, weft_group_fn fn, void *arg,
                       weft_future *f, enum spawn_mode mode, int64_t deadline)
{
    int rc = take_slot(g, mode, deadline);
    if (rc < 0)
        goto fail;
    struct child *c = weft__zalloc(sizeof *c);
    struct child_future *cf = NULL;
    if (c && f) {
        cf = (struct child_future *)weft_future_new(sizeof *cf, &child_ops);
        if (cf) {
            cf->c = c;
            cf->inner = f;
            f = NULL; /* the wrapper owns it now */
        }
    }
    if (!c || (fn == NULL && !cf)) {
        weft__free(c, sizeof *c);
        if (g->limited)
            weft_sem_release(&g->slots, 1);
        rc = -ENOMEM;
        goto fail;
    }
    c->g = g;
    c->fn = fn;
    c->arg = arg;
    sync_lock(&g->lock);
    if (g->cancelled) {
        sync_unlock(&g->lock);
        weft__free(c, sizeof *c);
        if (cf) {
            cf->finished = true; /* never a child: no child_done */
            cf->base.flags |= FUT_POLLED;
            weft_future_free(&cf->base);
        }
        if (g->limited)
            weft_sem_release(&g->slots, 1);
        return -ECANCELED;
    }
    clist_push(&g->live, c);
    g->nlive++;
    sync_unlock(&g->lock);

    weft_task *t = NULL;
    if (cf) {
        cf->base.flags |= FUT_POLLED;
        rc = weft_spawn_future(g->rt, &t, &cf->base, NULL);
        /* On failure the wrapper was dropped: child_done has run. */
    } else {
        rc = weft_spawn(g->rt, &t, child_trampoline, c);
        if (rc < 0)
            child_done(c, -ECANCELED, arg); /* undone below */
    }
    if (rc < 0) {
        child_forget(c);
        return rc;
    }
    struct wake_list wl = {NULL};
    sync_lock(&g->lock);
    c->task = t;
    if (g->cancelled && !c->done)
        weft_task_cancel(t);
    if (c->done)
        waitq_claim_all(&g->q, 0, &wl); /* it can be reaped now */
    sync_unlock(&g->lock);
    wake_list_run(&wl);
    return 0;
fail:
    if (f) {
        f->flags |= FUT_POLLED;
        weft_future_free(f);
    }
    return rc;
}

static int check_cancelled(struct weft_group *g)
{
    sync_lock(&g->lock);
    bool c = g->cancelled;
    sync_unlock(&g->lock);
    return c ? -ECANCELED : 0;
}

int weft_group_spawn(weft_group *g, weft_group_fn fn, void *arg)
{
    int rc = check_cancelled(g);
    return rc ? rc : group_spawn(g, fn, arg, NULL, SPAWN_WAIT, 0);
}

int weft_group_try_spawn(weft_group *g, weft_group_fn fn, void *arg)
{
    int rc = check_cancelled(g);
    return rc ? rc : group_spawn(g, fn, arg, NULL, SPAWN_TRY, 0);
}

int weft_group_spawn_future(weft_group *g, weft_future *f)
{
    if (!f)
        return -ENOMEM;
    int rc = check_cancelled(g);
    if (rc) {
        f->flags |= FUT_POLLED;
        weft_future_free(f);
        return rc;
    }
    return group_spawn(g, NULL, NULL, f, SPAWN_WAIT, 0);
}

int weft_group_try_spawn_future(weft_group *g, weft_future *f)
{
    if (!f)
        return -ENOMEM;
    int rc = check_cancelled(g);
    if (rc) {
        f->flags |= FUT_POLLED;
        weft_future_free(f);
        return rc;
    }
    return group_spawn(g, NULL, NULL, f, SPAWN_TRY, 0);
}

/* ---- reaping ---- */

/* Under the lock: a finished child whose handle is known, taken off `done`. */
static struct child *take_done(struct weft_group *g)
{
    for (struct child *c = g->done.head; c; c = c->next) {
        if (c->task) {
            clist_remove(&g->done, c);
            g->ndone--;
            return c;
        }
    }
    return NULL;
}

/* The next-child future: ready with value = the reaped record, or err
 * -ECHILD when the group is empty. */
static weft_poll next_poll(weft_future *f, weft_cx *cx)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_group *g = op->obj;
    uint32_t s = waiter_state(&op->w);
    if (s != W_IDLE) {
        if (s == W_QUEUED && waiter_repoll(&g->lock, &op->w, cx))
            return WEFT_PENDING;
        waiter_reset(&op->w);
    }
    sync_lock(&g->lock);
    struct child *c = take_done(g);
    if (!c && (g->nlive || g->ndone)) {
        waiter_enqueue(&g->q, &op->w, cx);
        sync_unlock(&g->lock);
        return WEFT_PENDING;
    }
    sync_unlock(&g->lock);
    return weft_future_set(f, c, c ? 0 : -ECHILD);
}

static void next_drop(weft_future *f)
{
    struct sync_op *op = (struct sync_op *)f;
    struct weft_group *g = op->obj;
    if (waiter_cancel(&g->lock, &g->q, &op->w) == W_DONE)
        waiter_reset(&op->w); /* a wake-up only: nothing was taken */
}

static const weft_future_ops next_ops = {
    .poll = next_poll,
    .drop = next_drop,
    .name = "group_next",
};

enum wait_mode { WAIT_HERE, WAIT_DEADLINE, WAIT_SHIELDED };

static int run_next(struct weft_group *g, struct child **out,
                    enum wait_mode mode, int64_t deadline)
{
    struct sync_op op;
    void *v = NULL;
    int rc;
    sync_op_init(&op, &next_ops, NULL, g, NULL, 0);
    switch (mode) {
    case WAIT_SHIELDED:
        rc = weft__sync_run_shielded(&op.base, &v);
        break;
    case WAIT_DEADLINE:
        rc = weft_await_deadline(&op.base, &v, deadline);
        break;
    default:
        if (weft__sync_context() == 0)
            rc = weft__sync_block(&op.base, &v);
        else
            rc = weft__sync_run(&op.base, &v);
    }
    *out = rc == 0 ? v : NULL;
    return rc;
}

/* Releases a reaped record and its join handle. */
static void child_reap(struct child *c, int *result, void **value)
{
    if (result)
        *result = c->result;
    if (value)
        *value = c->value;
    weft_task_free(c->task);
    weft__free(c, sizeof *c);
}

static int group_next(struct weft_group *g, int *result, void **value,
                      enum wait_mode mode, int64_t deadline)
{
    struct child *c;
    int rc = run_next(g, &c, mode, deadline);
    if (rc == 0)
        child_reap(c, result, value);
    return rc;
}

int weft_group_next(weft_group *g, int *result, void **value)
{
    return group_next(g, result, value, WAIT_HERE, 0);
}

static int group_wait(struct weft_group *g, enum wait_mode mode,
                      int64_t deadline)
{
    int rc;
    while ((rc = group_next(g, NULL, NULL, mode, deadline)) == 0)
        ;
    if (rc != -ECHILD)
        return rc;
    sync_lock(&g->lock);
    rc = g->first_err;
    sync_unlock(&g->lock);
    return rc;
}

int weft_group_wait(weft_group *g)
{
    return group_wait(g, WAIT_HERE, 0);
}

int weft_group_spawn_dl(weft_group *g, weft_group_fn fn, void *arg,
                        int64_t deadline)
{
    int rc = check_cancelled(g);
    return rc ? rc : group_spawn(g, fn, arg, NULL, SPAWN_DEADLINE, deadline);
}

int weft_group_next_dl(weft_group *g, int *result, void **value,
                       int64_t deadline)
{
    return group_next(g, result, value, WAIT_DEADLINE, deadline);
}

int weft_group_wait_dl(weft_group *g, int64_t deadline)
{
    return group_wait(g, WAIT_DEADLINE, deadline);
}

/* Waits (shielded) until the task behind a reaped handle has ended. */
static void join_shielded(weft_task *t)
{
    if (weft_task_done(t))
        return;
    /* Out of memory: skip the wait; the child has already left the group
     * and only its last instructions remain. */
    weft_future *f = weft_join_future(t);
    if (f)
        weft__sync_run_shielded(f, NULL);
}

void weft_group_free(weft_group *g)
{
    if (!g)
        return;
    weft_group_cancel(g);
    struct child *c;
    while (run_next(g, &c, WAIT_SHIELDED, 0) == 0) {
        join_shielded(c->task);
        child_reap(c, NULL, NULL);
    }
    WEFT_CHECK(!g->live.head && !g->done.head && !g->q.head,
               "a group freed while it was in use");
    weft__free(g, sizeof *g);
}
