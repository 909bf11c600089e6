/*
 * The executor a test runs on. A test file that mentions WEFT_TEST_FLAVOR
 * (in a comment is enough) is registered twice by test/CMakeLists.txt, the
 * second time with WEFT_TEST_FLAVOR=mt: new_rt() and run() then build a
 * multi-thread runtime instead of a current-thread one.
 */
#ifndef WEFT_TEST_FLAVOR_H
#define WEFT_TEST_FLAVOR_H

#include <stdlib.h>
#include <string.h>

#include "test.h"
#include "weft.h"

static inline int is_mt(void)
{
    const char *f = getenv("WEFT_TEST_FLAVOR");
    return f && strcmp(f, "mt") == 0;
}

static inline weft_runtime *new_rt(void)
{
    weft_config cfg;
    weft_config_init(&cfg);
    if (is_mt())
        cfg.flavor = WEFT_MULTI_THREAD;
    weft_runtime *rt;
    ASSERT_OK(weft_runtime_new(&rt, &cfg));
    return rt;
}

/* Runs fn as the root task of a fresh runtime, frees it, returns the
 * value. */
static inline void *run(weft_task_fn fn, void *arg)
{
    weft_runtime *rt = new_rt();
    void *out = NULL;
    ASSERT_OK(weft_block_on(rt, fn, arg, &out));
    weft_runtime_free(rt);
    return out;
}

#endif
