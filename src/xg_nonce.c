/*
 * xg_nonce.c: the used-nonce store (see xg_nonce.h).
 *
 * Each pair is a SHA-256 digest of "ID\0NONCE" (fixed size whatever the
 * client sends) in a slab of CAP entries, found through a chained hash
 * table and expired through a binary min-heap on the time it stops
 * mattering. Timestamps inside the window differ by up to twice its
 * width, so pairs do not end in the order they came: the heap keeps the
 * expiry exact, and a full store really holds CAP live pairs.
 */
#include "xg_core.h"
#include "xg_nonce.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#define NONCE_MD    32                  /* SHA-256 */
#define NONCE_NIL   UINT32_MAX

struct nonce_ent {
    unsigned char  md[NONCE_MD];
    uint64_t       until_ms;            /* dropped at this time */
    uint32_t       next;                /* bucket chain, or the free list */
};

struct xg_nonce {
    uint64_t           window_ms;
    uint32_t           cap;
    uint32_t           nbuckets;        /* a power of two >= cap */
    uint32_t           n;               /* pairs held (= heap size) */
    uint32_t           used;            /* slab entries ever handed out */
    uint32_t           free;            /* freed entries, NONCE_NIL ends */
    uint32_t          *buckets;         /* the arrays: NULL until first use */
    uint32_t          *heap;            /* entry indices, soonest first */
    struct nonce_ent  *ents;
};

struct xg_nonce *
xg_nonce_new(uint64_t window_ms, size_t cap)
{
    struct xg_nonce *ns = xg_calloc(1, sizeof(*ns));

    ns->window_ms = window_ms;
    ns->cap = cap == 0 ? 1 : cap > UINT32_MAX / 4 ? UINT32_MAX / 4
              : (uint32_t) cap;
    ns->free = NONCE_NIL;
    return ns;
}

void
xg_nonce_free(struct xg_nonce *ns)
{
    if (ns == NULL) {
        return;
    }
    free(ns->buckets);
    free(ns->heap);
    free(ns->ents);
    free(ns);
}

size_t
xg_nonce_count(const struct xg_nonce *ns)
{
    return ns->n;
}

static int
nonce_digest(const char *id, const char *nonce, unsigned char *md)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok;

    ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1
         && EVP_DigestUpdate(ctx, id, strlen(id) + 1) == 1
         && EVP_DigestUpdate(ctx, nonce, strlen(nonce)) == 1
         && EVP_DigestFinal_ex(ctx, md, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    return ok ? XG_OK : XG_ERROR;
}

static uint32_t
nonce_bucket(const struct xg_nonce *ns, const unsigned char *md)
{
    uint32_t h;

    memcpy(&h, md, sizeof(h));
    return h & (ns->nbuckets - 1);
}

static int
nonce_before(const struct xg_nonce *ns, uint32_t i, uint32_t j)
{
    return ns->ents[ns->heap[i]].until_ms < ns->ents[ns->heap[j]].until_ms;
}

static void
nonce_swap(struct xg_nonce *ns, uint32_t i, uint32_t j)
{
    uint32_t t = ns->heap[i];

    ns->heap[i] = ns->heap[j];
    ns->heap[j] = t;
}

/* Drops the pair at the top of the heap (the soonest to end). */
static void
nonce_pop(struct xg_nonce *ns)
{
    uint32_t e = ns->heap[0], *pp, i = 0;

    for (pp = &ns->buckets[nonce_bucket(ns, ns->ents[e].md)]; *pp != e;
        pp = &ns->ents[*pp].next)
    {
        /* the entry is on its bucket's chain */
    }
    *pp = ns->ents[e].next;
    ns->ents[e].next = ns->free;
    ns->free = e;
    ns->heap[0] = ns->heap[--ns->n];
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < ns->n && nonce_before(ns, l, m)) {
            m = l;
        }
        if (r < ns->n && nonce_before(ns, r, m)) {
            m = r;
        }
        if (m == i) {
            break;
        }
        nonce_swap(ns, i, m);
        i = m;
    }
}

static void
nonce_alloc(struct xg_nonce *ns)
{
    uint32_t i;

    ns->nbuckets = 1;
    while (ns->nbuckets < ns->cap) {
        ns->nbuckets <<= 1;
    }
    ns->buckets = xg_malloc(ns->nbuckets * sizeof(*ns->buckets));
    for (i = 0; i < ns->nbuckets; i++) {
        ns->buckets[i] = NONCE_NIL;
    }
    ns->heap = xg_malloc(ns->cap * sizeof(*ns->heap));
    ns->ents = xg_malloc(ns->cap * sizeof(*ns->ents));
}

int
xg_nonce_use(struct xg_nonce *ns, const char *id, const char *nonce,
    uint64_t ts_ms, uint64_t now_ms)
{
    unsigned char md[NONCE_MD];
    uint32_t e, b, i;

    if (nonce_digest(id, nonce, md) != XG_OK) {
        return XG_AGAIN;
    }
    if (ns->ents == NULL) {
        nonce_alloc(ns);
    }
    while (ns->n > 0 && ns->ents[ns->heap[0]].until_ms <= now_ms) {
        nonce_pop(ns);
    }
    b = nonce_bucket(ns, md);
    for (e = ns->buckets[b]; e != NONCE_NIL; e = ns->ents[e].next) {
        if (memcmp(ns->ents[e].md, md, NONCE_MD) == 0) {
            return XG_ERROR;
        }
    }
    if (ns->n == ns->cap) {
        return XG_AGAIN;
    }
    if (ns->free != NONCE_NIL) {
        e = ns->free;
        ns->free = ns->ents[e].next;
    } else {
        e = ns->used++;
    }
    memcpy(ns->ents[e].md, md, NONCE_MD);
    ns->ents[e].until_ms = ts_ms + ns->window_ms;
    ns->ents[e].next = ns->buckets[b];
    ns->buckets[b] = e;
    i = ns->n++;
    ns->heap[i] = e;
    while (i > 0 && nonce_before(ns, i, (i - 1) / 2)) {
        nonce_swap(ns, i, (i - 1) / 2);
        i = (i - 1) / 2;
    }
    return XG_OK;
}
