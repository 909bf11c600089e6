/*
 * Small-object memory for tasks and futures.
 *
 * For now this is the C allocator plus a failure injector for tests. Page
 * faults cost ~10 us per 4 KiB on the machines we measure on, so this is
 * the one place to change when task memory should come from pre-faulted
 * arenas.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static _Atomic long fail_countdown; /* 0 = disarmed */
static _Atomic int fail_env_read;

void weft__fail_alloc_after(long n)
{
    atomic_store(&fail_countdown, n);
}

static bool injected_failure(void)
{
    if (weft_unlikely(!atomic_load_explicit(&fail_env_read,
                                            memory_order_relaxed))) {
        const char *v = getenv("WEFT_FAIL_ALLOC");
        if (!atomic_exchange(&fail_env_read, 1) && v)
            weft__fail_alloc_after(atol(v));
    }
    long n = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    if (weft_likely(n == 0))
        return false;
    n = atomic_fetch_sub(&fail_countdown, 1);
    if (n == 1)
        return true; /* this is the nth: fail it, and disarm */
    if (n <= 0)
        atomic_store(&fail_countdown, 0);
    return false;
}

void *weft__alloc(size_t size)
{
    if (injected_failure())
        return NULL;
    return malloc(size);
}

void *weft__zalloc(size_t size)
{
    if (injected_failure())
        return NULL;
    return calloc(1, size);
}

void weft__free(void *p, size_t size)
{
    (void)size;
    free(p);
}
