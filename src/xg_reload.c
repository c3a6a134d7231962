/*
 * xg_reload.c: live reload (see xg_reload.h).
 *
 * The comparison works on what `exgate -T` writes (xg_conf_dump()): every
 * directive of every module, defaults filled in, secrets by source only.
 * Two confs whose dumps say the same for a directive mean the same thing
 * for it, so no module needs a comparison function of its own; the
 * content of secret files is compared through each upstream's digest of
 * its secrets (xg_conf_secret()).
 */
#include "xg_core.h"
#include "xg_reload.h"
#include "xg_admin.h"
#include "xg_client.h"
#include "xg_listen.h"
#include "xg_log.h"
#include "xg_upstream.h"
#include "xg_venue.h"
#include "xg_timer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

/*
 * The directives that say how a connection is made, or what its session
 * is set up with: a change needs a new connection (a rotation).
 */
static const char *const rl_rotate_names[] = {
    "url", "tls_ca", "tls_verify", "header", "auth", "auth_scope",
    "heartbeat", "cancel_on_disconnect", "on_open", "secrets", NULL
};

const char *
xg_reload_op_name(enum xg_reload_op op)
{
    static const char *const names[] = {
        "keep", "apply", "rotate", "start", "stop", "restart"
    };

    return (unsigned) op < XG_NELEM(names) ? names[op] : "?";
}

/* ---- the dumped directives of one block -------------------------------- */

struct rl_dir {
    char   *name;
    char   *text;       /* its lines, as dumped */
};

struct rl_dirs {
    struct rl_dir  *v;
    size_t          n;
};

static struct rl_dir *
dirs_find(const struct rl_dirs *d, const char *name)
{
    size_t i;

    for (i = 0; i < d->n; i++) {
        if (strcmp(d->v[i].name, name) == 0) {
            return &d->v[i];
        }
    }
    return NULL;
}

/* Appends LEN bytes of LINE (and a newline) to the text of NAME. */
static struct rl_dir *
dirs_add(struct rl_dirs *d, const char *name, const char *line, size_t len)
{
    struct rl_dir *e = dirs_find(d, name);
    size_t old;

    if (e == NULL) {
        d->v = xg_realloc(d->v, (d->n + 1) * sizeof(*d->v));
        e = &d->v[d->n++];
        e->name = xg_strdup(name);
        e->text = xg_strdup("");
    }
    old = strlen(e->text);
    e->text = xg_realloc(e->text, old + len + 2);
    memcpy(e->text + old, line, len);
    e->text[old + len] = '\n';
    e->text[old + len + 1] = '\0';
    return e;
}

static void
dirs_free(struct rl_dirs *d)
{
    size_t i;

    for (i = 0; i < d->n; i++) {
        free(d->v[i].name);
        free(d->v[i].text);
    }
    free(d->v);
    d->v = NULL;
    d->n = 0;
}

/*
 * Splits TEXT, dumped at depth 0, into its directives: a line that starts
 * in the first column begins one (its name the first word; a "# NAME:
 * ..." comment is NAME left unset), and the lines of its block, indented
 * or a closing brace, belong to it.
 */
static void
dirs_parse(struct rl_dirs *d, const char *text)
{
    const char *p = text, *eol, *w;
    struct rl_dir *cur = NULL;
    char name[128];
    size_t len, n;

    for (; *p != '\0'; p = *eol ? eol + 1 : eol) {
        eol = strchr(p, '\n');
        if (eol == NULL) {
            eol = p + strlen(p);
        }
        len = (size_t) (eol - p);
        if (len == 0) {
            continue;
        }
        if ((*p == ' ' || *p == '\t' || *p == '}') && cur != NULL) {
            cur = dirs_add(d, cur->name, p, len);
            continue;
        }
        w = p;
        if (w[0] == '#' && w[1] == ' ') {
            w += 2;
        }
        n = strcspn(w, " ;:{\n");
        if (n >= sizeof(name)) {
            n = sizeof(name) - 1;
        }
        memcpy(name, w, n);
        name[n] = '\0';
        cur = dirs_add(d, name, p, len);
    }
}

/* What FN(ARG, &dump) writes, as a string (malloc'd). */
static char *
dump_text(void (*fn)(struct xg_conf_dump *d, const void *arg),
    const void *arg)
{
    struct xg_conf_dump d;
    char *buf = NULL;
    size_t len = 0;

    memset(&d, 0, sizeof(d));
    d.fp = open_memstream(&buf, &len);
    if (d.fp == NULL) {
        return xg_strdup("");
    }
    fn(&d, arg);
    fclose(d.fp);
    return buf;
}

static void
dump_upstream(struct xg_conf_dump *d, const void *arg)
{
    xg_conf_dump_upstream(d, arg);
}

static void
dump_main(struct xg_conf_dump *d, const void *arg)
{
    xg_conf_dump(d->fp, arg);
}

