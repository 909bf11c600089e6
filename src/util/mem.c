/*
 * Small-object memory for tasks and futures.
 *
 * Why not malloc: on the machines we measure on, the first touch of a fresh
 * 4 KiB page costs ~10 us (a trap into a paravirtualised kernel), as much
 * as spawning a hundred tasks. Populating many pages with one
 * madvise(MADV_POPULATE_WRITE) costs ~2 us a page, so task memory comes from
 * 2 MiB chunks populated 64 KiB at a time as a bump pointer advances, and
 * freed objects are reused, never handed back to the kernel.
 *
 * Shape: size classes of 8 bytes up to 512; per thread, a free list per
 * class; between threads, a depot of batches per class under a mutex (a
 * task freed on another worker than the one that allocated it goes into
 * that worker's list, and surplus batches go to the depot). A thread's
 * lists go to the depot when it exits. Bigger objects use malloc.
 *
 * Alignment: a size that is a multiple of 16 gets a 16-aligned block, any
 * other size an 8-aligned one. That is all a C object can ask for (its size
 * is a multiple of its alignment), and it lets a 24-byte oneshot or a
 * 120-byte future task take 24 or 120 bytes instead of 32 or 128. Each
 * thread carves the two kinds from two separate chunks ("arenas"), so that
 * alternating sizes never leave 8-byte holes.
 *
 * Under ASan, TSan and valgrind every object comes from malloc, so that
 * those tools see each allocation.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define HAVE_VALGRIND 1
#endif
#endif

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#define GRAIN 8
#define MAX_SMALL 512
#define CLASSES (MAX_SMALL / GRAIN)
#define BATCH 64
#define CHUNK (2u << 20)
#define POPULATE_STEP (64u << 10)

/* ---- failure injection ---- */

static _Atomic long fail_countdown; /* 0 = disarmed */
static _Atomic int fail_env_read;

void weft__fail_alloc_after(long n)
{
    atomic_store(&fail_countdown, n);
}

static bool injected_failure(void)
{
    if (weft_unlikely(
            !atomic_load_explicit(&fail_env_read, memory_order_relaxed))) {
        const char *v = getenv("WEFT_FAIL_ALLOC");
        if (!atomic_exchange(&fail_env_read, 1) && v)
            weft__fail_alloc_after(atol(v));
    }
    long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (weft_likely(n == 0))
        return false;
    n = atomic_fetch_sub(&fail_countdown, 1);
    if (n == 1)
        return true; /* this is the nth: fail it, and disarm */
    if (n <= 0)
        atomic_store(&fail_countdown, 0);
    return false;
}

/* ---- the depot: batches shared by all threads ---- */

struct free_obj {
    struct free_obj *next;       /* within a batch */
    struct free_obj *next_batch; /* first object of a batch only */
};

static pthread_mutex_t depot_lock = PTHREAD_MUTEX_INITIALIZER;
/* Read without the lock to skip it when a class's depot is empty (the
 * common case in a program that only spawns): relaxed atomics. */
static _Atomic(struct free_obj *) depot[CLASSES];

/* ---- per thread ---- */

struct arena {
    char *bump, *bump_end, *populated; /* the current chunk */
    unsigned chunks;                   /* chunks this arena has taken */
};

struct thread_cache {
    struct free_obj *list[CLASSES];
    uint32_t count[CLASSES];
    struct arena arena[2]; /* [1]: 16-byte multiples, 16-aligned */
    bool registered;
};

static __thread struct thread_cache tc;
static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static _Atomic int use_malloc = -1; /* decided once: sanitizers, valgrind */

static bool plain_malloc(void)
{
    int m = atomic_load_explicit(&use_malloc, memory_order_relaxed);
    if (weft_likely(m >= 0))
        return m;
    int v = SANITIZED;
#ifdef HAVE_VALGRIND
    v = v || RUNNING_ON_VALGRIND;
#endif
    /* WEFT_MALLOC=1 forces malloc; WEFT_MALLOC=0 keeps the chunks even
     * under valgrind, so that callgrind counts the instructions the
     * runtime really runs (not under ASan/TSan, which need malloc). */
    const char *env = getenv("WEFT_MALLOC");
    if (env)
        v = strcmp(env, "0") == 0 ? SANITIZED : 1;
    atomic_store_explicit(&use_malloc, v, memory_order_relaxed);
    return v;
}

static void depot_push(int cls, struct free_obj *batch)
{
    pthread_mutex_lock(&depot_lock);
    batch->next_batch = atomic_load_explicit(&depot[cls], memory_order_relaxed);
    atomic_store_explicit(&depot[cls], batch, memory_order_relaxed);
    pthread_mutex_unlock(&depot_lock);
}

