/*
 * Coroutines: context switch, pooled stacks, overflow detection and the
 * sanitizer/valgrind annotations that let those tools follow a switch.
 *
 * This layer knows nothing about tasks. The task layer embeds a weft_coro in
 * each coroutine task and a weft_coro_host in each thread that runs them.
 *
 *   host (worker loop)                 coroutine
 *   weft__coro_resume(h, c)  ------->  entry(arg) ... first time
 *                            <-------  weft__coro_suspend(c)
 *   weft__coro_resume(h, c)  ------->  ... returns from suspend
 *                            <-------  weft__coro_exit(c)   (never returns)
 *
 * A coroutine may be resumed by a different host (thread) than the one that
 * ran it last; each resume records the host it switches back to. Code inside
 * a coroutine must therefore not keep the address of a thread-local variable
 * across weft__coro_suspend() (compilers may cache it: read it again through
 * a non-inlined function after the switch).
 *
 * Files: switch-x86_64.S / switch-aarch64.S (the raw switch), switch-
 * portable.c (ucontext, other targets or -DWEFT_PORTABLE_SWITCH), stack.c
 * (the pool), coro.c (resume/suspend, annotations, overflow reports).
 */
#ifndef WEFT_CORO_H
#define WEFT_CORO_H

#include <stddef.h>
#include <stdint.h>

/* Which sanitizer this translation unit is built with (gcc: __SANITIZE_*__,
 * clang: __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_CORO_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_CORO_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT_CORO_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WEFT_CORO_TSAN 1
#endif
#endif

/* ---- raw switch: switch-x86_64.S, switch-aarch64.S, switch-portable.c ---- */

/* Prepares a fresh context on the stack whose highest address is `stack_hi`
 * (16-byte aligned) and which is `size` bytes long. Writes only to the top
 * of the stack (under 1 KiB, so only the top page is touched). Returns the
 * context's saved stack pointer; the first weft__ctx_switch() to it calls
 * entry(arg) where arg is the switch's `arg`, on an ABI-aligned stack whose
 * unwind information ends there (backtraces stop cleanly at entry). entry
 * never returns; if it does, the process traps (SIGILL/SIGTRAP). */
void *weft__ctx_make(void *stack_hi, size_t size, void (*entry)(void *arg));

/* Saves the callee-saved registers of the running context, stores its stack
 * pointer in *save_sp, switches to `to_sp` and passes `arg` to it (as the
 * return value of the weft__ctx_switch() that suspended it, or as entry's
 * argument). Returns the `arg` of the switch that comes back here.
 * Only what the ABI makes callee-saved is switched: x86-64 rbx, rbp,
 * r12-r15, rsp; aarch64 x19-x29, lr, sp, d8-d15. The floating-point
 * environment (MXCSR, x87 control word, FPCR) is per thread, not per
 * coroutine, and is not switched: a coroutine that changes the rounding mode
 * must restore it before it suspends. The assembly versions make no system
 * call and cost a few ns; the ucontext one (switch-portable.c) makes one
 * sigprocmask system call per switch (~1 us) and keeps two ucontext_t on
 * each coroutine's stack (~1 KiB each on x86-64, ~4.5 KiB on aarch64). */
void *weft__ctx_switch(void **save_sp, void *to_sp, void *arg);

/* ---- stacks ---- */

/* How stacks are protected against overflow (see weft__stack_get()). */
typedef enum weft_stack_guard {
    WEFT_STACK_GUARD_CANARY = 0,   /* canary word at lo, checked at switches */
    WEFT_STACK_GUARD_MPROTECT = 1, /* PROT_NONE pages below lo: 2 VMAs/stack */
    WEFT_STACK_GUARD_MADVISE = 2   /* MADV_GUARD_INSTALL (Linux >= 6.13) */
} weft_stack_guard;

/* The value of the canary word at lo of an unguarded stack. */
#define WEFT_STACK_CANARY 0x7765667453544b21ull /* "weftSTK!" */

