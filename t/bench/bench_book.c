/*
 * bench_book.c: measures the order book (src/xg_book.c, fed and read
 * through the Deribit venue's book messages,
 * modules/venue/xg_venue_deribit_book.c): the cost of applying changes
 * (per level, with and without the JSON parse), the memory a book holds
 * at N levels a side, and the cost of a mark, the first change after it
 * (copy on write), a bridge and a snapshot text.
 *
 *   bench_book [levels...]      default: 100 1000 10000
 *
 * Changes touch a level at a depth drawn either near the top of the book
 * (geometric, mean 5 levels: what real books do) or uniformly over the
 * whole side (the worst case for the array layout). Prints one line per
 * measurement.
 */
#include "xg_core.h"
#include "xg_venue_deribit.h"
#include "xg_log.h"

#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CH "book.BTC-PERPETUAL.raw"
#define NMSG 20000

static uint64_t rs = 88172645463325252ULL;

static uint64_t
rnd64(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}

static size_t
depth(size_t n, int top)
{
    size_t d;

    if (!top) {
        return (size_t) (rnd64() % n);
    }
    /* geometric with mean ~5 */
    d = (size_t) (-log(((double) (rnd64() >> 11) + 1) / 9007199254740993.0)
        * 5.0);
    return d < n ? d : n - 1;
}

static double
price(int side, size_t d)
{
    return side ? 50000.5 + 0.5 * (double) d : 50000.0 - 0.5 * (double) d;
}

static json_t *
snapshot(size_t n, uint64_t id)
{
    json_t *s[2];
    size_t i;
    int k;

    for (k = 0; k < 2; k++) {
        s[k] = json_array();
        for (i = 0; i < n; i++) {
            json_array_append_new(s[k], json_pack("[s,f,f]", "new",
                price(k, i), 10.0 + (double) (i % 7)));
        }
    }
    return json_pack("{s:s,s:I,s:s,s:I,s:o,s:o}", "type", "snapshot",
        "timestamp", (json_int_t) 1, "instrument_name", "BTC-PERPETUAL",
        "change_id", (json_int_t) id, "bids", s[0], "asks", s[1]);
}

/*
 * NMSG chained changes on a book of N levels a side, 3 level entries
 * each: one amount change, and one level removed and put back (so the
 * size stays N and both moves of the array are exercised).
 */
static json_t **
changes(size_t n, int top, uint64_t id)
{
    json_t **m = xg_malloc(NMSG * sizeof(*m));
    size_t i;

    for (i = 0; i < NMSG; i++) {
        int k = (int) (rnd64() & 1);
        size_t d1 = depth(n, top), d2 = depth(n, top);
        json_t *s[2] = { json_array(), json_array() };

        json_array_append_new(s[k], json_pack("[s,f,f]", "change",
            price(k, d1), 1.0 + (double) (rnd64() % 100)));
        json_array_append_new(s[!k], json_pack("[s,f,i]", "delete",
            price(!k, d2), 0));
        json_array_append_new(s[!k], json_pack("[s,f,f]", "new",
            price(!k, d2), 3.0));
        m[i] = json_pack("{s:s,s:I,s:s,s:I,s:I,s:o,s:o}", "type", "change",
            "timestamp", (json_int_t) i, "instrument_name", "BTC-PERPETUAL",
            "prev_change_id", (json_int_t) (id + i),
            "change_id", (json_int_t) (id + i + 1), "bids", s[0], "asks",
            s[1]);
    }
    return m;
}

/* CPU time of this thread: the machine is shared, wall time is noise. */
static double
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double) ts.tv_sec * 1e9 + (double) ts.tv_nsec;
}

/* What one now_ns() pair costs (subtracted from single-call timings). */
static double clock_cost;

static void
measure_clock(void)
{
    double t0 = now_ns(), t1;
    int i;

    for (i = 0; i < 10000; i++) {
        (void) now_ns();
    }
    t1 = now_ns();
    clock_cost = (t1 - t0) / 10000;
}

