/*
 * exgate.c: main. Parses the command line, loads the conf, builds the
 * runtime objects from it and runs the one event loop in the foreground
 * (systemd-friendly) until SIGTERM or SIGINT.
 *
 * Signals: SIGTERM/SIGINT stop in order and exit 0; SIGHUP reloads the
 * conf in place (src/xg_reload.h: what did not change is not touched; an
 * invalid conf changes nothing); SIGUSR1 reopens the log file.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_admin.h"
#include "xg_client.h"
#include "xg_upstream.h"
#include "xg_listen.h"
#include "xg_reload.h"
#include "xg_tls.h"
#include "xg_timer.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#ifndef XG_SYSCONFDIR
#define XG_SYSCONFDIR "/usr/local/etc"
#endif

#define XG_STOP_DEADLINE_MS 5000

/*
 * The loop and what runs on it. The fan-out belongs to the loop; the
 * upstream set, the listener set and the admin endpoint to the running
 * configuration (R), which a reload changes in place.
 */
struct xg_main {
    struct xg_running        r;
    const char              *conf_path;
    struct event            *ev_term, *ev_int, *ev_hup, *ev_usr1;
    struct xg_timer         *ev_stop_deadline;
};

static void
usage(FILE *fp)
{
    fprintf(fp,
        "usage: exgate [-c FILE] [-t | -T | -s SIGNAL] [-f] [-v] [-h]\n"
        "  -c FILE  configuration file (default %s/exgate.conf)\n"
        "  -t       check the configuration and exit\n"
        "  -T       check it, print the effective configuration and exit\n"
        "  -s SIG   send reload, stop or reopen to the running exgate (its\n"
        "           pid file, the conf's pid directive) and exit\n"
        "  -f       stay in the foreground (always the case; for systemd)\n"
        "  -v       print the version and exit\n"
        "  -h       print this help and exit\n", XG_SYSCONFDIR);
}

/*
 * Tells systemd (Type=notify, $NOTIFY_SOCKET) where the daemon stands:
 * READY=1, RELOADING=1, STOPPING=1. A no-op when exgate was built
 * without libsystemd or runs outside systemd.
 */
static void
notify(const char *state)
{
#ifdef HAVE_SYSTEMD
    char buf[256];

    if (strncmp(state, "RELOADING=1", 11) == 0) {
        /* systemd 253+ wants the time of the reload with it */
        snprintf(buf, sizeof(buf), "%s\nMONOTONIC_USEC=%llu", state,
            (unsigned long long) xg_now_us());
        state = buf;
    }
    sd_notify(0, state);
#else
    (void) state;
#endif
}

/*
 * Writes our pid to PATH (NULL: none configured). XG_ERROR, logged, when
 * it cannot.
 */
static int
pid_write(const char *path)
{
    FILE *fp;

    if (path == NULL) {
        return XG_OK;
    }
    fp = fopen(path, "w");
    if (fp == NULL || fprintf(fp, "%ld\n", (long) getpid()) < 0
        || fclose(fp) != 0)
    {
        xg_log_error("exgate: pid file \"%s\": %s", path, strerror(errno));
        return XG_ERROR;
    }
    return XG_OK;
}