static void
dump_listen_keys(struct xg_conf_dump *d, const void *arg)
{
    const struct xg_listen_conf *lc = arg;

    xg_conf_dump_begin(d);
    xg_conf_dump_word(d, "listen");
    xg_listen_conf_dump(d, lc);
    xg_conf_dump_end(d);
}

/* Adds NAME to the comma-separated list BUF (LEN bytes). */
static void
list_add(char *buf, size_t len, const char *name)
{
    size_t n = strlen(buf);

    snprintf(buf + n, len - n, "%s%s", n > 0 ? ", " : "", name);
}

/*
 * Writes the names of the directives whose dumps differ between A and B
 * (in A's order, then B's new ones) to BUF, skipping those in SKIP.
 * Returns 1 when one of them is in ROTATE (may be NULL).
 */
static int
dirs_diff(const struct rl_dirs *a, const struct rl_dirs *b,
    const char *const *skip, const char *const *rotate, char *buf,
    size_t len)
{
    const struct rl_dir *e, *o;
    const char *const *s;
    int rot = 0, pass;
    size_t i;

    for (pass = 0; pass < 2; pass++) {
        const struct rl_dirs *x = pass == 0 ? a : b;
        const struct rl_dirs *y = pass == 0 ? b : a;

        for (i = 0; i < x->n; i++) {
            e = &x->v[i];
            o = dirs_find(y, e->name);
            if (pass == 1 && o != NULL) {
                continue;   /* compared in the first pass */
            }
            if (o != NULL && strcmp(o->text, e->text) == 0) {
                continue;
            }
            for (s = skip; s != NULL && *s != NULL; s++) {
                if (strcmp(*s, e->name) == 0) {
                    break;
                }
            }
            if (s != NULL && *s != NULL) {
                continue;
            }
            list_add(buf, len, e->name);
            for (s = rotate; s != NULL && *s != NULL; s++) {
                rot |= strcmp(*s, e->name) == 0;
            }
        }
    }
    return rot;
}

/* ---- the comparison ---------------------------------------------------- */

static const struct xg_upstream_conf *
find_upstream(const struct xg_main_conf *mc, const char *name)
{
    const struct xg_upstream_conf *uc;

    for (uc = mc->upstreams; uc != NULL; uc = uc->next) {
        if (strcmp(uc->name, name) == 0) {
            return uc;
        }
    }
    return NULL;
}

static const struct xg_listen_conf *
find_listen(const struct xg_main_conf *mc, const struct xg_listen_conf *lc)
{
    const struct xg_listen_conf *o;

    for (o = mc->listens; o != NULL; o = o->next) {
        if (o->addr.port == lc->addr.port
            && strcmp(o->addr.host, lc->addr.host) == 0)
        {
            return o;
        }
    }
    return NULL;
}

/*
 * What happens to OLD, an upstream of the running conf, given NEW; UP is
 * the upstream running on OLD (NULL: the conf alone decides).
 */
static void
diff_upstream(struct xg_reload_item *it, const struct xg_upstream_conf *old,
    const struct xg_upstream_conf *new, const struct xg_upstream *up)
{
    const struct xg_venue *pm;
    struct rl_dirs a = { 0 }, b = { 0 };
    char *ta, *tb;
    int rot, restart = 0;

    it->old = old;
    it->new = new;
    if (new == NULL) {
        it->op = XG_RELOAD_STOP;
        return;
    }
    if (old == NULL) {
        it->op = XG_RELOAD_START;
        return;
    }
    ta = dump_text(dump_upstream, old);
    tb = dump_text(dump_upstream, new);
    dirs_parse(&a, ta);
    dirs_parse(&b, tb);
    rot = dirs_diff(&a, &b, NULL, rl_rotate_names, it->changed,
        sizeof(it->changed));
    pm = xg_venue_find(new->protocol);
    if (pm != NULL && pm->restart_names != NULL
        && strcmp(old->protocol, new->protocol) == 0)
    {
        char scratch[sizeof(it->changed)];

        restart = dirs_diff(&a, &b, NULL, pm->restart_names, scratch,
            sizeof(scratch));
    }
    free(ta);
    free(tb);
    dirs_free(&a);
    dirs_free(&b);
    if (old->nsecrets != new->nsecrets
        || memcmp(old->secrets_digest, new->secrets_digest,
            sizeof(old->secrets_digest)) != 0)
    {
        if (strstr(it->changed, "auth") == NULL
            && strstr(it->changed, "on_open") == NULL)
        {
            list_add(it->changed, sizeof(it->changed), "secrets");
        }
        rot = 1;
    }
    if (strcmp(old->protocol, new->protocol) != 0) {
        /* the other protocol's directives differ too: say the one cause */
        it->op = XG_RELOAD_RESTART;
        snprintf(it->changed, sizeof(it->changed), "protocol");
    } else if (restart) {
        /* what the instance was built for changed (Binance's market) */
        it->op = XG_RELOAD_RESTART;
    } else if (pm != NULL && pm->create != NULL && pm->reconf == NULL) {
        /* the module cannot take a new conf: a new instance must */
        it->op = XG_RELOAD_RESTART;
        list_add(it->changed, sizeof(it->changed), "(protocol module "
            "without reconf)");
    } else if (up != NULL && xg_upstream_reconf_check(up, new) != XG_OK) {
        /*
         * Its instance cannot follow NEW (what it was built for changed):
         * asked now, before anything changes, so that the reconf of the
         * upstreams that stay cannot fail once the old conf is going.
         */
        it->op = XG_RELOAD_RESTART;
        it->why = "its venue cannot follow that in place";
    } else if (it->changed[0] == '\0') {
        it->op = XG_RELOAD_KEEP;
    } else {
        it->op = rot ? XG_RELOAD_ROTATE : XG_RELOAD_APPLY;
    }
}

