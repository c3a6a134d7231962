/*
 * xg_venue_deribit_book.c: Deribit's order-book messages around the
 * generic book (see xg_venue_deribit.h): the channel rule, parsing a
 * snapshot or change into level operations, and writing the bridging
 * change and the late joiner's snapshot from the book's diff.
 *
 * Numbers. Prices and amounts are re-emitted as the shortest decimal
 * text that parses back to the same double (%.15g, else %.16g, else
 * %.17g), as an integer when the exchange wrote an integer and with a
 * ".0" when it wrote a real that prints without a point, so a client's
 * float parse gives exactly the exchange's value and the text is the
 * exchange's own in every case where the exchange writes shortest reals
 * (it does: 5042.34, 50000.0). Jansson's own real output uses 17 digits
 * (5042.3400000000001), which is why levels are written by hand here;
 * strings are escaped by jansson.
 */
#include "xg_core.h"
#include "xg_venue_deribit.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Integers up to 2^53 are exact as doubles and re-emitted as integers. */
#define DR_INT_EXACT 9007199254740992LL

/* What the venue keeps with each book (xg_book_set_venue_data). */
struct dr_bookdata {
    char *instrument;
    char *channel_json;     /* quoted and escaped */
    char *instrument_json;
};

/* ---- channel names ------------------------------------------------------ */

/*
 * Splits CHANNEL on '.' into at most 6 parts; returns the count, or 0
 * when a part is empty or there are more than 6.
 */
static int
split_channel(const char *channel, const char *part[6], size_t len[6])
{
    const char *p = channel, *dot;
    int n = 0;

    for (;;) {
        if (n == 6) {
            return 0;
        }
        dot = strchr(p, '.');
        part[n] = p;
        len[n] = dot ? (size_t) (dot - p) : strlen(p);
        if (len[n] == 0) {
            return 0;
        }
        n++;
        if (dot == NULL) {
            return n;
        }
        p = dot + 1;
    }
}

enum xg_book_kind
xg_venue_deribit_book_kind(const char *channel)
{
    const char *part[6];
    size_t len[6], i;
    int n;

    if (channel == NULL) {
        return XG_BOOK_NOT_BOOK;
    }
    n = split_channel(channel, part, len);
    if (n < 3 || len[0] != 4 || memcmp(part[0], "book", 4) != 0) {
        return XG_BOOK_NOT_BOOK;
    }
    if (n == 3) {
        return XG_BOOK_DELTA;
    }
    if (n == 5) {
        /* book.I.GROUP.DEPTH.INTERVAL: DEPTH is a number */
        for (i = 0; i < len[3]; i++) {
            if (part[3][i] < '0' || part[3][i] > '9') {
                return XG_BOOK_NOT_BOOK;
            }
        }
        return XG_BOOK_IMAGE;
    }
    return XG_BOOK_NOT_BOOK;
}

/* ---- books -------------------------------------------------------------- */

/* Returns S as a quoted, escaped JSON string (malloc'd), via jansson. */
static char *
json_quote(const char *s)
{
    json_t *j = json_string(s);
    char *out;

    if (j == NULL) {
        /* not UTF-8: never the case for a channel the registry accepted */
        j = json_string("");
    }
    out = json_dumps(j, JSON_ENCODE_ANY);
    json_decref(j);
    if (out == NULL) {
        return xg_strdup("\"\"");
    }
    return out;
}

static void
bookdata_free(void *p)
{
    struct dr_bookdata *bd = p;

    free(bd->instrument);
    free(bd->channel_json);
    free(bd->instrument_json);
    free(bd);
}