/* Whether A and B (each may be NULL: none) are the same path. */
static int
same_path(const char *a, const char *b)
{
    return (a == NULL && b == NULL)
           || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Removes the pid file PATH if it is still ours. */
static void
pid_remove(const char *path)
{
    char buf[32];
    FILE *fp;

    if (path == NULL || (fp = fopen(path, "r")) == NULL) {
        return;
    }
    if (fgets(buf, sizeof(buf), fp) != NULL && atol(buf) == (long) getpid()) {
        unlink(path);
    }
    fclose(fp);
}

/*
 * exgate -s SIG: sends SIGHUP (reload), SIGTERM (stop) or SIGUSR1 (reopen)
 * to the pid in the pid file that the conf MC names. Returns the exit
 * status.
 */
static int
send_signal(const struct xg_main_conf *mc, const char *name)
{
    static const struct { const char *name; int sig; } sigs[] = {
        { "reload", SIGHUP }, { "stop", SIGTERM }, { "reopen", SIGUSR1 }
    };
    char buf[32], *end;
    FILE *fp;
    long pid;
    size_t i;

    for (i = 0; i < XG_NELEM(sigs); i++) {
        if (strcmp(sigs[i].name, name) == 0) {
            break;
        }
    }
    if (i == XG_NELEM(sigs)) {
        fprintf(stderr, "exgate: -s %s: reload, stop or reopen\n", name);
        return 2;
    }
    if (mc->pid == NULL) {
        fprintf(stderr, "exgate: -s %s: %s has no pid directive\n", name,
            mc->path);
        return 1;
    }
    fp = fopen(mc->pid, "r");
    if (fp == NULL) {
        fprintf(stderr, "exgate: -s %s: %s: %s\n", name, mc->pid,
            strerror(errno));
        return 1;
    }
    if (fgets(buf, sizeof(buf), fp) == NULL) {
        buf[0] = '\0';
    }
    fclose(fp);
    pid = strtol(buf, &end, 10);
    if (pid <= 1 || (*end != '\n' && *end != '\0')) {
        fprintf(stderr, "exgate: -s %s: %s holds no pid\n", name, mc->pid);
        return 1;
    }
    if (kill((pid_t) pid, sigs[i].sig) != 0) {
        fprintf(stderr, "exgate: -s %s: pid %ld (%s): %s\n", name, pid,
            mc->pid, strerror(errno));
        return 1;
    }
    return 0;
}

/* Prints the conf errors and warnings to standard error. */
static void
print_errors(const char *errors)
{
    if (errors != NULL) {
        fputs(errors, stderr);
    }
}

static void
stop_done(struct xg_main *m)
{
    xg_log_info("exgate: stopped");
    event_base_loopexit(m->r.base, NULL);
}

static void
on_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct xg_main *m = arg;

    xg_log_warn("exgate: stop deadline of %d ms passed, exiting",
        XG_STOP_DEADLINE_MS);
    stop_done(m);
}

/* Every upstream has closed (1000 answered, or its close deadline). */
static void
on_upstreams_stopped(void *arg)
{
    stop_done(arg);
}

static void
begin_stop(struct xg_main *m, const char *why)
{
    struct timeval tv = { XG_STOP_DEADLINE_MS / 1000,
        (XG_STOP_DEADLINE_MS % 1000) * 1000 };

    if (m->r.stopping) {
        xg_log_info("exgate: %s again, stopping now", why);
        stop_done(m);
        return;
    }
    m->r.stopping = 1;
    notify("STOPPING=1");
    xg_log_info("exgate: %s, stopping", why);
    m->ev_stop_deadline = xg_timer_new(m->r.base, on_stop_deadline, m);
    xg_timer_add(m->ev_stop_deadline, &tv);

    /* upstreams: close each with 1000 (and listeners), then stop_done() */
    if (m->r.ls != NULL) {
        xg_listen_stop_all(m->r.ls);
    }
    xg_upstream_stop_all(m->r.ups, on_upstreams_stopped, m);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct xg_main *m = arg;
    char *pid;

    switch (sig) {
    case SIGTERM:
        begin_stop(m, "SIGTERM");
        break;
    case SIGINT:
        begin_stop(m, "SIGINT");
        break;
    case SIGUSR1:
        xg_log_reopen();
        break;
    case SIGHUP:
        if (m->r.stopping) {
            xg_log_info("exgate: SIGHUP while stopping: ignored");
            break;
        }
        notify("RELOADING=1");
        xg_log_info("exgate: SIGHUP: reloading \"%s\"", m->conf_path);
        pid = m->r.conf->pid != NULL ? xg_strdup(m->r.conf->pid) : NULL;
        if (xg_reload(&m->r, m->conf_path) == XG_OK
            && !same_path(pid, m->r.conf->pid))
        {
            /* the pid file moved: a failed write is logged, not fatal */
            pid_remove(pid);
            pid_write(m->r.conf->pid);
        }
        free(pid);
        notify("READY=1");
        break;
    }
}

