/*
 * hello.c - three tasks take turns on one thread.
 *
 * Each task is a coroutine: plain C that calls weft_await() where it would
 * wait. weft_yield_future() is the simplest future there is (pending once,
 * then ready), so each await lets the other tasks run.
 */
#include <stdint.h>
#include <stdio.h>

#include <weft.h>

static void *worker(void *arg)
{
    intptr_t id = (intptr_t)arg;
    for (int step = 0; step < 3; step++) {
        printf("task %d, step %d\n", (int)id, step);
        int rc = weft_await(weft_yield_future(), NULL);
        if (rc < 0)
            return NULL; /* -ECANCELED, or -ENOMEM */
    }
    return (void *)(id * 10);
}

static void *root(void *arg)
{
    (void)arg;
    weft_task *tasks[3];
    for (intptr_t i = 0; i < 3; i++) {
        int rc = weft_spawn(NULL, &tasks[i], worker, (void *)(i + 1));
        if (rc < 0) {
            fprintf(stderr, "spawn: %s\n", weft_strerror(rc));
            return NULL;
        }
    }
    intptr_t sum = 0;
    for (int i = 0; i < 3; i++) {
        void *result;
        int rc = weft_join(tasks[i], &result); /* suspends this task only */
        if (rc == 0)
            sum += (intptr_t)result;
        weft_task_free(tasks[i]);
    }
    printf("sum of results: %d\n", (int)sum);
    return NULL;
}

int main(void)
{
    weft_runtime *rt;
    int rc = weft_runtime_new(&rt, NULL);
    if (rc < 0) {
        fprintf(stderr, "weft_runtime_new: %s\n", weft_strerror(rc));
        return 1;
    }
    rc = weft_block_on(rt, root, NULL, NULL);
    if (rc < 0)
        fprintf(stderr, "weft_block_on: %s\n", weft_strerror(rc));
    weft_runtime_free(rt);
    return rc < 0;
}
