/*
 * pizza.c - async explained with pizza orders, on one thread.
 *
 * A pizzeria has a counter and a kitchen. Synchronous code is a cashier who
 * takes an order, waits at the counter until that pizza comes out of the
 * kitchen, hands it over, and only then takes the next order. Asynchronous
 * code takes every order, passes each to the kitchen, and hands pizzas over
 * as they come out, doing other work in between.
 *
 * With weft:
 *
 *   - each order is a coroutine task (weft_spawn): ordinary sequential C
 *     that calls weft_await() where it would wait;
 *   - each step of an order ("dough", "oven", "box") is a future: a lazy
 *     description of work that starts only when it is first polled;
 *   - the kitchen stands for the world outside the runtime (the kernel, a
 *     device, a thread pool): plain pthreads that know nothing of weft
 *     except the weft_waker they were given, which they wake when a dish is
 *     ready. (To run a blocking call of your own, weft_spawn_blocking() is
 *     the tool; the kitchen is written out by hand to show how a leaf
 *     future and a foreign thread meet.)
 *
 * Every task here runs on the one thread that calls weft_block_on().
 *
 * Build and run: make run
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft.h>

/* ------------------------------------------------------------------------ */
/* The menu and the orders                                                  */
/* ------------------------------------------------------------------------ */

enum { DOUGH, OVEN, BOX, NSTEPS };
static const char *const step_name[NSTEPS] = {"dough", "oven", "box"};
static const char step_mark[NSTEPS] = {'d', 'O', 'b'};

struct pizza {
    const char *name;
    int ms[NSTEPS]; /* how long each step takes in the kitchen */
};

static const struct pizza margherita = {"Margherita", {100, 250, 40}};
static const struct pizza marinara = {"Marinara", {80, 220, 40}};
static const struct pizza formaggi = {"Quattro Formaggi", {120, 300, 40}};
static const struct pizza diavola = {"Diavola", {100, 280, 40}};
static const struct pizza calzone = {"Calzone", {150, 350, 60}};
static const struct pizza funghi = {"Funghi", {100, 260, 40}};

#define NORDERS 10
#define NSYNC 3 /* the synchronous run serves only the first few */

static const struct {
    const char *customer;
    const struct pizza *pizza;
} todays_orders[NORDERS] = {
    {"Ada", &margherita},   {"Alan", &marinara},    {"Grace", &formaggi},
    {"Edsger", &diavola},   {"Barbara", &funghi},   {"Ken", &margherita},
    {"Linus", &calzone},    {"Margaret", &diavola}, {"Dennis", &marinara},
    {"Frances", &formaggi},
};

struct order {
    int no;
    const char *customer;
    const struct pizza *pizza;
    /* Filled in while the order is prepared (seconds since the start). */
    int ms[NSTEPS]; /* this order's step times: the pizza's, give or take
                       a quarter, drawn at random when the order is taken */
    double start[NSTEPS], end[NSTEPS];
    int steps_done;
    int result; /* 0 delivered, -ECANCELED, or another error */
};

static void take_orders(struct order *orders)
{
    static unsigned seed;
    if (!seed)
        seed = (unsigned)time(NULL) | 1;
    memset(orders, 0, NORDERS * sizeof *orders);
    for (int i = 0; i < NORDERS; i++) {
        orders[i].no = i + 1;
        orders[i].customer = todays_orders[i].customer;
        orders[i].pizza = todays_orders[i].pizza;
        for (int s = 0; s < NSTEPS; s++) {
            int base = orders[i].pizza->ms[s];
            orders[i].ms[s] = base * 3 / 4 + rand_r(&seed) % (base / 2 + 1);
        }
    }
}

static _Noreturn void die(const char *what, int err)
{
    fprintf(stderr, "pizza: %s: %s\n", what, weft_strerror(err));
    exit(1);
}

static double clock_seconds(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0)
        die("clock_gettime", -errno);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds on a monotonic clock since `t0` (or since boot for t0 = 0). */
