/*
 * The hierarchical timing wheel. See wheel.h for the shape and invariants;
 * the level arithmetic follows tokio's runtime/time/wheel (level.rs,
 * mod.rs), with a wider level 0 and an overflow list instead of tokio's
 * clamping of deadlines to 2.2 years.
 */
#include "time/wheel.h"

#include <string.h>

static inline void list_init(struct tlink *l)
{
    l->next = l->prev = l;
}

static inline bool list_empty(const struct tlink *l)
{
    return l->next == l;
}

static inline void list_append(struct tlink *l, struct tlink *n)
{
    n->prev = l->prev;
    n->next = l;
    l->prev->next = n;
    l->prev = n;
}

static inline void list_prepend(struct tlink *l, struct tlink *n)
{
    n->next = l->next;
    n->prev = l;
    l->next->prev = n;
    l->next = n;
}

static inline void list_unlink(struct tlink *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = NULL;
}

/* Moves every node of `from` to the empty list `to`. */
static inline void list_move_all(struct tlink *to, struct tlink *from)
{
    if (list_empty(from)) {
        list_init(to);
        return;
    }
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    list_init(from);
}

/* Moves every node of `from` to the end of `to`. */
static inline void list_splice_tail(struct tlink *to, struct tlink *from)
{
    if (list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

static inline struct weft__timer *timer_of(struct tlink *n)
{
    return container_of(n, struct weft__timer, link);
}

static inline uint64_t when_of(const struct weft__timer *t)
{
    return TW_VALUE(atomic_load_explicit(&((struct weft__timer *)t)->word,
                                         memory_order_relaxed));
}

/* The level a timer due at `when` belongs to, seen from `elapsed`: that of
 * the highest bit group in which they differ. WHEEL_LEVELS or more means
 * overflow. */
static inline unsigned level_for(uint64_t elapsed, uint64_t when)
{
    uint64_t masked = (elapsed ^ when) | (WHEEL_L0_SLOTS - 1);
    unsigned significant = 63u - (unsigned)__builtin_clzll(masked);
    if (significant < WHEEL_L0_BITS)
        return 0;
    return 1 + (significant - WHEEL_L0_BITS) / WHEEL_HI_BITS;
}

/* The lowest bit of the deadline that a slot of `level` looks at. */
static inline unsigned level_shift(unsigned level)
{
    return level ? WHEEL_L0_BITS + (level - 1) * WHEEL_HI_BITS : 0;
}

static inline unsigned level_bits(unsigned level)
{
    return level ? WHEEL_HI_BITS : WHEEL_L0_BITS;
}

static inline unsigned slot_for(uint64_t when, unsigned level)
{
    return (unsigned)(when >> level_shift(level)) &
           ((1u << level_bits(level)) - 1);
}

/* The list head of slot `s` of `level`. */
static inline struct tlink *slot_list(struct wheel_core *w, unsigned level,
                                      unsigned s)
{
    return &w->slot[level ? WHEEL_L0_SLOTS + (level - 1) * WHEEL_HI_SLOTS + s
                          : s];
}

static inline uint64_t block_start(uint64_t when)
{
    return when & ~(WHEEL_SPAN - 1);
}

/* ---- occupied-slot bitmaps ---- */

static inline void occ_set(struct wheel_core *w, unsigned level, unsigned s)
{
    if (level) {
        w->occ[level - 1] |= (uint64_t)1 << s;
        return;
    }
    w->occ0[s / 64] |= (uint64_t)1 << (s % 64);
    w->occ0_summary |= (uint64_t)1 << (s / 64);
}

static inline void occ_clear(struct wheel_core *w, unsigned level, unsigned s)
{
    if (level) {
        w->occ[level - 1] &= ~((uint64_t)1 << s);
        return;
    }
    w->occ0[s / 64] &= ~((uint64_t)1 << (s % 64));
    if (!w->occ0[s / 64])
        w->occ0_summary &= ~((uint64_t)1 << (s / 64));
}

/* The first occupied slot of `level` at or after `from`, or -1. */
static inline int occ_first(const struct wheel_core *w, unsigned level,
                            unsigned from)
{
    if (level) {
        uint64_t m = w->occ[level - 1] & (~(uint64_t)0 << from);
        return m ? __builtin_ctzll(m) : -1;
    }
    unsigned wi = from / 64;
    uint64_t m = w->occ0[wi] & (~(uint64_t)0 << (from % 64));
    if (m)
        return (int)(wi * 64 + (unsigned)__builtin_ctzll(m));
    uint64_t sum =
        wi + 1 < 64 ? w->occ0_summary & (~(uint64_t)0 << (wi + 1)) : 0;
    if (!sum)
        return -1;
    wi = (unsigned)__builtin_ctzll(sum);
    return (int)(wi * 64 + (unsigned)__builtin_ctzll(w->occ0[wi]));
}

static inline bool level_empty(const struct wheel_core *w, unsigned level)
{
    return level ? !w->occ[level - 1] : !w->occ0_summary;
}

void weft__wheel_init(struct wheel_core *w, uint64_t now)
{
    w->elapsed = now;
    memset(w->occ0, 0, sizeof w->occ0);
    w->occ0_summary = 0;
    memset(w->occ, 0, sizeof w->occ);
    for (unsigned i = 0; i < WHEEL_NSLOTS; i++)
        list_init(&w->slot[i]);
    list_init(&w->overflow);
    list_init(&w->pending);
    w->overflow_next = UINT64_MAX;
    w->count = 0;
    w->cascaded = 0;
}

static inline void list_link(struct tlink *l, struct tlink *n, bool front)
{
    if (front)
        list_prepend(l, n);
    else
        list_append(l, n);
}

/* Links `t` into the ring, the level or the overflow list its deadline
 * belongs to: at the tail (a new registration) or, with `front`, at the head
 * (a cascaded timer, registered before anything already there; see
 * cascade()). */
static void place(struct wheel_core *w, struct weft__timer *t, uint64_t when,
                  bool front)
{
    unsigned level, s;
    if (when - w->elapsed < WHEEL_L0_SLOTS) {
        level = 0; /* the ring: one deadline per slot */
        s = (unsigned)when & (WHEEL_L0_SLOTS - 1);
    } else {
        level = level_for(w->elapsed, when);
        if (level >= WHEEL_LEVELS) {
            list_link(&w->overflow, &t->link, front);
            if (block_start(when) < w->overflow_next)
                w->overflow_next = block_start(when);
            return;
        }
        s = slot_for(when, level);
    }
    list_link(slot_list(w, level, s), &t->link, front);
    occ_set(w, level, s);
}

bool weft__wheel_insert(struct wheel_core *w, struct weft__timer *t,
                        uint64_t when)
{
    if (when <= w->elapsed)
        return false;
    place(w, t, when, false);
    w->count++;
    return true;
}

void weft__wheel_remove(struct wheel_core *w, struct weft__timer *t)
{
    /* The only timer of its list: the list's sentinel is both neighbours,
     * and if that is a slot's, the slot is now empty. Which slot follows
     * from the sentinel's address, so nothing about the timer's place needs
     * recomputing (it could not be, from `elapsed` alone: a timer filed in
     * a higher level may since have come within the ring's reach). */
    struct tlink *n = t->link.next;
    bool alone = n == t->link.prev;
    list_unlink(&t->link);
    w->count--;
    uintptr_t off = (uintptr_t)n - (uintptr_t)w->slot;
    if (!alone || off >= sizeof w->slot)
        return; /* others left, or pending / overflow */
    uintptr_t i = off / sizeof w->slot[0];
    if (i < WHEEL_L0_SLOTS)
        occ_clear(w, 0, (unsigned)i);
    else
        occ_clear(w, 1 + (unsigned)(i - WHEEL_L0_SLOTS) / WHEEL_HI_SLOTS,
                  (unsigned)(i - WHEEL_L0_SLOTS) % WHEEL_HI_SLOTS);
}

/* The next slot of higher level `level` (>= 1) to process, as (slot,
 * tick); false if the level is empty. Slots before elapsed's own position
 * cannot be occupied (see the invariants), so the first set bit at or after
 * it is the one. */
static bool level_next(const struct wheel_core *w, unsigned level,
                       unsigned *slot, uint64_t *tick)
{
    if (level_empty(w, level))
        return false;
    unsigned shift = level_shift(level);
    int s = occ_first(w, level, slot_for(w->elapsed, level));
    WEFT_DASSERT(s >= 0);
    if (s < 0)
        s = occ_first(w, level, 0); /* unreachable; never lose timers */
    uint64_t level_range = (uint64_t)1 << (shift + level_bits(level));
    uint64_t start = w->elapsed & ~(level_range - 1);
    *slot = (unsigned)s;
    *tick = start + ((uint64_t)s << shift);
    return true;
}

/* The ring's next slot, as (slot, deadline): the first occupied one after
 * elapsed's, wrapping around (elapsed's own slot would be elapsed + 4096,
 * which the ring does not take). */
static bool ring_next(const struct wheel_core *w, unsigned *slot,
                      uint64_t *tick)
{
    if (level_empty(w, 0))
        return false;
    const unsigned mask = WHEEL_L0_SLOTS - 1;
    int s = occ_first(w, 0, (unsigned)(w->elapsed + 1) & mask);
    if (s < 0)
        s = occ_first(w, 0, 0);
    uint64_t ahead = ((uint64_t)(unsigned)s - w->elapsed) & mask;
    WEFT_DASSERT(ahead != 0);
    *slot = (unsigned)s;
    *tick = w->elapsed + (ahead ? ahead : WHEEL_L0_SLOTS);
    return true;
}

/* What wheel_poll must do next: OVERFLOW (look at the overflow list), a
 * higher level's slot to cascade (1 .. WHEEL_LEVELS - 1) or RING (hand out
 * a ring slot), at `*tick`; NOTHING if the wheel is empty. On equal ticks
 * the overflow goes first, then the higher levels, then the ring: a timer
 * filed further up was registered before any timer with the same deadline
 * that went straight into a lower level (elapsed only grows), and cascade()
 * puts it in front of them. */
enum { NOTHING = -1, RING = 0, OVERFLOW = WHEEL_LEVELS };
static int next_event(const struct wheel_core *w, unsigned *slot,
                      uint64_t *tick)
{
    int what = NOTHING;
    uint64_t best = UINT64_MAX, t;
    unsigned s;
    if (!list_empty(&w->overflow)) {
        /* overflow_next is a lower bound; at or below elapsed: look now */
        best = w->overflow_next > w->elapsed ? w->overflow_next : w->elapsed;
        what = OVERFLOW;
    }
    /* No higher level expires before the lowest non-empty one: its timers
     * all lie past the current slot of every level above. */
    for (unsigned l = 1; l < WHEEL_LEVELS; l++)
        if (level_next(w, l, &s, &t)) {
            if (t < best) {
                best = t;
                what = (int)l;
                *slot = s;
            }
            break;
        }
    if (ring_next(w, &s, &t) && t < best) {
        best = t;
        what = RING;
        *slot = s;
    }
    *tick = best;
    return what;
}

uint64_t weft__wheel_next(const struct wheel_core *w)
{
    if (!list_empty(&w->pending))
        return w->elapsed;
    unsigned slot;
    uint64_t tick;
    return next_event(w, &slot, &tick) == NOTHING ? UINT64_MAX : tick;
}

/* Re-files every timer of `list` (taken out of a higher slot or the
 * overflow) now that elapsed has reached the list's start: due ones go to
 * pending, the others down to where they now belong. Back to front, each at
 * the head of its new list: their order among themselves is kept, and they
 * go before the timers already there, which were registered after them. */
static void cascade(struct wheel_core *w, struct tlink *list)
{
    while (!list_empty(list)) {
        struct weft__timer *t = timer_of(list->prev);
        list_unlink(&t->link);
        w->cascaded++;
        uint64_t when = when_of(t);
        if (when <= w->elapsed)
            list_prepend(&w->pending, &t->link);
        else
            place(w, t, when, true);
    }
}

/* Processes the next slot (or the overflow) if it is due by `now`. Returns
 * false when nothing is due. wheel_poll calls it with pending empty. */
static bool advance(struct wheel_core *w, uint64_t now)
{
    unsigned slot = 0;
    uint64_t tick;
    int what = next_event(w, &slot, &tick);
    if (what == NOTHING || tick > now)
        return false;
    struct tlink list;
    if (what == RING) {
        /* One deadline per ring slot: all of it is due, in order. */
        list_move_all(&w->pending, slot_list(w, 0, slot));
        occ_clear(w, 0, slot);
        w->elapsed = tick;
        return true;
    }
    if (what == OVERFLOW) {
        list_move_all(&list, &w->overflow);
        w->overflow_next = UINT64_MAX;
    } else {
        list_move_all(&list, slot_list(w, (unsigned)what, slot));
        occ_clear(w, (unsigned)what, slot);
    }
    if (tick > w->elapsed)
        w->elapsed = tick;
    cascade(w, &list);
    /* A ring slot due at the same tick: after the cascaded timers (it was
     * registered later), and before the ring would read it as 4096 ms
     * ahead. */
    unsigned rs = (unsigned)w->elapsed & (WHEEL_L0_SLOTS - 1);
    if (!list_empty(slot_list(w, 0, rs))) {
        list_splice_tail(&w->pending, slot_list(w, 0, rs));
        occ_clear(w, 0, rs);
    }
    return true;
}

struct weft__timer *weft__wheel_poll(struct wheel_core *w, uint64_t now)
{
    for (;;) {
        if (!list_empty(&w->pending)) {
            struct weft__timer *t = timer_of(w->pending.next);
            list_unlink(&t->link);
            w->count--;
            return t;
        }
        if (!advance(w, now))
            break;
    }
    if (now > w->elapsed)
        w->elapsed = now;
    return NULL;
}

struct weft__timer *weft__wheel_take_any(struct wheel_core *w)
{
    if (!w->count)
        return NULL;
    struct tlink *lists[] = {&w->pending, &w->overflow};
    for (unsigned i = 0; i < 2; i++)
        if (!list_empty(lists[i])) {
            struct weft__timer *t = timer_of(lists[i]->next);
            list_unlink(&t->link);
            w->count--;
            return t;
        }
    for (unsigned l = 0; l < WHEEL_LEVELS; l++) {
        int s;
        while ((s = occ_first(w, l, 0)) >= 0) {
            struct tlink *sl = slot_list(w, l, (unsigned)s);
            if (!list_empty(sl)) {
                struct weft__timer *t = timer_of(sl->next);
                list_unlink(&t->link);
                if (list_empty(sl))
                    occ_clear(w, l, (unsigned)s);
                w->count--;
                return t;
            }
            occ_clear(w, l, (unsigned)s);
        }
    }
    return NULL;
}