/* 48 bytes: one per pooled stack, so a hundred thousand parked coroutines
 * pay for a hundred thousand of these besides their stack pages. */
typedef struct weft_stack {
    char *lo;                /* lowest usable byte; the guard region lies
                                just below */
    struct weft_stack *next; /* free-list links, owned by the pool */
    struct weft_stack *prev;
    void *chunk;         /* the region this stack was carved from */
    uint32_t size;       /* usable bytes (at most 1 GiB); lo + size is
                            the (aligned) top */
    uint32_t guard_size; /* bytes of the region just below lo that is
                            guarded (or, unguarded, left as a gap) */
    unsigned vg_id;      /* valgrind stack id */
    uint8_t guarded;     /* 1 if a guard region protects lo from below,
                            0 if only the canary word at lo does */
    uint8_t used;        /* handed out before (ASan must unpoison it) */
} weft_stack;

typedef struct weft_stack_pool weft_stack_pool;

/* Creates a pool. Thread-safe afterwards: get/put may be called from any
 * thread (a per-thread cache keeps the common path lock-free). Several pools
 * may exist at once (one per runtime).
 *
 * The guard mechanism is chosen here: the best the kernel has, probed once
 * per process (MADV_GUARD_INSTALL is verified to really fault, since
 * qemu-user accepts and ignores it), or the one named by the environment
 * variable WEFT_STACK_GUARD = madvise | mprotect | canary (for tests; a mode
 * the machine lacks falls back to the next one down).
 * Returns 0 or -ENOMEM. */
int weft__stack_pool_new(weft_stack_pool **out);

/* Unmaps every stack. All stacks must have been returned (stacks still held
 * by other threads' caches count as returned; those caches are dropped
 * lazily and never hand them out again). Must not race with get/put on the
 * same pool. NULL is ignored. */
void weft__stack_pool_free(weft_stack_pool *p);

/* Returns the guard mechanism the pool uses for new stacks. Under mprotect,
 * once a process-wide budget of mapping slots is spent (16384 stacks, fewer
 * if vm.max_map_count is low), new stacks get canaries: check s->guarded. */
weft_stack_guard weft__stack_pool_guard(const weft_stack_pool *p);

/* Returns a stack with at least `size` usable bytes (rounded up to pages,
 * at least 16 KiB), reusing a returned one of the same size when possible.
 * NULL if memory is exhausted or size is absurd (> 1 GiB). Stacks are carved
 * many to a mapping and guarded with MADV_GUARD_INSTALL where the kernel has
 * it, so that 100,000+ stacks fit under vm.max_map_count; else with
 * mprotect'ed guard pages while a mapping budget lasts, else with a canary
 * word checked at each switch. The top of the stack is page-aligned and its
 * top page is the first one touched: a coroutine using less than a page of
 * stack costs one resident page (two for canary-guarded stacks). */
weft_stack *weft__stack_get(weft_stack_pool *p, size_t size);

/* Returns `s` to the pool for reuse, from any thread. Memory is kept
 * (touched pages stay resident, since a fresh page fault is expensive) up to
 * 64 MiB of idle stacks per pool; past 72 MiB, puts release the least
 * recently returned stacks with MADV_DONTNEED, batched, but only within a
 * CPU budget of 1% of wall time, so a burst of returns (a million sleepers
 * waking) costs at most that, and the excess goes back gradually. Threads
 * cache a few stacks each on top of that (at most 32 stacks or 8 MiB per
 * thread; a thread's cache goes back to its pool when the thread exits). */
void weft__stack_put(weft_stack_pool *p, weft_stack *s);

/* Counters, for tests and diagnostics. */
typedef struct weft_stack_stats {
    size_t carved;     /* stacks created (all chunks) */
    size_t idle;       /* stacks in the pool's shared free lists */
    size_t warm_bytes; /* bytes of idle stacks whose pages may be resident */
    long outstanding;  /* stacks handed out and not returned, or -1 when
                          not counted (builds with NDEBUG) */
} weft_stack_stats;
void weft__stack_pool_stats(weft_stack_pool *p, weft_stack_stats *st);

