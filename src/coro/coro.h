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
 * ran it last; each resume records the host it switches back to.
 */
#ifndef WEFT_CORO_H
#define WEFT_CORO_H

#include <stddef.h>
#include <stdint.h>

/* ---- raw switch: switch-x86_64.S, switch-aarch64.S, switch-portable.c ---- */

/* Prepares a fresh context on the stack whose highest address is `stack_hi`
 * (16-byte aligned). Returns the context's saved stack pointer; the first
 * weft__ctx_switch() to it calls entry(arg) where arg is the switch's `arg`.
 * entry never returns. */
void *weft__ctx_make(void *stack_hi, size_t size, void (*entry)(void *arg));

/* Saves the callee-saved registers of the running context, stores its stack
 * pointer in *save_sp, switches to `to_sp` and passes `arg` to it (as the
 * return value of the weft__ctx_switch() that suspended it, or as entry's
 * argument). Returns the `arg` of the switch that comes back here.
 * The floating-point environment (MXCSR, x87 control word, FPCR) is per
 * thread, not per coroutine, and is not switched. */
void *weft__ctx_switch(void **save_sp, void *to_sp, void *arg);

/* ---- stacks ---- */

typedef struct weft_stack {
    char *lo;     /* lowest usable byte; the guard region lies just below */
    size_t size;  /* usable bytes; lo + size is the (aligned) top */
    uint32_t guarded; /* 1 if a guard region protects lo from below */
    uint32_t pad_;
    struct weft_stack *next; /* free-list link, owned by the pool */
    void *chunk;             /* the region this stack was carved from */
} weft_stack;

typedef struct weft_stack_pool weft_stack_pool;

/* Creates a pool. Thread-safe afterwards: get/put may be called from any
 * thread (a per-thread cache keeps the common path lock-free).
 * Returns 0 or -ENOMEM. */
int weft__stack_pool_new(weft_stack_pool **out);

/* Unmaps every stack. All stacks must have been returned. */
void weft__stack_pool_free(weft_stack_pool *p);

/* Returns a stack with at least `size` usable bytes (rounded up to pages),
 * reusing a returned one of the same size when possible. NULL if memory is
 * exhausted. Stacks are carved many to a mapping and guarded with
 * MADV_GUARD_INSTALL where the kernel has it, so that 100,000+ stacks fit
 * under vm.max_map_count; else with mprotect'ed guard pages while a mapping
 * budget lasts, else with a canary word checked at each switch. */
weft_stack *weft__stack_get(weft_stack_pool *p, size_t size);

/* Returns `s` to the pool for reuse. Memory is kept (touched pages stay
 * resident) up to a cap, beyond which pages are released with MADV_DONTNEED. */
void weft__stack_put(weft_stack_pool *p, weft_stack *s);

/* ---- coroutines ---- */

typedef struct weft_coro_host weft_coro_host;

typedef struct weft_coro {
    void *sp;             /* saved stack pointer while switched out */
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
    void *tsan_fiber;            /* the thread's own TSan fiber */
    const void *asan_bottom;     /* the thread's stack, as ASan reports it */
    size_t asan_size;
    void *asan_fake;
    weft_coro *running;          /* the coroutine running on this host, or NULL */
};

/* Initialises `h` for the calling thread, and installs (once per thread) an
 * alternate signal stack and (once per process) the SIGSEGV handler that
 * reports stack overflows. Returns 0 or -ENOMEM. */
int weft__coro_host_init(weft_coro_host *h);
void weft__coro_host_destroy(weft_coro_host *h);

/* Prepares `c` to run entry(arg) on `stack` at its first resume. */
void weft__coro_init(weft_coro *c, weft_stack *stack, void (*entry)(void *),
                     void *arg);

/* Runs `c` on the calling thread until it suspends or exits. */
void weft__coro_resume(weft_coro_host *h, weft_coro *c);

/* From inside `c`: switches back to the host that resumed it. Returns when
 * some host resumes `c` again (maybe on another thread). */
void weft__coro_suspend(weft_coro *c);

/* From inside `c`: switches back to its host for the last time. The host's
 * weft__coro_resume() returns; `c` must not be resumed again, and its stack
 * may then be returned to the pool with weft__coro_release(). */
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
 * aborts. Used by the SIGSEGV handler and by the canary check. */
_Noreturn void weft__coro_overflow(const weft_coro *c);

#endif
