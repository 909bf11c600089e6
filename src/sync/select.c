/*
 * Combinators over futures: select (the first of N) and join_all (all of N).
 *
 * Both poll their children with the caller's own context, in index order,
 * every time they are polled: the children register the caller's waker, so
 * any child's progress wakes the combinator. That is O(N) per wake-up, which
 * is what tokio's select! and join! macros do too; it keeps the combinators
 * allocation-free and lets children borrow the waker (sync.h).
 *
 * The coroutine forms keep their state on the coroutine's stack and work on
 * the caller's array; the future forms copy the array into the future.
 */
#include "sync/sync.h"

/* Drops and frees fs[i] (if still there), which may never have been polled:
 * a loser is not a forgotten await. */
static void drop_child(weft_future **fs, size_t i)
{
    weft_future *f = fs[i];
    if (!f)
        return;
    fs[i] = NULL;
    f->flags |= FUT_POLLED;
    weft_future_free(f);
}

static void drop_all(weft_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        drop_child(fs, i);
}

static bool any_null(weft_future **fs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!fs[i])
            return true;
    return false;
}

/* Runs `f` as a coroutine call or, on a plain thread, blocking. */
static int run_here(weft_future *f, void **value)
{
    int ctx = weft__sync_context();
    if (ctx > 0)
        return weft__sync_run(f, value);
    if (ctx == 0)
        return weft__sync_block(f, value);
    f->flags |= FUT_POLLED;
    weft_future_free(f);
    return -EPERM;
}

/* ======================================================================== */
/* select                                                                   */
/* ======================================================================== */

struct select_future {
    weft_future base;
    weft_future **fs; /* the children (the caller's array, or inline) */
    size_t n;
    size_t *index; /* where to report the winner; may be NULL */
    weft_future *inline_fs[];
};

static weft_poll select_poll(weft_future *f, weft_cx *cx)
{
    struct select_future *sf = (struct select_future *)f;
    for (size_t i = 0; i < sf->n; i++) {
        weft_future *c = sf->fs[i];
        if (!c || weft_future_poll(c, cx) == WEFT_PENDING)
            continue;
        void *v = c->value;
        int err = c->err;
        drop_child(sf->fs, i);
        drop_all(sf->fs, sf->n); /* the losers, in order */
        if (sf->index)
            *sf->index = i;
        return weft_future_set(f, v, err);
    }
    return WEFT_PENDING;
}

static void select_drop(weft_future *f)
{
    struct select_future *sf = (struct select_future *)f;
    drop_all(sf->fs, sf->n);
}

static const weft_future_ops select_ops = {
    .poll = select_poll,
    .drop = select_drop,
    .name = "select",
};

int weft_select(weft_future **fs, size_t n, size_t *index, void **value)
{
    if (index)
        *index = n;
    if (n == 0)
        return -EINVAL;
    if (any_null(fs, n)) {
        drop_all(fs, n);
        return -ENOMEM;
    }
    struct select_future sf;
    weft_future_init(&sf.base, &select_ops);
    sf.fs = fs;
    sf.n = n;
    sf.index = index;
    return run_here(&sf.base, value);
}

weft_future *weft_select_future_at(weft_future **fs, size_t n, size_t *index,
                                   const weft_site *site)
{
    struct select_future *sf = NULL;
    if (n > 0 && !any_null(fs, n) && n < SIZE_MAX / sizeof *fs / 2)
        sf = (struct select_future *)weft_future_new_at(
            sizeof *sf + n * sizeof *fs, &select_ops, site);
    if (!sf) {
        drop_all(fs, n);
        return NULL;
    }
    memcpy(sf->inline_fs, fs, n * sizeof *fs);
    memset(fs, 0, n * sizeof *fs);
    sf->fs = sf->inline_fs;
    sf->n = n;
    sf->index = index;
    if (index)
        *index = n;
    return &sf->base;
}

/* ======================================================================== */
/* join_all                                                                 */
/* ======================================================================== */

struct join_all_future {
    weft_future base;
    weft_future **fs;
    size_t n;
    size_t left;   /* children not finished */
    size_t failed; /* lowest index that failed, or n */
    int fail_err;
    void **values;
    int *errs;
    weft_future *inline_fs[];
};

static weft_poll join_all_poll(weft_future *f, weft_cx *cx)
{
    struct join_all_future *jf = (struct join_all_future *)f;
    for (size_t i = 0; i < jf->n && jf->left; i++) {
        weft_future *c = jf->fs[i];
        if (!c || weft_future_poll(c, cx) == WEFT_PENDING)
            continue;
        if (jf->values)
            jf->values[i] = c->value;
        if (jf->errs)
            jf->errs[i] = c->err;
        if (c->err < 0 && i < jf->failed) {
            jf->failed = i;
            jf->fail_err = c->err;
        }
        drop_child(jf->fs, i);
        jf->left--;
    }
    if (jf->left)
        return WEFT_PENDING;
    return weft_future_set(f, NULL, jf->failed < jf->n ? jf->fail_err : 0);
}

static void join_all_drop(weft_future *f)
{
    struct join_all_future *jf = (struct join_all_future *)f;
    drop_all(jf->fs, jf->n);
}

static const weft_future_ops join_all_ops = {
    .poll = join_all_poll,
    .drop = join_all_drop,
    .name = "join_all",
};

static void join_all_setup(struct join_all_future *jf, weft_future **fs,
                           size_t n, void **values, int *errs)
{
    jf->fs = fs;
    jf->n = n;
    jf->left = n;
    jf->failed = n;
    jf->fail_err = 0;
    jf->values = values;
    jf->errs = errs;
    for (size_t i = 0; i < n; i++) {
        if (values)
            values[i] = NULL;
        if (errs)
            errs[i] = -ECANCELED; /* until it finishes */
    }
}

int weft_join_all(weft_future **fs, size_t n, void **values, int *errs)
{
    if (any_null(fs, n)) {
        drop_all(fs, n);
        return -ENOMEM;
    }
    struct join_all_future jf;
    weft_future_init(&jf.base, &join_all_ops);
    join_all_setup(&jf, fs, n, values, errs);
    if (n == 0)
        return 0;
    return run_here(&jf.base, NULL);
}

weft_future *weft_join_all_future_at(weft_future **fs, size_t n, void **values,
                                     int *errs, const weft_site *site)
{
    struct join_all_future *jf = NULL;
    if (!any_null(fs, n) && n < SIZE_MAX / sizeof *fs / 2)
        jf = (struct join_all_future *)weft_future_new_at(
            sizeof *jf + n * sizeof *fs, &join_all_ops, site);
    if (!jf) {
        drop_all(fs, n);
        return NULL;
    }
    memcpy(jf->inline_fs, fs, n * sizeof *fs);
    memset(fs, 0, n * sizeof *fs);
    join_all_setup(jf, jf->inline_fs, n, values, errs);
    return &jf->base;
}