/* Releases idle stacks of `p` now, least recently returned first, ignoring
 * the CPU budget, until at most `keep_bytes` of idle stacks may be resident;
 * returns how many stacks it emptied. */
size_t weft__stack_pool_trim(weft_stack_pool *p, size_t keep_bytes);

/* ---- coroutines ---- */

typedef struct weft_coro_host weft_coro_host;

typedef struct weft_coro {
    void *sp; /* saved stack pointer while switched out */
    weft_stack *stack;
    weft_coro_host *host; /* the host that resumed it last */
    void *asan_fake;      /* ASan fake-stack handle while switched out */
    void *tsan_fiber;     /* TSan fiber for this coroutine */
    void (*entry)(void *arg);
    void *arg;
} weft_coro;

/* The per-thread context that coroutines return to (one per worker thread
 * and per thread inside weft_block_on). Caller-owned storage. */
struct weft_coro_host {
    void *sp;
    void *tsan_fiber;        /* the thread's own TSan fiber */
    const void *asan_bottom; /* the thread's stack, as ASan reports it */
    size_t asan_size;
    void *asan_fake;
    weft_coro *running;   /* the coroutine running on this host, or NULL */
    weft_coro_host *prev; /* the thread's current host before this one */
};

/* Initialises `h` for the calling thread, and installs (once per thread) an
 * alternate signal stack if the thread has none, and (once per process) the
 * SIGSEGV/SIGBUS handler that reports stack overflows. The handler only
 * claims faults in the guard region of the coroutine running on the
 * faulting thread; any other fault goes to the handler that was installed
 * before it (sanitizers', or the default action). A thread may hold several
 * hosts (nested or in turn); the last one initialised is the thread's
 * current host until it is destroyed.
 * Returns 0 or -ENOMEM. */
int weft__coro_host_init(weft_coro_host *h);

/* Undoes weft__coro_host_init() on the thread that called it: frees the
 * alternate signal stack if this thread's last host allocated it. */
void weft__coro_host_destroy(weft_coro_host *h);

/* Prepares `c` to run entry(arg) on `stack` at its first resume. Writes the
 * initial frame at the top of the stack. */
void weft__coro_init(weft_coro *c, weft_stack *stack, void (*entry)(void *),
                     void *arg);

/* Runs `c` on the calling thread until it suspends or exits. */
void weft__coro_resume(weft_coro_host *h, weft_coro *c);

/* From inside `c`: switches back to the host that resumed it. Returns when
 * some host resumes `c` again (maybe on another thread). Checks the stack
 * canary first when the stack is unguarded (weft__coro_overflow() if it was
 * overwritten). */
void weft__coro_suspend(weft_coro *c);

/* Inline forms of resume and suspend for the scheduler's hot path.
 *
 * A switch costs little; what costs is the return-address mispredictions
 * around it. A switch leaves the CPU's return stack holding the other
 * context's calls, so every `ret` after it, up to the frame that loops,
 * mispredicts (~15 cycles each). Out of line, a yield returned through
 * coro_poll, the worker's poll and the loop step on the host side and
 * through suspend on the coroutine side: five mispredictions, about 25 ns
 * of a 50 ns yield. Inlined into the scheduler loop and into weft_yield,
 * only the return from weft_yield to its caller remains.
 *
 * Without sanitizers these are the same stores plus the raw switch; with
 * ASan or TSan they call the annotated out-of-line functions (the hooks
 * must not be split across inlined frames, see coro.c). Suspend takes the
 * out-of-line path for canary-guarded stacks, which it must check. */
#if !defined(WEFT_CORO_ASAN) && !defined(WEFT_CORO_TSAN)

#if defined(__x86_64__) && defined(__LP64__) && defined(__OPTIMIZE__) &&       \
    !defined(WEFT_PORTABLE_SWITCH) && !(defined(__CET__) && (__CET__ & 1))