static double now(double t0)
{
    return clock_seconds(CLOCK_MONOTONIC) - t0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0)
        if (errno != EINTR)
            die("nanosleep", -errno);
}

/* ------------------------------------------------------------------------ */
/* The kitchen: threads that know nothing about weft but a waker            */
/* ------------------------------------------------------------------------ */

/*
 * Every dish gets a cook of its own, a plain pthread that sleeps for the
 * preparation time, so the kitchen prepares many dishes at once. How the
 * kitchen works inside does not matter to weft: it could as well be one
 * thread with a list of deadlines, or the kernel finishing I/O.
 *
 * A ticket is the state a kitchen job shares between the future that
 * ordered it (on the weft thread) and its cook. Whichever side lets go of
 * it last frees it, so the future may be dropped (its task cancelled) while
 * the cook is still busy.
 */
struct ticket {
    pthread_mutex_t lock; /* guards everything below */
    int ms;
    int done;         /* the cook has finished */
    int refs;         /* 2 at first: the future's and the cook's */
    weft_waker waker; /* whom to wake when done; the cook or drop takes it */
};

/* Counters, to show afterwards what happened. */
static struct {
    atomic_int jobs_started; /* cooks hired: futures polled the first time */
    atomic_int polls;        /* calls to kitchen_poll */
    atomic_int wakes;        /* wakes sent by cooks */
    atomic_int thrown_away;  /* dishes finished for a future that was gone */
} kitchen;

/* Cooks still at work, so that main() can wait for the last one. */
static pthread_mutex_t kitchen_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t kitchen_idle = PTHREAD_COND_INITIALIZER;
static int kitchen_busy;

static void ticket_unref(struct ticket *t)
{
    pthread_mutex_lock(&t->lock);
    int last = --t->refs == 0;
    pthread_mutex_unlock(&t->lock);
    if (last) {
        pthread_mutex_destroy(&t->lock);
        free(t);
    }
}

/* A cook: prepares one dish, then wakes whoever waits for it. */
static void *cook(void *arg)
{
    struct ticket *t = arg;
    sleep_ms(t->ms);

    pthread_mutex_lock(&t->lock);
    t->done = 1;
    weft_waker w = t->waker; /* take it: from now on the ticket has none */
    t->waker.vtable = NULL;
    int orphan = t->refs == 1; /* the future was dropped meanwhile */
    pthread_mutex_unlock(&t->lock);

    if (orphan)
        kitchen.thrown_away++;
    else
        kitchen.wakes++;
    weft_waker_wake(&w); /* outside the lock; a no-op waker if orphaned */
    ticket_unref(t);

    pthread_mutex_lock(&kitchen_lock);
    if (--kitchen_busy == 0)
        pthread_cond_signal(&kitchen_idle);
    pthread_mutex_unlock(&kitchen_lock);
    return NULL;
}

/* Starts a cook on `t`. Returns 0 or a negative errno value. */
static int kitchen_start(struct ticket *t)
{
    pthread_t th;
    pthread_mutex_lock(&kitchen_lock);
    kitchen_busy++;
    pthread_mutex_unlock(&kitchen_lock);
    int rc = pthread_create(&th, NULL, cook, t);
    if (rc != 0) {
        pthread_mutex_lock(&kitchen_lock);
        kitchen_busy--;
        pthread_mutex_unlock(&kitchen_lock);
        return -rc;
    }
    pthread_detach(th); /* kitchen_wait_idle() waits for it instead */
    kitchen.jobs_started++;
    return 0;
}

/* Waits (blocking: call it outside the runtime) until every cook is done. */
static void kitchen_wait_idle(void)
{
    pthread_mutex_lock(&kitchen_lock);
    while (kitchen_busy > 0)
        pthread_cond_wait(&kitchen_idle, &kitchen_lock);
    pthread_mutex_unlock(&kitchen_lock);
}

/* ------------------------------------------------------------------------ */
/* The leaf future: "the kitchen has prepared this step"                    */
/* ------------------------------------------------------------------------ */

