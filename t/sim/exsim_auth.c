/*
 * exsim_auth.c: public/auth (exchange-protocols.md A2): the three grants,
 * connection and session scopes, token expiry, refresh, logout, and the
 * 16-session limit. Accounts: the default one (--client-id,
 * --client-secret) and one per --account ID:SECRET; tokens, sessions (16 per
 * account) and nonces belong to the account whose key made them.
 *
 * Error choices (documented in docs/simulator.md): wrong client id or secret ->
 * 13004 invalid_credentials; a bad signature, a timestamp outside the 60 s
 * window, a reused nonce, an unknown/expired/foreign token -> 13009
 * unauthorized with data.reason saying which.
 */
#include "exsim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#define MAX_SESSIONS     16
#define WINDOW_MS        60000

static struct exsim_token *
token_find_access(const char *access)
{
    struct exsim_token *t;

    for (t = ex->tokens; t != NULL; t = t->next) {
        if (strcmp(t->access, access) == 0) {
            return t;
        }
    }
    return NULL;
}

static void
token_free(struct exsim_token *t)
{
    free(t->session);
    free(t->scope);
    free(t);
}

/* Drops tokens that can no longer be used for anything. */
static void
tokens_prune(void)
{
    struct exsim_token **pp = &ex->tokens, *t;
    uint64_t now = xg_now_us();

    while ((t = *pp) != NULL) {
        if (t->refresh_valid && now >= t->refresh_expires_us) {
            t->refresh_valid = 0;
        }
        if (t->valid && now >= t->expires_us) {
            t->valid = 0;
        }
        if (!t->valid && !t->refresh_valid) {
            *pp = t->next;
            token_free(t);
        } else {
            pp = &t->next;
        }
    }
}

