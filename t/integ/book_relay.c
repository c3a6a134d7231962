/*
 * book_relay.c: the gateway's book wiring in miniature, for
 * test_book_relay.py. It reads upstream events on stdin and writes what
 * the gateway would send its clients on stdout, calling the book
 * (src/xg_book.c) through the Deribit venue's book messages
 * (modules/venue/xg_venue_deribit_book.c) exactly as the deribit module
 * is meant to (docs/book.md):
 *
 *   stdin                      stdout
 *   M CHANNEL NOTIFICATION     O CHANNEL TEXT   to every subscriber that
 *                                               holds the book (the
 *                                               original bytes, or a
 *                                               bridge after a mark)
 *                              J CHANNEL TEXT   to one waiting joiner
 *                              R CHANNEL        resync needed (a gap)
 *                              E CHANNEL REASON malformed upstream data
 *   D CHANNEL                  (upstream down: mark + invalidate)
 *   J CHANNEL                  J CHANNEL TEXT now when the book is in
 *                              sync, else when the next snapshot arrives
 *   S CHANNEL                  T CHANNEL KIND SYNCED CHANGE_ID GAPS WAITS
 *                              ERRORS ANOMALIES LEVELS BYTES
 *
 * Grouped books (XG_BOOK_IMAGE) pass through untouched.
 */
#include "xg_core.h"
#include "xg_venue_deribit.h"
#include "xg_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAXCH 32

struct relay_chan {
    char                 *name;
    enum xg_book_kind     kind;
    struct xg_book       *book;
    struct xg_book_state *mark;     /* what the subscribers last saw */
    int                   joiners;  /* waiting for a snapshot */
    int                   started;  /* subscribers have a book */
};

static struct relay_chan chans[MAXCH];
static int nchans;

static struct relay_chan *
chan_get(const char *name)
{
    struct relay_chan *c;
    int i;

    for (i = 0; i < nchans; i++) {
        if (strcmp(chans[i].name, name) == 0) {
            return &chans[i];
        }
    }
    if (nchans == MAXCH) {
        return NULL;
    }
    c = &chans[nchans++];
    c->name = xg_strdup(name);
    c->kind = xg_venue_deribit_book_kind(name);
    c->book = c->kind == XG_BOOK_DELTA ? xg_venue_deribit_book_new(name, NULL)
                                       : NULL;
    return c;
}

static void
out(const char *tag, const struct relay_chan *c, const char *text)
{
    printf("%s %s %s\n", tag, c->name, text);
}

/* The snapshot for joiners that waited for it. */
static void
serve_joiners(struct relay_chan *c)
{
    for (; c->joiners > 0; c->joiners--) {
        char *t = xg_venue_deribit_book_snapshot(c->book, NULL);

        out("J", c, t);
        free(t);
    }
}

static void
on_message(struct relay_chan *c, const char *msg)
{
    enum xg_book_result r;
    char *t;

    if (c->book == NULL) {
        out("O", c, msg);
        return;
    }
    r = xg_venue_deribit_book_apply_notification(c->book, msg, strlen(msg));
    switch (r) {
    case XG_BOOK_APPLIED:
        out("O", c, msg);
        break;
    case XG_BOOK_SNAPSHOT:
        if (c->mark != NULL || xg_book_replaced(c->book) != NULL) {
            /* subscribers hold the marked (or just replaced) book: one
             * bridging change instead of a second snapshot */
            t = xg_venue_deribit_book_bridge(c->mark ? c->mark
                : xg_book_replaced(c->book), c->book, NULL);
            out("O", c, t);
            free(t);
            xg_book_state_unref(c->mark);
            c->mark = NULL;
        } else if (!c->started) {
            out("O", c, msg);   /* the first snapshot: as the exchange sent */
        }
        c->started = 1;
        serve_joiners(c);
        break;
    case XG_BOOK_GAP:
        if (c->mark == NULL) {
            c->mark = xg_book_mark(c->book);
        }
        printf("R %s\n", c->name);
        break;
    case XG_BOOK_WAIT:
        break;
    case XG_BOOK_ERROR:
        out("E", c, xg_book_last_error(c->book));
        break;
    }
}

static void
on_down(struct relay_chan *c)
{
    if (c->book == NULL) {
        return;
    }
    /* a gap resync in flight already holds what the subscribers saw */
    if (c->mark == NULL && xg_book_synced(c->book)) {
        c->mark = xg_book_mark(c->book);
    }
    xg_book_invalidate(c->book);
}

static void
on_join(struct relay_chan *c)
{
    char *t;

    if (c->book == NULL) {
        return;
    }
    if (xg_book_synced(c->book)) {
        t = xg_venue_deribit_book_snapshot(c->book, NULL);
        out("J", c, t);
        free(t);
        return;
    }
    c->joiners++;
}

static void
on_stats(struct relay_chan *c)
{
    struct xg_book_stats st;

    memset(&st, 0, sizeof(st));
    if (c->book != NULL) {
        xg_book_stats(c->book, &st);
    }
    printf("T %s %d %d %llu %llu %llu %llu %llu %zu %zu\n", c->name, c->kind,
        st.synced, (unsigned long long) st.seq,
        (unsigned long long) st.gaps, (unsigned long long) st.waits,
        (unsigned long long) st.errors, (unsigned long long) st.anomalies,
        st.nbids + st.nasks, st.bytes);
}

int
main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int i;

    xg_log_open(NULL, XG_LOG_WARN);
    while ((n = getline(&line, &cap, stdin)) > 0) {
        char *sp, *name, *rest;
        struct relay_chan *c;

        if (line[n - 1] == '\n') {
            line[--n] = '\0';
        }
        if (n < 3 || line[1] != ' ') {
            continue;
        }
        name = line + 2;
        sp = strchr(name, ' ');
        rest = sp ? sp + 1 : NULL;
        if (sp != NULL) {
            *sp = '\0';
        }
        c = chan_get(name);
        if (c == NULL) {
            continue;
        }
        switch (line[0]) {
        case 'M':
            if (rest != NULL) {
                on_message(c, rest);
            }
            break;
        case 'D':
            on_down(c);
            break;
        case 'J':
            on_join(c);
            break;
        case 'S':
            on_stats(c);
            break;
        }
        fflush(stdout);
    }
    free(line);
    for (i = 0; i < nchans; i++) {
        xg_book_state_unref(chans[i].mark);
        xg_book_free(chans[i].book);
        free(chans[i].name);
    }
    return 0;
}