static struct free_obj *depot_pop(int cls)
{
    if (!atomic_load_explicit(&depot[cls], memory_order_relaxed))
        return NULL; /* a batch pushed meanwhile waits for the next miss */
    pthread_mutex_lock(&depot_lock);
    struct free_obj *b =
        atomic_load_explicit(&depot[cls], memory_order_relaxed);
    if (b)
        atomic_store_explicit(&depot[cls], b->next_batch, memory_order_relaxed);
    pthread_mutex_unlock(&depot_lock);
    return b;
}

/* Thread exit: hand every list to the depot, as batches. */
static void flush_thread(void *unused)
{
    (void)unused;
    for (int c = 0; c < CLASSES; c++) {
        while (tc.list[c]) {
            struct free_obj *head = tc.list[c], *o = head;
            for (int i = 1; i < BATCH && o->next; i++)
                o = o->next;
            tc.list[c] = o->next;
            o->next = NULL;
            depot_push(c, head);
        }
        tc.count[c] = 0;
    }
}

static void make_exit_key(void)
{
    pthread_key_create(&exit_key, flush_thread);
}

static void register_thread(void)
{
    pthread_once(&exit_once, make_exit_key);
    pthread_setspecific(exit_key, &tc);
    tc.registered = true;
}

/* Maps a chunk. An arena that needs more than SMALL_CHUNKS is being
 * filled in bulk (many tasks): its chunks from then on are aligned to 2 MiB
 * and marked MADV_HUGEPAGE, so that where transparent huge pages are
 * enabled for madvise one fault brings in the whole chunk (4-8 us per 4 KiB
 * worth instead of ~12 here). The first chunks stay in small pages,
 * faulted in 64 KiB at a time: a program with up to some tens of thousands
 * of tasks keeps its RSS to what it uses, where a huge page would add up to
 * 2 MiB per arena (W6 at 100k parked tasks: 20 bytes a task). */
