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
}

/* Links `t` into the level or overflow list its deadline belongs to. */
static void place(struct wheel_core *w, struct weft__timer *t, uint64_t when)
{
    unsigned level = level_for(w->elapsed, when);
    if (level >= WHEEL_LEVELS) {
        list_append(&w->overflow, &t->link);
        if (block_start(when) < w->overflow_next)
            w->overflow_next = block_start(when);
        return;
    }
    unsigned s = slot_for(when, level);
    list_append(slot_list(w, level, s), &t->link);
    occ_set(w, level, s);
}

bool weft__wheel_insert(struct wheel_core *w, struct weft__timer *t,
                        uint64_t when)
{
    if (when <= w->elapsed)
        return false;
    place(w, t, when);
    w->count++;
    return true;
}

void weft__wheel_remove(struct wheel_core *w, struct weft__timer *t,
                        uint64_t when)
{
    list_unlink(&t->link);
    w->count--;
    if (when <= w->elapsed)
        return; /* it was in the pending list */
    unsigned level = level_for(w->elapsed, when);
    if (level >= WHEEL_LEVELS)
        return; /* overflow: overflow_next stays a lower bound */
    unsigned s = slot_for(when, level);
    if (list_empty(slot_list(w, level, s)))
        occ_clear(w, level, s);
}

/* The next slot of `level` to process, as (slot, tick); false if the level
 * is empty. Slots before elapsed's own position cannot be occupied (see the
 * invariants), so the first set bit at or after it is the one. */
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

uint64_t weft__wheel_next(const struct wheel_core *w)
{
    if (!list_empty(&w->pending))
        return w->elapsed;
    unsigned slot;
    uint64_t tick;
    /* No higher level can expire before the lowest non-empty one: its
     * timers all lie past the current slot of every level above. */
    for (unsigned l = 0; l < WHEEL_LEVELS; l++)
        if (level_next(w, l, &slot, &tick))
            return tick;
    if (!list_empty(&w->overflow))
        return w->overflow_next > w->elapsed ? w->overflow_next
                                             : w->elapsed + 1;
    return UINT64_MAX;
}

/* Re-files every timer of `list` (taken out of a slot or overflow) now
 * that elapsed has reached the list's start: due ones go to pending in
 * list order, the others down to the level they now belong to. */
static void cascade(struct wheel_core *w, struct tlink *list)
{
    while (!list_empty(list)) {
        struct weft__timer *t = timer_of(list->next);
        list_unlink(&t->link);
        uint64_t when = when_of(t);
        if (when <= w->elapsed)
            list_append(&w->pending, &t->link);
        else
            place(w, t, when);
    }
}

/* Processes the next slot (or overflow) if it is due by `now`. Returns
 * false when nothing is due. */
static bool advance(struct wheel_core *w, uint64_t now)
{
    unsigned slot;
    uint64_t tick;
    for (unsigned l = 0; l < WHEEL_LEVELS; l++) {
        if (!level_next(w, l, &slot, &tick))
            continue;
        if (tick > now)
            return false;
        struct tlink list;
        list_move_all(&list, slot_list(w, l, slot));
        occ_clear(w, l, slot);
        w->elapsed = tick;
        cascade(w, &list);
        return true;
    }
    if (list_empty(&w->overflow) || w->overflow_next > now)
        return false;
    struct tlink list;
    list_move_all(&list, &w->overflow);
    if (w->overflow_next > w->elapsed)
        w->elapsed = w->overflow_next;
    w->overflow_next = UINT64_MAX;
    cascade(w, &list);
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
