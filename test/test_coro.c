/*
 * Coroutine layer: the raw switch, the stack pool, resume/suspend/exit,
 * migration between threads and stack-overflow detection (src/coro/).
 *
 * Links the coroutine objects (or the static library) directly: it calls
 * internal weft__ functions and provides its own weft__coro_describe().
 */
#define _GNU_SOURCE
#include <execinfo.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <ucontext.h>
#include <unistd.h>
#include <unwind.h>

#include "coro/coro.h"
#include "test.h"

/* Built with a sanitizer that handles SIGSEGV itself (TEST_SANITIZED also
 * covers emulators). */
#if defined(WEFT_CORO_ASAN) || defined(WEFT_CORO_TSAN)
#define SANITIZER_RUNTIME 1
#else
#define SANITIZER_RUNTIME 0
#endif

/* The task layer's version describes a task; coroutines here have none.
 * Called from the fault handler: no stdio. */
void weft__coro_describe(const weft_coro *c, char *buf, size_t len)
{
    (void)c;
    const char *s = "test coroutine";
    size_t i = 0;
    for (; s[i] && i + 1 < len; i++)
        buf[i] = s[i];
    buf[i] = '\0';
}

static size_t page_size(void)
{
    return (size_t)sysconf(_SC_PAGESIZE);
}

static weft_stack_pool *pool_new(void)
{
    weft_stack_pool *p = NULL;
    ASSERT_OK(weft__stack_pool_new(&p));
    ASSERT(p != NULL);
    return p;
}

/* Asserts that every stack of p came back (when the build counts them). */
static void assert_all_returned(weft_stack_pool *p)
{
    weft_stack_stats st;
    weft__stack_pool_stats(p, &st);
    if (st.outstanding >= 0)
        ASSERT_EQ(st.outstanding, 0);
}

/* Whether the page holding `addr` is resident. */
static int resident(const void *addr)
{
    size_t pg = page_size();
    unsigned char v = 0;
    void *at = (void *)((uintptr_t)addr & ~(uintptr_t)(pg - 1));
    ASSERT_EQ(mincore(at, pg, &v), 0);
    return v & 1;
}

/* ------------------------------------------------------------------------ */
/* The raw switch                                                           */
/* ------------------------------------------------------------------------ */

static void *raw_main_sp, *raw_co_sp;
static int raw_aligned = 1;

/* A 16-byte-aligned local is misplaced if the stack is misaligned. */
__attribute__((noinline)) static int stack_aligned(void)
{
    volatile char buf[16] __attribute__((aligned(16)));
    buf[0] = 0;
    return ((uintptr_t)buf & 15) == 0;
}

static void raw_entry(void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    raw_aligned = stack_aligned();
    for (;;)
        v = (uintptr_t)weft__ctx_switch(&raw_co_sp, raw_main_sp,
                                        (void *)(v * 3 + 1));
}

TEST(ctx_switch_values)
{
    size_t size = 64 * 1024;
    char *stack = malloc(size);
    ASSERT(stack != NULL);
    raw_co_sp = weft__ctx_make(stack + size, size, raw_entry);
    for (uintptr_t i = 1; i <= 10000; i++) {
        uintptr_t r =
            (uintptr_t)weft__ctx_switch(&raw_main_sp, raw_co_sp, (void *)i);
        ASSERT_EQ(r, i * 3 + 1);
    }
    ASSERT(raw_aligned);
    /* The coroutine never finishes: its stack is simply freed. */
    free(stack);
}

/* ------------------------------------------------------------------------ */
/* Coroutines on one thread                                                 */
/* ------------------------------------------------------------------------ */

struct pingpong {
    weft_coro co;
    long in, out;
    int aligned;
};

static void pingpong_entry(void *arg)
{
    struct pingpong *t = arg;
    t->aligned = stack_aligned();
    for (long step = 0;; step++) {
        t->out = t->in * 2 + step;
        if (t->in < 0)
            weft__coro_exit(&t->co);
        weft__coro_suspend(&t->co);
    }
}

TEST(ping_pong)
{
    weft_stack_pool *p = pool_new();
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    struct pingpong t = {0};
    weft_stack *s = weft__stack_get(p, 64 * 1024);
    ASSERT(s != NULL);
    weft__coro_init(&t.co, s, pingpong_entry, &t);
    for (long i = 0; i < 100000; i++) {
        t.in = i;
        weft__coro_resume(&h, &t.co);
        ASSERT_EQ(t.out, i * 2 + i);
        ASSERT(h.running == NULL);
        ASSERT_PTR_EQ(t.co.host, &h);
    }
    t.in = -1;
    weft__coro_resume(&h, &t.co); /* exits */
    ASSERT_EQ(t.out, -2 + 100000);
    ASSERT(t.aligned);
    weft__coro_release(&t.co);
    weft__stack_put(p, s);
    weft__coro_host_destroy(&h);
    assert_all_returned(p);
    weft__stack_pool_free(p);
}

