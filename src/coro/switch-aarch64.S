/*
 * Context switch for AArch64 (AAPCS64). See coro.h.
 *
 * A switched-out context is its stack pointer; the 160-byte frame there
 * holds, from sp up:
 *
 *     sp+0    d8  d9      sp+64   x19 x20     sp+128  x27 x28
 *     sp+16   d10 d11     sp+80   x21 x22     sp+144  x29 x30 (lr)
 *     sp+32   d12 d13     sp+96   x23 x24
 *     sp+48   d14 d15     sp+112  x25 x26
 *
 * Only the callee-saved registers are saved (the low 64 bits of v8-v15 are
 * all the ABI preserves). FPCR/FPSR are left alone on purpose: the
 * floating-point environment belongs to the thread (coro.h).
 *
 * Pointer authentication needs nothing here: lr is saved exactly as the
 * caller's bl left it, and ret goes back to a bl site. BTI: the only
 * indirect branch is blr to entry, a C function with its own landing pad.
 */
#if defined(__aarch64__) && defined(__LP64__) && !defined(WEFT_PORTABLE_SWITCH)

#if defined(__ARM_FEATURE_BTI_DEFAULT) && __ARM_FEATURE_BTI_DEFAULT
#define BRANCH_TARGET bti c
#else
#define BRANCH_TARGET
#endif

    .text

/* void *weft__ctx_switch(void **save_sp, void *to_sp, void *arg)
 *                        x0               x1           x2           */
    .globl  weft__ctx_switch
    .hidden weft__ctx_switch
    .type   weft__ctx_switch, %function
    .p2align 4
weft__ctx_switch:
    .cfi_startproc
    BRANCH_TARGET
    sub     sp, sp, #160
    .cfi_def_cfa_offset 160
    stp     d8, d9, [sp, #0]
    stp     d10, d11, [sp, #16]
    stp     d12, d13, [sp, #32]
    stp     d14, d15, [sp, #48]
    stp     x19, x20, [sp, #64]
    stp     x21, x22, [sp, #80]
    stp     x23, x24, [sp, #96]
    stp     x25, x26, [sp, #112]
    stp     x27, x28, [sp, #128]
    stp     x29, x30, [sp, #144]
    .cfi_offset x19, -96
    .cfi_offset x20, -88
    .cfi_offset x21, -80
    .cfi_offset x22, -72
    .cfi_offset x23, -64
    .cfi_offset x24, -56
    .cfi_offset x25, -48
    .cfi_offset x26, -40
    .cfi_offset x27, -32
    .cfi_offset x28, -24
    .cfi_offset x29, -16
    .cfi_offset x30, -8

    mov     x9, sp
    str     x9, [x0]
    /* The other context's frame has the same layout, so the CFI stays true
     * across the switch. */
    mov     sp, x1

    ldp     d8, d9, [sp, #0]
    ldp     d10, d11, [sp, #16]
    ldp     d12, d13, [sp, #32]
    ldp     d14, d15, [sp, #48]
    ldp     x19, x20, [sp, #64]
    ldp     x21, x22, [sp, #80]
    ldp     x23, x24, [sp, #96]
    ldp     x25, x26, [sp, #112]
    ldp     x27, x28, [sp, #128]
    ldp     x29, x30, [sp, #144]
    add     sp, sp, #160
    .cfi_def_cfa_offset 0
    .cfi_restore x19
    .cfi_restore x20
    .cfi_restore x21
    .cfi_restore x22
    .cfi_restore x23
    .cfi_restore x24
    .cfi_restore x25
    .cfi_restore x26
    .cfi_restore x27
    .cfi_restore x28
    .cfi_restore x29
    .cfi_restore x30
    mov     x0, x2
    ret
    .cfi_endproc
    .size   weft__ctx_switch, .-weft__ctx_switch

/* void *weft__ctx_make(void *stack_hi, size_t size, void (*entry)(void *))
 *                      x0              x1           x2
 *
 * Builds a frame that weft__ctx_switch() "returns" into: x19 = entry,
 * x29 = 0, lr = trampoline, and every other saved register zero. After the
 * switch pops it, sp = stack_hi (16-byte aligned, as AAPCS64 requires). */
    .globl  weft__ctx_make
    .hidden weft__ctx_make
    .type   weft__ctx_make, %function
    .p2align 4
weft__ctx_make:
    .cfi_startproc
    BRANCH_TARGET
    and     x0, x0, #~15
    sub     x0, x0, #160
    stp     xzr, xzr, [x0, #0]
    stp     xzr, xzr, [x0, #16]
    stp     xzr, xzr, [x0, #32]
    stp     xzr, xzr, [x0, #48]
    stp     x2, xzr, [x0, #64]      /* x19 = entry */
    stp     xzr, xzr, [x0, #80]
    stp     xzr, xzr, [x0, #96]
    stp     xzr, xzr, [x0, #112]
    stp     xzr, xzr, [x0, #128]
    adr     x9, trampoline
    stp     xzr, x9, [x0, #144]     /* x29 = 0 ends frame chains; lr */
    ret
    .cfi_endproc
    .size   weft__ctx_make, .-weft__ctx_make

/* First code a fresh context runs, entered by weft__ctx_switch()'s ret with
 * x0 = the switch's arg. The return address is undefined in its CFI, so
 * debuggers and unwinders see it as the coroutine's outermost frame. */
    .type   trampoline, %function
    .p2align 4
trampoline:
    .cfi_startproc
    .cfi_undefined x30
    blr     x19
    brk     #0x3e8                  /* entry returned: it must not */
    .cfi_endproc
    .size   trampoline, .-trampoline

#if defined(__ELF__) && defined(__ARM_FEATURE_BTI_DEFAULT) &&                 \
    __ARM_FEATURE_BTI_DEFAULT
/* GNU property note: BTI-compatible (PAC needs no marking of its own, but
 * the bit is set when the compiler signs return addresses, as gcc does). */
    .section .note.gnu.property, "a"
    .p2align 3
    .long   4
    .long   16
    .long   5                       /* NT_GNU_PROPERTY_TYPE_0 */
    .asciz  "GNU"
    .long   0xc0000000              /* GNU_PROPERTY_AARCH64_FEATURE_1_AND */
    .long   4
#if defined(__ARM_FEATURE_PAC_DEFAULT) && __ARM_FEATURE_PAC_DEFAULT
    .long   3                       /* BTI | PAC */
#else
    .long   1                       /* BTI */
#endif
    .long   0
#endif

#endif /* __aarch64__ && !WEFT_PORTABLE_SWITCH */

/* Outside the #if: even an empty object must say that it does not need an
 * executable stack. '@' starts a comment on ARM, hence the two spellings. */
#if defined(__ELF__)
#if defined(__arm__) || defined(__aarch64__)
    .section .note.GNU-stack, "", %progbits
#else
    .section .note.GNU-stack, "", @progbits
#endif
#endif
