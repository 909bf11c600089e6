/*
 * Coroutines over the raw switch: resume/suspend/exit, the annotations that
 * let ASan and TSan follow a switch, and stack-overflow reports.
 *
 * Without sanitizers a resume or a suspend is a few stores plus
 * weft__ctx_switch(): no call into anything else, no system call. With
 * them, every switch is bracketed as the sanitizers' fiber APIs require:
 *
 *   ASan: __sanitizer_start_switch_fiber(&save, bottom, size) before, with
 *         the stack being switched to; __sanitizer_finish_switch_fiber(save,
 *         &old_bottom, &old_size) right after arriving (including at a
 *         coroutine's first instruction, which is how a coroutine learns its
 *         host's stack). Leaving a coroutine for good passes NULL as save so
 *         that ASan frees its fake stack.
 *   TSan: each coroutine is a TSan fiber; __tsan_switch_to_fiber() before
 *         every switch (flags 0: the switch synchronises, as it does).
 *
 * Overflow: a process-wide SIGSEGV/SIGBUS handler, on a per-thread
 * alternate stack, recognises a fault in the guard region of the coroutine
 * running on the faulting thread and reports it; any other fault goes back
 * to whoever handled it before. Unguarded stacks have their canary checked
 * at every suspend and exit instead.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coro/coro.h"
#include "coro/vg.h"

#if WEFT_CORO_ASAN
#include <sanitizer/common_interface_defs.h>
#define NO_ASAN __attribute__((no_sanitize_address))
#else
#define NO_ASAN
#endif

#if WEFT_CORO_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
#endif

#define ALTSTACK_BYTES (64u << 10)

/* The host of this thread, for the fault handler. initial-exec: reading it
 * from a signal handler must not allocate (a dynamic TLS access may). */
static __thread weft_coro_host *cur_host
    __attribute__((tls_model("initial-exec")));

/* ---- sanitizer hooks: nothing at all in ordinary builds ----
 *
 * Always inlined, at every optimisation level: TSan instruments each
 * function with a shadow-stack push at entry and a pop at exit, and an
 * out-of-line hook that switches fibers would push onto one fiber's shadow
 * stack and pop from the other's. (clang 14 did not inline the hook in the
 * cold, _Noreturn weft__coro_exit(): every exit then underflowed the host's
 * shadow stack by one frame until TSan crashed.) For the same reason, no
 * function here may tail-call weft__ctx_switch() after a fiber switch. */
#define HOOK static inline __attribute__((always_inline))

/* About to leave the running stack for [bottom, bottom + size). `save`
 * keeps the fake stack of the context being left, or is NULL when that
 * context is left for good. */
HOOK void asan_leave(void **save, const void *bottom, size_t size)
{
#if WEFT_CORO_ASAN
    __sanitizer_start_switch_fiber(save, bottom, size);
#else
    (void)save, (void)bottom, (void)size;
#endif
}

/* Just arrived on a stack whose fake stack was saved as `fake`; stores the
 * bounds of the stack just left, when asked. */
HOOK void asan_arrive(void *fake, const void **bottom_old, size_t *size_old)
{
#if WEFT_CORO_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom_old, size_old);
#else
    (void)fake, (void)bottom_old, (void)size_old;
#endif
}

HOOK void tsan_switch(void *fiber)
{
#if WEFT_CORO_TSAN
    __tsan_switch_to_fiber(fiber, 0);
#else
    (void)fiber;
#endif
}

/* ---- overflow reports ---- */

/* Appends s to buf[at..len) (async-signal-safe: no stdio). */
static size_t put_str(char *buf, size_t at, size_t len, const char *s)
{
    while (*s && at < len)
        buf[at++] = *s++;
    return at;
}

