/*
 * The coroutine stack pool.
 *
 * Stacks are carved many to a mapping (a "chunk": one mmap of up to 32 MiB,
 * reserved but not committed), each stack preceded by a guard region:
 *
 *   chunk: | guard | stack 0 | guard | stack 1 | ... | guard | stack n-1 |
 *                  ^lo       ^top
 *
 * One mmap per stack plus an mprotect'ed guard page would cost two VMAs per
 * stack and cap a process near 32k coroutines (vm.max_map_count = 65530).
 * MADV_GUARD_INSTALL (Linux 6.13) guards a range without splitting its VMA,
 * so a chunk stays one VMA however many stacks it holds. Without it, guards
 * are mprotect'ed while a process-wide budget lasts, and stacks beyond the
 * budget rely on a canary word at lo, which weft__coro_suspend/exit check.
 *
 * Memory: a stack's pages are touched top-down as the coroutine uses them,
 * so a coroutine that needs under a page costs one page. Returned stacks
 * keep their pages (a fresh page fault costs ~12 us on the reference
 * machine, far more than anything else here): the idle ones of a pool are
 * kept on a warm list, most recently returned first, and reused from its
 * head. Past RETAIN_BYTES + RETAIN_SLACK of idle stacks, a put empties a
 * batch of the least recently returned ones with MADV_DONTNEED (one
 * process_madvise() over the batch's address runs, guard markers and
 * PROT_NONE pages in between survive it) -- but only while the trimming
 * budget lasts: 1% of wall time, saved up for at most 5 ms. A burst of
 * returns (a million sleeping coroutines waking within a second) therefore
 * costs at most 1% more, instead of the ~10 s that emptying every stack as
 * it came back took there (12-60 us per madvise, mostly TLB flushes), and
 * the excess goes back to the kernel over the following puts, oldest first.
 * weft__stack_pool_trim() empties on demand, without the budget.
 *
 * Threads: each thread caches up to TCACHE_MAX stacks of one (pool, size),
 * so that a worker that ends one coroutine and starts the next takes no
 * lock. Behind the caches, each pool has one mutex over its free lists (one
 * per stack size; the runtime's default size is nearly always the only
 * one). A cache is keyed by the pool's id, which is never reused, so a cache
 * whose pool has been freed is recognised and dropped, never handed out
 * from: a live-pool registry is consulted before a cache is flushed back.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "coro/coro.h"

#include "coro/vg.h"

#if WEFT_CORO_ASAN
#include <sanitizer/asan_interface.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 */
#endif
#ifndef PIDFD_SELF
#define PIDFD_SELF (-10000) /* Linux 6.15: process_madvise() on oneself */
#endif

/* ---- knobs ---- */
#define GUARD_BYTES                                                            \
    (16u << 10)                 /* guard below each stack (>= 1 page): big     \
                                   frames must not jump over it */
#define CHUNK_BYTES (32u << 20) /* address space per mapping */
#define CHUNK_MAX_STACKS 256u
#define RETAIN_BYTES (64u << 20) /* idle stacks kept resident, per pool */
#define RETAIN_SLACK (RETAIN_BYTES / 8) /* trim only past RETAIN + SLACK */
#define TRIM_BATCH 64u                  /* stacks released per trim round */
#define TRIM_SHARE 100 /* trimming may take 1/TRIM_SHARE of wall time */
#define TRIM_CREDIT_MAX_NS 5000000L /* ... saved up for at most 5 ms */
#define IOV_BATCH 64u               /* guards installed per process_madvise */
#define TCACHE_MAX 32u              /* stacks per thread cache ... */
#define TCACHE_BYTES (8u << 20)     /* ... and at most this many bytes */
#define MPROTECT_BUDGET 16384L      /* mprotect-guarded stacks per process */
#define MIN_STACK (16u << 10)
#define MAX_STACK (1u << 30)

#ifndef NDEBUG
#define COUNT_OUTSTANDING 1
#endif

struct chunk {
    struct chunk *next;
    char *base;
    size_t len;
    unsigned n;
    unsigned nprotected; /* stacks guarded out of the mprotect budget */
    weft_stack stacks[];
};