struct kitchen_future {
    weft_future base; /* must come first */
    int ms;
    struct ticket *ticket; /* NULL until the first poll */
};

/*
 * poll is called by the task that awaits the future: first when it awaits,
 * then again each time the future's waker is woken. It never blocks: it
 * either finishes (WEFT_READY) or leaves a waker where the cook will find it
 * and returns WEFT_PENDING.
 */
static weft_poll kitchen_poll(weft_future *f, weft_cx *cx)
{
    struct kitchen_future *kf = (struct kitchen_future *)f;
    kitchen.polls++;

    if (!kf->ticket) {
        /* First poll: only now does any work start. */
        struct ticket *t = calloc(1, sizeof *t);
        if (!t)
            return weft_future_set(f, NULL, -ENOMEM);
        pthread_mutex_init(&t->lock, NULL);
        t->ms = kf->ms;
        t->refs = 2;
        t->waker = weft_waker_clone(weft_cx_waker(cx));
        int rc = kitchen_start(t);
        if (rc < 0) {
            weft_waker_drop(&t->waker);
            pthread_mutex_destroy(&t->lock);
            free(t);
            return weft_future_set(f, NULL, rc);
        }
        kf->ticket = t;
        return WEFT_PENDING;
    }

    struct ticket *t = kf->ticket;
    weft_waker old = {0};
    pthread_mutex_lock(&t->lock);
    int done = t->done;
    if (!done && !weft_waker_will_wake(&t->waker, weft_cx_waker(cx))) {
        /* Polled by another task than last time: wake the latest one. */
        old = t->waker;
        t->waker = weft_waker_clone(weft_cx_waker(cx));
    }
    pthread_mutex_unlock(&t->lock);
    weft_waker_drop(&old);
    return done ? weft_future_set(f, NULL, 0) : WEFT_PENDING;
}

/*
 * drop runs when the future is finished with: after it was ready, or when it
 * is abandoned half way (its task was cancelled). The cook cannot be
 * stopped, so let go of the ticket: the cook frees it when done and wakes no
 * one.
 */
static void kitchen_drop(weft_future *f)
{
    struct kitchen_future *kf = (struct kitchen_future *)f;
    struct ticket *t = kf->ticket;
    if (!t)
        return; /* never polled: nothing was started */
    pthread_mutex_lock(&t->lock);
    weft_waker w = t->waker;
    t->waker.vtable = NULL;
    pthread_mutex_unlock(&t->lock);
    weft_waker_drop(&w);
    ticket_unref(t);
}

static const weft_future_ops kitchen_ops = {
    .poll = kitchen_poll,
    .drop = kitchen_drop,
    .name = "kitchen",
};

/* A future that is ready once the kitchen has spent `ms` on a step. Creating
 * it does nothing else: the kitchen starts when it is first polled. NULL if
 * memory is exhausted (weft_await(NULL, ...) returns -ENOMEM).
 *
 * The macro passes the caller's line (WEFT_HERE) down to weft, which shows
 * it in diagnostics: "kitchen future created at pizza.c:NN was never
 * polled" then names the line that forgot its await, not this function. */
static weft_future *kitchen_job_at(int ms, const weft_site *site)
{
    struct kitchen_future *kf = (struct kitchen_future *)weft_future_new_at(
        sizeof *kf, &kitchen_ops, site);
    if (!kf)
        return NULL;
    kf->ms = ms;
    return &kf->base;
}
#define kitchen_job(ms) kitchen_job_at((ms), WEFT_HERE)

/* ------------------------------------------------------------------------ */
/* Printing a timeline                                                      */
/* ------------------------------------------------------------------------ */

#define MS_PER_COL 25
#define CHART_COLS 72

/* Column of the chart for a time in seconds. */
static int column(double t)
{
    int c = (int)(t * 1000 / MS_PER_COL + 0.5);
    return c < CHART_COLS ? c : CHART_COLS;
}