static void
random_chars(char *out, size_t n)
{
    static const char set[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char buf[64];
    size_t i;

    if (n > sizeof(buf) || RAND_bytes(buf, (int) n) != 1) {
        for (i = 0; i < n && i < sizeof(buf); i++) {
            buf[i] = (unsigned char) exsim_rand();
        }
    }
    for (i = 0; i < n; i++) {
        out[i] = set[buf[i] & 63];
    }
    out[n] = '\0';
}

static void
token_string(char *out, size_t len)
{
    char a[9], b[33];

    random_chars(a, 8);
    random_chars(b, 32);
    snprintf(out, len, "%llu.%s.%s",
        (unsigned long long) (xg_wall_us() / 1000), a, b);
}

static struct exsim_session *
session_find(struct exsim_account *a, const char *name)
{
    struct exsim_session *s;

    for (s = ex->sessions; s != NULL; s = s->next) {
        if (s->acct == a && strcmp(s->name, name) == 0) {
            return s;
        }
    }
    return NULL;
}

static void
session_invalidate(struct exsim_account *a, const char *name)
{
    struct exsim_token *t;

    for (t = ex->tokens; t != NULL; t = t->next) {
        if (t->acct == a && t->session != NULL
            && strcmp(t->session, name) == 0)
        {
            t->valid = 0;
            t->refresh_valid = 0;
        }
    }
}

static void
session_remove(struct exsim_account *a, const char *name)
{
    struct exsim_session **pp, *s;

    for (pp = &ex->sessions; (s = *pp) != NULL; pp = &s->next) {
        if (s->acct == a && strcmp(s->name, name) == 0) {
            *pp = s->next;
            free(s->name);
            free(s);
            return;
        }
    }
}

/*
 * Finds or opens session NAME of account A; A's 17th evicts its least
 * recently refreshed.
 */
static void
session_touch(struct exsim_account *a, const char *name)
{
    struct exsim_session *s = session_find(a, name), *o, *old = NULL;
    int n = 0;

    if (s == NULL) {
        for (o = ex->sessions; o != NULL; o = o->next) {
            if (o->acct != a) {
                continue;
            }
            n++;
            if (old == NULL || o->refreshed_us < old->refreshed_us) {
                old = o;
            }
        }
        if (n >= MAX_SESSIONS && old != NULL) {
            xg_log_info("exsim: session limit, session %s evicted",
                old->name);
            session_invalidate(a, old->name);
            session_remove(a, old->name);
        }
        s = xg_calloc(1, sizeof(*s));
        s->acct = a;
        s->name = xg_strdup(name);
        s->next = ex->sessions;
        ex->sessions = s;
    }
    s->refreshed_us = xg_now_us();
}

static json_t *
deny(int code, const char *reason, const char *param)
{
    ex->st.auth_fail++;
    return exsim_error_obj(code, NULL, reason, param);
}

/* Checks a client_signature grant for account A; 0 or an error in *err. */
static int
check_signature(struct exsim_account *a, json_t *params, json_t **err)
{
    json_t *jts = json_object_get(params, "timestamp");
    const char *nonce = json_string_value(json_object_get(params, "nonce"));
    const char *sig = json_string_value(json_object_get(params, "signature"));
    json_t *jd = json_object_get(params, "data");
    const char *data = json_string_value(jd);
    struct exsim_nonce *n, **pp;
    char ts[32], want[65];
    double tsv;
    int64_t now = (int64_t) (xg_wall_us() / 1000);
    uint64_t mono = xg_now_us();

    if (json_is_number(jts) && floor(json_number_value(jts))
        == json_number_value(jts))
    {
        tsv = json_number_value(jts);
    } else if (json_is_string(jts) && ex->o.string_timestamp) {
        char *end;

        tsv = strtod(json_string_value(jts), &end);
        if (*end != '\0' || end == json_string_value(jts)) {
            *err = deny(EXSIM_E_PARAMS, "must be an integer", "timestamp");
            return -1;
        }
    } else {
        *err = deny(EXSIM_E_PARAMS, "must be an integer", "timestamp");
        return -1;
    }
    if (nonce == NULL || *nonce == '\0' || strlen(nonce) > 256) {
        *err = deny(EXSIM_E_PARAMS, "must be a non-empty string", "nonce");
        return -1;
    }
    if (sig == NULL) {
        *err = deny(EXSIM_E_PARAMS, "must be a string", "signature");
        return -1;
    }
    if (jd != NULL && data == NULL) {
        *err = deny(EXSIM_E_PARAMS, "must be a string", "data");
        return -1;
    }
    if (fabs((double) now - tsv) > WINDOW_MS) {
        *err = deny(EXSIM_E_UNAUTHORIZED, "timestamp out of the 60 s window",
            "timestamp");
        return -1;
    }
    snprintf(ts, sizeof(ts), "%lld", (long long) tsv);
    if (exsim_sig_compute(a->secret, ts, nonce, data, want) != 0
        || strcmp(want, sig) != 0)
    {
        *err = deny(EXSIM_E_UNAUTHORIZED, "invalid signature", "signature");
        return -1;
    }
    /* nonces are kept past the window: a replay is refused either way */
    for (pp = &ex->nonces; (n = *pp) != NULL;) {
        if (mono - n->seen_us > 2 * (uint64_t) WINDOW_MS * 1000) {
            *pp = n->next;
            free(n->key);
            free(n);
            continue;
        }
        if (n->acct == a && strcmp(n->key, nonce) == 0) {
            *err = deny(EXSIM_E_UNAUTHORIZED, "nonce already used", "nonce");
            return -1;
        }
        pp = &n->next;
    }
    n = xg_calloc(1, sizeof(*n));
    n->acct = a;
    n->key = xg_strdup(nonce);
    n->seen_us = mono;
    n->next = ex->nonces;
    ex->nonces = n;
    return 0;
}

static int
session_name_ok(const char *s)
{
    size_t n = strlen(s), i;

    if (n == 0 || n > 64) {
        return 0;
    }
    for (i = 0; i < n; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
            || (s[i] >= '0' && s[i] <= '9') || s[i] == '_' || s[i] == '-'
            || s[i] == '.'))
        {
            return 0;
        }
    }
    return 1;
}

/*
 * Handles public/auth for C: on success issues a token, makes it C's auth
 * and returns the result object; else NULL with *err set.
 */