static int returned_ran;

static void returning_entry(void *arg)
{
    (void)arg;
    returned_ran = 1;
}

/* An entry that returns exits the coroutine as weft__coro_exit() would. */
TEST(entry_returns)
{
    weft_stack_pool *p = pool_new();
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    weft_coro c;
    weft_stack *s = weft__stack_get(p, 0);
    ASSERT(s != NULL);
    weft__coro_init(&c, s, returning_entry, NULL);
    weft__coro_resume(&h, &c);
    ASSERT(returned_ran);
    weft__coro_release(&c);
    weft__stack_put(p, s);
    weft__coro_host_destroy(&h);
    weft__stack_pool_free(p);
}

/* Idle stacks past the pool's cap are emptied least recently returned
 * first, and an emptied stack is as good as new when it is handed out
 * again: zero-filled pages, its guard intact (the deep write below stays
 * inside the stack), a coroutine runs on it normally. */
struct deep {
    weft_coro co;
    long id, sum;
};

static void deep_entry(void *arg)
{
    struct deep *d = arg;
    volatile unsigned char buf[96 * 1024]; /* well below the top page */
    for (size_t i = 0; i < sizeof buf; i += 512)
        buf[i] = (unsigned char)(d->id + i);
    long sum = 0;
    for (size_t i = 0; i < sizeof buf; i += 512)
        sum += buf[i];
    d->sum = sum;
}

static long deep_expect(long id)
{
    long sum = 0;
    for (size_t i = 0; i < 96 * 1024; i += 512)
        sum += (unsigned char)(id + i);
    return sum;
}

TEST(stack_trim_oldest_first_and_reuse)
{
    enum { N = 400, SIZE = 256 * 1024 }; /* 100 MiB of stacks: past the cap */
    const long runs = TEST_TSAN ? 40 : N;
    weft_stack_pool *p = pool_new();
    weft_stack **v = calloc(N, sizeof *v);
    ASSERT(v != NULL);
    for (long i = 0; i < N; i++) {
        v[i] = weft__stack_get(p, SIZE);
        ASSERT(v[i] != NULL);
        *(volatile long *)(void *)(v[i]->lo + v[i]->size - 64) = i + 1;
    }
    for (long i = 0; i < N; i++)
        weft__stack_put(p, v[i]); /* stack 0 is the least recently returned */
    weft_stack_stats before, after;
    weft__stack_pool_stats(p, &before);
    size_t keep = 16u << 20;
    size_t n = weft__stack_pool_trim(p, keep);
    weft__stack_pool_stats(p, &after);
    ASSERT_LE(after.warm_bytes, keep);
    ASSERT_EQ(after.idle, before.idle); /* emptied, not lost */
    if (before.warm_bytes > keep)
        ASSERT_GT(n, 0);
    /* the oldest was emptied (by the puts' budget or by the trim): its
     * page reads as zero now; the newest (in this thread's cache) was not */
    ASSERT_EQ(*(volatile long *)(void *)(v[0]->lo + v[0]->size - 64), 0);
    ASSERT_EQ(*(volatile long *)(void *)(v[N - 1]->lo + v[N - 1]->size - 64),
              N);
    ASSERT_EQ(weft__stack_pool_trim(p, keep), 0); /* nothing left to do */

    /* Every stack, emptied or not, works again. */
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    struct deep *d = calloc(N, sizeof *d);
    ASSERT(d != NULL);
    for (long i = 0; i < N; i++) {
        v[i] = weft__stack_get(p, SIZE);
        ASSERT(v[i] != NULL);
        ASSERT_EQ(v[i]->size, SIZE);
    }
    for (long i = 0; i < runs; i++) {
        d[i].id = i;
        weft__coro_init(&d[i].co, v[i], deep_entry, &d[i]);
        weft__coro_resume(&h, &d[i].co);
        ASSERT_EQ(d[i].sum, deep_expect(i));
        weft__coro_release(&d[i].co);
    }
    weft_stack_stats again;
    weft__stack_pool_stats(p, &again);
    ASSERT_EQ(again.carved, before.carved); /* reused, none carved */
    for (long i = 0; i < N; i++)
        weft__stack_put(p, v[i]);
    weft__coro_host_destroy(&h);
    assert_all_returned(p);
    weft__stack_pool_free(p);
    free(d);
    free(v);
}

/* ------------------------------------------------------------------------ */
/* Callee-saved registers                                                   */
/* ------------------------------------------------------------------------ */

/* Fills the callee-saved registers with garbage, then switches: the other
 * side must see its own values, restored by the switch, not these. (The
 * compiler saves the clobbered registers in this function's prologue, so
 * its caller gets them back when it returns.) */
