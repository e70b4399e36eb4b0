#include <stdio.h>
#include <stdlib.h>

#define RING_MAX 64

struct ring {
    int head, tail;
    int items[RING_MAX];
};

/* Push v; returns -1 when the ring is full. */
static int ring_push(struct ring *r, int v)
{
    int next = (r->head + 1) % RING_MAX;

    if (next == r->tail)
        return -1;
    r->items[r->head] = v;
    r->head = next;
    return 0;
}

static int ring_pop(struct ring *r, int *out)
{
    if (r->head == r->tail)
        return -1;
    *out = r->items[r->tail];
    r->tail = (r->tail + 1) % RING_MAX;
    return 0;
}

int main(void)
{
    struct ring r = {0};
    int v;

    ring_push(&r, 1);
    while (ring_pop(&r, &v) == 0)
        printf("%d\n", v);
    return 0;
}