json_t *
exsim_auth_handle(struct exsim_conn *c, json_t *params, json_t **err)
{
    const char *grant = json_string_value(json_object_get(params,
        "grant_type"));
    const char *scope = json_string_value(json_object_get(params, "scope"));
    const char *state = json_string_value(json_object_get(params, "state"));
    const char *cid = json_string_value(json_object_get(params, "client_id"));
    char *session = NULL, *extra = NULL, *tok, *save = NULL, *sc = NULL;
    struct exsim_token *t, *old = NULL;
    struct exsim_account *acct = NULL;
    double expires = ex->o.expires_in;
    json_t *res;
    size_t extra_len = 0;
    char granted[512];

    if (ex->reject_auth) {
        xg_log_info("%s: auth rejected (control)", c->name);
        *err = deny(EXSIM_E_BAD_CREDS, NULL, NULL);
        return NULL;
    }
    if (grant == NULL) {
        *err = deny(EXSIM_E_PARAMS, "must be a string", "grant_type");
        return NULL;
    }
    if (json_object_get(params, "scope") != NULL && scope == NULL) {
        *err = deny(EXSIM_E_PARAMS, "must be a string", "scope");
        return NULL;
    }
    if (strcmp(grant, "client_credentials") == 0) {
        const char *sec = json_string_value(json_object_get(params,
            "client_secret"));

        acct = cid != NULL ? exsim_account_find(cid) : NULL;
        if (acct == NULL || sec == NULL || strcmp(sec, acct->secret) != 0) {
            xg_log_info("%s: auth: invalid credentials", c->name);
            *err = deny(EXSIM_E_BAD_CREDS, NULL, NULL);
            return NULL;
        }
    } else if (strcmp(grant, "client_signature") == 0) {
        acct = cid != NULL ? exsim_account_find(cid) : NULL;
        if (acct == NULL) {
            xg_log_info("%s: auth: unknown client_id", c->name);
            *err = deny(EXSIM_E_BAD_CREDS, NULL, NULL);
            return NULL;
        }
        if (check_signature(acct, params, err) != 0) {
            xg_log_info("%s: auth: signature refused", c->name);
            return NULL;
        }
    } else if (strcmp(grant, "refresh_token") == 0) {
        const char *rt = json_string_value(json_object_get(params,
            "refresh_token"));

        tokens_prune();
        for (old = ex->tokens; rt != NULL && old != NULL; old = old->next) {
            if (old->refresh_valid && strcmp(old->refresh, rt) == 0) {
                break;
            }
        }
        if (old == NULL) {
            *err = deny(EXSIM_E_UNAUTHORIZED, "invalid refresh token",
                "refresh_token");
            return NULL;
        }
        if (old->session == NULL && old->conn_id != c->id) {
            *err = deny(EXSIM_E_UNAUTHORIZED,
                "connection scope token can't be used on another connection",
                "refresh_token");
            return NULL;
        }
        if (old->session != NULL) {
            session = xg_strdup(old->session);
        }
        acct = old->acct;
        sc = xg_strdup(old->scope);
    } else {
        *err = deny(EXSIM_E_PARAMS, "unknown grant_type", "grant_type");
        return NULL;
    }

    /* scope: connection | session:NAME | expires:N, the rest is echoed */
    if (old == NULL && scope != NULL) {
        char *copy = xg_strdup(scope);

        extra = xg_calloc(1, strlen(scope) + 2);
        for (tok = strtok_r(copy, " ", &save); tok != NULL;
            tok = strtok_r(NULL, " ", &save))
        {
            if (strcmp(tok, "connection") == 0) {
                continue;
            } else if (strncmp(tok, "session:", 8) == 0) {
                if (!session_name_ok(tok + 8)) {
                    free(copy);
                    free(extra);
                    free(session);
                    *err = deny(EXSIM_E_PARAMS, "invalid session name",
                        "scope");
                    return NULL;
                }
                free(session);
                session = xg_strdup(tok + 8);
            } else if (strncmp(tok, "expires:", 8) == 0) {
                double e = atof(tok + 8);

                if (e > 0) {
                    expires = e;
                }
            } else if (strcmp(tok, "mainaccount") != 0
                && strlen(tok) < 64 && extra_len < 256)
            {
                memcpy(extra + extra_len, " ", 1);
                memcpy(extra + extra_len + 1, tok, strlen(tok));
                extra_len += 1 + strlen(tok);
            }
        }
        free(copy);
    }
    if (sc == NULL) {
        snprintf(granted, sizeof(granted), "%s%s mainaccount%s",
            session ? "session:" : "connection", session ? session : "",
            extra_len ? extra : " account:read_write trade:read_write"
            " wallet:read_write");
        sc = xg_strdup(granted);
    }
    free(extra);

    if (old != NULL) {
        /* a refresh retires the previous pair (A2.3) */
        old->valid = 0;
        old->refresh_valid = 0;
        expires = old->expires_us > 0 ? ex->o.expires_in : expires;
    }
    tokens_prune();
    if (session != NULL) {
        session_touch(acct, session);
    }
    t = xg_calloc(1, sizeof(*t));
    t->acct = acct;
    token_string(t->access, sizeof(t->access));
    token_string(t->refresh, sizeof(t->refresh));
    t->session = session;
    t->conn_id = c->id;
    t->expires_us = xg_now_us() + (uint64_t) (expires * 1e6);
    t->refresh_expires_us = t->expires_us + (uint64_t) (expires * 1e6)
        + 3600ull * 1000000;
    t->valid = 1;
    t->refresh_valid = 1;
    t->scope = sc;
    t->next = ex->tokens;
    ex->tokens = t;
    snprintf(c->auth, sizeof(c->auth), "%s", t->access);
    c->acct = acct;
    if (acct->cod_account) {
        c->cod = 1;
    }
    ex->st.auth_ok++;
    /* GRANT is one of the three names checked above */
    json_object_set_new(ex->st.grants, grant, json_integer(1
        + json_integer_value(json_object_get(ex->st.grants, grant))));
    xg_log_info("%s: auth ok (%s, account %s, %s, expires in %g s)",
        c->name, grant, acct->id, session ? session : "connection", expires);

    res = json_pack("{s:s, s:I, s:s, s:s, s:s, s:[]}",
        "access_token", t->access,
        "expires_in", (json_int_t) ceil(expires),
        "refresh_token", t->refresh,
        "scope", t->scope,
        "token_type", "bearer",
        "enabled_features");
    if (state != NULL) {
        json_object_set_new(res, "state", json_string(state));
    }
    if (session != NULL) {
        json_object_set_new(res, "sid", json_string(session));
    }
    return res;
}