/* The op of the upstream called NAME in PLAN (XG_RELOAD_STOP: none). */
static enum xg_reload_op
plan_upstream_op(const struct xg_reload_plan *plan, const char *name)
{
    const struct xg_upstream_conf *uc;
    size_t i;

    for (i = 0; i < plan->nups; i++) {
        uc = plan->ups[i].old != NULL ? plan->ups[i].old : plan->ups[i].new;
        if (strcmp(uc->name, name) == 0) {
            return plan->ups[i].op;
        }
    }
    return XG_RELOAD_STOP;
}

static void
diff_listen(const struct xg_reload_plan *plan, struct xg_reload_item *it,
    const struct xg_listen_conf *old, const struct xg_listen_conf *new)
{
    enum xg_reload_op uop;
    char *ka, *kb;

    it->old = old;
    it->new = new;
    if (new == NULL) {
        it->op = XG_RELOAD_STOP;
        return;
    }
    if (old == NULL) {
        it->op = XG_RELOAD_START;
        return;
    }
    if (old->kind != new->kind) {
        list_add(it->changed, sizeof(it->changed), "kind");
    }
    if (strcmp(old->upstream_name, new->upstream_name) != 0) {
        list_add(it->changed, sizeof(it->changed), "upstream");
    }
    uop = plan_upstream_op(plan, old->upstream_name);
    if (it->changed[0] != '\0' || uop == XG_RELOAD_STOP
        || uop == XG_RELOAD_RESTART)
    {
        if (it->changed[0] == '\0') {
            list_add(it->changed, sizeof(it->changed), "upstream restarted");
        }
        it->op = XG_RELOAD_RESTART;
        return;
    }
    if ((old->path == NULL) != (new->path == NULL)
        || (old->path != NULL && strcmp(old->path, new->path) != 0))
    {
        list_add(it->changed, sizeof(it->changed), "path");
    }
    if (old->max_clients != new->max_clients) {
        list_add(it->changed, sizeof(it->changed), "max_clients");
    }
    if (old->sndbuf != new->sndbuf) {
        list_add(it->changed, sizeof(it->changed), "sndbuf");
    }
    ka = dump_text(dump_listen_keys, old);
    kb = dump_text(dump_listen_keys, new);
    if (strcmp(ka, kb) != 0) {
        list_add(it->changed, sizeof(it->changed), "client keys");
    }
    free(ka);
    free(kb);
    it->op = it->changed[0] != '\0' ? XG_RELOAD_APPLY : XG_RELOAD_KEEP;
}

/*
 * xg_reload_diff(), asking each upstream of UPS (NULL: none) that runs
 * on OLD whether it can follow its new conf in place.
 */
