/*
 * thread_rules.c - errno and thread-locals across a suspension point.
 *
 * A coroutine may resume on another worker thread than the one it
 * suspended on (on a multi-thread runtime). errno and every __thread
 * variable belong to a thread, so: read errno right after the call that set
 * it, before anything that may suspend; and never keep the address of a
 * thread-local across a suspension, read it again afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <weft.h>

static __thread int calls_on_this_thread;

static void *task(void *arg)
{
    (void)arg;

    /* Right: copy errno at once. (weft itself never reports through errno:
     * its functions return negative errno values.) */
    int fd = open("/nonexistent", O_RDONLY);
    int err = fd < 0 ? errno : 0;
    if (fd >= 0)
        close(fd);

    int *mine = &calls_on_this_thread; /* fine until the next suspension */
    (*mine)++;

    int rc = weft_await(weft_yield_future(), NULL); /* may change threads */
    if (rc < 0)
        return NULL;

    /* Wrong here: `errno` and `*mine` may now belong to another thread.
     * Right: use the copy, and name the thread-local again. */
    printf("open failed earlier with: %s\n", strerror(err));
    calls_on_this_thread++;
    return NULL;
}

int main(void)
{
    weft_config cfg;
    weft_config_init(&cfg);
    cfg.flavor = WEFT_MULTI_THREAD; /* tasks may move between threads */
    cfg.workers = 2;

    weft_runtime *rt;
    int rc = weft_runtime_new(&rt, &cfg);
    if (rc < 0) {
        fprintf(stderr, "weft_runtime_new: %s\n", weft_strerror(rc));
        return 1;
    }
    rc = weft_block_on(rt, task, NULL, NULL);
    weft_runtime_free(rt);
    return rc < 0;
}