#if defined(__x86_64__)
#define CLOBBER_CALLEE_SAVED()                                                 \
    __asm__ volatile("movq $0x1111, %%rbx\n\t"                                 \
                     "movq $0x2222, %%r12\n\t"                                 \
                     "movq $0x3333, %%r13\n\t"                                 \
                     "movq $0x4444, %%r14\n\t"                                 \
                     "movq $0x5555, %%r15\n\t" ::                              \
                         : "rbx", "r12", "r13", "r14", "r15", "memory")
#elif defined(__aarch64__)
#define CLOBBER_CALLEE_SAVED()                                                 \
    __asm__ volatile("mov x19, #19\n\tmov x20, #20\n\tmov x21, #21\n\t"        \
                     "mov x22, #22\n\tmov x23, #23\n\tmov x24, #24\n\t"        \
                     "mov x25, #25\n\tmov x26, #26\n\tmov x27, #27\n\t"        \
                     "mov x28, #28\n\t"                                        \
                     "fmov d8, #8.0\n\tfmov d9, #9.0\n\tfmov d10, #10.0\n\t"   \
                     "fmov d11, #11.0\n\tfmov d12, #12.0\n\t"                  \
                     "fmov d13, #13.0\n\tfmov d14, #14.0\n\t"                  \
                     "fmov d15, #15.0\n\t" ::                                  \
                         : "x19", "x20", "x21", "x22", "x23", "x24", "x25",    \
                           "x26", "x27", "x28", "d8", "d9", "d10", "d11",      \
                           "d12", "d13", "d14", "d15", "memory")
#else
#define CLOBBER_CALLEE_SAVED() __asm__ volatile("" ::: "memory")
#endif

__attribute__((noinline)) static void clobber_suspend(weft_coro *c)
{
    CLOBBER_CALLEE_SAVED();
    weft__coro_suspend(c);
}

__attribute__((noinline)) static void clobber_resume(weft_coro_host *h,
                                                     weft_coro *c)
{
    CLOBBER_CALLEE_SAVED();
    weft__coro_resume(h, c);
}

#define CS_ROUNDS 1000

/* Many integer and floating-point values live across every call: at -O2
 * they sit in callee-saved registers (and spill slots). `salt` keeps the
 * compiler from folding the arithmetic. */
struct regs {
    unsigned long a, b, c, d, e, f, g, k;
    double x, y, z, w, u, v;
};

__attribute__((noinline)) static void regs_run(struct regs *out,
                                               unsigned long salt,
                                               void (*between)(void *),
                                               void *arg)
{
    unsigned long a = salt, b = salt * 3, c = salt ^ 0x55, d = salt + 7;
    unsigned long e = salt * 11, f = salt - 5, g = salt * 13, k = salt | 1;
    double x = (double)salt, y = x * 0.5, z = x + 0.25, w = x * 3.0;
    double u = x - 1.5, v = x * 7.0;
    for (unsigned long i = 0; i < CS_ROUNDS; i++) {
        a += b ^ i;
        b += c * 3;
        c ^= d + i;
        d += e >> 3;
        e -= f * 5;
        f += g ^ a;
        g += k * i;
        k ^= a + b;
        x = x * 1.0000001 + y;
        y = y * 0.9999999 + z;
        z = z + w * 1e-9;
        w = w - u * 1e-9;
        u = u + v * 1e-9;
        v = v * 0.99999 + x * 1e-9;
        if (between)
            between(arg);
    }
    *out = (struct regs){a, b, c, d, e, f, g, k, x, y, z, w, u, v};
}

static void assert_regs_eq(const struct regs *r, const struct regs *s)
{
    ASSERT_EQ(r->a, s->a);
    ASSERT_EQ(r->b, s->b);
    ASSERT_EQ(r->c, s->c);
    ASSERT_EQ(r->d, s->d);
    ASSERT_EQ(r->e, s->e);
    ASSERT_EQ(r->f, s->f);
    ASSERT_EQ(r->g, s->g);
    ASSERT_EQ(r->k, s->k);
    ASSERT(r->x == s->x && r->y == s->y && r->z == s->z);
    ASSERT(r->w == s->w && r->u == s->u && r->v == s->v);
}

struct cs_test {
    weft_coro co;
    weft_coro_host *h;
    struct regs got;
};

static void cs_suspend(void *arg)
{
    clobber_suspend(&((struct cs_test *)arg)->co);
}

static void cs_resume(void *arg)
{
    struct cs_test *t = arg;
    clobber_resume(t->h, &t->co);
}

static void cs_entry(void *arg)
{
    struct cs_test *t = arg;
    regs_run(&t->got, 17, cs_suspend, t);
}