/* weft__ctx_switch() written out in place, for the host side of a resume.
 * Same context layout (switch-x86_64.S), so either side may use either
 * form. It differs in one instruction: it enters the other context with
 * `ret` instead of pop+jmp. A coroutine suspends by calling the out-of-line
 * switch, which pushes its return address on the CPU's return-stack
 * predictor and leaves by jmp; this `ret` pops that very entry, so it is
 * predicted, and the coroutine's next `ret` (out of weft_yield, say) finds
 * its own caller below it: no misprediction on either side of a yield.
 * 128 bytes are skipped first: the pushes must not land in the red zone,
 * where the compiler may keep locals of this frame. */
static inline __attribute__((always_inline)) void *
weft__ctx_switch_host(void **save_sp, void *to_sp, void *arg)
{
    void *ret;
    __asm__ volatile(
        "leaq -128(%%rsp), %%rsp\n\t"
        "leaq 1f(%%rip), %%rcx\n\t"
        "pushq %%rcx\n\t"
        "pushq %%rbp\n\t"
        "pushq %%rbx\n\t"
        "pushq %%r12\n\t"
        "pushq %%r13\n\t"
        "pushq %%r14\n\t"
        "pushq %%r15\n\t"
        "movq %%rsp, (%%rdi)\n\t"
        "movq %%rsi, %%rsp\n\t"
        "movq %%rdx, %%rax\n\t"
        "popq %%r15\n\t"
        "popq %%r14\n\t"
        "popq %%r13\n\t"
        "popq %%r12\n\t"
        "popq %%rbx\n\t"
        "popq %%rbp\n\t"
        "ret\n"
        "1:\n\t"
        "leaq 128(%%rsp), %%rsp"
        : "=a"(ret), "+D"(save_sp), "+S"(to_sp), "+d"(arg)
        :
        : "rcx", "r8", "r9", "r10", "r11", "memory", "cc", "xmm0", "xmm1",
          "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
          "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "st", "st(1)",
          "st(2)", "st(3)", "st(4)", "st(5)", "st(6)", "st(7)"
#ifdef __AVX512F__
          ,
          "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22",
          "xmm23", "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29",
          "xmm30", "xmm31", "k1", "k2", "k3", "k4", "k5", "k6", "k7"
#endif
    );
    return ret;
}
#else
#define weft__ctx_switch_host weft__ctx_switch
#endif

static inline __attribute__((always_inline)) void
weft__coro_resume_inline(weft_coro_host *h, weft_coro *c)
{
    c->host = h;
    h->running = c;
    weft__ctx_switch_host(&h->sp, c->sp, c);
}

static inline __attribute__((always_inline)) void
weft__coro_suspend_inline(weft_coro *c)
{
    if (__builtin_expect(!c->stack->guarded, 0)) {
        weft__coro_suspend(c);
        return;
    }
    weft_coro_host *h = c->host;
    h->running = NULL;
    weft__ctx_switch(&c->sp, h->sp, NULL);
}
#else
#define weft__coro_resume_inline weft__coro_resume
#define weft__coro_suspend_inline weft__coro_suspend
#endif

/* From inside `c`: switches back to its host for the last time. The host's
 * weft__coro_resume() returns; `c` must not be resumed again, and its stack
 * may then be returned to the pool with weft__coro_release(). If entry
 * returns, the coroutine exits as if it had called this. */
_Noreturn void weft__coro_exit(weft_coro *c);

/* Releases what weft__coro_init() took (TSan fiber) after the coroutine
 * exited, or if it never ran. Does not touch the stack. */
void weft__coro_release(weft_coro *c);

/* Implemented by the task layer: writes a one-line description of the task
 * that owns `c` ("task 7 (reader, spawned at main.c:42)") into buf, for the
 * stack-overflow report. Called from a signal handler: it must only format
 * fields, not allocate or lock. */
void weft__coro_describe(const weft_coro *c, char *buf, size_t len);

/* Reports "weft: <description> overflowed its stack (N bytes)" on stderr and
 * aborts. Used by the SIGSEGV handler and by the canary check.
 * Async-signal-safe. */
_Noreturn void weft__coro_overflow(const weft_coro *c);

#endif