/* The free stacks of one size. */
struct size_class {
    struct size_class *next;
    size_t size;
    weft_stack *warm;      /* used before: pages may be resident; most recently
                              returned first (reused from here) ... */
    weft_stack *warm_tail; /* ... least recently last (trimmed from here) */
    weft_stack *cold;      /* fresh, or emptied with MADV_DONTNEED */
    size_t nwarm, ncold;
};

struct weft_stack_pool {
    pthread_mutex_t lock; /* classes, their lists, chunks, carved */
    uint64_t id;          /* unique in the process, never reused */
    weft_stack_pool *next_live;
    weft_stack_guard guard;
    size_t page;
    size_t guard_size;
    struct size_class *classes;
    struct chunk *chunks;
    size_t carved;
    _Atomic size_t warm_bytes; /* written under lock, read racily */
    int64_t trim_credit_ns;    /* CPU time trimming may still take */
    int64_t trim_clock_ns;     /* when the credit was last topped up */
#ifdef COUNT_OUTSTANDING
    _Atomic long outstanding;
#endif
};

/* A thread's cache of free stacks of one (pool, size). */
struct tcache {
    uint64_t pool_id; /* 0 = unbound */
    size_t size;
    unsigned n, cap;
    weft_stack *s[TCACHE_MAX];
};

static __thread struct tcache tc;
static __thread int tc_key_set;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static weft_stack_pool *registry; /* live pools */
static _Atomic uint64_t next_pool_id = 1;

static pthread_once_t globals_once = PTHREAD_ONCE_INIT;
static pthread_key_t tc_key; /* its destructor flushes a dying thread's cache */
static int tc_key_ok;
static _Atomic long mprotect_budget;

/* ---- process-wide set-up ---- */

static long read_max_map_count(void)
{
    char buf[32];
    long v = 65530;
    int fd = open("/proc/sys/vm/max_map_count", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return v;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
        buf[n] = '\0';
        v = strtol(buf, NULL, 10);
    }
    return v;
}

static void tcache_flush(void);

static void tc_thread_exit(void *unused)
{
    (void)unused;
    tcache_flush();
}

static void globals_init(void)
{
    /* Each mprotect'ed stack splits its chunk's VMA twice: leave at least
     * half of the process's map count to everything else. */
    long budget = read_max_map_count() / 4;
    if (budget > MPROTECT_BUDGET)
        budget = MPROTECT_BUDGET;
    atomic_store(&mprotect_budget, budget > 0 ? budget : 0);
    tc_key_ok = pthread_key_create(&tc_key, tc_thread_exit) == 0;
}

/* Whether MADV_GUARD_INSTALL works, probed once. A success return is not
 * enough: qemu-user accepts any madvise advice and ignores it. A guard
 * region faults for the kernel's own accesses too, so write() from it must
 * fail with EFAULT. */
static int probe_madvise_guard(void)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int ok = 0, fd[2];
    char *m =
        mmap(NULL, 2 * page, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (m == MAP_FAILED)
        return 0;
    if (madvise(m, page, MADV_GUARD_INSTALL) == 0 &&
        pipe2(fd, O_CLOEXEC) == 0) {
        ok = write(fd[1], m, 1) < 0 && errno == EFAULT;
        close(fd[0]);
        close(fd[1]);
    }
    munmap(m, 2 * page);
    return ok;
}

static int madvise_guard_works(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_acquire);
    if (v < 0) {
        v = probe_madvise_guard();
        atomic_store_explicit(&cached, v, memory_order_release);
    }
    return v;
}

/* $WEFT_STACK_GUARD, or the best the machine has; a mode it lacks falls
 * back to the next one down. */
static weft_stack_guard choose_guard(void)
{
    const char *e = getenv("WEFT_STACK_GUARD");
    weft_stack_guard g = WEFT_STACK_GUARD_MADVISE;
    if (e && strcmp(e, "canary") == 0)
        g = WEFT_STACK_GUARD_CANARY;
    else if (e && strcmp(e, "mprotect") == 0)
        g = WEFT_STACK_GUARD_MPROTECT;
    if (g == WEFT_STACK_GUARD_MADVISE && !madvise_guard_works())
        g = WEFT_STACK_GUARD_MPROTECT;
    return g;
}

/* ---- chunks ---- */