static void
bench_apply(size_t n, int top)
{
    struct xg_book *b = xg_venue_deribit_book_new(CH, NULL);
    json_t *snap = snapshot(n, 1000), **m = changes(n, top, 1000);
    char **text = xg_malloc(NMSG * sizeof(char *));
    double t0, t1;
    size_t i;

    for (i = 0; i < NMSG; i++) {
        text[i] = json_dumps(m[i], JSON_COMPACT);
    }
    /* parsed messages: validation + apply */
    xg_venue_deribit_book_apply(b, snap);
    t0 = now_ns();
    for (i = 0; i < NMSG; i++) {
        if (xg_venue_deribit_book_apply(b, m[i]) != XG_BOOK_APPLIED) {
            fprintf(stderr, "apply failed: %s\n", xg_book_last_error(b));
            exit(1);
        }
    }
    t1 = now_ns();
    printf("apply   levels=%-6zu depth=%-7s %7.0f ns/message  %6.0f ns/level"
        " (json_t in)\n", n, top ? "top" : "uniform", (t1 - t0) / NMSG,
        (t1 - t0) / NMSG / 3);
    /* text messages: jansson parse + validation + apply */
    xg_venue_deribit_book_apply(b, snap);
    t0 = now_ns();
    for (i = 0; i < NMSG; i++) {
        if (xg_venue_deribit_book_apply_text(b, text[i], strlen(text[i]))
            != XG_BOOK_APPLIED) {
            exit(1);
        }
    }
    t1 = now_ns();
    printf("apply   levels=%-6zu depth=%-7s %7.0f ns/message  %6.0f ns/level"
        " (text in, %zu bytes/message)\n", n, top ? "top" : "uniform",
        (t1 - t0) / NMSG, (t1 - t0) / NMSG / 3, strlen(text[0]));
    for (i = 0; i < NMSG; i++) {
        json_decref(m[i]);
        free(text[i]);
    }
    free(m);
    free(text);
    json_decref(snap);
    xg_book_free(b);
}

/*
 * Per level entry with the per-message work amortized: 200 messages of
 * 300 amount changes each (every entry a lookup and an update).
 */
static void
bench_levels(size_t n, int top)
{
    enum { NM = 200, NL = 300 };
    struct xg_book *b = xg_venue_deribit_book_new(CH, NULL);
    json_t *snap = snapshot(n, 1), *m[NM];
    double t0, t1;
    size_t i, j;

    for (i = 0; i < NM; i++) {
        json_t *s[2] = { json_array(), json_array() };

        for (j = 0; j < NL; j++) {
            int k = (int) (rnd64() & 1);

            json_array_append_new(s[k], json_pack("[s,f,f]", "change",
                price(k, depth(n, top)), 1.0 + (double) (rnd64() % 100)));
        }
        m[i] = json_pack("{s:s,s:s,s:I,s:I,s:o,s:o}", "type", "change",
            "instrument_name", "BTC-PERPETUAL",
            "prev_change_id", (json_int_t) (1 + i),
            "change_id", (json_int_t) (2 + i), "bids", s[0], "asks", s[1]);
    }
    xg_venue_deribit_book_apply(b, snap);
    t0 = now_ns();
    for (i = 0; i < NM; i++) {
        if (xg_venue_deribit_book_apply(b, m[i]) != XG_BOOK_APPLIED) {
            exit(1);
        }
    }
    t1 = now_ns();
    printf("levels  levels=%-6zu depth=%-7s %7.0f ns/level entry (300-entry "
        "messages, json_t in)\n", n, top ? "top" : "uniform",
        (t1 - t0) / (NM * NL));
    for (i = 0; i < NM; i++) {
        json_decref(m[i]);
    }
    json_decref(snap);
    xg_book_free(b);
}

