/*
 * Declarations shared by weft's subsystems. Not installed.
 */
#ifndef WEFT_INTERNAL_H
#define WEFT_INTERNAL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "weft.h"

/* ---- compile-time knobs ------------------------------------------------ */

/* Polls of local tasks between two looks at the remote (injection) queue:
 * a task woken from another thread waits at most this many polls. */
#ifndef WEFT_REMOTE_INTERVAL
#define WEFT_REMOTE_INTERVAL 31
#endif

/* Ready leaf operations a task may make in one poll before leaf futures
 * return pending and reschedule it (cooperative budget). */
#ifndef WEFT_COOP_BUDGET
#define WEFT_COOP_BUDGET 128
#endif

/* Default coroutine stack size. */
#ifndef WEFT_DEFAULT_STACK
#define WEFT_DEFAULT_STACK (256u * 1024u)
#endif

/* Smallest and largest stack a spawn may ask for. */
#define WEFT_MIN_STACK (16u * 1024u)
#define WEFT_MAX_STACK (64u * 1024u * 1024u)

/* ---- helpers ------------------------------------------------------------ */

#define weft_likely(x) __builtin_expect(!!(x), 1)
#define weft_unlikely(x) __builtin_expect(!!(x), 0)

#define container_of(ptr, type, member)                                        \
    ((type *)((char *)(ptr)-offsetof(type, member)))

/* Always-on check of an invariant whose failure means memory is already
 * inconsistent: print file:line and abort. */
#define WEFT_CHECK(cond, msg)                                                  \
    do {                                                                       \
        if (weft_unlikely(!(cond)))                                            \
            weft__panic(__FILE__, __LINE__, "%s: %s", #cond, msg);             \
    } while (0)

/* Debug-only invariant. */
#ifdef WEFT_DEBUG_BUILD
#define WEFT_DASSERT(cond) WEFT_CHECK(cond, "debug assertion")
#else
#define WEFT_DASSERT(cond) ((void)0)
#endif

_Noreturn void weft__panic(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Diagnostics (never-polled futures, ...) are on in debug builds or when
 * WEFT_DEBUG=1; a runtime's config may switch them for its own tasks. */
bool weft__debug_enabled(void);

/* ---- memory ------------------------------------------------------------- */

/* All of weft's small objects (tasks, futures) come from here, so that the
 * allocation strategy lives in one place (src/util/mem.c). NULL on
 * exhaustion, or when a test has armed the allocation-failure injector.
 * Alignment: 16 bytes if `size` is a multiple of 16, else 8 (enough for any
 * object of that size). weft__free takes the size that was allocated. */
void *weft__alloc(size_t size);
void *weft__zalloc(size_t size);
void weft__free(void *p, size_t size);

/* CLOCK_MONOTONIC in ns (time/timer.c): the one clock read for
 * timestamps that are not the runtime's (pausable) clock. */
int64_t weft__mono_ns(void);

/* Called by an idle worker: if threads are allocating chunks in bulk,
 * maps and faults in one chunk ahead for them, so that the first touch of
 * fresh pages happens on an idle CPU instead of in the spawning thread.
 * Returns true if it did (it took a while: look for work again), false if
 * there was nothing to do. */
bool weft__mem_prefault(void);
/* Whether weft__mem_prefault has something to do (a relaxed peek). */
bool weft__mem_prefault_wanted(void);
/* Whether chunks made by weft__mem_prefault wait unused (a relaxed peek). */
bool weft__mem_ready_held(void);
/* Unmaps the waiting chunks if none was made or taken for 10 ms. Returns
 * whether chunks still wait (look again later). An idle worker calls it. */
bool weft__mem_trim_ready(void);

/* Fault injection for tests: the `n`th allocation from now on fails (n >= 1),
 * 0 disarms. Also armed by the WEFT_FAIL_ALLOC=n environment variable. */
void weft__fail_alloc_after(long n);

/* ---- forward declarations --------------------------------------------- */

struct weft_task;
struct weft_sched;
struct weft_worker;

#endif