/* One bar per order: d = dough, O = oven, b = box, x = cancelled. */
static void print_chart(const struct order *orders, int n)
{
    for (int i = 0; i < n; i++) {
        const struct order *o = &orders[i];
        char bar[CHART_COLS + 2];
        int len = 0;
        memset(bar, ' ', sizeof bar);
        for (int s = 0; s < NSTEPS && s <= o->steps_done; s++) {
            int from = column(o->start[s]), to = column(o->end[s]);
            if (to <= from)
                to = from + 1;
            memset(bar + from, step_mark[s], (size_t)(to - from));
            if (s == o->steps_done) /* this step never finished */
                bar[to - 1] = 'x';
            len = to > len ? to : len;
        }
        bar[len] = '\0';
        printf("   #%-2d %-16s |%s\n", o->no, o->pizza->name, bar);
    }
    printf("   %21s 1 column = %d ms: d dough, O oven, b box, x cancelled\n",
           "", MS_PER_COL);
}

/* Seconds of kitchen work the first `n` orders need. */
static double kitchen_work(const struct order *orders, int n)
{
    int ms = 0;
    for (int i = 0; i < n; i++)
        for (int s = 0; s < NSTEPS; s++)
            ms += orders[i].ms[s];
    return ms / 1000.0;
}

/* ------------------------------------------------------------------------ */
/* 1. Synchronous: wait at the counter for each order                       */
/* ------------------------------------------------------------------------ */

static void serve_synchronously(struct order *orders, int n)
{
    double t0 = now(0);
    for (int i = 0; i < n; i++) {
        struct order *o = &orders[i];
        printf("   %4.2f s  order #%d, %s for %s; waiting at the counter...\n",
               now(t0), o->no, o->pizza->name, o->customer);
        for (int s = 0; s < NSTEPS; s++) {
            o->start[s] = now(t0);
            sleep_ms(o->ms[s]); /* the whole thread waits */
            o->end[s] = now(t0);
            o->steps_done = s + 1;
        }
    }
    double total = now(t0);

    printf("\n");
    print_chart(orders, n);
    printf("\n   %d orders took %.2f s, the sum of their parts (%.2f s): the "
           "cashier stood\n   at the counter, doing nothing, the whole time. "
           "All %d orders would\n   take %.1f s.\n",
           n, total, kitchen_work(orders, n), NORDERS,
           kitchen_work(orders, NORDERS));
}

/* ------------------------------------------------------------------------ */
/* 2. A future does nothing until it is awaited                             */
/* ------------------------------------------------------------------------ */

