/*
 * xg_venue_deribit_auth.c: public/auth, the gateway's and its bots'.
 *
 * The signature Deribit's client_signature grant uses (the upstream's
 * restore signs with it), and the local answer to a bot's public/auth:
 * the listener's client_credentials, a client_signature whose nonce is
 * used once per client id within its window (src/xg_nonce.c), a
 * single-use refresh token, and the account the credentials name
 * (xg_venue_deribit_acct.c).
 */
#include "xg_venue_deribit_int.h"

static void
dr_hex(const unsigned char *in, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* NBYTES random bytes (at most 32) as lowercase hex into OUT. */
void
dr_random_hex(char *out, size_t nbytes)
{
    unsigned char b[32];

    if (nbytes > sizeof(b)) {
        nbytes = sizeof(b);
    }
    if (RAND_bytes(b, (int) nbytes) != 1) {
        /* never a predictable token: abort rather than go on */
        xg_log_error("deribit: RAND_bytes failed");
        abort();
    }
    dr_hex(b, nbytes, out);
}

/* HMAC-SHA256(SECRET, "TS\nNONCE\nDATA") as lowercase hex (65 bytes). */
void
dr_signature(const char *secret, const char *ts, const char *nonce,
    const char *data, char *out)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t n = strlen(ts) + strlen(nonce) + strlen(data) + 3;
    char *msg = xg_malloc(n);

    snprintf(msg, n, "%s\n%s\n%s", ts, nonce, data);
    HMAC(EVP_sha256(), secret, (int) strlen(secret), (unsigned char *) msg,
        strlen(msg), mac, &maclen);
    free(msg);
    dr_hex(mac, maclen, out);
}

/* ---- a bot's public/auth ---- */

static int
dr_cred_find(const struct xg_gateway_conf *gc, const char *id)
{
    int i;

    for (i = 0; id != NULL && i < gc->ncreds; i++) {
        if (strcmp(gc->creds[i].id, id) == 0) {
            return i;
        }
    }
    return -1;
}

/* A client-supplied string made safe for one log line (truncated). */
static void
dr_log_safe(const char *in, char *out, size_t n)
{
    size_t i;

    for (i = 0; i + 1 < n && in[i] != '\0'; i++) {
        unsigned char ch = (unsigned char) in[i];

        out[i] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\'
                 ? (char) ch : '?';
    }
    out[i] = '\0';
}

static int
dr_str_eq_ct(const char *a, const char *b)
{
    size_t n = strlen(a);

    return n == strlen(b) && CRYPTO_memcmp(a, b, n) == 0;
}

/*
 * A client_signature whose signature is good: its nonce must be new for
 * that client_id while the timestamp T is in the window (Deribit: 13009).
 * A full nonce store refuses (10028) rather than forget a live nonce.
 * Answers the refusal itself; returns XG_OK when the auth may go on.
 */
static int
dr_client_nonce(struct dr_client *dc, const char *id, const char *cid,
    const char *nonce, long long t, long long now)
{
    int rc = xg_nonce_use(dc->d->nonces, cid, nonce, (uint64_t) t,
        (uint64_t) now);
    char safe[65];

    if (rc == XG_OK) {
        return XG_OK;
    }
    dr_log_safe(cid, safe, sizeof(safe));
    xg_client_log(XG_LOG_WARN, dc->c, "public/auth (client_signature) "
        "refused for client_id \"%s\": %s", safe, rc == XG_ERROR
        ? "nonce already used" : "nonce store full");
    if (rc == XG_ERROR) {
        dr_error(dc, id, 13009, "unauthorized", "nonce already used");
    } else {
        dr_error(dc, id, 10028, "too_many_requests", "nonce store full");
    }
    return XG_ERROR;
}