static int
reload_plan(const struct xg_main_conf *old, const struct xg_main_conf *new,
    const struct xg_upstream_set *ups, struct xg_reload_plan *plan)
{
    static const char *const skip[] = { "upstream", "listen", NULL };
    const struct xg_upstream_conf *uc;
    const struct xg_listen_conf *lc;
    struct rl_dirs a = { 0 }, b = { 0 };
    size_t n = 0, i;
    char *ta, *tb;
    int changes = 0;

    memset(plan, 0, sizeof(*plan));
    for (uc = old->upstreams; uc != NULL; uc = uc->next, n++) {
    }
    for (uc = new->upstreams; uc != NULL; uc = uc->next, n++) {
    }
    plan->ups = xg_calloc(n + 1, sizeof(*plan->ups));
    for (uc = old->upstreams; uc != NULL; uc = uc->next) {
        diff_upstream(&plan->ups[plan->nups++], uc,
            find_upstream(new, uc->name),
            ups != NULL ? xg_upstream_find(ups, uc->name) : NULL);
    }
    for (uc = new->upstreams; uc != NULL; uc = uc->next) {
        if (find_upstream(old, uc->name) == NULL) {
            diff_upstream(&plan->ups[plan->nups++], NULL, uc, NULL);
        }
    }

    n = 0;
    for (lc = old->listens; lc != NULL; lc = lc->next, n++) {
    }
    for (lc = new->listens; lc != NULL; lc = lc->next, n++) {
    }
    plan->listens = xg_calloc(n + 1, sizeof(*plan->listens));
    for (lc = old->listens; lc != NULL; lc = lc->next) {
        diff_listen(plan, &plan->listens[plan->nlistens++], lc,
            find_listen(new, lc));
    }
    for (lc = new->listens; lc != NULL; lc = lc->next) {
        if (find_listen(old, lc) == NULL) {
            diff_listen(plan, &plan->listens[plan->nlistens++], NULL, lc);
        }
    }

    ta = dump_text(dump_main, old);
    tb = dump_text(dump_main, new);
    dirs_parse(&a, ta);
    dirs_parse(&b, tb);
    dirs_diff(&a, &b, skip, NULL, plan->main_changed,
        sizeof(plan->main_changed));
    free(ta);
    free(tb);
    dirs_free(&a);
    dirs_free(&b);
    plan->error_log = strcmp(old->error_log, new->error_log) != 0
        || old->error_log_level != new->error_log_level
        || old->error_log_format != new->error_log_format;
    plan->admin = old->admin_set != new->admin_set
        || (old->admin_set
            && (old->admin.port != new->admin.port
                || strcmp(old->admin.host, new->admin.host) != 0));

    for (i = 0; i < plan->nups; i++) {
        changes += plan->ups[i].op != XG_RELOAD_KEEP;
    }
    for (i = 0; i < plan->nlistens; i++) {
        changes += plan->listens[i].op != XG_RELOAD_KEEP;
    }
    for (i = 0; plan->main_changed[i] != '\0'; i++) {
        changes += i == 0 || plan->main_changed[i] == ',';
    }
    return changes;
}

/* See xg_reload.h. */
int
xg_reload_diff(const struct xg_main_conf *old, const struct xg_main_conf *new,
    struct xg_reload_plan *plan)
{
    return reload_plan(old, new, NULL, plan);
}

/* See xg_reload.h. */
void
xg_reload_plan_free(struct xg_reload_plan *plan)
{
    free(plan->ups);
    free(plan->listens);
    memset(plan, 0, sizeof(*plan));
}

/* ---- removed upstreams, closing ---------------------------------------- */

/*
 * An upstream a reload removed (or restarted): out of the set, the
 * clients of its listeners closing first (1001), then its connection
 * (1000); freed from the loop once its stop is complete. Holds the conf
 * it runs on until then.
 */
struct xg_reload_retiring {
    struct xg_running          *r;
    struct xg_upstream         *up;
    struct xg_main_conf        *conf;
    unsigned                    nlisteners;  /* closing, clients left */
    int                         stopping;
    struct xg_timer            *ev_deadline; /* for the clients' closes */
    struct event               *ev_free;
    struct xg_reload_retiring  *next;
};

/* How long the clients of a removed upstream get to finish their close. */
#define XG_RELOAD_CLIENTS_CLOSE_MS  3000

static void
retiring_free(struct xg_reload_retiring *t)
{
    struct xg_reload_retiring **pp;

    for (pp = &t->r->retiring; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == t) {
            *pp = t->next;
            break;
        }
    }
    if (t->r->ls != NULL) {
        /* clients that did not finish their close go now */
        xg_listen_forget_upstream(t->r->ls, t->up);
    }
    xg_upstream_free(t->up);
    xg_timer_free(t->ev_deadline);
    event_free(t->ev_free);
    xg_conf_free(t->conf);
    free(t);
}

static void
retiring_on_free(evutil_socket_t fd, short what, void *arg)
{
    struct xg_reload_retiring *t = arg;

    xg_upstream_log(XG_LOG_INFO, t->up, "closed (removed by a reload)");
    retiring_free(t);
}

/* The stop is complete; called from the upstream's own callbacks. */
static void
retiring_stopped(void *arg)
{
    struct xg_reload_retiring *t = arg;

    event_active(t->ev_free, EV_TIMEOUT, 1);
}

/* Its clients are gone: the upstream's own close (1000). */
static void
retiring_stop(struct xg_reload_retiring *t)
{
    if (t->stopping) {
        return;
    }
    t->stopping = 1;
    xg_timer_del(t->ev_deadline);
    xg_upstream_stop(t->up, retiring_stopped, t);
}

/* One of its closing listeners lost its last client. */
static void
retiring_listener_closed(void *arg)
{
    struct xg_reload_retiring *t = arg;

    if (t->nlisteners > 0 && --t->nlisteners == 0) {
        retiring_stop(t);
    }
}