static char *new_chunk(bool huge)
{
    size_t len = huge ? 2 * (size_t)CHUNK : CHUNK;
    char *c = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (c == MAP_FAILED)
        return NULL;
    if (huge) {
        uintptr_t a = ((uintptr_t)c + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
        char *al = (char *)a;
        if (al > c)
            munmap(c, (size_t)(al - c));
        if (al + CHUNK < c + len)
            munmap(al + CHUNK, (size_t)(c + len - (al + CHUNK)));
        c = al;
#ifdef MADV_HUGEPAGE
        madvise(c, CHUNK, MADV_HUGEPAGE);
#endif
    }
    return c;
}

/* ---- chunks faulted in ahead by idle workers ---- */

/* An arena filled in bulk (spawning many tasks): from then on each chunk
 * it takes asks for one more to be made ready (`ready_demand`, at most
 * READY_MAX). An idle worker that finds demand (weft__mem_prefault) maps a
 * chunk and faults all of it in, and the next chunk the spawner needs costs
 * it no page fault at all. At most READY_MAX chunks sit ready unused when
 * spawning stops, and an idle worker unmaps them once they are stale
 * (weft__mem_trim_ready). */
#define READY_MAX 2
/* Chunks of each arena in small pages before the huge ones (new_chunk). */
#define SMALL_CHUNKS 2

struct ready_chunk {
    struct ready_chunk *next;
};

static pthread_mutex_t ready_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ready_chunk *ready_list;
static _Atomic int ready_count;  /* chunks in ready_list */
static _Atomic int ready_demand; /* chunks asked for, not yet made */
static int64_t ready_touched_ns; /* last chunk made or taken (lock) */

/* Ready chunks that nobody made or took for this long are unmapped
 * (weft__mem_trim_ready): spawning has stopped, and 2-4 MiB of faulted-in
 * memory should not stay in the RSS of an idle program. */
#define READY_STALE_NS 10000000

static void *ready_take(void)
{
    if (!atomic_load_explicit(&ready_count, memory_order_relaxed))
        return NULL;
    pthread_mutex_lock(&ready_lock);
    struct ready_chunk *r = ready_list;
    if (r) {
        ready_list = r->next;
        atomic_fetch_sub_explicit(&ready_count, 1, memory_order_relaxed);
        ready_touched_ns = weft__mono_ns();
    }
    pthread_mutex_unlock(&ready_lock);
    return r;
}

static void ready_ask(void)
{
    int d = atomic_load_explicit(&ready_demand, memory_order_relaxed);
    while (d + atomic_load_explicit(&ready_count, memory_order_relaxed) <
               READY_MAX &&
           !atomic_compare_exchange_weak_explicit(&ready_demand, &d, d + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

bool weft__mem_prefault_wanted(void)
{
    return atomic_load_explicit(&ready_demand, memory_order_relaxed) > 0;
}

bool weft__mem_prefault(void)
{
    int d = atomic_load_explicit(&ready_demand, memory_order_relaxed);
    do {
        if (d <= 0)
            return false;
    } while (!atomic_compare_exchange_weak_explicit(
        &ready_demand, &d, d - 1, memory_order_relaxed, memory_order_relaxed));
    char *c = new_chunk(true);
    if (!c)
        return false;
    /* Faults the whole chunk in (one huge page where THP allows). */
    if (madvise(c, CHUNK, MADV_POPULATE_WRITE) != 0)
        for (size_t off = 0; off < CHUNK; off += 4096)
            c[off] = 0;
    struct ready_chunk *r = (struct ready_chunk *)c;
    pthread_mutex_lock(&ready_lock);
    r->next = ready_list;
    ready_list = r;
    atomic_fetch_add_explicit(&ready_count, 1, memory_order_relaxed);
    ready_touched_ns = weft__mono_ns();
    pthread_mutex_unlock(&ready_lock);
    return true;
}

bool weft__mem_ready_held(void)
{
    return atomic_load_explicit(&ready_count, memory_order_relaxed) > 0;
}

bool weft__mem_trim_ready(void)
{
    if (!weft__mem_ready_held())
        return false;
    pthread_mutex_lock(&ready_lock);
    struct ready_chunk *r = NULL;
    if (weft__mono_ns() - ready_touched_ns >= READY_STALE_NS) {
        r = ready_list;
        ready_list = NULL;
        atomic_store_explicit(&ready_count, 0, memory_order_relaxed);
    }
    bool held = ready_list != NULL;
    pthread_mutex_unlock(&ready_lock);
    while (r) {
        struct ready_chunk *next = r->next;
        munmap(r, CHUNK);
        r = next;
    }
    return held;
}

/* Carves `size` bytes off the thread's chunk for that size's alignment
 * (chunks are page-aligned), populating ahead. */
static void *bump(size_t size)
{
    struct arena *a = &tc.arena[(size & 15) == 0];
    if (weft_unlikely(a->bump + size > a->bump_end)) {
        char *c = NULL;
        bool bulk = a->chunks++ >= SMALL_CHUNKS;
        if (bulk) {
            ready_ask(); /* for the chunk after this one */
            c = ready_take();
        }
        if (c) {
            a->bump = c;
            a->populated = c + CHUNK; /* faulted in already */
        } else {
            if (!(c = new_chunk(bulk)))
                return NULL;
            a->bump = a->populated = c;
        }
        a->bump_end = c + CHUNK;
    }
    char *p = a->bump;
    a->bump += size;
    if (a->bump > a->populated) {
        /* One system call faults in the next 64 KiB; if the kernel lacks
         * MADV_POPULATE_WRITE, the pages fault in one by one instead. */
        madvise(a->populated, POPULATE_STEP, MADV_POPULATE_WRITE);
        a->populated += POPULATE_STEP;
    }
    return p;
}

static void *small_alloc(int cls)
{
    struct free_obj *o = tc.list[cls];
    if (weft_likely(o != NULL)) {
        tc.list[cls] = o->next;
        tc.count[cls]--;
        return o;
    }
    if (weft_unlikely(!tc.registered))
        register_thread();
    struct free_obj *b = depot_pop(cls);
    if (b) {
        tc.list[cls] = b->next;
        tc.count[cls] = BATCH - 1;
        return b;
    }
    return bump((size_t)(cls + 1) * GRAIN);
}

static void small_free(void *p, int cls)
{
    struct free_obj *o = p;
    o->next = tc.list[cls];
    tc.list[cls] = o;
    if (weft_unlikely(++tc.count[cls] >= 2 * BATCH)) {
        /* Keep one batch here, give the surplus to other threads. */
        if (!tc.registered)
            register_thread();
        struct free_obj *head = tc.list[cls], *q = head;
        for (int i = 1; i < BATCH; i++)
            q = q->next;
        tc.list[cls] = q->next;
        q->next = NULL;
        tc.count[cls] -= BATCH;
        depot_push(cls, head);
    }
}

static int class_of(size_t size)
{
    return (int)((size + GRAIN - 1) / GRAIN) - 1;
}

/* A free object holds two links (struct free_obj): nothing is smaller. */
#define MIN_SMALL sizeof(struct free_obj)

void *weft__alloc(size_t size)
{
    if (injected_failure())
        return NULL;
    if (size < MIN_SMALL)
        size = MIN_SMALL;
    if (size > MAX_SMALL || plain_malloc())
        return malloc(size);
    return small_alloc(class_of(size));
}

void *weft__zalloc(size_t size)
{
    void *p = weft__alloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void weft__free(void *p, size_t size)
{
    if (!p)
        return;
    if (size < MIN_SMALL)
        size = MIN_SMALL;
    if (size > MAX_SMALL || plain_malloc()) {
        free(p);
        return;
    }
    small_free(p, class_of(size));
}
