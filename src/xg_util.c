/*
 * xg_util.c: clocks and allocators.
 */
#include "xg_core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

uint64_t
xg_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

uint64_t
xg_now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

uint64_t
xg_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000000 + (uint64_t) ts.tv_nsec / 1000;
}

static void
oom(size_t n)
{
    fprintf(stderr, "exgate: out of memory (%zu bytes)\n", n);
    abort();
}

void *
xg_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (p == NULL) {
        oom(n);
    }
    return p;
}

void *
xg_calloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz ? sz : 1);

    if (p == NULL) {
        oom(n * sz);
    }
    return p;
}

void *
xg_realloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        oom(n);
    }
    return p;
}

char *
xg_strdup(const char *s)
{
    return xg_strndup(s, strlen(s));
}

char *
xg_strndup(const char *s, size_t n)
{
    char *p = xg_malloc(n + 1);

    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}