static size_t put_u64(char *buf, size_t at, size_t len, uint64_t v)
{
    char tmp[21];
    size_t i = sizeof tmp;
    tmp[--i] = '\0';
    do
        tmp[--i] = (char)('0' + v % 10);
    while ((v /= 10));
    return put_str(buf, at, len, tmp + i);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

_Noreturn void weft__coro_overflow(const weft_coro *c)
{
    char desc[256], msg[512];
    size_t n = 0;

    desc[0] = '\0';
    weft__coro_describe(c, desc, sizeof desc);
    desc[sizeof desc - 1] = '\0';
    n = put_str(msg, n, sizeof msg, "weft: ");
    n = put_str(msg, n, sizeof msg, desc);
    n = put_str(msg, n, sizeof msg, " overflowed its stack (");
    n = put_u64(msg, n, sizeof msg, c->stack ? c->stack->size : 0);
    n = put_str(msg, n, sizeof msg, " bytes)\n");
    write_all(2, msg, n);
    abort();
}

_Noreturn static void fatal(const char *what)
{
    write_all(2, what, strlen(what));
    abort();
}

/* Reads the canary without ASan's checks (frames of a deep call may have
 * left redzones around lo) or valgrind's (lo lies far below the stack
 * pointer, which memcheck reports). */
static NO_ASAN uint64_t read_canary(const weft_stack *s)
{
    VALGRIND_DISABLE_ERROR_REPORTING;
    uint64_t v = *(const volatile uint64_t *)(const void *)s->lo;
    VALGRIND_ENABLE_ERROR_REPORTING;
    return v;
}

static inline void check_canary(const weft_coro *c)
{
    const weft_stack *s = c->stack;
    if (__builtin_expect(!s->guarded, 0) && read_canary(s) != WEFT_STACK_CANARY)
        weft__coro_overflow(c);
}

/* ---- the fault handler ---- */

static struct sigaction old_segv, old_bus;
static pthread_once_t handler_once = PTHREAD_ONCE_INIT;
static int handler_err;

static int in_guard(const weft_stack *s, const void *addr)
{
    const char *a = addr;
    return a < s->lo && a >= s->lo - s->guard_size;
}

static void on_fault(int sig, siginfo_t *si, void *uctx)
{
    (void)uctx;
    int saved_errno = errno;
    weft_coro_host *h = cur_host;
    weft_coro *c = h ? h->running : NULL;
    if (c && c->stack && si->si_code > 0 && in_guard(c->stack, si->si_addr))
        weft__coro_overflow(c);
    /* Not ours. Put back the previous disposition (a sanitizer's handler,
     * or the default action) and return: the faulting instruction runs
     * again and faults into it. A signal sent by a process (si_code <= 0)
     * would not come back by itself: send it again; it stays blocked until
     * this handler returns. */
    sigaction(sig, sig == SIGBUS ? &old_bus : &old_segv, NULL);
    if (si->si_code <= 0)
        raise(sig);
    errno = saved_errno;
}

static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, &old_segv) < 0 ||
        sigaction(SIGBUS, &sa, &old_bus) < 0)
        handler_err = -errno;
}

/* ---- hosts ---- */

/* The alternate signal stack this thread allocated (NULL if it had one
 * already), and how many hosts of the thread use it. */
static __thread unsigned alt_refs;
static __thread char *alt_mem;
static __thread size_t alt_len;

/* Gives the thread an alternate signal stack, so that the fault handler can
 * run when a coroutine has used up its own. A guard page below it. */
static int altstack_acquire(void)
{
    if (alt_refs++)
        return 0;
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return 0; /* the thread has one (ASan installs its own) */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t len = ALTSTACK_BYTES;
#ifdef _SC_SIGSTKSZ
    long want = sysconf(_SC_SIGSTKSZ) * 4;
    if (want > (long)len)
        len = (size_t)want;
#endif
    len = (len + page - 1) & ~(page - 1);
    char *m = mmap(NULL, page + len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) {
        alt_refs--;
        return -ENOMEM;
    }
    mprotect(m, page, PROT_NONE);
    stack_t ss = {.ss_sp = m + page, .ss_size = len, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) < 0) {
        int err = errno;
        munmap(m, page + len);
        alt_refs--;
        return -err;
    }
    alt_mem = m;
    alt_len = page + len;
    return 0;
}