/*
 * public/fork_token: a valid session-scope REFRESH_TOKEN opens a new
 * session SESSION_NAME with the same rights (A2.5; connection tokens may
 * not be forked). Returns the auth result, or NULL with *err set.
 */
json_t *
exsim_auth_fork(struct exsim_conn *c, json_t *params, json_t **err)
{
    const char *rt = json_string_value(json_object_get(params,
        "refresh_token"));
    const char *name = json_string_value(json_object_get(params,
        "session_name"));
    struct exsim_token *old, *t;
    const char *rest;
    char scope[512];

    if (name == NULL || !session_name_ok(name)) {
        *err = deny(EXSIM_E_PARAMS, "must be a session name",
            "session_name");
        return NULL;
    }
    tokens_prune();
    for (old = ex->tokens; rt != NULL && old != NULL; old = old->next) {
        if (old->refresh_valid && strcmp(old->refresh, rt) == 0) {
            break;
        }
    }
    if (old == NULL) {
        *err = deny(EXSIM_E_UNAUTHORIZED, "invalid refresh token",
            "refresh_token");
        return NULL;
    }
    if (old->session == NULL) {
        *err = deny(EXSIM_E_UNAUTHORIZED,
            "connection scope tokens can't be forked", "refresh_token");
        return NULL;
    }
    /* the old scope with its session:NAME swapped for the new name */
    rest = strchr(old->scope, ' ');
    snprintf(scope, sizeof(scope), "session:%s%s", name, rest ? rest : "");
    session_touch(old->acct, name);
    t = xg_calloc(1, sizeof(*t));
    t->acct = old->acct;
    token_string(t->access, sizeof(t->access));
    token_string(t->refresh, sizeof(t->refresh));
    t->session = xg_strdup(name);
    t->conn_id = c->id;
    t->expires_us = xg_now_us() + (uint64_t) (ex->o.expires_in * 1e6);
    t->refresh_expires_us = t->expires_us
        + (uint64_t) (ex->o.expires_in * 1e6) + 3600ull * 1000000;
    t->valid = 1;
    t->refresh_valid = 1;
    t->scope = xg_strdup(scope);
    t->next = ex->tokens;
    ex->tokens = t;
    ex->st.auth_ok++;
    xg_log_info("%s: session %s forked from %s", c->name, name, old->session);
    return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:[]}",
        "access_token", t->access,
        "expires_in", (json_int_t) ceil(ex->o.expires_in),
        "refresh_token", t->refresh,
        "scope", t->scope,
        "token_type", "bearer",
        "sid", name,
        "enabled_features");
}

/*
 * Whether C may call a private method: PARAMS.access_token when given,
 * else the token C authenticated with. 0 when allowed; else -1 and, when
 * ERR is not NULL, a 13009 error in *err. ERR NULL is an internal query
 * (is the connection authenticated?) and records nothing.
 */
