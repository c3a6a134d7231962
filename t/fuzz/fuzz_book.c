/*
 * fuzz_book.c: libFuzzer target for the order book (src/xg_book.c) fed
 * by the Deribit venue's parser and read through its encoder
 * (modules/venue/xg_venue_deribit_book.c). The input is split
 * on newlines into up to 64 messages, applied in turn to a book that
 * starts from a known snapshot (even pieces as notification `data`, odd
 * ones as whole notifications). Besides "never crashes, never leaks",
 * it checks the bridge: a second book that holds the first one's
 * starting state must, after applying the bridge text the first book
 * builds, hold exactly the first book's levels; and the snapshot text
 * at the end must be JSON. A failed check aborts, which libFuzzer reports.
 */
#include "xg_core.h"
#include "xg_venue_deribit.h"
#include "xg_log.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CH "book.BTC-PERPETUAL.raw"

static const char start[] = "{\"type\":\"snapshot\",\"timestamp\":1,"
    "\"instrument_name\":\"BTC-PERPETUAL\",\"change_id\":1,"
    "\"bids\":[[\"new\",100.5,1],[\"new\",100,2.5],[\"new\",99.25,3]],"
    "\"asks\":[[\"new\",101,1],[\"new\",101.5,0.1],[\"new\",102,7]]}";

static void
check_json(const char *t)
{
    json_t *j;

    if (t == NULL) {
        return;
    }
    j = json_loads(t, 0, NULL);
    if (j == NULL) {
        abort();
    }
    json_decref(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int inited;
    struct xg_book *a, *b;
    struct xg_book_state *mark, *mb;
    const char *p = (const char *) data, *end = p + size;
    char *t;
    int piece = 0;

    if (!inited) {
        xg_log_open(NULL, XG_LOG_ERROR);
        inited = 1;
    }
    a = xg_venue_deribit_book_new(CH, NULL);
    b = xg_venue_deribit_book_new(CH, NULL);
    xg_book_set_max_levels(a, 64);
    if (xg_venue_deribit_book_apply_text(a, start, sizeof(start) - 1)
        != XG_BOOK_SNAPSHOT) {
        abort();
    }
    t = xg_venue_deribit_book_snapshot(a, NULL);
    if (xg_venue_deribit_book_apply_notification(b, t, strlen(t))
        != XG_BOOK_SNAPSHOT) {
        abort();
    }
    free(t);
    mark = xg_book_mark(a);

    while (p < end && piece < 64) {
        const char *nl = memchr(p, '\n', (size_t) (end - p));
        size_t len = nl ? (size_t) (nl - p) : (size_t) (end - p);

        if (piece % 2 == 0) {
            xg_venue_deribit_book_apply_text(a, p, len);
        } else {
            xg_venue_deribit_book_apply_notification(a, p, len);
        }
        p += len + (nl != NULL);
        piece++;
    }

    t = xg_venue_deribit_book_snapshot(a, NULL);
    check_json(t);
    free(t);
    if (xg_book_synced(a)) {
        t = xg_venue_deribit_book_bridge(mark, a, NULL);
        check_json(t);
        if (xg_venue_deribit_book_apply_notification(b, t, strlen(t))
            != XG_BOOK_APPLIED) {
            abort();
        }
        free(t);
        mb = xg_book_mark(b);
        if (!xg_book_state_equal(mb, a)
            || xg_book_seq(b) != xg_book_seq(a)) {
            abort();
        }
        xg_book_state_unref(mb);
    }
    xg_book_state_unref(mark);
    xg_book_free(a);
    xg_book_free(b);
    return 0;
}
