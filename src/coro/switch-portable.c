/*
 * Context switch through ucontext (getcontext/makecontext/swapcontext), for
 * targets without an assembly switch and for builds with
 * -DWEFT_PORTABLE_SWITCH. Same contract as the assembly (coro.h), but slow:
 * glibc's swapcontext() saves and restores the signal mask with a system
 * call on every switch (~1 us on the reference machine).
 *
 * A switched-out context is a `struct pctx` in the frame of its pending
 * weft__ctx_switch() call (or, for a fresh context, at the top of its
 * stack); the "stack pointer" the API trades in points to it.
 */
#if !((defined(__x86_64__) || defined(__aarch64__)) && defined(__LP64__)) ||   \
    defined(WEFT_PORTABLE_SWITCH)

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>

#include "coro/coro.h"

struct pctx {
    ucontext_t uc;
    void *arg;                /* handed over by the switch that resumes it */
    void (*entry)(void *arg); /* fresh contexts only */
};

/* makecontext() passes int arguments only: the context's address arrives
 * split in two halves. */
static void trampoline(unsigned hi, unsigned lo)
{
    struct pctx *f = (struct pctx *)(uintptr_t)(((uint64_t)hi << 32) | lo);
    f->entry(f->arg);
    abort(); /* entry must not return */
}

void *weft__ctx_make(void *stack_hi, size_t size, void (*entry)(void *arg))
{
    char *lo = (char *)stack_hi - size;
    uintptr_t at = ((uintptr_t)stack_hi - sizeof(struct pctx)) & ~(uintptr_t)63;
    struct pctx *f = (struct pctx *)at;

    memset(f, 0, sizeof *f);
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = lo;
    f->uc.uc_stack.ss_size = (size_t)((char *)f - lo);
    f->uc.uc_link = NULL;
    f->entry = entry;
    uint64_t v = (uintptr_t)f;
    makecontext(&f->uc, (void (*)(void))trampoline, 2, (unsigned)(v >> 32),
                (unsigned)v);
    return f;
}

void *weft__ctx_switch(void **save_sp, void *to_sp, void *arg)
{
    struct pctx self;
    struct pctx *to = to_sp;

    /* swapcontext() leaves uc_stack alone, but ASan's interceptor reads the
     * target's to clear its shadow: make it describe nothing. */
    self.uc.uc_stack.ss_sp = NULL;
    self.uc.uc_stack.ss_size = 0;
    self.uc.uc_stack.ss_flags = 0;
    *save_sp = &self;
    to->arg = arg;
    swapcontext(&self.uc, &to->uc);
    return self.arg;
}

#else
/* ISO C wants at least one declaration per translation unit. */
typedef int weft_switch_portable_unused_;
#endif