TEST(callee_saved_registers)
{
    weft_stack_pool *p = pool_new();
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    struct cs_test t = {.h = &h};
    weft_stack *s = weft__stack_get(p, 64 * 1024);
    ASSERT(s != NULL);
    weft__coro_init(&t.co, s, cs_entry, &t);
    weft__coro_resume(&h, &t.co); /* runs to the first suspend */

    /* The host computes while the coroutine computes: each round trip
     * switches with both sides' registers full of live values. */
    struct regs host;
    regs_run(&host, 5, cs_resume, &t); /* CS_ROUNDS resumes: it finishes */

    struct regs want_host, want_co;
    regs_run(&want_host, 5, NULL, NULL);
    regs_run(&want_co, 17, NULL, NULL);
    assert_regs_eq(&host, &want_host);
    assert_regs_eq(&t.got, &want_co);
    weft__coro_release(&t.co);
    weft__stack_put(p, s);
    weft__coro_host_destroy(&h);
    weft__stack_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Migration between threads                                                */
/* ------------------------------------------------------------------------ */

struct migrate {
    weft_coro co;
    pthread_t ran_on[2];
    long local_check;
};

static void migrate_entry(void *arg)
{
    struct migrate *t = arg;
    volatile long local = 0x5eed;
    t->ran_on[0] = pthread_self();
    weft__coro_suspend(&t->co);
    t->ran_on[1] = pthread_self();
    t->local_check = local;
    weft__coro_exit(&t->co);
}

static void *migrate_thread(void *arg)
{
    struct migrate *t = arg;
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    weft__coro_resume(&h, &t->co);
    ASSERT(h.running == NULL);
    weft__coro_host_destroy(&h);
    return NULL;
}

TEST(migrate_between_threads)
{
    weft_stack_pool *p = pool_new();
    struct migrate t = {0};
    weft_stack *s = weft__stack_get(p, 64 * 1024);
    ASSERT(s != NULL);
    weft__coro_init(&t.co, s, migrate_entry, &t);
    pthread_t a, b;
    ASSERT_EQ(pthread_create(&a, NULL, migrate_thread, &t), 0); /* to suspend */
    ASSERT_EQ(pthread_join(a, NULL), 0);
    ASSERT_EQ(pthread_create(&b, NULL, migrate_thread, &t), 0); /* to exit */
    ASSERT_EQ(pthread_join(b, NULL), 0);
    ASSERT(pthread_equal(t.ran_on[0], a));
    ASSERT(pthread_equal(t.ran_on[1], b));
    ASSERT_EQ(t.local_check, 0x5eed);
    weft__coro_release(&t.co);
    weft__stack_put(p, s); /* from a third thread */
    assert_all_returned(p);
    weft__stack_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Many coroutines at once                                                  */
/* ------------------------------------------------------------------------ */

/* The number of mappings (VMAs) of this process. */
static long count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int ch;
    if (!f)
        return -1;
    while ((ch = fgetc(f)) != EOF)
        n += ch == '\n';
    fclose(f);
    return n;
}

struct many {
    weft_coro co;
    long id;
    long seen;
};

static void many_entry(void *arg)
{
    struct many *m = arg;
    volatile long mine = m->id * 7 + 3; /* on this coroutine's stack */
    weft__coro_suspend(&m->co);
    m->seen = mine;
}

TEST(many_suspended)
{
    /* 100,000 coroutines suspended at once: more than vm.max_map_count
     * (65530) would allow with a mapping per stack. TSan keeps heavy state
     * per fiber, so its builds run fewer: 10,000 with clang's runtime (~4 s);
     * gcc 12's libtsan caps live threads + fibers at 8128 and spends ~10 ms
     * creating each one, so 1,000 there. */
#if defined(__clang__)
    const long n = TEST_TSAN ? 10000 : 100000;
#else
    const long n = TEST_TSAN ? 1000 : 100000;
#endif
    weft_stack_pool *p = pool_new();
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    struct many *m = calloc((size_t)n, sizeof *m);
    ASSERT(m != NULL);
    for (long i = 0; i < n; i++) {
        weft_stack *s = weft__stack_get(p, 32 * 1024);
        ASSERT(s != NULL);
        m[i].id = i;
        weft__coro_init(&m[i].co, s, many_entry, &m[i]);
        weft__coro_resume(&h, &m[i].co);
    }
    weft_stack_stats st;
    weft__stack_pool_stats(p, &st);
    ASSERT_GE(st.carved, (size_t)n);
    /* Far fewer mappings than stacks, whatever the guard mechanism (the
     * mprotect one stops guarding at its budget). */
    long maps = count_maps();
    printf("%ld coroutines parked, %ld mappings, guard mode %d\n", n, maps,
           (int)weft__stack_pool_guard(p));
    ASSERT_LT(maps, 40000);
    if (st.outstanding >= 0)
        ASSERT_EQ(st.outstanding, n);
    /* Resume in another order than they were started. */
    for (long i = n; i-- > 0;) {
        weft__coro_resume(&h, &m[i].co);
        ASSERT_EQ(m[i].seen, i * 7 + 3);
        weft__coro_release(&m[i].co);
        weft__stack_put(p, m[i].co.stack);
    }
    assert_all_returned(p);
    weft__coro_host_destroy(&h);
    free(m);
    weft__stack_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* The pool                                                                 */
/* ------------------------------------------------------------------------ */

TEST(stack_shape)
{
    weft_stack_pool *p = pool_new();
    size_t pg = page_size();
    size_t sizes[] = {0, 1000, 16 * 1024, 64 * 1024 + 1, 256 * 1024};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        weft_stack *s = weft__stack_get(p, sizes[i]);
        ASSERT(s != NULL);
        ASSERT_GE(s->size, sizes[i]);
        ASSERT_GE(s->size, 16 * 1024);
        ASSERT_EQ(s->size % pg, 0);
        ASSERT_EQ((uintptr_t)(s->lo + s->size) % pg, 0);
        ASSERT_GE(s->guard_size, pg);
        if (weft__stack_pool_guard(p) != WEFT_STACK_GUARD_CANARY)
            ASSERT(s->guarded);
        if (!s->guarded)
            ASSERT_EQ(*(uint64_t *)(void *)s->lo, WEFT_STACK_CANARY);
        weft__stack_put(p, s);
    }
    ASSERT(weft__stack_get(p, (size_t)2 << 30) == NULL);
    weft__stack_pool_free(p);
}

TEST(stack_reuse)
{
    weft_stack_pool *p = pool_new();
    weft_stack *s = weft__stack_get(p, 64 * 1024);
    ASSERT(s != NULL);
    char *lo = s->lo;
    char *top_word = s->lo + s->size - 64;
    memcpy(top_word, "warm", 5);
    weft__stack_put(p, s);
    weft_stack *t = weft__stack_get(p, 64 * 1024);
    ASSERT_PTR_EQ(t, s);
    ASSERT_PTR_EQ(t->lo, lo);
    /* The page it touched was kept, not released and faulted in again. */
    ASSERT(resident(top_word));
    ASSERT_EQ(memcmp(top_word, "warm", 5), 0);
    /* A different size is a different stack. */
    weft_stack *u = weft__stack_get(p, 128 * 1024);
    ASSERT(u != NULL && u != t);
    ASSERT_EQ(u->size, 128 * 1024);
    weft__stack_put(p, u);
    weft__stack_put(p, t);
    ASSERT_PTR_EQ(weft__stack_get(p, 128 * 1024), u);
    weft__stack_put(p, u);
    weft__stack_pool_free(p);
}

static void idle_entry(void *arg)
{
    weft__coro_suspend(arg);
}

/* A coroutine that needs little stack costs one page: the top one. */
TEST(one_page_per_parked_coroutine)
{
    weft_stack_pool *p = pool_new();
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    weft_stack *s = weft__stack_get(p, 256 * 1024);
    ASSERT(s != NULL);
    weft_coro c;
    weft__coro_init(&c, s, idle_entry, &c);
    weft__coro_resume(&h, &c);
    size_t pg = page_size(), pages = 0;
    for (char *a = s->lo; a < s->lo + s->size; a += pg)
        pages += resident(a);
    ASSERT(resident(s->lo + s->size - 1));
    /* The canary lives at lo: one more page for unguarded stacks. The
     * sanitizers' runtimes run deeper frames on the coroutine stack. */
    size_t want = s->guarded ? 1 : 2;
#if defined(WEFT_PORTABLE_SWITCH) ||                                           \
    !((defined(__x86_64__) || defined(__aarch64__)) && defined(__LP64__))
    /* The ucontext switch keeps two ucontext_t on the stack (~1 KiB each on
     * x86-64, ~4.5 KiB on aarch64). */
    ASSERT_LE(pages, want + (2 * sizeof(ucontext_t) + pg - 1) / pg);
    (void)want;
#else
    if (SANITIZER_RUNTIME)
        ASSERT_LE(pages, want + 3);
    else
        ASSERT_EQ(pages, want);
#endif
    weft__coro_resume(&h, &c);
    weft__coro_release(&c);
    weft__stack_put(p, s);
    weft__coro_host_destroy(&h);
    weft__stack_pool_free(p);
}

/* Idle stacks beyond 64 MiB per pool (trimmed once past 72 MiB) have their
 * pages released. */
TEST(retention_cap)
{
    const size_t size = 1 << 20;
    const int n = 80;
    weft_stack_pool *p = pool_new();
    weft_stack *v[80];
    for (int i = 0; i < n; i++) {
        v[i] = weft__stack_get(p, size);
        ASSERT(v[i] != NULL);
        v[i]->lo[size - 1] = 1; /* touch the top page */
    }
    for (int i = 0; i < n; i++)
        weft__stack_put(p, v[i]);
    weft_stack_stats st;
    weft__stack_pool_stats(p, &st);
    ASSERT_GE(st.warm_bytes, (size_t)64 << 20);
    ASSERT_LE(st.warm_bytes, (size_t)72 << 20);
    int released = 0;
    for (int i = 0; i < n; i++)
        released += !resident(v[i]->lo + size - 1);
    /* At least 64 stay warm in the shared lists, the thread's cache keeps a
     * few more, and the first trim emptied at least 9. */
    ASSERT_LE(released, n - 64);
    ASSERT_GE(released, 9);
    /* Emptied stacks come back guarded, or with a fresh canary. */
    for (int i = 0; i < n; i++)
        v[i] = weft__stack_get(p, size);
    for (int i = 0; i < n; i++) {
        if (!v[i]->guarded)
            ASSERT_EQ(*(uint64_t *)(void *)v[i]->lo, WEFT_STACK_CANARY);
        weft__stack_put(p, v[i]);
    }
    weft__stack_pool_free(p);
}

#define POOL_THREADS 4
#define POOL_ROUNDS 20000

struct pool_thread {
    weft_stack_pool *p;
    unsigned seed;
    long tag;
};

static void *pool_thread(void *arg)
{
    struct pool_thread *t = arg;
    weft_stack *held[8];
    int n = 0;
    for (int r = 0; r < POOL_ROUNDS; r++) {
        unsigned x = rand_r(&t->seed);
        if (n < 8 && (x & 1)) {
            size_t size = (x & 6) ? 64 * 1024 : 32 * 1024;
            weft_stack *s = weft__stack_get(t->p, size);
            ASSERT(s != NULL);
            ASSERT_EQ(s->size, size);
            /* Nobody else may hold it while we do. */
            long *top = (long *)(void *)(s->lo + s->size) - 1;
            long *bottom = (long *)(void *)s->lo + 1;
            *top = t->tag;
            *bottom = t->tag;
            held[n++] = s;
        } else if (n) {
            int i = (int)(x >> 8) % n;
            weft_stack *s = held[i];
            ASSERT_EQ(((long *)(void *)(s->lo + s->size))[-1], t->tag);
            ASSERT_EQ(((long *)(void *)s->lo)[1], t->tag);
            held[i] = held[--n];
            weft__stack_put(t->p, s);
        }
    }
    while (n)
        weft__stack_put(t->p, held[--n]);
    return NULL;
}

TEST(pool_threads)
{
    weft_stack_pool *p = pool_new();
    pthread_t th[POOL_THREADS];
    struct pool_thread t[POOL_THREADS];
    for (int i = 0; i < POOL_THREADS; i++) {
        t[i] = (struct pool_thread){p, (unsigned)i * 7919u + 1, 1000 + i};
        ASSERT_EQ(pthread_create(&th[i], NULL, pool_thread, &t[i]), 0);
    }
    for (int i = 0; i < POOL_THREADS; i++)
        ASSERT_EQ(pthread_join(th[i], NULL), 0);
    /* Exiting threads gave their cached stacks back. */
    weft_stack_stats st;
    weft__stack_pool_stats(p, &st);
    ASSERT_EQ(st.idle, st.carved);
    assert_all_returned(p);
    weft__stack_pool_free(p);
}

/* One thread using two pools in turn: each stack goes back to its own. */
TEST(pools_interleaved)
{
    weft_stack_pool *a = pool_new(), *b = pool_new();
    for (int r = 0; r < 100; r++) {
        weft_stack *sa = weft__stack_get(a, 64 * 1024);
        weft_stack *sb = weft__stack_get(b, 64 * 1024);
        ASSERT(sa && sb && sa != sb);
        weft__stack_put(a, sa);
        weft__stack_put(b, sb);
    }
    /* This thread's cache went back to a when b was used, and holds one of
     * b's now. */
    weft_stack_stats st;
    weft__stack_pool_stats(a, &st);
    ASSERT_EQ(st.carved, st.idle);
    weft__stack_pool_stats(b, &st);
    ASSERT_EQ(st.carved, st.idle + 1);
    assert_all_returned(a);
    assert_all_returned(b);
    weft__stack_pool_free(a);
    weft__stack_pool_free(b);
}

struct stale {
    weft_stack_pool *a, *b;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int phase;
};

static void stale_wait(struct stale *t, int phase)
{
    pthread_mutex_lock(&t->mu);
    while (t->phase < phase)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static void stale_set(struct stale *t, int phase)
{
    pthread_mutex_lock(&t->mu);
    t->phase = phase;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void *stale_thread(void *arg)
{
    struct stale *t = arg;
    weft_stack *s = weft__stack_get(t->a, 64 * 1024);
    ASSERT(s != NULL);
    weft__stack_put(t->a, s); /* now cached by this thread */
    stale_set(t, 1);
    stale_wait(t, 2); /* pool a is freed meanwhile */
    /* Binding the cache to b must drop a's stacks, not touch a. */
    weft_stack *u = weft__stack_get(t->b, 64 * 1024);
    ASSERT(u != NULL);
    u->lo[u->size - 1] = 1;
    weft__stack_put(t->b, u);
    return NULL;
}

/* A pool freed while another thread's cache holds its stacks. */
TEST(pool_freed_under_thread_cache)
{
    struct stale t = {.a = pool_new(), .b = pool_new()};
    pthread_mutex_init(&t.mu, NULL);
    pthread_cond_init(&t.cv, NULL);
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, stale_thread, &t), 0);
    stale_wait(&t, 1);
    weft__stack_pool_free(t.a);
    /* A new pool may reuse a's address; the cache must not mistake it. */
    t.a = pool_new();
    stale_set(&t, 2);
    ASSERT_EQ(pthread_join(th, NULL), 0);
    weft_stack_stats st;
    weft__stack_pool_stats(t.a, &st);
    ASSERT_EQ(st.carved, 0);
    weft__stack_pool_free(t.a);
    weft__stack_pool_free(t.b);
    pthread_cond_destroy(&t.cv);
    pthread_mutex_destroy(&t.mu);
}

/* ------------------------------------------------------------------------ */
/* Hosts, signals, unwinding                                                */
/* ------------------------------------------------------------------------ */

static void *altstack_thread(void *arg)
{
    (void)arg;
    stack_t before, during, after;
    ASSERT_EQ(sigaltstack(NULL, &before), 0);
    weft_coro_host h1, h2;
    ASSERT_OK(weft__coro_host_init(&h1));
    ASSERT_OK(weft__coro_host_init(&h2)); /* a second host shares it */
    ASSERT_EQ(sigaltstack(NULL, &during), 0);
    ASSERT(!(during.ss_flags & SS_DISABLE));
    if (!(before.ss_flags & SS_DISABLE))
        ASSERT_PTR_EQ(during.ss_sp, before.ss_sp); /* kept, not replaced */
    weft__coro_host_destroy(&h2);
    ASSERT_EQ(sigaltstack(NULL, &after), 0);
    ASSERT_PTR_EQ(after.ss_sp, during.ss_sp);
    weft__coro_host_destroy(&h1);
    ASSERT_EQ(sigaltstack(NULL, &after), 0);
    /* Back as it was: ours freed, someone else's left alone. */
    ASSERT_EQ(after.ss_flags & SS_DISABLE, before.ss_flags & SS_DISABLE);
    if (!(before.ss_flags & SS_DISABLE))
        ASSERT_PTR_EQ(after.ss_sp, before.ss_sp);
    return NULL;
}

TEST(host_altstack)
{
    pthread_t th;
    ASSERT_EQ(pthread_create(&th, NULL, altstack_thread, NULL), 0);
    ASSERT_EQ(pthread_join(th, NULL), 0);
}

static int bt_frames, bt_unwind_frames, bt_unwind_end;

static _Unwind_Reason_Code count_frame(struct _Unwind_Context *ctx, void *arg)
{
    (void)ctx;
    (*(int *)arg)++;
    return *(int *)arg > 64 ? _URC_NORMAL_STOP : _URC_NO_REASON;
}

__attribute__((noinline)) static void bt_leaf(void)
{
    void *frames[64];
    bt_frames = backtrace(frames, 64);
    bt_unwind_end =
        _Unwind_Backtrace(count_frame, &bt_unwind_frames) == _URC_END_OF_STACK;
}

static void bt_entry(void *arg)
{
    bt_leaf();
    weft__coro_exit(arg);
}

/* Unwinding inside a coroutine ends at its entry (the trampoline's CFI),
 * instead of walking into whatever lies above the stack top. */
TEST(backtrace_ends_at_entry)
{
    weft_stack_pool *p = pool_new();
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    weft_coro c;
    weft_stack *s = weft__stack_get(p, 64 * 1024);
    ASSERT(s != NULL);
    weft__coro_init(&c, s, bt_entry, &c);
    weft__coro_resume(&h, &c);
    /* bt_leaf, bt_entry, coro_main, the trampoline (and backtrace itself). */
    ASSERT_GE(bt_frames, 3);
    ASSERT_LE(bt_frames, 8);
    ASSERT(bt_unwind_end);
    ASSERT_LE(bt_unwind_frames, 8);
    weft__coro_release(&c);
    weft__stack_put(p, s);
    weft__coro_host_destroy(&h);
    weft__stack_pool_free(p);
}

/* ------------------------------------------------------------------------ */
/* Stack overflow                                                           */
/* ------------------------------------------------------------------------ */

/* Runs fn(arg) in a child process whose stderr is captured into out.
 * Returns the child's wait status. */
static int run_child(void (*fn)(void *), void *arg, char *out, size_t len)
{
    int fd[2];
    ASSERT_EQ(pipe(fd), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        dup2(fd[1], 2);
        close(fd[0]);
        close(fd[1]);
        fn(arg);
        _exit(0);
    }
    close(fd[1]);
    size_t n = 0;
    ssize_t r;
    while ((r = read(fd[0], out + n, len - 1 - n)) > 0 && n + 1 < len)
        n += (size_t)r;
    out[n] = '\0';
    close(fd[0]);
    int status;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    return status;
}

static uintptr_t overflow_floor;

/* Recurses until its frames lie 2 KiB below the stack's lowest byte: into
 * the guard region (faults at once when guarded), or into the unguarded
 * gap, overwriting the canary at lo; then unwinds. Not instrumented by
 * ASan: its redzones are never written, and the canary word could sit in
 * one (canary checks are best effort: a frame that skips lo without writing
 * it goes unnoticed). */
#if defined(WEFT_CORO_ASAN)
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

__attribute__((noinline)) NO_ASAN static int recurse(int depth)
{
    volatile char buf[512];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (char)depth;
    if ((uintptr_t)buf < overflow_floor)
        return buf[0];
    return recurse(depth + 1) + buf[depth % (int)sizeof buf];
}

static void overflow_entry(void *arg)
{
    weft_coro *c = arg;
    recurse(0);
    weft__coro_suspend(c); /* the canary is checked here */
    weft__coro_exit(c);
}

struct overflow_case {
    const char *mode; /* $WEFT_STACK_GUARD, or NULL */
    weft_stack_guard want;
};

static void overflow_child(void *arg)
{
    const struct overflow_case *oc = arg;
    if (oc->mode)
        setenv("WEFT_STACK_GUARD", oc->mode, 1);
    else
        unsetenv("WEFT_STACK_GUARD");
    weft_stack_pool *p = pool_new();
    weft_stack_guard got = weft__stack_pool_guard(p);
    if (got != oc->want && (oc->mode || got == WEFT_STACK_GUARD_CANARY))
        _exit(77);
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    weft_stack *s = weft__stack_get(p, 64 * 1024);
    ASSERT(s != NULL);
    ASSERT_EQ(s->guarded, got != WEFT_STACK_GUARD_CANARY);
    overflow_floor = (uintptr_t)s->lo - 2048;
    weft_coro c;
    weft__coro_init(&c, s, overflow_entry, &c);
    weft__coro_resume(&h, &c);
    _exit(3); /* not reached: the overflow must have been caught */
}

static void expect_overflow_report(const char *mode, weft_stack_guard want)
{
    struct overflow_case oc = {mode, want};
    char out[8192];
    int status = run_child(overflow_child, &oc, out, sizeof out);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 77)
        SKIP(mode ? "this guard mode is not available on this machine"
                  : "stacks are only canary-guarded on this machine");
    /* Under ASan, its own SIGSEGV handling may report the overflow first
     * ("stack-overflow", exit status 1) instead of weft's report: either
     * is a caught overflow. */
    if (SANITIZER_RUNTIME && strstr(out, "stack-overflow"))
        return;
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        TEST_FAIL_("child did not abort (status %#x); stderr:\n%s", status,
                   out);
    ASSERT_STR_CONTAINS(out, "weft: test coroutine overflowed its stack "
                             "(65536 bytes)");
}

