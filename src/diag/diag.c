/*
 * Always-on checks and the diagnostics switch.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

_Noreturn void weft__panic(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "weft: fatal: %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    abort();
}

bool weft__debug_enabled(void)
{
    static _Atomic int cached = -1;
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (weft_likely(v >= 0))
        return v;
    const char *env = getenv("WEFT_DEBUG");
#ifdef WEFT_DEBUG_BUILD
    v = !(env && strcmp(env, "0") == 0);
#else
    v = env && strcmp(env, "1") == 0;
#endif
    atomic_store_explicit(&cached, v, memory_order_relaxed);
    return v;
}
