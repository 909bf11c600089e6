/*
 * The hierarchical timing wheel: a pure data structure, no locks, no
 * clock. One wheel per worker (timer.c adds the lock and the wakers).
 *
 * Time is counted in ticks of 1 ms. Level 0 is a ring of 4096 slots of
 * 1 ms: a timer due less than 4096 ms after `elapsed` goes straight to the
 * slot `when % 4096`, so each ring slot holds one deadline and a timer of
 * under 4.1 s never moves before it fires, whatever `elapsed` is. Each of
 * the WHEEL_LEVELS - 1 levels above has 64 slots, each slot as wide as the
 * whole level below (aligned blocks: 4096 ms, 2^18 ms, ...), so 5 levels
 * cover 2^36 ms (2.2 years) ahead of `elapsed`; timers further out wait in
 * an overflow list that is looked at again whenever the wheel reaches the
 * 2^36-aligned block that holds the earliest of them. A timer beyond the
 * ring goes to the level of the highest bit group in which its deadline
 * differs from `elapsed` (tokio's time/wheel, level_for), and a higher slot
 * is emptied ("cascaded") into the ring or lower levels when the wheel
 * reaches its start:
 *
 *   level 4 | 64 slots of 2^30 ms (12.4 days)     | ...
 *   level 1 | 64 slots of 4096 ms (aligned)       |
 *   level 0 | ring of 4096 slots: elapsed+1 .. elapsed+4095
 *
 * Why a ring (tokio's level 0 has 64 aligned slots): a cascade touches every
 * timer of the slot once more, and on a large wheel each touch is a cache
 * and TLB miss (0.5-1 us on the reference machine). With aligned 4096-slot
 * level 0, a sleep of d ms still cascaded when it crossed a 4096 ms
 * boundary (d / 4096 of them: 12% of W5's 0-999 ms sleeps); with the ring,
 * none does. The cost is 64 KiB of list heads per wheel (one per worker).
 *
 * Invariants: a timer in a slot or in overflow has when > elapsed, one in
 * the pending list (due, not yet handed out) has when <= elapsed; `elapsed`
 * never passes the start of a higher slot that still holds timers, nor a
 * ring deadline. Higher slots before elapsed's own position are empty, and
 * no higher level expires before the lowest non-empty one; but the ring
 * reaches into the next aligned block, so the next event is the earliest of
 * the ring's next deadline, that level's next slot start and the overflow's
 * block (wheel.c, next_event). Removal finds the slot to clear from the
 * list's sentinel, not from the deadline. Slots are FIFO, and a cascaded timer
 * goes in front of the ones already in its new slot (they were registered after
 * it), so timers with equal deadlines come out in the order they were
 * registered.
 *
 * Costs: insert and remove O(1); wheel_poll O(1) per timer plus one step
 * per occupied slot crossed, never per tick of idle time.
 */
#ifndef WEFT_TIME_WHEEL_H
#define WEFT_TIME_WHEEL_H

#include "internal.h"

/* Level 0: 2^WHEEL_L0_BITS slots of one tick. */
#ifndef WHEEL_L0_BITS
#define WHEEL_L0_BITS 12
#endif
/* Levels in all (level 0 and the 64-slot levels above it). */
#ifndef WHEEL_LEVELS
#define WHEEL_LEVELS 5
#endif
#define WHEEL_HI_BITS 6
#define WHEEL_L0_SLOTS (1u << WHEEL_L0_BITS)
#define WHEEL_HI_SLOTS (1u << WHEEL_HI_BITS)
#define WHEEL_NSLOTS (WHEEL_L0_SLOTS + (WHEEL_LEVELS - 1) * WHEEL_HI_SLOTS)
/* Ticks one full wheel covers: 2^36 with the defaults. */
#define WHEEL_SPAN_BITS (WHEEL_L0_BITS + (WHEEL_LEVELS - 1) * WHEEL_HI_BITS)
#define WHEEL_SPAN ((uint64_t)1 << WHEEL_SPAN_BITS)