struct xg_book *
xg_venue_deribit_book_new(const char *channel, const char *instrument)
{
    struct xg_book *b;
    struct dr_bookdata *bd;
    const char *part[6];
    size_t len[6];

    if (xg_venue_deribit_book_kind(channel) != XG_BOOK_DELTA) {
        return NULL;
    }
    bd = xg_calloc(1, sizeof(*bd));
    if (instrument != NULL) {
        bd->instrument = xg_strdup(instrument);
    } else {
        split_channel(channel, part, len);
        bd->instrument = xg_strndup(part[1], len[1]);
    }
    bd->channel_json = json_quote(channel);
    bd->instrument_json = json_quote(bd->instrument);
    b = xg_book_new(channel);
    xg_book_set_venue_data(b, bd, sizeof(*bd) + strlen(bd->instrument) + 1
        + strlen(bd->channel_json) + 1 + strlen(bd->instrument_json) + 1,
        bookdata_free);
    return b;
}

/* ---- parsing ------------------------------------------------------------ */

/* A JSON number as a double; *IS_INT when written as an exact integer. */
static int
get_number(const json_t *j, double *v, unsigned char *is_int)
{
    if (json_is_integer(j)) {
        json_int_t i = json_integer_value(j);

        *v = (double) i;
        *is_int = i <= DR_INT_EXACT && i >= -DR_INT_EXACT;
        return XG_OK;
    }
    if (json_is_real(j)) {
        *v = json_real_value(j);
        *is_int = 0;
        return isfinite(*v) ? XG_OK : XG_ERROR;
    }
    return XG_ERROR;
}

/* A non-negative JSON integer (change ids). */
static int
get_id(const json_t *j, uint64_t *v)
{
    if (!json_is_integer(j) || json_integer_value(j) < 0) {
        return XG_ERROR;
    }
    *v = (uint64_t) json_integer_value(j);
    return XG_OK;
}

/*
 * Parses side NAME of a message into a malloc'd array of ops (*OPS, *N;
 * NULL and 0 when empty). Returns XG_OK, or XG_ERROR after rejecting the
 * message (as WHAT) on B.
 */
static int
parse_side(struct xg_book *b, const char *what, const json_t *arr,
    const char *name, struct xg_book_op **ops, size_t *n)
{
    size_t i, cnt;
    struct xg_book_op *o;

    *ops = NULL;
    *n = 0;
    if (!json_is_array(arr)) {
        xg_book_reject(b, what, "%s is missing or not an array", name);
        return XG_ERROR;
    }
    cnt = json_array_size(arr);
    if (cnt > xg_book_max_levels(b)) {
        xg_book_reject(b, what, "%s has %zu levels, more than the limit %zu",
            name, cnt, xg_book_max_levels(b));
        return XG_ERROR;
    }
    if (cnt == 0) {
        return XG_OK;
    }
    o = xg_malloc(cnt * sizeof(*o));
    for (i = 0; i < cnt; i++) {
        const json_t *e = json_array_get(arr, i);
        const char *act;

        if (!json_is_array(e) || json_array_size(e) != 3) {
            xg_book_reject(b, what, "%s[%zu] is not an [action, price, "
                "amount] array", name, i);
            goto fail;
        }
        act = json_string_value(json_array_get(e, 0));
        if (act == NULL) {
            xg_book_reject(b, what, "%s[%zu]: action is not a string", name,
                i);
            goto fail;
        }
        if (strcmp(act, "new") == 0) {
            o[i].action = XG_BOOK_NEW;
        } else if (strcmp(act, "change") == 0) {
            o[i].action = XG_BOOK_CHANGE;
        } else if (strcmp(act, "delete") == 0) {
            o[i].action = XG_BOOK_DELETE;
        } else {
            xg_book_reject(b, what, "%s[%zu]: unknown action", name, i);
            goto fail;
        }
        if (get_number(json_array_get(e, 1), &o[i].price, &o[i].pint)
            != XG_OK) {
            xg_book_reject(b, what, "%s[%zu]: price is not a finite number",
                name, i);
            goto fail;
        }
        if (get_number(json_array_get(e, 2), &o[i].amount, &o[i].aint)
            != XG_OK) {
            xg_book_reject(b, what, "%s[%zu]: amount is not a finite number",
                name, i);
            goto fail;
        }
        if (o[i].amount < 0) {
            xg_book_reject(b, what, "%s[%zu]: amount is negative", name, i);
            goto fail;
        }
        if (o[i].price == 0) {
            o[i].price = 0;     /* -0 and 0 are one level */
        }
    }
    *ops = o;
    *n = cnt;
    return XG_OK;

fail:
    free(o);
    return XG_ERROR;
}

