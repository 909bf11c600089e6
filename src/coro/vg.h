/*
 * Valgrind client requests used by the coroutine layer, or no-ops when
 * <valgrind/valgrind.h> is not installed. The requests cost a few
 * instructions when the program does not run under valgrind.
 */
#ifndef WEFT_CORO_VG_H
#define WEFT_CORO_VG_H

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define WEFT_HAVE_VALGRIND 1
#endif
#endif

#ifndef WEFT_HAVE_VALGRIND
#define VALGRIND_STACK_REGISTER(lo, hi) 0u
#define VALGRIND_STACK_DEREGISTER(id) ((void)(id))
#define VALGRIND_DISABLE_ERROR_REPORTING ((void)0)
#define VALGRIND_ENABLE_ERROR_REPORTING ((void)0)
#endif

#endif