static void altstack_release(void)
{
    if (!alt_refs || --alt_refs || !alt_mem)
        return;
    stack_t cur;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (sigaltstack(NULL, &cur) == 0 && cur.ss_sp == alt_mem + page) {
        stack_t off = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
        sigaltstack(&off, NULL);
    }
    munmap(alt_mem, alt_len);
    alt_mem = NULL;
}

int weft__coro_host_init(weft_coro_host *h)
{
    memset(h, 0, sizeof *h);
    pthread_once(&handler_once, install_handler);
    if (handler_err)
        return handler_err;
    int rc = altstack_acquire();
    if (rc < 0)
        return rc;
#if WEFT_CORO_TSAN
    h->tsan_fiber = __tsan_get_current_fiber();
#endif
    h->prev = cur_host;
    cur_host = h;
    return 0;
}

void weft__coro_host_destroy(weft_coro_host *h)
{
    if (cur_host == h)
        cur_host = h->prev;
    altstack_release();
}

/* ---- coroutines ---- */

/* Where every coroutine starts (called by the assembly trampoline with the
 * arg of the first switch to it: the coroutine itself). */
static void coro_main(void *arg)
{
    weft_coro *c = arg;
    weft_coro_host *h = c->host;
    asan_arrive(NULL, &h->asan_bottom, &h->asan_size);
    c->entry(c->arg);
    weft__coro_exit(c);
}

void weft__coro_init(weft_coro *c, weft_stack *stack, void (*entry)(void *),
                     void *arg)
{
    c->stack = stack;
    c->host = NULL;
    c->asan_fake = NULL;
    c->entry = entry;
    c->arg = arg;
    c->sp = weft__ctx_make(stack->lo + stack->size, stack->size, coro_main);
#if WEFT_CORO_TSAN
    c->tsan_fiber = __tsan_create_fiber(0);
#else
    c->tsan_fiber = NULL;
#endif
}

void weft__coro_resume(weft_coro_host *h, weft_coro *c)
{
    c->host = h;
    h->running = c;
    asan_leave(&h->asan_fake, c->stack->lo, c->stack->size);
    tsan_switch(c->tsan_fiber);
    /* Nothing but the sanitizers' bookkeeping after the switch: without
     * them this is a tail call, so no return is mispredicted (h->running is
     * cleared by the coroutine as it switches back). */
    weft__ctx_switch(&h->sp, c->sp, c);
    asan_arrive(h->asan_fake, NULL, NULL);
}

void weft__coro_suspend(weft_coro *c)
{
    check_canary(c);
    weft_coro_host *h = c->host;
    h->running = NULL;
    asan_leave(&c->asan_fake, h->asan_bottom, h->asan_size);
    tsan_switch(h->tsan_fiber);
    weft__ctx_switch(&c->sp, h->sp, NULL);
    h = c->host; /* whoever resumed us, maybe on another thread */
    asan_arrive(c->asan_fake, &h->asan_bottom, &h->asan_size);
}

_Noreturn void weft__coro_exit(weft_coro *c)
{
    check_canary(c);
    weft_coro_host *h = c->host;
    h->running = NULL;
    asan_leave(NULL, h->asan_bottom, h->asan_size);
    tsan_switch(h->tsan_fiber);
    weft__ctx_switch(&c->sp, h->sp, NULL);
    fatal("weft: a coroutine was resumed after it exited\n");
    __builtin_unreachable();
}

void weft__coro_release(weft_coro *c)
{
#if WEFT_CORO_TSAN
    if (c->tsan_fiber)
        __tsan_destroy_fiber(c->tsan_fiber);
#endif
    c->tsan_fiber = NULL;
}