TEST(overflow_default)
{
    expect_overflow_report(NULL, WEFT_STACK_GUARD_MADVISE);
}

TEST(overflow_madvise)
{
    expect_overflow_report("madvise", WEFT_STACK_GUARD_MADVISE);
}

TEST(overflow_mprotect)
{
    expect_overflow_report("mprotect", WEFT_STACK_GUARD_MPROTECT);
}

TEST(overflow_canary)
{
    expect_overflow_report("canary", WEFT_STACK_GUARD_CANARY);
}

static void foreign_fault_child(void *arg)
{
    (void)arg;
    weft_coro_host h;
    ASSERT_OK(weft__coro_host_init(&h));
    /* Not NULL: UBSan would report the store before it faults. */
    volatile int *bad =
        mmap(NULL, page_size(), PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ASSERT(bad != MAP_FAILED);
    *bad = 1;
}

/* A fault outside any guard region is not weft's: the previous handler (or
 * the default action) gets it. */
TEST(foreign_fault_chains)
{
    char out[8192];
    int status = run_child(foreign_fault_child, NULL, out, sizeof out);
    ASSERT(!strstr(out, "overflowed"));
    if (SANITIZER_RUNTIME) /* the sanitizer's SEGV report */
        ASSERT_STR_CONTAINS(out, "SEGV");
    else
        ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV);
}

TEST_MAIN()