int
exsim_auth_check(struct exsim_conn *c, json_t *params, json_t **err)
{
    const char *tok = params ? json_string_value(json_object_get(params,
        "access_token")) : NULL;
    const char *reason = NULL;
    struct exsim_token *t;

    if (tok == NULL) {
        if (c->auth[0] == '\0') {
            reason = "not authenticated";
            goto fail;
        }
        tok = c->auth;
        t = token_find_access(tok);
        if (err != NULL && ex->o.require_token && t != NULL
            && t->session == NULL)
        {
            reason = "access_token required";
            goto fail;
        }
    } else {
        t = token_find_access(tok);
    }
    if (t == NULL || (!t->valid && xg_now_us() < t->expires_us)) {
        reason = "invalid token";
        goto fail;
    }
    if (xg_now_us() >= t->expires_us) {
        reason = "token has expired";
        goto fail;
    }
    if (t->session == NULL && t->conn_id != c->id) {
        reason = "connection scope token can't be reused on other"
            " connections";
        goto fail;
    }
    if (t->session != NULL && tok != c->auth) {
        /* a session token authenticates the connection it is used on */
        snprintf(c->auth, sizeof(c->auth), "%s", t->access);
    }
    c->acct = t->acct;
    return 0;
fail:
    if (err != NULL) {
        *err = exsim_error_obj(EXSIM_E_UNAUTHORIZED, NULL, reason,
            "access_token");
    }
    return -1;
}

/*
 * private/logout: invalidate_token (default true) retires C's token and,
 * for a session, every token of that session.
 */
void
exsim_auth_logout(struct exsim_conn *c, json_t *params)
{
    json_t *inv = json_object_get(params, "invalidate_token");
    struct exsim_token *t = token_find_access(c->auth);

    if (json_is_false(inv) || t == NULL) {
        return;
    }
    if (t->session != NULL) {
        char *name = xg_strdup(t->session);

        session_invalidate(t->acct, name);
        session_remove(t->acct, name);
        free(name);
    } else {
        t->valid = 0;
        t->refresh_valid = 0;
    }
    c->auth[0] = '\0';
}

/* Connection-scope tokens die with their connection (A2.4). */
void
exsim_auth_conn_gone(struct exsim_conn *c)
{
    struct exsim_token *t;

    for (t = ex->tokens; t != NULL; t = t->next) {
        if (t->session == NULL && t->conn_id == c->id) {
            t->valid = 0;
            t->refresh_valid = 0;
        }
    }
    tokens_prune();
}

/* Frees every token, session and nonce (quit). */
void
exsim_auth_free_all(void)
{
    struct exsim_token *t;
    struct exsim_session *s;
    struct exsim_nonce *n;

    while ((t = ex->tokens) != NULL) {
        ex->tokens = t->next;
        token_free(t);
    }
    while ((s = ex->sessions) != NULL) {
        ex->sessions = s->next;
        free(s->name);
        free(s);
    }
    while ((n = ex->nonces) != NULL) {
        ex->nonces = n->next;
        free(n->key);
        free(n);
    }
}

/* The account whose client_id is ID, or NULL. */
struct exsim_account *
exsim_account_find(const char *id)
{
    struct exsim_account *a;

    for (a = ex->accounts; a != NULL; a = a->next) {
        if (strcmp(a->id, id) == 0) {
            return a;
        }
    }
    return NULL;
}

/*
 * Adds account ID with SECRET at the end of the list (the first added is
 * the default). Returns 0, or -1 when ID is empty or already taken.
 */
int
exsim_account_add(const char *id, const char *secret)
{
    struct exsim_account *a, **pp;

    if (*id == '\0' || exsim_account_find(id) != NULL) {
        return -1;
    }
    a = xg_calloc(1, sizeof(*a));
    a->id = xg_strdup(id);
    a->secret = xg_strdup(secret);
    exsim_credits_init(&a->credits);
    a->user_trades = json_array();
    for (pp = &ex->accounts; *pp != NULL; pp = &(*pp)->next) {
        /* to the tail */
    }
    *pp = a;
    return 0;
}

/* Frees every account with its positions and trades (quit). */
void
exsim_accounts_free(void)
{
    struct exsim_account *a;
    struct exsim_pos *p;

    while ((a = ex->accounts) != NULL) {
        ex->accounts = a->next;
        while ((p = a->pos) != NULL) {
            a->pos = p->next;
            free(p);
        }
        json_decref(a->user_trades);
        free(a->id);
        free(a->secret);
        free(a);
    }
}