static void
bench_memory(size_t n)
{
    enum { NB = 50 };
    struct xg_book *b[NB];
    struct xg_book_stats st;
    struct mallinfo2 m0, m1;
    json_t *snap = snapshot(n, 1);
    json_t **m = changes(n, 1, 1);
    size_t i;
    int k;

    m0 = mallinfo2();
    for (k = 0; k < NB; k++) {
        b[k] = xg_venue_deribit_book_new(CH, NULL);
        xg_venue_deribit_book_apply(b[k], snap);
    }
    m1 = mallinfo2();
    xg_book_stats(b[0], &st);
    printf("memory  levels=%-6zu after snapshot: %zu bytes/book counted, "
        "%zu bytes/book by malloc\n", n, st.bytes,
        (m1.uordblks - m0.uordblks) / NB);
    /* after churn the arrays may hold spare capacity */
    for (i = 0; i < 2000; i++) {
        xg_venue_deribit_book_apply(b[0], m[i]);
    }
    xg_book_stats(b[0], &st);
    printf("memory  levels=%-6zu after 2000 changes: %zu bytes/book counted"
        "\n", n, st.bytes);
    for (k = 0; k < NB; k++) {
        xg_book_free(b[k]);
    }
    for (i = 0; i < NMSG; i++) {
        json_decref(m[i]);
    }
    free(m);
    json_decref(snap);
}

static void
bench_bridge(size_t n, size_t nchanges)
{
    enum { REP = 200 };
    struct xg_book *b = xg_venue_deribit_book_new(CH, NULL);
    struct xg_book_state *mk;
    json_t *snap = snapshot(n, 1), **m = changes(n, 0, 1), *snap2;
    double t0, t1, tmark = 0, tcow = 0, tbridge = 0, tsnap = 0;
    size_t i, blen = 0, slen = 0;
    int r;

    for (r = 0; r < REP; r++) {
        char *t;

        xg_venue_deribit_book_apply(b, snap);
        t0 = now_ns();
        for (i = 0; i < 1000; i++) {
            xg_book_state_unref(xg_book_mark(b));
        }
        t1 = now_ns();
        tmark += (t1 - t0) / 1000;
        mk = xg_book_mark(b);
        t0 = now_ns();
        xg_venue_deribit_book_apply(b, m[0]); /* the first change copies */
        t1 = now_ns();
        tcow += t1 - t0 - clock_cost;
        for (i = 1; i < nchanges; i++) {
            xg_venue_deribit_book_apply(b, m[i]);
        }
        /* the resync snapshot: the same book the changes led to */
        t = xg_venue_deribit_book_snapshot(b, NULL);
        snap2 = json_loads(t, 0, NULL);
        free(t);
        xg_book_invalidate(b);
        xg_venue_deribit_book_apply(b, json_object_get(json_object_get(snap2,
            "params"), "data"));
        t0 = now_ns();
        t = xg_venue_deribit_book_bridge(mk, b, NULL);
        t1 = now_ns();
        tbridge += t1 - t0 - clock_cost;
        blen = strlen(t);
        free(t);
        t0 = now_ns();
        t = xg_venue_deribit_book_snapshot(b, NULL);
        t1 = now_ns();
        tsnap += t1 - t0 - clock_cost;
        slen = strlen(t);
        free(t);
        xg_book_state_unref(mk);
        json_decref(snap2);
    }
    printf("bridge  levels=%-6zu after %5zu changes: mark+unref %.0f ns, "
        "first change after mark (copy) %.0f ns, bridge %.1f us (%zu bytes), "
        "snapshot text %.1f us (%zu bytes)\n", n, nchanges, tmark / REP,
        tcow / REP, tbridge / REP / 1000, blen, tsnap / REP / 1000, slen);
    for (i = 0; i < NMSG; i++) {
        json_decref(m[i]);
    }
    free(m);
    json_decref(snap);
    xg_book_free(b);
}

int
main(int argc, char **argv)
{
    size_t def[] = { 100, 1000, 10000 }, lv[16];
    int nlv = 0, i;

    xg_log_open(NULL, XG_LOG_ERROR);
    measure_clock();
    for (i = 1; i < argc && nlv < 16; i++) {
        lv[nlv++] = (size_t) strtoul(argv[i], NULL, 10);
    }
    if (nlv == 0) {
        memcpy(lv, def, sizeof(def));
        nlv = 3;
    }
    for (i = 0; i < nlv; i++) {
        bench_apply(lv[i], 1);
        bench_apply(lv[i], 0);
        bench_levels(lv[i], 1);
        bench_levels(lv[i], 0);
        bench_memory(lv[i]);
        bench_bridge(lv[i], 100);
        bench_bridge(lv[i], 5000);
    }
    return 0;
}