/* Takes up to `want` stacks from the mprotect budget; returns how many. */
static unsigned budget_take(unsigned want)
{
    long have = atomic_load(&mprotect_budget);
    long take;
    do {
        take = have < (long)want ? have : (long)want;
        if (take <= 0)
            return 0;
    } while (
        !atomic_compare_exchange_weak(&mprotect_budget, &have, have - take));
    return (unsigned)take;
}

static int madvise_retry(void *addr, size_t len, int advice)
{
    int rc;
    do
        rc = madvise(addr, len, advice);
    while (rc < 0 && (errno == EINTR || errno == EAGAIN));
    return rc;
}

/* One process_madvise() on this process, retried when interrupted.
 * Returns the bytes advised, or -1. An error that says the kernel will not
 * do it for us sets *unsupported, so that the caller stops asking. */
static long pmadvise(const struct iovec *iov, unsigned n, int advice,
                     _Atomic int *unsupported)
{
    long r;
    do
        r = syscall(SYS_process_madvise, PIDFD_SELF, iov, n, advice, 0);
    while (r < 0 && (errno == EINTR || errno == EAGAIN));
    if (r < 0 && (errno == EBADF || errno == EINVAL || errno == ENOSYS ||
                  errno == EPERM))
        atomic_store(unsupported, 1);
    return r;
}

/* Installs MADV_GUARD_INSTALL guards for as many slots of `ch` as
 * process_madvise() will do, IOV_BATCH per system call instead of one each;
 * returns how many (0 on kernels without it for oneself). */
static unsigned guard_batch(weft_stack_pool *p, struct chunk *ch, size_t slot)
{
    static _Atomic int unsupported;
    struct iovec iov[IOV_BATCH];
    unsigned done = 0;
    while (done < ch->n &&
           !atomic_load_explicit(&unsupported, memory_order_relaxed)) {
        unsigned m = ch->n - done < IOV_BATCH ? ch->n - done : IOV_BATCH;
        for (unsigned j = 0; j < m; j++)
            iov[j] =
                (struct iovec){ch->base + (done + j) * slot, p->guard_size};
        long r = pmadvise(iov, m, MADV_GUARD_INSTALL, &unsupported);
        if (r < 0)
            break;
        done += (unsigned)((size_t)r / p->guard_size); /* may be partial */
        if ((size_t)r < m * p->guard_size)
            break;
    }
    return done;
}

/* Installs the guards of the first slots of `ch`; returns how many of them
 * are guarded (the rest rely on canaries). */
static unsigned install_guards(weft_stack_pool *p, struct chunk *ch,
                               size_t slot)
{
    unsigned i = 0, n = ch->n;
    switch (p->guard) {
    case WEFT_STACK_GUARD_MADVISE:
        i = guard_batch(p, ch, slot);
        while (i < n && madvise_retry(ch->base + i * slot, p->guard_size,
                                      MADV_GUARD_INSTALL) == 0)
            i++;
        break;
    case WEFT_STACK_GUARD_MPROTECT:
        ch->nprotected = budget_take(n);
        while (i < ch->nprotected &&
               mprotect(ch->base + i * slot, p->guard_size, PROT_NONE) == 0)
            i++;
        break;
    case WEFT_STACK_GUARD_CANARY:
        break;
    }
    return i;
}

