/*
 * xg_rreply.c: hiredis reply objects built in one block per reply (see
 * xg_rreply.h).
 */
#include "xg_rreply.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#define RR_FIRST        4096        /* the root's chunk */
#define RR_MAX          65536       /* chunks double up to this (below
                                       glibc's mmap threshold); a larger
                                       object gets a chunk of its size */
#define RR_ALIGN(n)     (((n) + 7) & ~(size_t) 7)

struct rr_chunk {
    struct rr_chunk    *next;       /* older */
    size_t              pad;        /* keeps what follows 16-aligned */
};

/* Heads the root's chunk: every object of the reply is found from it. */
struct rr_head {
    struct rr_chunk     chunk;      /* the first chunk (this one) */
    struct rr_chunk    *chunks;     /* the newest; the list ends here */
    char               *pos, *end;  /* free space in the newest */
    size_t              next_size;
    redisReply          root;
};

static void rr_free(void *obj);

static struct rr_head *
rr_head_of(const redisReadTask *task)
{
    while (task->parent != NULL) {
        task = task->parent;
    }
    return (struct rr_head *) ((char *) task->obj
        - offsetof(struct rr_head, root));
}

/* SIZE bytes (rounded up to 8) in H's newest chunk, or a new one. */
static void *
rr_alloc(struct rr_head *h, size_t size)
{
    struct rr_chunk *c;
    size_t n;
    void *p;

    size = RR_ALIGN(size);
    if ((size_t) (h->end - h->pos) < size) {
        n = h->next_size;
        if (n < size + sizeof(*c)) {
            n = size + sizeof(*c);
        } else if (h->next_size < RR_MAX) {
            h->next_size *= 2;
        }
        c = malloc(n);
        if (c == NULL) {
            return NULL;
        }
        c->next = h->chunks;
        h->chunks = c;
        h->pos = (char *) (c + 1);
        h->end = (char *) c + n;
    }
    p = h->pos;
    h->pos += size;
    return p;
}

/*
 * A new object of TASK with EXTRA bytes after it (a string's text, an
 * array's vector), linked into its parent; the root makes the head.
 */
static redisReply *
rr_object(const redisReadTask *task, int type, size_t extra)
{
    struct rr_head *h;
    redisReply *r, *parent;
    size_t n;

    if (task->parent == NULL) {
        n = sizeof(*h) + RR_ALIGN(extra);
        h = malloc(n > RR_FIRST ? n : RR_FIRST);
        if (h == NULL) {
            return NULL;
        }
        h->chunk.next = NULL;
        h->chunks = &h->chunk;
        h->pos = (char *) h + RR_ALIGN(n);
        h->end = (char *) h + (n > RR_FIRST ? n : RR_FIRST);
        h->next_size = RR_FIRST * 2;
        r = &h->root;
    } else {
        h = rr_head_of(task);
        r = rr_alloc(h, sizeof(*r) + extra);
        if (r == NULL) {
            return NULL;
        }
        parent = task->parent->obj;
        parent->element[task->idx] = r;
    }
    memset(r, 0, sizeof(*r));
    r->type = type;
    return r;
}

static void *
rr_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r;

    if (len > SIZE_MAX / 2) {
        return NULL;
    }
    r = rr_object(task, task->type, len + 1);
    if (r == NULL) {
        return NULL;
    }
    r->str = (char *) (r + 1);
    memcpy(r->str, str, len);
    r->str[len] = '\0';
    r->len = len;
    return r;
}

static void *
rr_array(const redisReadTask *task, int elements)
{
    redisReply *r;
    size_t n = elements > 0 ? (size_t) elements : 0;

    if (n > SIZE_MAX / 2 / sizeof(redisReply *)) {
        return NULL;
    }
    r = rr_object(task, REDIS_REPLY_ARRAY, n * sizeof(redisReply *));
    if (r == NULL) {
        return NULL;
    }
    if (n > 0) {
        /* a partial tree is only ever freed whole, but keep it sound */
        r->element = (redisReply **) (r + 1);
        memset(r->element, 0, n * sizeof(redisReply *));
    }
    r->elements = n;
    return r;
}

static void *
rr_integer(const redisReadTask *task, long long value)
{
    redisReply *r = rr_object(task, REDIS_REPLY_INTEGER, 0);

    if (r != NULL) {
        r->integer = value;
    }
    return r;
}

static void *
rr_nil(const redisReadTask *task)
{
    return rr_object(task, REDIS_REPLY_NIL, 0);
}

/* OBJ is a reply's root (hiredis 0.14 frees nothing else): all of it. */
static void
rr_free(void *obj)
{
    struct rr_head *h;
    struct rr_chunk *c, *next;

    if (obj == NULL) {
        return;
    }
    h = (struct rr_head *) ((char *) obj - offsetof(struct rr_head, root));
    for (c = h->chunks; c != &h->chunk; c = next) {
        next = c->next;
        free(c);
    }
    free(h);
}

static redisReplyObjectFunctions rr_functions = {
    rr_string, rr_array, rr_integer, rr_nil, rr_free
};

/*
 * The function set (see xg_rreply.h). A static table, not state: hiredis
 * takes it by a non-const pointer and never writes it.
 */
redisReplyObjectFunctions *
xg_rreply_functions(void)
{
    return &rr_functions;
}