static void
retiring_on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct xg_reload_retiring *t = arg;

    xg_upstream_log(XG_LOG_WARN, t->up, "clients still closing after %d ms: "
        "dropped", XG_RELOAD_CLIENTS_CLOSE_MS);
    t->nlisteners = 0;
    xg_listen_forget_upstream(t->r->ls, t->up);
    retiring_stop(t);
}

/* Takes UP out of R's set; see retiring_start() for the rest. */
static struct xg_reload_retiring *
retiring_new(struct xg_running *r, struct xg_upstream *up,
    struct xg_main_conf *conf)
{
    struct xg_reload_retiring *t = xg_calloc(1, sizeof(*t));

    t->r = r;
    t->up = up;
    t->conf = xg_conf_ref(conf);
    t->ev_deadline = xg_timer_new(r->base, retiring_on_deadline, t);
    t->ev_free = event_new(r->base, -1, 0, retiring_on_free, t);
    t->next = r->retiring;
    r->retiring = t;
    xg_upstream_set_remove(up);
    return t;
}

/* Its listeners are closing (counted): wait for them, or stop now. */
static void
retiring_start(struct xg_reload_retiring *t)
{
    struct timeval tv = { XG_RELOAD_CLIENTS_CLOSE_MS / 1000,
        (XG_RELOAD_CLIENTS_CLOSE_MS % 1000) * 1000 };

    if (t->nlisteners == 0) {
        retiring_stop(t);
        return;
    }
    xg_timer_add(t->ev_deadline, &tv);
}

/* The retiring entry of UP in R, or NULL. */
static struct xg_reload_retiring *
retiring_find(const struct xg_running *r, const struct xg_upstream *up)
{
    struct xg_reload_retiring *t;

    for (t = r->retiring; t != NULL; t = t->next) {
        if (t->up == up) {
            return t;
        }
    }
    return NULL;
}

/* See xg_reload.h. */
void
xg_reload_free(struct xg_running *r)
{
    while (r->retiring != NULL) {
        retiring_free(r->retiring);
    }
    json_decref(r->last_errors);
    r->last_errors = NULL;
}

/* ---- applying a plan --------------------------------------------------- */

