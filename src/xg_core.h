/*
 * xg_core.h: what every exgate source file needs: return codes, the
 * version, a few helpers for time and arrays.
 */
#ifndef XG_CORE_H
#define XG_CORE_H

#include "config.h"

#include <stddef.h>
#include <stdint.h>

#define XG_OK       0
#define XG_ERROR   -1
#define XG_AGAIN   -2
#define XG_DONE    -4

#define XG_VERSION  PACKAGE_VERSION

#define XG_NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* Milliseconds and microseconds on CLOCK_MONOTONIC. */
uint64_t xg_now_ms(void);
uint64_t xg_now_us(void);
/* Microseconds since the Unix epoch (CLOCK_REALTIME). */
uint64_t xg_wall_us(void);

/* Allocators that never return NULL: out of memory aborts with a message. */
void *xg_malloc(size_t n);
void *xg_calloc(size_t n, size_t sz);
void *xg_realloc(void *p, size_t n);
char *xg_strdup(const char *s);
char *xg_strndup(const char *s, size_t n);

#endif