enum xg_book_result
xg_venue_deribit_book_apply(struct xg_book *b, const json_t *data)
{
    const struct dr_bookdata *bd = xg_book_venue_data(b);
    const json_t *type, *prev_j, *ts_j;
    const char *inst, *tname, *what;
    struct xg_book_update u;
    enum xg_book_result r;
    int k;

    memset(&u, 0, sizeof(u));
    if (bd == NULL) {
        return xg_book_reject(b, "message", "not a Deribit book");
    }
    if (!json_is_object(data)) {
        return xg_book_reject(b, "message", "data is not an object");
    }
    inst = json_string_value(json_object_get(data, "instrument_name"));
    if (inst == NULL || strcmp(inst, bd->instrument) != 0) {
        return xg_book_reject(b, "message", "instrument_name is %s",
            inst ? "another instrument" : "missing or not a string");
    }
    if (get_id(json_object_get(data, "change_id"), &u.seq) != XG_OK) {
        return xg_book_reject(b, "message", "change_id is missing or not a "
            "non-negative integer");
    }
    prev_j = json_object_get(data, "prev_change_id");
    if (prev_j != NULL && get_id(prev_j, &u.prev) != XG_OK) {
        return xg_book_reject(b, "message", "prev_change_id is not a "
            "non-negative integer");
    }
    ts_j = json_object_get(data, "timestamp");
    if (ts_j != NULL) {
        if (!json_is_integer(ts_j)) {
            return xg_book_reject(b, "message", "timestamp is not an "
                "integer");
        }
        u.timestamp = json_integer_value(ts_j);
        u.has_ts = 1;
    }
    type = json_object_get(data, "type");
    if (type == NULL) {
        u.snapshot = prev_j == NULL;
    } else {
        tname = json_string_value(type);
        if (tname != NULL && strcmp(tname, "snapshot") == 0) {
            u.snapshot = 1;
        } else if (tname != NULL && strcmp(tname, "change") == 0) {
            u.snapshot = 0;
            if (prev_j == NULL) {
                return xg_book_reject(b, "change", "a change without "
                    "prev_change_id");
            }
        } else {
            return xg_book_reject(b, "message", "type is neither "
                "\"snapshot\" nor \"change\"");
        }
    }

    /* the chain before the levels: a change that cannot apply now is
       dropped or resynced whatever its levels say */
    if (!u.snapshot) {
        r = xg_book_chain(b, u.prev, u.seq);
        if (r != XG_BOOK_APPLIED) {
            return r;
        }
    }
    what = u.snapshot ? "snapshot" : "change";
    for (k = 0; k < 2; k++) {
        if (parse_side(b, what, json_object_get(data, k ? "asks" : "bids"),
                k ? "asks" : "bids", &u.ops[k], &u.nops[k]) != XG_OK) {
            r = XG_BOOK_ERROR;
            goto done;
        }
    }
    r = xg_book_apply(b, &u);

done:
    free(u.ops[0]);
    free(u.ops[1]);
    return r;
}

enum xg_book_result
xg_venue_deribit_book_apply_text(struct xg_book *b, const char *data,
    size_t len)
{
    json_error_t e;
    json_t *j;
    enum xg_book_result r;

    j = json_loadb(data, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        return xg_book_reject(b, "message", "not JSON: %s at %d", e.text,
            e.position);
    }
    r = xg_venue_deribit_book_apply(b, j);
    json_decref(j);
    return r;
}