/* A doubly-linked circular list node; a list is a sentinel node. */
struct tlink {
    struct tlink *next, *prev;
};

/*
 * A timer entry (timer.c owns its life cycle; the wheel only links it).
 *
 *   word = value << TW_SHIFT | flags, one atomic word:
 *     TW_LINKED    in a wheel list (a slot, overflow or pending), so the
 *                  wheel's lock guards link, waker and the flags
 *     TW_FIRED     the deadline was reached: the waker has been handed to
 *                  whoever fired it (terminal until a reset)
 *     TW_RELATIVE  value is a duration in ms, not yet turned into a
 *                  deadline (that happens at the first poll)
 *   value = the deadline in ticks (or the duration); TW_NEVER = never.
 *
 * Writers: the wheel's owner and its processors change `word` and `link`
 * only under the wheel's lock; the timer's owner (whoever polls it) changes
 * `word`, `wheel` and `waker` while it is not TW_LINKED, or under the lock.
 * The owner may read `word` without the lock (acquire) to see TW_FIRED.
 */
struct weft_wheel;
struct weft__timer {
    struct tlink link;
    struct weft_wheel *wheel; /* registered (or last registered) on */
    _Atomic uint64_t word;
    weft_waker waker; /* a clone, while TW_LINKED */
};

enum {
    TW_LINKED = 1u << 0,
    TW_FIRED = 1u << 1,
    TW_RELATIVE = 1u << 2,
};
#define TW_SHIFT 3
#define TW_NEVER (UINT64_MAX >> TW_SHIFT)
#define TW_FLAGS(word) ((word) & ((1u << TW_SHIFT) - 1))
#define TW_VALUE(word) ((word) >> TW_SHIFT)
#define TW_WORD(value, flags) (((uint64_t)(value) << TW_SHIFT) | (flags))

struct wheel_core {
    uint64_t
        elapsed; /* every timer due at or before this has been handed out */
    /* Occupied slots, one bit each: the ring (level 0) in occ0 (with a summary
     * bit per word), the levels above in occ[level - 1]. */
    uint64_t occ0[WHEEL_L0_SLOTS / 64];
    uint64_t occ0_summary;
    uint64_t occ[WHEEL_LEVELS - 1];
    struct tlink overflow;  /* timers beyond the top level */
    uint64_t overflow_next; /* lower bound of when overflow needs a look */
    struct tlink pending;   /* due, waiting to be handed out */
    size_t count;           /* timers linked (slots, overflow, pending) */
    uint64_t cascaded;      /* timers re-filed by cascades, ever (tests) */
    struct tlink slot[WHEEL_NSLOTS]; /* level 0's, then 64 per level */
};

/* Initialises `w` with nothing due up to `now`. */
void weft__wheel_init(struct wheel_core *w, uint64_t now);

/* Links `t` (value `when`) in. Returns false, linking nothing, if `when` is
 * not after `elapsed` (the timer is due already). */
bool weft__wheel_insert(struct wheel_core *w, struct weft__timer *t,
                        uint64_t when);

/* Unlinks `t`, which is linked in `w`. */
void weft__wheel_remove(struct wheel_core *w, struct weft__timer *t);

/* Returns the next timer due at or before `now`, unlinked, in deadline
 * order (FIFO among equals), or NULL when none is left; then elapsed = now.
 * `now` must not be before elapsed (an earlier value acts as elapsed). */
struct weft__timer *weft__wheel_poll(struct wheel_core *w, uint64_t now);

/* Returns the tick at which wheel_poll has something to do next (a deadline,
 * or an earlier slot start to cascade), or UINT64_MAX when the wheel is
 * empty. Never later than the earliest deadline. */
uint64_t weft__wheel_next(const struct wheel_core *w);

/* Unlinks and returns any one timer, or NULL if the wheel is empty (for
 * tearing down a wheel). */
struct weft__timer *weft__wheel_take_any(struct wheel_core *w);

#endif