/* Maps a chunk of stacks of `size` bytes. Called without the lock. */
static struct chunk *chunk_new(weft_stack_pool *p, size_t size)
{
    size_t slot = p->guard_size + size;
    size_t n = CHUNK_BYTES / slot;
    n = n < 1 ? 1 : n > CHUNK_MAX_STACKS ? CHUNK_MAX_STACKS : n;
    struct chunk *ch = calloc(1, sizeof *ch + n * sizeof(weft_stack));
    if (!ch)
        return NULL;
    ch->len = n * slot;
    ch->n = (unsigned)n;
    ch->base =
        mmap(NULL, ch->len, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (ch->base == MAP_FAILED) {
        free(ch);
        return NULL;
    }
    /* A coroutine touches a page or two of its stack: never let a
     * transparent huge page turn that into 2 MiB. */
    madvise(ch->base, ch->len, MADV_NOHUGEPAGE);
    unsigned guarded = install_guards(p, ch, slot);
    for (unsigned i = 0; i < ch->n; i++) {
        weft_stack *s = &ch->stacks[i];
        s->lo = ch->base + i * slot + p->guard_size;
        s->size = size;
        s->guarded = i < guarded;
        s->guard_size = (uint32_t)p->guard_size;
        s->chunk = ch;
        s->vg_id = VALGRIND_STACK_REGISTER(s->lo, s->lo + size);
    }
    return ch;
}

static void chunk_free(struct chunk *ch)
{
    for (unsigned i = 0; i < ch->n; i++) {
        weft_stack *s = &ch->stacks[i];
        VALGRIND_STACK_DEREGISTER(s->vg_id);
#if WEFT_CORO_ASAN
        /* Not every ASan unpoisons on munmap: a later mapping at the same
         * address must not inherit the redzones of dead frames. */
        if (s->used)
            __asan_unpoison_memory_region(s->lo, s->size);
#endif
    }
    munmap(ch->base, ch->len);
    if (ch->nprotected)
        atomic_fetch_add(&mprotect_budget, (long)ch->nprotected);
    free(ch);
}

/* ---- free lists (under p->lock) ---- */

static struct size_class *class_find(weft_stack_pool *p, size_t size)
{
    struct size_class *k;
    for (k = p->classes; k; k = k->next)
        if (k->size == size)
            return k;
    k = calloc(1, sizeof *k);
    if (k) {
        k->size = size;
        k->next = p->classes;
        p->classes = k;
    }
    return k;
}

/* Pops a free stack, warm (most recently returned) first; `*warm` says
 * which kind it was. */
static weft_stack *class_pop(weft_stack_pool *p, struct size_class *k,
                             int *warm)
{
    weft_stack *s = k->warm;
    if (s) {
        k->warm = s->next;
        if (k->warm)
            k->warm->prev = NULL;
        else
            k->warm_tail = NULL;
        k->nwarm--;
        atomic_fetch_sub_explicit(&p->warm_bytes, s->size,
                                  memory_order_relaxed);
        *warm = 1;
    } else if ((s = k->cold)) {
        k->cold = s->next;
        k->ncold--;
        *warm = 0;
    }
    return s;
}

/* Takes the least recently returned warm stack, or NULL. */
static weft_stack *class_pop_oldest(weft_stack_pool *p, struct size_class *k)
{
    weft_stack *s = k->warm_tail;
    if (!s)
        return NULL;
    k->warm_tail = s->prev;
    if (k->warm_tail)
        k->warm_tail->next = NULL;
    else
        k->warm = NULL;
    k->nwarm--;
    atomic_fetch_sub_explicit(&p->warm_bytes, s->size, memory_order_relaxed);
    return s;
}

static void class_push(weft_stack_pool *p, struct size_class *k, weft_stack *s,
                       int warm)
{
    if (warm) {
        s->prev = NULL;
        s->next = k->warm;
        if (k->warm)
            k->warm->prev = s;
        else
            k->warm_tail = s;
        k->warm = s;
        k->nwarm++;
        atomic_fetch_add_explicit(&p->warm_bytes, s->size,
                                  memory_order_relaxed);
    } else {
        s->next = k->cold;
        k->cold = s;
        k->ncold++;
    }
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Does the trimming budget allow a round now? Tops the credit up by
 * 1/TRIM_SHARE of the time since the last look. Under p->lock. */
static int trim_allowed(weft_stack_pool *p)
{
    int64_t now = mono_ns();
    p->trim_credit_ns += (now - p->trim_clock_ns) / TRIM_SHARE;
    if (p->trim_credit_ns > TRIM_CREDIT_MAX_NS)
        p->trim_credit_ns = TRIM_CREDIT_MAX_NS;
    p->trim_clock_ns = now;
    return p->trim_credit_ns > 0;
}

static int by_address(const void *a, const void *b)
{
    const char *x = (*(weft_stack *const *)a)->lo;
    const char *y = (*(weft_stack *const *)b)->lo;
    return (x > y) - (x < y);
}

/* Empties the address runs `iov[0..n)` with MADV_DONTNEED: one
 * process_madvise() for them all where the kernel has it (Linux 6.16 and
 * later also flush the TLB once per call, not once per range), else one
 * madvise() per run. One call per stack cost 12-60 us each on the
 * reference VM, mostly in TLB flushes. */
static void dontneed_runs(struct iovec *iov, unsigned n)
{
    static _Atomic int unsupported;
    unsigned done = 0;
    while (done < n &&
           !atomic_load_explicit(&unsupported, memory_order_relaxed)) {
        long r = pmadvise(iov + done, n - done, MADV_DONTNEED, &unsupported);
        if (r < 0)
            break;
        /* may be partial: skip the runs it did */
        size_t left = (size_t)r;
        while (done < n && left >= iov[done].iov_len)
            left -= iov[done++].iov_len;
        if (left || r == 0)
            break;
    }
    for (; done < n; done++)
        madvise_retry(iov[done].iov_base, iov[done].iov_len, MADV_DONTNEED);
}

/* Empties `n` (<= TRIM_BATCH) stacks taken off the warm list and files them
 * as cold; charges the time it took to the trimming budget. Runs unlocked:
 * nobody else can reach them meanwhile. */
static void release(weft_stack_pool *p, struct size_class *k, weft_stack **v,
                    unsigned n)
{
    struct iovec iov[TRIM_BATCH];
    unsigned nruns = 0;
    int64_t t0 = mono_ns();
    qsort(v, n, sizeof v[0], by_address);
    for (unsigned i = 0, j; i < n; i = j) {
        char *end = v[i]->lo + v[i]->size;
        for (j = i + 1; j < n && v[j]->chunk == v[i]->chunk &&
                        v[j]->lo == end + v[j]->guard_size;
             j++)
            end = v[j]->lo + v[j]->size;
        iov[nruns++] = (struct iovec){v[i]->lo, (size_t)(end - v[i]->lo)};
    }
    dontneed_runs(iov, nruns);
    int64_t spent = mono_ns() - t0;
    pthread_mutex_lock(&p->lock);
    for (unsigned i = 0; i < n; i++)
        class_push(p, k, v[i], 0);
    p->trim_credit_ns -= spent;
    pthread_mutex_unlock(&p->lock);
}

/* Takes up to TRIM_BATCH of k's least recently returned warm stacks while
 * the pool's warm bytes exceed `keep`. Under p->lock. */
static unsigned take_excess(weft_stack_pool *p, struct size_class *k,
                            size_t keep, weft_stack **v)
{
    unsigned n = 0;
    weft_stack *s;
    while (n < TRIM_BATCH &&
           atomic_load_explicit(&p->warm_bytes, memory_order_relaxed) > keep &&
           (s = class_pop_oldest(p, k)))
        v[n++] = s;
    return n;
}

/* Returns `n` stacks of one size to the shared lists; if that takes the
 * pool's idle stacks past the retention cap, and the budget allows, empties
 * a batch of the least recently returned ones. Emptying is the only costly
 * part of a put, and a burst of returns (a million coroutines ending within
 * a second) would otherwise spend seconds in it, refaulting the pages if
 * they are wanted again soon after: so it is lazy, at most 1/TRIM_SHARE of
 * wall time, and the excess is worked off over the following puts. */
static void put_shared(weft_stack_pool *p, weft_stack **v, unsigned n)
{
    weft_stack *trim[TRIM_BATCH];
    unsigned ntrim = 0;
    if (!n)
        return;
    pthread_mutex_lock(&p->lock);
    /* The class exists: these stacks came from it. */
    struct size_class *k = class_find(p, v[0]->size);
    for (unsigned i = 0; i < n; i++)
        class_push(p, k, v[i], 1);
    if (atomic_load_explicit(&p->warm_bytes, memory_order_relaxed) >
            RETAIN_BYTES + RETAIN_SLACK &&
        trim_allowed(p))
        ntrim = take_excess(p, k, RETAIN_BYTES, trim);
    pthread_mutex_unlock(&p->lock);
    if (ntrim)
        release(p, k, trim, ntrim);
}

size_t weft__stack_pool_trim(weft_stack_pool *p, size_t keep_bytes)
{
    weft_stack *v[TRIM_BATCH];
    size_t total = 0;
    for (;;) {
        unsigned n = 0;
        struct size_class *k = NULL;
        pthread_mutex_lock(&p->lock);
        for (struct size_class *c = p->classes; c && !n; c = c->next) {
            n = take_excess(p, c, keep_bytes, v);
            k = c;
        }
        pthread_mutex_unlock(&p->lock);
        if (!n)
            return total;
        release(p, k, v, n);
        total += n;
    }
}

/* ---- the thread cache ---- */

/* Gives this thread's cached stacks back to their pool if it still lives;
 * a dead pool's stacks were unmapped with it and are just forgotten. */
static void tcache_flush(void)
{
    if (!tc.n)
        return;
    pthread_mutex_lock(&registry_lock);
    for (weft_stack_pool *p = registry; p; p = p->next_live)
        if (p->id == tc.pool_id) {
            put_shared(p, tc.s, tc.n);
            break;
        }
    pthread_mutex_unlock(&registry_lock);
    tc.n = 0;
}

/* Binds this thread's cache to (p, size) if it serves another pool, or is
 * empty and serves another size. */
static void tcache_bind(weft_stack_pool *p, size_t size)
{
    if (tc.pool_id == p->id && (tc.size == size || tc.n))
        return;
    tcache_flush();
    tc.pool_id = p->id;
    tc.size = size;
    tc.cap =
        TCACHE_BYTES / size < TCACHE_MAX ? TCACHE_BYTES / size : TCACHE_MAX;
    if (!tc_key_set && tc_key_ok) {
        pthread_setspecific(tc_key, &tc);
        tc_key_set = 1;
    }
}

static int tcache_serves(const weft_stack_pool *p, size_t size)
{
    return tc.pool_id == p->id && tc.size == size;
}

/* ---- get/put ---- */

static size_t round_size(const weft_stack_pool *p, size_t size)
{
    if (size > MAX_STACK)
        return 0;
    if (size < MIN_STACK)
        size = MIN_STACK;
    return (size + p->page - 1) & ~(p->page - 1);
}

/* The cache could not serve: take from the shared lists (refilling half the
 * cache on the way), or carve a new chunk and do the same from it.
 *
 * Fresh stacks are not prefaulted: populating their top pages in a batch
 * (process_madvise MADV_POPULATE_WRITE) made the first touch no cheaper on
 * the reference VM (its shadow page tables charge ~20 us at the first user
 * access either way) and later writes to those pages 40 times dearer. */
static weft_stack *get_slow(weft_stack_pool *p, size_t size)
{
    int warm = 0;
    tcache_bind(p, size);
    pthread_mutex_lock(&p->lock);
    struct size_class *k = class_find(p, size);
    weft_stack *s = k ? class_pop(p, k, &warm) : NULL;
    if (!s && k) {
        pthread_mutex_unlock(&p->lock);
        struct chunk *ch = chunk_new(p, k->size);
        if (!ch)
            return NULL;
        pthread_mutex_lock(&p->lock);
        ch->next = p->chunks;
        p->chunks = ch;
        p->carved += ch->n;
        for (unsigned i = ch->n; i-- > 1;)
            class_push(p, k, &ch->stacks[i], 0);
        s = &ch->stacks[0];
    }
    if (s && tcache_serves(p, size)) {
        weft_stack *t;
        while (tc.n < tc.cap / 2 && (t = class_pop(p, k, &warm)))
            tc.s[tc.n++] = t;
    }
    pthread_mutex_unlock(&p->lock);
    return s;
}

/* Readies a stack for a new coroutine. */
static weft_stack *hand_out(weft_stack_pool *p, weft_stack *s)
{
#if WEFT_CORO_ASAN
    /* Frames of the coroutine that last ran here never returned: their
     * redzones are still poisoned. Fresh stacks are clean. */
    if (s->used)
        __asan_unpoison_memory_region(s->lo, s->size);
#endif
    if (!s->guarded) {
        /* memcheck sees lo as below the stack pointer of a stack it knows:
         * writing there on purpose is not an error. */
        VALGRIND_DISABLE_ERROR_REPORTING;
        *(volatile uint64_t *)(void *)s->lo = WEFT_STACK_CANARY;
        VALGRIND_ENABLE_ERROR_REPORTING;
    }
#ifdef COUNT_OUTSTANDING
    atomic_fetch_add_explicit(&p->outstanding, 1, memory_order_relaxed);
#else
    (void)p;
#endif
    return s;
}

weft_stack *weft__stack_get(weft_stack_pool *p, size_t size)
{
    size = round_size(p, size);
    if (!size)
        return NULL;
    weft_stack *s;
    if (tcache_serves(p, size) && tc.n)
        s = tc.s[--tc.n];
    else if (!(s = get_slow(p, size)))
        return NULL;
    return hand_out(p, s);
}

void weft__stack_put(weft_stack_pool *p, weft_stack *s)
{
    if (!s)
        return;
#ifdef COUNT_OUTSTANDING
    atomic_fetch_sub_explicit(&p->outstanding, 1, memory_order_relaxed);
#endif
    s->used = 1;
    if (tcache_serves(p, s->size) && tc.n < tc.cap) {
        tc.s[tc.n++] = s;
        return;
    }
    tcache_bind(p, s->size);
    if (!tcache_serves(p, s->size) || !tc.cap) {
        put_shared(p, &s, 1);
        return;
    }
    /* Full: spill the older half, keep the warmest. */
    unsigned half = tc.n / 2;
    put_shared(p, tc.s, half);
    memmove(tc.s, tc.s + half, (tc.n - half) * sizeof tc.s[0]);
    tc.n -= half;
    tc.s[tc.n++] = s;
}

/* ---- the pool ---- */

int weft__stack_pool_new(weft_stack_pool **out)
{
    pthread_once(&globals_once, globals_init);
    weft_stack_pool *p = calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    if (pthread_mutex_init(&p->lock, NULL) != 0) {
        free(p);
        return -ENOMEM;
    }
    p->id = atomic_fetch_add(&next_pool_id, 1);
    p->page = (size_t)sysconf(_SC_PAGESIZE);
    p->guard_size = GUARD_BYTES < p->page ? p->page : GUARD_BYTES;
    p->guard_size = (p->guard_size + p->page - 1) & ~(p->page - 1);
    p->guard = choose_guard();
    p->trim_clock_ns = mono_ns();
    pthread_mutex_lock(&registry_lock);
    p->next_live = registry;
    registry = p;
    pthread_mutex_unlock(&registry_lock);
    *out = p;
    return 0;
}

static void registry_remove(weft_stack_pool *p)
{
    pthread_mutex_lock(&registry_lock);
    for (weft_stack_pool **pp = &registry; *pp; pp = &(*pp)->next_live)
        if (*pp == p) {
            *pp = p->next_live;
            break;
        }
    pthread_mutex_unlock(&registry_lock);
}

void weft__stack_pool_free(weft_stack_pool *p)
{
    if (!p)
        return;
#ifdef COUNT_OUTSTANDING
    long left = atomic_load(&p->outstanding);
    if (left != 0) {
        fprintf(stderr,
                "%s:%d: weft: stack pool freed with %ld stacks "
                "still in use\n",
                __FILE__, __LINE__, left);
        abort();
    }
#endif
    /* After this no flush can reach p: flushes look pools up under the
     * registry lock. */
    registry_remove(p);
    if (tc.pool_id == p->id) {
        tc.n = 0;
        tc.pool_id = 0;
    }
    while (p->chunks) {
        struct chunk *ch = p->chunks;
        p->chunks = ch->next;
        chunk_free(ch);
    }
    while (p->classes) {
        struct size_class *k = p->classes;
        p->classes = k->next;
        free(k);
    }
    pthread_mutex_destroy(&p->lock);
    free(p);
}

weft_stack_guard weft__stack_pool_guard(const weft_stack_pool *p)
{
    return p->guard;
}

void weft__stack_pool_stats(weft_stack_pool *p, weft_stack_stats *st)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&p->lock);
    st->carved = p->carved;
    for (struct size_class *k = p->classes; k; k = k->next)
        st->idle += k->nwarm + k->ncold;
    pthread_mutex_unlock(&p->lock);
    st->warm_bytes = atomic_load(&p->warm_bytes);
#ifdef COUNT_OUTSTANDING
    st->outstanding = atomic_load(&p->outstanding);
#else
    st->outstanding = -1;
#endif
}