static void *show_laziness(void *arg)
{
    (void)arg;
    weft_future *dough = kitchen_job(100);
    printf("   created a \"dough\" future: cooks started so far: %d\n",
           atomic_load(&kitchen.jobs_started));

    double t0 = now(0);
    int rc = weft_await(dough, NULL); /* the first poll starts the cook */
    if (rc < 0)
        die("weft_await", rc);
    printf("   awaited it:                cooks started so far: %d; the "
           "dough took %.2f s\n",
           atomic_load(&kitchen.jobs_started), now(t0));

    /* A future that is never awaited never runs. Forgetting the await is a
     * classic bug, so weft reports such a future when it is freed (in
     * debug builds, or with WEFT_DEBUG=1 in the environment). */
    weft_future_free(kitchen_job(100));
    printf("   created and freed one without awaiting it: cooks started: %d\n"
           "   (with WEFT_DEBUG=1, or in a debug build, weft reports such a "
           "forgotten\n   future on stderr)\n",
           atomic_load(&kitchen.jobs_started));
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* 3. Asynchronous: take every order, hand pizzas over as they come out     */
/* ------------------------------------------------------------------------ */

static double shop_t0;           /* start of the asynchronous run */
static pthread_t counter_thread; /* the thread inside weft_block_on() */
static atomic_int steps_here;    /* awaits that resumed on that thread */

/* One order, as one coroutine task: plain sequential code. Each weft_await
 * suspends this task only; meanwhile the thread runs the other tasks. */
static void *prepare_order(void *arg)
{
    struct order *o = arg;
    for (int s = 0; s < NSTEPS; s++) {
        o->start[s] = now(shop_t0);
        /* The oven is a weft timer: weft_sleep suspends this task only.
         * Dough and box are done by a cook (a plain thread) who completes
         * a future of ours: the way any outside work plugs into weft. */
        int rc = s == OVEN ? weft_sleep(o->ms[s])
                           : weft_await(kitchen_job(o->ms[s]), NULL);
        o->end[s] = now(shop_t0);
        if (pthread_equal(pthread_self(), counter_thread))
            steps_here++;
        if (rc < 0)
            return NULL; /* cancelled (or failed): weft_join reports it */
        o->steps_done = s + 1;
    }
    printf("   %4.2f s  #%d is ready: %s for %s\n", now(shop_t0), o->no,
           o->pizza->name, o->customer);
    return o;
}

struct shop {
    struct order *orders;
    weft_task *tasks[NORDERS];
    int leaving; /* the order whose customer leaves before it is ready */
};

/* Called once order #1 has been handed over. */
static void customer_leaves(struct shop *shop)
{
    struct order *o = &shop->orders[shop->leaving - 1];
    weft_task *t = shop->tasks[shop->leaving - 1];
    if (weft_task_done(t)) {
        printf("   %4.2f s  %s wanted to cancel #%d, but it is already "
               "done\n",
               now(shop_t0), o->customer, o->no);
        return;
    }
    printf("   %4.2f s  %s leaves: cancelling #%d (in the %s)\n", now(shop_t0),
           o->customer, o->no, step_name[o->steps_done]);
    weft_task_cancel(t);
}

/* The counter: the root task. It takes every order, then hands the pizzas
 * over in the order they were ordered. */
static void *counter(void *arg)
{
    struct shop *shop = arg;

    for (int i = 0; i < NORDERS; i++) {
        struct order *o = &shop->orders[i];
        printf("   %4.2f s  order #%d, %s for %s\n", now(shop_t0), o->no,
               o->pizza->name, o->customer);
        int rc = weft_spawn(NULL, &shop->tasks[i], prepare_order, o);
        if (rc < 0)
            die("weft_spawn", rc);
        /* A new task runs once the thread is free. Give the thread away
         * for a moment, so that the order reaches the kitchen before the
         * next customer is served. */
        rc = weft_yield();
        if (rc < 0)
            die("weft_yield", rc);
    }
    printf("   %4.2f s  all %d orders are in the kitchen; the counter waits "
           "for #1\n",
           now(shop_t0), NORDERS);

    for (int i = 0; i < NORDERS; i++) {
        /* Suspends the counter until order i is done. Orders that finish
         * earlier keep their result until they are joined. */
        int rc = weft_join(shop->tasks[i], NULL);
        if (rc < 0 && rc != -ECANCELED)
            die("weft_join", rc);
        shop->orders[i].result = rc;
        if (i == 0)
            customer_leaves(shop);
    }
    for (int i = 0; i < NORDERS; i++)
        weft_task_free(shop->tasks[i]);
    return NULL;
}

/* What the kitchen counted, and what the runtime itself counts. */
struct counts {
    int kitchen_polls, wakes, jobs;
    weft_metrics rt; /* per worker: polls, parks (went idle), busy time */
};

static void take_counts(weft_runtime *rt, struct counts *c)
{
    c->kitchen_polls = atomic_load(&kitchen.polls);
    c->wakes = atomic_load(&kitchen.wakes);
    c->jobs = atomic_load(&kitchen.jobs_started);
    int rc = weft_runtime_metrics(rt, &c->rt);
    if (rc < 0)
        die("weft_runtime_metrics", rc);
}

/* Explains the asynchronous run in numbers: `a` and `b` are the counts
 * before and after it. */
static void print_summary(const struct shop *shop, double total,
                          const struct counts *a, const struct counts *b)
{
    int delivered = 0, cancelled = 0;
    for (int i = 0; i < NORDERS; i++) {
        delivered += shop->orders[i].result == 0;
        cancelled += shop->orders[i].result == -ECANCELED;
    }
    double work = kitchen_work(shop->orders, NORDERS);
    const weft_worker_metrics *w0 = &a->rt.worker[0], *w1 = &b->rt.worker[0];

    printf("\nWhat happened\n\n");
    printf("   %d orders (%d delivered, %d cancelled) took %.2f s instead of "
           "the %.1f s\n   their parts add up to: the kitchen worked on all "
           "of them at once (%.0fx).\n\n",
           NORDERS, delivered, cancelled, total, work, work / total);
    printf("   %d tasks, the counter and %d orders, shared one thread, the "
           "one that\n   called weft_block_on(): all %d awaits resumed "
           "there. While the kitchen\n   worked on #1, that thread took the "
           "%d other orders and moved every order\n   on as the kitchen "
           "finished a step.\n\n",
           NORDERS + 1, NORDERS, atomic_load(&steps_here), NORDERS - 1);
    printf("   weft_runtime_metrics: the thread polled tasks %llu times "
           "(a poll resumes\n   an order, which collects one step and starts "
           "the next) and went idle\n   %llu times, until a cook or the oven "
           "timer woke a task. "
           "It was busy for %.1f ms of the %.2f s.\n\n",
           (unsigned long long)(w1->polls - w0->polls),
           (unsigned long long)(w1->parks - w0->parks),
           (double)(w1->busy_ns - w0->busy_ns) / 1e6, total);
    printf("   %d kitchen futures were polled %d times: once when awaited "
           "(that sent the\n   job to the kitchen and returned PENDING) and "
           "once after each of the %d\n   wakes from a cook (READY). Nothing "
           "was polled in a loop.\n\n",
           b->jobs - a->jobs, b->kitchen_polls - a->kitchen_polls,
           b->wakes - a->wakes);
    if (shop->orders[shop->leaving - 1].result != -ECANCELED) {
        printf("   #%d was ready before its customer left: cancelling a "
               "finished task does\n   nothing.\n",
               shop->leaving);
        return;
    }
    printf("   Cancelling #%d made its weft_await return -ECANCELED; the task "
           "returned\n   and the future's drop let go of the kitchen "
           "ticket. ",
           shop->leaving);
    if (atomic_load(&kitchen.thrown_away) > 0)
        printf("The cook finished\n   anyway (a pizza cannot be un-baked), "
               "threw the dish away and woke no one.\n");
    else
        printf("The cook had just\n   finished; its wake found the task "
               "cancelled, which is harmless.\n");
}

/* ------------------------------------------------------------------------ */

int main(void)
{
    struct order orders[NORDERS];
    weft_runtime *rt;
    int rc;

    printf("weft %s: the pizza demo\n\n", weft_version_string());

    printf("1. Synchronous: wait at the counter for each order "
           "(the first %d only)\n\n",
           NSYNC);
    take_orders(orders);
    serve_synchronously(orders, NSYNC);

    /* One runtime. Its default flavour, current-thread, runs every task
     * on the thread that calls weft_block_on(). */
    rc = weft_runtime_new(&rt, NULL);
    if (rc < 0)
        die("weft_runtime_new", rc);

    printf("\n2. A future does nothing until it is awaited\n\n");
    rc = weft_block_on(rt, show_laziness, NULL, NULL);
    if (rc < 0)
        die("weft_block_on", rc);

    printf("\n3. Asynchronous: take every order, hand pizzas over as they "
           "come out\n\n");
    take_orders(orders);
    struct shop shop = {.orders = orders, .leaving = 7};
    static struct counts before, after;
    take_counts(rt, &before);
    counter_thread = pthread_self();
    shop_t0 = now(0);

    rc = weft_block_on(rt, counter, &shop, NULL);
    if (rc < 0)
        die("weft_block_on", rc);

    double total = now(shop_t0);
    take_counts(rt, &after);
    weft_runtime_free(rt);
    kitchen_wait_idle(); /* the cancelled order's cook may still be busy */

    printf("\n");
    print_chart(orders, NORDERS);
    print_summary(&shop, total, &before, &after);
    return 0;
}
