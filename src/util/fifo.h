/*
 * An intrusive FIFO of tasks linked through weft_task.next: the current-
 * thread scheduler's queues and the multi-thread injection queue. The
 * caller provides the locking, if any. Never allocates.
 */
#ifndef WEFT_FIFO_H
#define WEFT_FIFO_H

#include "task/task.h"

struct fifo {
    struct weft_task *head, *tail;
};

static inline void fifo_push(struct fifo *q, struct weft_task *t)
{
    t->next = NULL;
    if (q->tail)
        q->tail->next = t;
    else
        q->head = t;
    q->tail = t;
}

static inline struct weft_task *fifo_pop(struct fifo *q)
{
    struct weft_task *t = q->head;
    if (t) {
        q->head = t->next;
        if (!q->head)
            q->tail = NULL;
    }
    return t;
}

/* Moves all of `other` to the end of `q`. */
static inline void fifo_append(struct fifo *q, struct fifo *other)
{
    if (!other->head)
        return;
    if (q->tail)
        q->tail->next = other->head;
    else
        q->head = other->head;
    q->tail = other->tail;
    other->head = other->tail = NULL;
}

#endif
