/*
 * Context switch for x86-64 (System V ABI). See coro.h.
 *
 * A switched-out context is its stack pointer; the stack holds, from that
 * pointer up:
 *
 *     sp+0   r15      sp+24  r12      sp+48  return address
 *     sp+8   r14      sp+32  rbx
 *     sp+16  r13      sp+40  rbp
 *
 * Only the callee-saved registers are saved: the caller of
 * weft__ctx_switch() already assumes every other register is clobbered, as
 * for any call. MXCSR and the x87 control word are left alone on purpose:
 * the floating-point environment belongs to the thread (coro.h).
 *
 * No shadow-stack (CET SHSTK) marking: a switch returns to a different
 * address than it was called from, which a shadow stack forbids.
 */
#if defined(__x86_64__) && defined(__LP64__) && !defined(WEFT_PORTABLE_SWITCH)

#if defined(__CET__) && (__CET__ & 1)
#define BRANCH_TARGET endbr64
#else
#define BRANCH_TARGET
#endif

    .text

/* void *weft__ctx_switch(void **save_sp, void *to_sp, void *arg)
 *                        rdi              rsi          rdx          */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, @function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    BRANCH_TARGET
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0

    movq    %rsp, (%rdi)
    /* The other context's stack has the same layout, so the CFI above and
     * below stays true across the switch: an unwinder stopped here walks
     * the context being switched to. */
    movq    %rsi, %rsp

    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    movq    %rdx, %rax
    /* pop + jmp rather than ret: a switch never returns to where the
     * return-stack predictor expects, and that misprediction tripled the
     * cost of a switch (3.3 vs 9-16 ns on the reference machine); the
     * indirect-branch predictor learns the ping-pong of targets. Under
     * IBT (-fcf-protection) an indirect jmp must land on endbr64, which
     * return sites lack: there, ret it is. */
#if defined(__CET__) && (__CET__ & 1)
    ret
#else
    popq    %rcx
    .cfi_adjust_cfa_offset -8
    .cfi_register %rip, %rcx
    jmpq    *%rcx
#endif
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* void *weft__ctx_make(void *stack_hi, size_t size, void (*entry)(void *))
 *                      rdi             rsi          rdx
 *
 * Builds a frame that weft__ctx_switch() "returns" into: r12 = entry,
 * rbp = 0, return address = trampoline, then 16 bytes of zeros so that the
 * trampoline runs with rsp 16-byte aligned (and entry is called with
 * rsp + 8 aligned, as the ABI wants at a function's first instruction). */
    .globl  weft__ctx_make
    .hidden weft__ctx_make
    .type   weft__ctx_make, @function
    .p2align 4
weft__ctx_make:
    .cfi_startproc
    BRANCH_TARGET
    movq    %rdi, %rax
    andq    $-16, %rax
    subq    $72, %rax
    xorl    %ecx, %ecx
    movq    %rcx, 0(%rax)           /* r15 */
    movq    %rcx, 8(%rax)           /* r14 */
    movq    %rcx, 16(%rax)          /* r13 */
    movq    %rdx, 24(%rax)          /* r12 = entry */
    movq    %rcx, 32(%rax)          /* rbx */
    movq    %rcx, 40(%rax)          /* rbp = 0: ends frame-pointer chains */
    leaq    trampoline(%rip), %rcx
    movq    %rcx, 48(%rax)
    movq    $0, 56(%rax)
    movq    $0, 64(%rax)
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

/* First code a fresh context runs, entered by weft__ctx_switch()'s ret with
 * rax = the switch's arg. The return address is undefined in its CFI, so
 * debuggers and unwinders (gdb, backtrace(), _Unwind_Backtrace) see it as
 * the outermost frame of the coroutine instead of walking into garbage. */
    .type   trampoline, @function
    .p2align 4
trampoline:
    .cfi_startproc
    .cfi_undefined %rip
    movq    %rax, %rdi
    callq   *%r12
    ud2                             /* entry returned: it must not */
    .cfi_endproc
    .size   trampoline, .-trampoline

#if defined(__CET__) && (__CET__ & 1) && defined(__ELF__)
/* GNU property note: this object is IBT-compatible (every indirect-branch
 * target starts with endbr64), not SHSTK-compatible. */
    .section .note.gnu.property, "a"
    .p2align 3
    .long   4                       /* name size */
    .long   16                      /* descriptor size */
    .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz  "GNU"
    .long   0xc0000002              /* GNU_PROPERTY_X86_FEATURE_1_AND */
    .long   4
    .long   1                       /* IBT */
    .p2align 3
#endif

#endif /* __x86_64__ && !WEFT_PORTABLE_SWITCH */

/* Outside the #if: even an empty object must say that it does not need an
 * executable stack, or the linker makes the whole program's stack
 * executable. '@' starts a comment on ARM, hence the two spellings. */
#if defined(__ELF__)
#if defined(__arm__) || defined(__aarch64__)
    .section .note.GNU-stack, "", %progbits
#else
    .section .note.GNU-stack, "", @progbits
#endif
#endif
