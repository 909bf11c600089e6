/*
 * forgotten.c - a future that is never awaited never runs.
 *
 * Run it with WEFT_DEBUG=1 (or build weft in Debug) and weft reports, on
 * stderr, the future that was freed without ever being polled, with the
 * line that created it.
 */
#include <stdio.h>

#include <weft.h>

static void *task(void *arg)
{
    (void)arg;
    weft_future *f = weft_yield_future(); /* created: nothing runs yet */
    if (!f)
        return NULL;
    /* ... and forgotten: the await that should be here is missing. */
    weft_future_free(f);
    printf("the future was freed without being awaited\n");
    return NULL;
}

int main(void)
{
    weft_runtime *rt;
    if (weft_runtime_new(&rt, NULL) < 0)
        return 1;
    int rc = weft_block_on(rt, task, NULL, NULL);
    weft_runtime_free(rt);
    return rc < 0;
}