int
main(int argc, char **argv)
{
    struct xg_main m;
    const char *path = XG_SYSCONFDIR "/exgate.conf";
    char *errors = NULL;
    const char *sig = NULL;
    int opt, test_only = 0, dump = 0, rc = 0;

    while ((opt = getopt(argc, argv, "c:tTs:fvh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'T':
            dump = 1;
            break;
        case 's':
            sig = optarg;
            break;
        case 'f':
            break;
        case 'v':
            printf("exgate %s\n", XG_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }

    memset(&m, 0, sizeof(m));
    m.conf_path = path;
    /* -s needs the pid directive, not the secrets (they may be unset) */
    m.r.conf = sig != NULL ? xg_conf_load_unsealed(path, &errors)
                           : xg_conf_load(path, &errors);
    print_errors(errors);
    free(errors);
    if (m.r.conf == NULL) {
        fprintf(stderr, "exgate: %s: configuration check failed\n", path);
        return 1;
    }
    if (sig != NULL) {
        rc = send_signal(m.r.conf, sig);
        xg_conf_free(m.r.conf);
        return rc;
    }
    if (dump) {
        /* as nginx -T: the conf is valid (on stderr), here is what it says */
        fprintf(stderr, "%s: ok\n", path);
        rc = xg_conf_dump(stdout, m.r.conf) == XG_OK ? 0 : 1;
        xg_conf_free(m.r.conf);
        return rc;
    }
    if (test_only) {
        printf("%s: ok\n", path);
        xg_conf_free(m.r.conf);
        return 0;
    }

    if (xg_log_open(m.r.conf->error_log, m.r.conf->error_log_level) != XG_OK) {
        fprintf(stderr, "exgate: error_log \"%s\": %s\n", m.r.conf->error_log,
            strerror(errno));
        xg_conf_free(m.r.conf);
        return 1;
    }
    xg_log_set_format(m.r.conf->error_log_format);

    signal(SIGPIPE, SIG_IGN);
    m.r.base = event_base_new();
    if (m.r.base == NULL) {
        xg_log_error("exgate: cannot create the event base");
        xg_conf_free(m.r.conf);
        return 1;
    }
    m.r.dns = evdns_base_new(m.r.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (m.r.dns == NULL) {
        /* No resolv.conf: numeric hosts still work. */
        m.r.dns = evdns_base_new(m.r.base, 0);
        xg_log_warn("exgate: no name servers configured; only numeric "
            "hosts can be resolved");
    }

    m.ev_term = evsignal_new(m.r.base, SIGTERM, on_signal, &m);
    m.ev_int = evsignal_new(m.r.base, SIGINT, on_signal, &m);
    m.ev_hup = evsignal_new(m.r.base, SIGHUP, on_signal, &m);
    m.ev_usr1 = evsignal_new(m.r.base, SIGUSR1, on_signal, &m);
    evsignal_add(m.ev_term, NULL);
    evsignal_add(m.ev_int, NULL);
    evsignal_add(m.ev_hup, NULL);
    evsignal_add(m.ev_usr1, NULL);

    m.r.fo = xg_client_fanout_new(m.r.base);
    if (m.r.fo == NULL) {
        xg_log_error("exgate: cannot create the fan-out event");
        rc = 1;
    }

    /* upstreams */
    m.r.ups = xg_upstream_set_new();
    if (rc == 0
        && xg_upstream_start_all(m.r.ups, m.r.base, m.r.dns, m.r.conf) != XG_OK)
    {
        rc = 1;
    }

    /* listeners */
    if (rc == 0) {
        xg_listen_raise_nofile();
        m.r.ls = xg_listen_start_all(m.r.base, m.r.fo, m.r.conf, m.r.ups);
        if (m.r.ls == NULL) {
            rc = 1;
        }
    }

    /* admin */
    if (rc == 0 && m.r.conf->admin_set) {
        m.r.admin = xg_reload_admin_start(&m.r, m.r.conf);
        if (m.r.admin == NULL) {
            rc = 1;
        }
    }

    if (rc == 0 && pid_write(m.r.conf->pid) != XG_OK) {
        rc = 1;
    }
    if (rc == 0) {
        xg_log_info("exgate %s: started with \"%s\" (pid %ld)", XG_VERSION,
            path, (long) getpid());
        /* every listener and the admin endpoint are open: bots can come */
        notify("READY=1");
        if (event_base_dispatch(m.r.base) < 0) {
            xg_log_error("exgate: event loop failed");
            rc = 1;
        }
    }

    if (m.r.conf != NULL) {
        pid_remove(m.r.conf->pid);
    }
    xg_admin_free(m.r.admin);
    xg_listen_free_all(m.r.ls);
    m.r.ls = NULL;
    xg_reload_free(&m.r);
    xg_client_fanout_free(m.r.fo);
    xg_upstream_free_all(m.r.ups);

    event_free(m.ev_term);
    event_free(m.ev_int);
    event_free(m.ev_hup);
    event_free(m.ev_usr1);
    if (m.ev_stop_deadline != NULL) {
        xg_timer_free(m.ev_stop_deadline);
    }
    evdns_base_free(m.r.dns, 0);
    event_base_free(m.r.base);
    xg_conf_free(m.r.conf);
    xg_tls_cleanup();
    xg_log_open(NULL, XG_LOG_INFO);
    return rc;
}