enum xg_book_result
xg_venue_deribit_book_apply_notification(struct xg_book *b, const char *msg,
    size_t len)
{
    json_error_t e;
    json_t *j, *params;
    const char *ch;
    enum xg_book_result r;

    j = json_loadb(msg, len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        return xg_book_reject(b, "notification", "not JSON: %s at %d",
            e.text, e.position);
    }
    params = json_object_get(j, "params");
    ch = json_string_value(json_object_get(params, "channel"));
    if (ch == NULL || strcmp(ch, xg_book_name(b)) != 0) {
        json_decref(j);
        return xg_book_reject(b, "notification", "params.channel is %s",
            ch ? "another channel" : "missing");
    }
    r = xg_venue_deribit_book_apply(b, json_object_get(params, "data"));
    json_decref(j);
    return r;
}

/* ---- output ------------------------------------------------------------- */

struct sbuf {
    char  *p;
    size_t len, cap;
};

static void
sb_put(struct sbuf *sb, const char *s, size_t n)
{
    if (sb->len + n + 1 > sb->cap) {
        size_t cap = sb->cap ? sb->cap : 256;

        while (sb->len + n + 1 > cap) {
            cap *= 2;
        }
        sb->p = xg_realloc(sb->p, cap);
        sb->cap = cap;
    }
    memcpy(sb->p + sb->len, s, n);
    sb->len += n;
    sb->p[sb->len] = '\0';
}

static void
sb_puts(struct sbuf *sb, const char *s)
{
    sb_put(sb, s, strlen(s));
}

static void
sb_u64(struct sbuf *sb, uint64_t v)
{
    char buf[24];

    sb_put(sb, buf, (size_t) snprintf(buf, sizeof(buf), "%llu",
        (unsigned long long) v));
}

/*
 * Appends V as JSON number text: an integer when IS_INT, else the
 * shortest of %.15g/%.16g/%.17g that reads back as V, with ".0" added
 * when that text would read as an integer.
 */
static void
sb_num(struct sbuf *sb, double v, int is_int)
{
    char buf[40];
    int n, prec;

    static const double p10[] = { 1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7,
                                  1e8, 1e9 };
    int d;

    if (is_int) {
        n = snprintf(buf, sizeof(buf), "%lld", (long long) v);
        sb_put(sb, buf, (size_t) n);
        return;
    }
    /*
     * Fast path for prices and amounts with few decimals: the first D
     * for which M = round(V * 10^D) gives back V. M and 10^D are exact
     * doubles, so M / 10^D is correctly rounded, which is what any
     * correct float parse of the text "M with D decimals" returns
     * (Clinger's fast path). The smallest D gives the shortest text.
     * printf's %g is ten times slower, and a snapshot has 4 numbers a
     * level.
     */
    for (d = 0; d < (int) XG_NELEM(p10); d++) {
        double m = nearbyint(v * p10[d]);

        if (fabs(m) < (double) DR_INT_EXACT && m / p10[d] == v) {
            char digits[24];
            unsigned long long u = (unsigned long long) fabs(m);
            int nd = 0, o = 0;

            do {
                digits[nd++] = (char) ('0' + u % 10);
                u /= 10;
            } while (u > 0);
            while (nd <= d) {
                digits[nd++] = '0';     /* 0.05: leading zeros */
            }
            if (signbit(v) && m != 0) {
                buf[o++] = '-';
            }
            while (nd > d) {
                buf[o++] = digits[--nd];
            }
            buf[o++] = '.';
            if (d == 0) {
                buf[o++] = '0';
            }
            while (nd > 0) {
                buf[o++] = digits[--nd];
            }
            sb_put(sb, buf, (size_t) o);
            return;
        }
    }
    for (prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, sizeof(buf), "%.*g", prec, v);
        if (strtod(buf, NULL) == v) {
            break;
        }
    }
    if (strpbrk(buf, ".en") == NULL) {
        memcpy(buf + n, ".0", 3);
        n += 2;
    }
    sb_put(sb, buf, (size_t) n);
}