/* public/auth from a local client: the gateway's own credentials policy. */
void
dr_client_auth(struct dr_client *dc, const char *id, json_t *params)
{
    const struct xg_gateway_conf *gc = xg_client_conf(dc->c);
    const char *grant = json_string_value(json_object_get(params,
        "grant_type"));
    const char *cid = json_string_value(json_object_get(params, "client_id"));
    json_t *state = json_object_get(params, "state");
    char token[48], refresh[48];
    int ok = 0, i = -1;
    json_t *res;

    if (grant == NULL) {
        dr_error(dc, id, -32602, "Invalid params",
            "grant_type is required");
        return;
    }
    if (!gc->client_auth) {
        ok = 1;
    } else if (strcmp(grant, "client_credentials") == 0) {
        const char *sec = json_string_value(json_object_get(params,
            "client_secret"));

        i = dr_cred_find(gc, cid);
        ok = i >= 0 && sec != NULL && dr_str_eq_ct(sec, gc->creds[i].secret);
    } else if (strcmp(grant, "client_signature") == 0) {
        json_t *tsj = json_object_get(params, "timestamp");
        const char *nonce = json_string_value(json_object_get(params,
            "nonce"));
        const char *data = json_string_value(json_object_get(params, "data"));
        const char *sig = json_string_value(json_object_get(params,
            "signature"));
        char ts[32], want[2 * EVP_MAX_MD_SIZE + 1];
        long long t = -1, now = (long long) (xg_wall_us() / 1000);

        if (json_is_integer(tsj)) {
            t = json_integer_value(tsj);
        } else if (json_is_string(tsj)) {
            t = strtoll(json_string_value(tsj), NULL, 10);
        }
        i = dr_cred_find(gc, cid);
        if (i >= 0 && nonce != NULL && sig != NULL && t > 0
            && t > now - DR_SIG_WINDOW_MS && t < now + DR_SIG_WINDOW_MS) {
            snprintf(ts, sizeof(ts), "%lld", t);
            dr_signature(gc->creds[i].secret, ts, nonce, data ? data : "",
                want);
            ok = dr_str_eq_ct(sig, want);
        }
        if (ok && dr_client_nonce(dc, id, cid, nonce, t, now) != XG_OK) {
            return;
        }
    } else if (strcmp(grant, "refresh_token") == 0) {
        const char *rt = json_string_value(json_object_get(params,
            "refresh_token"));

        ok = rt != NULL && dc->refresh[0] != '\0'
             && dr_str_eq_ct(rt, dc->refresh);
        if (!ok) {
            xg_client_log(XG_LOG_INFO, dc->c, "public/auth refresh_token "
                "refused");
            dr_error(dc, id, 13009, "unauthorized", "invalid refresh token");
            return;
        }
    } else {
        dr_error(dc, id, -32602, "Invalid params", "unknown grant_type");
        return;
    }
    if (!ok) {
        char safe[65];

        dr_log_safe(cid ? cid : "", safe, sizeof(safe));
        xg_client_log(XG_LOG_WARN, dc->c, "public/auth (%s) refused for "
            "client_id \"%s\"", strcmp(grant, "client_signature") == 0
            ? "client_signature" : "client_credentials", safe);
        dr_error(dc, id, 13004, "invalid_credentials", NULL);
        return;
    }
    if (dr_acct_bind(dc->d, dc, i >= 0 ? gc->creds[i].account : NULL)
        != XG_OK)
    {
        dr_error(dc, id, 13004, "invalid_credentials",
            "the client's account is not on this upstream, or another "
            "account is bound to this connection");
        return;
    }
    dc->authed = 1;
    memcpy(token, "xg.", 3);
    dr_random_hex(token + 3, 16);
    memcpy(refresh, "xgr.", 4);
    dr_random_hex(refresh + 4, 16);
    snprintf(dc->refresh, sizeof(dc->refresh), "%s", refresh);
    {
        char safe[65], sgrant[33];

        dr_log_safe(cid ? cid : "", safe, sizeof(safe));
        dr_log_safe(grant, sgrant, sizeof(sgrant));
        xg_client_log(XG_LOG_INFO, dc->c, "authenticated (%s%s%s)",
            sgrant, cid ? ", client_id " : "", safe);
    }
    res = json_pack("{s:s, s:i, s:s, s:s, s:s, s:[]}",
        "access_token", token, "expires_in", DR_TOKEN_TTL_S,
        "refresh_token", refresh, "scope", "connection",
        "token_type", "bearer", "enabled_features");
    if (state != NULL) {
        json_object_set(res, "state", state);
    }
    dr_reply_json(dc, id, res);
}