/* Adds one line to the error text *ERRS (malloc'd). */
static void
err_add(char **errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void
err_add(char **errs, const char *fmt, ...)
{
    char line[1200];
    size_t old = *errs != NULL ? strlen(*errs) : 0, n;
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    n = strlen(line);
    *errs = xg_realloc(*errs, old + n + 2);
    memcpy(*errs + old, line, n);
    (*errs)[old + n] = '\n';
    (*errs)[old + n + 1] = '\0';
}

/* The running listener on LC's address, or NULL. */
static struct xg_listener *
running_listener(const struct xg_running *r, const struct xg_listen_conf *lc)
{
    struct xg_listener *l;

    for (l = xg_listen_first(r->ls); l != NULL; l = l->next) {
        if (l->lc == lc) {
            return l;
        }
    }
    return NULL;
}

/* See xg_reload.h. */
struct xg_admin *
xg_reload_admin_start(struct xg_running *r, const struct xg_main_conf *mc)
{
    struct xg_admin *a = xg_admin_start(r->base, &mc->admin, r->ups);

    if (a == NULL) {
        return NULL;
    }
    xg_admin_allow_origins(a, mc->admin_origins, mc->nadmin_origins);
    if (r->ls != NULL) {
        xg_admin_status_hook(a, xg_listen_status, r->ls);
    }
    if (r->fo != NULL) {
        xg_admin_status_hook(a, xg_client_fanout_status, r->fo);
    }
    xg_admin_status_hook(a, xg_reload_status, r);
    return a;
}

/*
 * The steps that can fail, before anything runs on NEXT: the new admin
 * endpoint, the added upstreams (made, in the set, not started), the
 * listeners on new addresses. Written to *NEW_ADMIN, MADE (one per
 * upstream item) and OPENED (one per listener item). XG_ERROR with the
 * reasons in *ERRS; apply_undo() then takes them back.
 */
static int
apply_prepare(struct xg_running *r, struct xg_main_conf *next,
    const struct xg_reload_plan *plan, struct xg_admin **new_admin,
    struct xg_upstream **made, int *opened, char **errs)
{
    const struct xg_listen_conf *lc;
    const struct xg_upstream_conf *uc;
    enum xg_reload_op uop;
    char addr[300];
    size_t i;

    *new_admin = NULL;
    if (plan->admin && next->admin_set) {
        *new_admin = xg_reload_admin_start(r, next);
        if (*new_admin == NULL) {
            err_add(errs, "%s:%d: admin %s: cannot listen there",
                next->admin_file, next->admin_line,
                xg_conf_fmt_addr(&next->admin, addr, sizeof(addr)));
            return XG_ERROR;
        }
    }
    for (i = 0; i < plan->nups; i++) {
        uc = plan->ups[i].new;
        if (plan->ups[i].op != XG_RELOAD_START
            && plan->ups[i].op != XG_RELOAD_RESTART)
        {
            continue;
        }
        made[i] = xg_upstream_create(r->base, r->dns, uc);
        if (made[i] == NULL) {
            err_add(errs, "%s:%d: upstream \"%s\" cannot start (logged)",
                uc->file, uc->line, uc->name);
            return XG_ERROR;
        }
        if (plan->ups[i].op == XG_RELOAD_START) {
            xg_upstream_set_add(r->ups, made[i]);
        }
    }
    for (i = 0; i < plan->nlistens; i++) {
        lc = plan->listens[i].new;
        if (plan->listens[i].op != XG_RELOAD_START) {
            continue;
        }
        uop = plan_upstream_op(plan, lc->upstream_name);
        if (uop == XG_RELOAD_RESTART) {
            continue;   /* opened on the new upstream, once it runs */
        }
        if (xg_listen_open(r->ls, r->base, r->fo, next, r->ups, lc)
            != XG_OK)
        {
            err_add(errs, "%s:%d: listen %s: cannot listen there (logged)",
                lc->file, lc->line,
                xg_conf_fmt_addr(&lc->addr, addr, sizeof(addr)));
            return XG_ERROR;
        }
        opened[i] = 1;
    }
    return XG_OK;
}

/* Undoes apply_prepare(): nothing of NEXT runs. */
static void
apply_undo(struct xg_running *r, struct xg_main_conf *next,
    const struct xg_reload_plan *plan, struct xg_admin *new_admin,
    struct xg_upstream **made, const int *opened)
{
    struct xg_listener *l;
    size_t i;

    for (i = 0; i < plan->nlistens; i++) {
        if (opened[i] && (l = running_listener(r, plan->listens[i].new))
            != NULL)
        {
            xg_listen_close(r->ls, l, 1001, "server reloading", next, NULL,
                NULL);
        }
    }
    for (i = 0; i < plan->nups; i++) {
        xg_upstream_free(made[i]);     /* out of the set too */
    }
    xg_admin_free(new_admin);
}

/*
 * One line about the upstream called NAME: with its connection when it
 * runs in R (xg_upstream_log()), else with its name alone.
 */
static void
log_up(const struct xg_running *r, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
log_up(const struct xg_running *r, const char *name, const char *fmt, ...)
{
    struct xg_upstream *up = xg_upstream_find(r->ups, name);
    struct xg_log_ctx ctx;
    va_list ap;

    memset(&ctx, 0, sizeof(ctx));
    if (up != NULL) {
        xg_upstream_log_ctx(up, &ctx);
    } else {
        ctx.upstream = name;
    }
    va_start(ap, fmt);
    xg_log_atv(XG_LOG_INFO, &ctx, fmt, ap);
    va_end(ap);
}

static void
log_plan(const struct xg_running *r, const struct xg_reload_plan *plan)
{
    const struct xg_upstream_conf *uc;
    const struct xg_listen_conf *lc;
    char addr[300];
    size_t i;

    for (i = 0; i < plan->nups; i++) {
        const struct xg_reload_item *it = &plan->ups[i];

        uc = it->new != NULL ? it->new : it->old;
        switch (it->op) {
        case XG_RELOAD_KEEP:
            log_up(r, uc->name, "reload: unchanged");
            break;
        case XG_RELOAD_APPLY:
            log_up(r, uc->name, "reload: %s changed: applied from their "
                "next use", it->changed);
            break;
        case XG_RELOAD_ROTATE:
            log_up(r, uc->name, "reload: %s changed: a new connection "
                "(rotation) applies it", it->changed);
            break;
        case XG_RELOAD_START:
            log_up(r, uc->name, "reload: added");
            break;
        case XG_RELOAD_STOP:
            log_up(r, uc->name, "reload: removed: closing its clients "
                "(1001) and its connection (1000)");
            break;
        case XG_RELOAD_RESTART:
            log_up(r, uc->name, "reload: %s changed%s%s: restarted (its "
                "clients closed with 1001)", it->changed,
                it->why != NULL ? ", " : "", it->why != NULL ? it->why : "");
            break;
        }
    }
    for (i = 0; i < plan->nlistens; i++) {
        const struct xg_reload_item *it = &plan->listens[i];

        lc = it->new != NULL ? it->new : it->old;
        xg_conf_fmt_addr(&lc->addr, addr, sizeof(addr));
        switch (it->op) {
        case XG_RELOAD_KEEP:
            break;
        case XG_RELOAD_APPLY:
            xg_log_info("reload: listener %s: %s changed: applied from the "
                "next client", addr, it->changed);
            break;
        case XG_RELOAD_START:
            xg_log_info("reload: listener %s: added", addr);
            break;
        case XG_RELOAD_STOP:
            xg_log_info("reload: listener %s: removed", addr);
            break;
        default:
            xg_log_info("reload: listener %s: %s changed: closed and opened "
                "anew", addr, it->changed);
            break;
        }
    }
    if (plan->main_changed[0] != '\0') {
        xg_log_info("reload: %s changed", plan->main_changed);
    }
}

/* See xg_reload.h. */
int
xg_reload_apply(struct xg_running *r, struct xg_main_conf *next,
    char **errors)
{
    struct xg_main_conf *old = r->conf;
    struct xg_reload_plan plan;
    struct xg_upstream **made;
    struct xg_reload_retiring **gone;
    struct xg_upstream *up;
    struct xg_listener *l;
    struct xg_admin *new_admin = NULL;
    const struct xg_reload_item *it;
    char why[600], addr[300];
    int *opened;
    size_t i;

    *errors = NULL;
    reload_plan(old, next, r->ups, &plan);
    made = xg_calloc(plan.nups + 1, sizeof(*made));
    gone = xg_calloc(plan.nups + 1, sizeof(*gone));
    opened = xg_calloc(plan.nlistens + 1, sizeof(*opened));

    if (apply_prepare(r, next, &plan, &new_admin, made, opened, errors)
        != XG_OK)
    {
        goto undo;
    }
    if (plan.error_log
        && xg_log_open(next->error_log, next->error_log_level) != XG_OK)
    {
        err_add(errors, "%s:%d: error_log \"%s\": cannot open it",
            next->error_log_file ? next->error_log_file : next->path,
            next->error_log_line, next->error_log);
        goto undo;
    }
    if (plan.error_log) {
        xg_log_set_format(next->error_log_format);
    }
    /* from here on nothing fails but a replaced listener's bind */
    log_plan(r, &plan);

    /* upstreams that go: out of the set, their clients closed first */
    for (i = 0; i < plan.nups; i++) {
        it = &plan.ups[i];
        if (it->op != XG_RELOAD_STOP && it->op != XG_RELOAD_RESTART) {
            continue;
        }
        up = xg_upstream_find(r->ups,
            ((const struct xg_upstream_conf *) it->old)->name);
        if (up != NULL) {
            gone[i] = retiring_new(r, up, old);
        }
        if (it->op == XG_RELOAD_RESTART) {
            xg_upstream_set_add(r->ups, made[i]);
        }
        made[i] = NULL;
    }
    /* listeners that go: stop accepting, close their clients (1001) */
    for (i = 0; i < plan.nlistens; i++) {
        struct xg_reload_retiring *t;

        it = &plan.listens[i];
        if (it->op != XG_RELOAD_STOP && it->op != XG_RELOAD_RESTART) {
            continue;
        }
        if ((l = running_listener(r, it->old)) == NULL) {
            continue;
        }
        t = retiring_find(r, l->up);
        if (t != NULL && l->clients != NULL) {
            t->nlisteners++;
            xg_listen_close(r->ls, l, 1001, "server reloading", old,
                retiring_listener_closed, t);
        } else {
            xg_listen_close(r->ls, l, 1001, "server reloading", old, NULL,
                NULL);
        }
    }
    /* then the connections of the upstreams that go (1000) */
    for (i = 0; i < plan.nups; i++) {
        if (gone[i] != NULL) {
            retiring_start(gone[i]);
        }
    }
    /*
     * The upstreams that stay run on the new conf. reload_plan() asked
     * each one (xg_upstream_reconf_check()) and restarts those that
     * cannot follow it, so none of these fails, and none is left on the
     * old conf freed below.
     */
    for (i = 0; i < plan.nups; i++) {
        it = &plan.ups[i];
        if (it->op == XG_RELOAD_KEEP || it->op == XG_RELOAD_APPLY
            || it->op == XG_RELOAD_ROTATE)
        {
            up = xg_upstream_find(r->ups,
                ((const struct xg_upstream_conf *) it->new)->name);
            snprintf(why, sizeof(why), "reload: %s changed", it->changed);
            if (up != NULL && xg_upstream_reconf(up, it->new,
                it->op == XG_RELOAD_ROTATE ? why : NULL) != XG_OK)
            {
                /* a venue whose reconf_check() broke its contract */
                xg_upstream_log(XG_LOG_ERROR, up, "reload: its venue "
                    "refused the new conf it had accepted");
            }
        }
    }
    for (i = 0; i < plan.nups; i++) {
        it = &plan.ups[i];
        if (it->op == XG_RELOAD_START || it->op == XG_RELOAD_RESTART) {
            up = xg_upstream_find(r->ups,
                ((const struct xg_upstream_conf *) it->new)->name);
            if (up != NULL) {
                xg_upstream_start(up);
            }
        }
    }
    /* listeners: kept ones on the new conf, replaced ones opened anew */
    for (i = 0; i < plan.nlistens; i++) {
        it = &plan.listens[i];
        if (it->op == XG_RELOAD_KEEP || it->op == XG_RELOAD_APPLY) {
            if ((l = running_listener(r, it->old)) != NULL) {
                xg_listen_reconf(l, next, it->new);
            }
        } else if ((it->op == XG_RELOAD_RESTART
            || it->op == XG_RELOAD_START) && !opened[i])
        {
            const struct xg_listen_conf *lc = it->new;

            if (xg_listen_open(r->ls, r->base, r->fo, next, r->ups, lc)
                != XG_OK)
            {
                err_add(errors, "%s:%d: listen %s: cannot listen there "
                    "(logged); the rest of the conf runs", lc->file,
                    lc->line, xg_conf_fmt_addr(&lc->addr, addr,
                    sizeof(addr)));
            }
        }
    }
    /* the admin endpoint follows its directive */
    if (plan.admin) {
        xg_admin_free(r->admin);
        r->admin = new_admin;
        if (r->admin != NULL) {
            xg_log_info("reload: admin on port %u",
                xg_admin_port(r->admin));
        } else {
            xg_log_info("reload: admin endpoint removed");
        }
    } else if (r->admin != NULL) {
        xg_admin_allow_origins(r->admin, next->admin_origins,
            next->nadmin_origins);
    }
    r->conf = next;
    xg_conf_free(old);
    xg_reload_plan_free(&plan);
    free(made);
    free(gone);
    free(opened);
    return *errors == NULL ? XG_OK : XG_AGAIN;

undo:
    apply_undo(r, next, &plan, new_admin, made, opened);
    xg_conf_free(next);
    xg_reload_plan_free(&plan);
    free(made);
    free(gone);
    free(opened);
    return XG_ERROR;
}

/* Logs each line of TEXT as an error and keeps it in R's last_errors. */
static void
note_errors(struct xg_running *r, const char *text)
{
    const char *p = text, *eol;
    char line[1200];
    size_t len;

    for (; p != NULL && *p != '\0'; p = *eol ? eol + 1 : eol) {
        eol = strchr(p, '\n');
        if (eol == NULL) {
            eol = p + strlen(p);
        }
        len = (size_t) (eol - p);
        if (len == 0) {
            continue;
        }
        if (len >= sizeof(line)) {
            len = sizeof(line) - 1;
        }
        memcpy(line, p, len);
        line[len] = '\0';
        xg_log_error("reload: %s", line);
        json_array_append_new(r->last_errors, json_string(line));
    }
}

/* See xg_reload.h. */
int
xg_reload(struct xg_running *r, const char *path)
{
    struct xg_main_conf *next;
    struct timeval tv;
    struct tm tm;
    char *errors = NULL;
    int rc = XG_ERROR, applied;
    size_t n;

    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(r->last_at, sizeof(r->last_at), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(r->last_at + n, sizeof(r->last_at) - n, ".%03dZ",
        (int) (tv.tv_usec / 1000));
    r->reloaded = 1;
    json_decref(r->last_errors);
    r->last_errors = json_array();

    next = xg_conf_load(path, &errors);
    if (next == NULL) {
        xg_log_error("reload: \"%s\" is not valid, the running "
            "configuration stays:", path);
        note_errors(r, errors);
    } else {
        if (errors != NULL && errors[0] != '\0') {
            /* warnings of a valid conf */
            xg_log_warn("reload: \"%s\":\n%s", path, errors);
        }
        free(errors);
        errors = NULL;
        if (r->stopping) {
            xg_conf_free(next);
            note_errors(r, "exgate is stopping: nothing reloaded");
        } else if ((applied = xg_reload_apply(r, next, &errors)) == XG_OK) {
            xg_log_info("reload: \"%s\" runs", path);
            rc = XG_OK;
        } else {
            xg_log_error("reload: \"%s\" could not be applied%s:", path,
                applied == XG_AGAIN ? " in full" : ", the running "
                "configuration stays");
            note_errors(r, errors);
        }
    }
    free(errors);
    r->last_ok = rc == XG_OK;
    if (rc == XG_OK) {
        r->reloads_ok++;
    } else {
        r->reloads_failed++;
    }
    return rc;
}

/* See xg_reload.h. */
void
xg_reload_status(json_t *root, void *arg)
{
    const struct xg_running *r = arg;

    if (!r->reloaded) {
        json_object_set_new(root, "last_reload", json_null());
    } else {
        json_object_set_new(root, "last_reload", json_pack("{s:b, s:s, s:o}",
            "ok", r->last_ok, "at", r->last_at, "errors",
            r->last_errors != NULL ? json_copy(r->last_errors)
            : json_array()));
    }
    json_object_set_new(root, "reloads", json_pack("{s:I, s:I}",
        "ok", (json_int_t) r->reloads_ok,
        "error", (json_int_t) r->reloads_failed));
}