/* The envelope up to and including `"data":{"type":"TYPE"`. */
static void
sb_head(struct sbuf *sb, const struct xg_book *b,
    const struct dr_bookdata *bd, const char *channel, const char *type)
{
    int64_t ts;

    sb_puts(sb, "{\"jsonrpc\":\"2.0\",\"method\":\"subscription\","
        "\"params\":{\"channel\":");
    if (channel == NULL || strcmp(channel, xg_book_name(b)) == 0) {
        sb_puts(sb, bd->channel_json);
    } else {
        char *q = json_quote(channel);

        sb_puts(sb, q);
        free(q);
    }
    sb_puts(sb, ",\"data\":{\"type\":\"");
    sb_puts(sb, type);
    sb_puts(sb, "\"");
    if (xg_book_state_timestamp(xg_book_current(b), &ts)) {
        char buf[24];

        sb_puts(sb, ",\"timestamp\":");
        sb_put(sb, buf, (size_t) snprintf(buf, sizeof(buf), "%lld",
            (long long) ts));
    }
    sb_puts(sb, ",\"instrument_name\":");
    sb_puts(sb, bd->instrument_json);
}

/*
 * Appends `,"bids":[...],"asks":[...]}}}` from the N OPS of a diff
 * (NBIDS bids first), every level as [action, price, amount].
 */
static void
sb_levels(struct sbuf *sb, const struct xg_book_op *ops, size_t n,
    size_t nbids)
{
    static const char *const act[] = {
        [XG_BOOK_NEW] = "[\"new\",",
        [XG_BOOK_CHANGE] = "[\"change\",",
        [XG_BOOK_DELETE] = "[\"delete\",",
    };
    size_t i;

    sb_puts(sb, ",\"bids\":[");
    for (i = 0; i < n; i++) {
        if (i == nbids) {
            sb_puts(sb, "],\"asks\":[");
        } else if (i > 0) {
            sb_put(sb, ",", 1);
        }
        sb_puts(sb, act[ops[i].action]);
        sb_num(sb, ops[i].price, ops[i].pint);
        sb_put(sb, ",", 1);
        sb_num(sb, ops[i].amount, ops[i].aint);
        sb_put(sb, "]", 1);
    }
    if (nbids == n) {
        sb_puts(sb, "],\"asks\":[");
    }
    sb_puts(sb, "]}}}");
}

char *
xg_venue_deribit_book_snapshot(const struct xg_book *b, const char *channel)
{
    const struct dr_bookdata *bd = xg_book_venue_data(b);
    const struct xg_book_state *cur = xg_book_current(b);
    struct sbuf sb = { NULL, 0, 0 };
    struct xg_book_op *ops;
    size_t n, nbids;

    if (!xg_book_synced(b) || bd == NULL) {
        return NULL;
    }
    /* the diff from nothing: every level `new`, best first */
    ops = xg_book_diff(NULL, cur, &n, &nbids);
    sb_head(&sb, b, bd, channel, "snapshot");
    sb_puts(&sb, ",\"change_id\":");
    sb_u64(&sb, xg_book_state_seq(cur));
    sb_levels(&sb, ops, n, nbids);
    free(ops);
    return sb.p;
}

char *
xg_venue_deribit_book_bridge(const struct xg_book_state *old,
    const struct xg_book *now, const char *channel)
{
    const struct dr_bookdata *bd = xg_book_venue_data(now);
    const struct xg_book_state *cur = xg_book_current(now);
    struct sbuf sb = { NULL, 0, 0 };
    struct xg_book_op *ops;
    size_t n, nbids;

    if (old == NULL || !xg_book_synced(now) || bd == NULL) {
        return NULL;
    }
    ops = xg_book_diff(old, cur, &n, &nbids);
    sb_head(&sb, now, bd, channel, "change");
    sb_puts(&sb, ",\"prev_change_id\":");
    sb_u64(&sb, xg_book_state_seq(old));
    sb_puts(&sb, ",\"change_id\":");
    sb_u64(&sb, xg_book_state_seq(cur));
    sb_levels(&sb, ops, n, nbids);
    free(ops);
    return sb.p;
}
