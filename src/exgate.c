/*
 * exgate.c: main. Parses the command line, loads the conf, builds the
 * runtime objects from it and runs the one event loop in the foreground
 * (systemd-friendly) until SIGTERM or SIGINT.
 *
 * Signals: SIGTERM/SIGINT stop in order and exit 0; SIGHUP re-reads the
 * conf and reports whether it is valid (the running conf is kept);
 * SIGUSR1 reopens the log file.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_log.h"
#include "xg_admin.h"
#include "xg_client.h"
#include "xg_upstream.h"
#include "xg_listen.h"
#include "xg_tls.h"

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
 * configuration (a reload would build new ones beside them).
 */
struct xg_main {
    struct event_base       *base;
    struct evdns_base       *dns;
    struct xg_fanout        *fo;
    struct xg_main_conf     *conf;
    const char              *conf_path;
    struct event            *ev_term, *ev_int, *ev_hup, *ev_usr1;
    struct event            *ev_stop_deadline;
    int                      stopping;
    struct xg_upstream_set  *ups;
    struct xg_listen_set    *ls;
    struct xg_admin         *admin;
};

static void
usage(FILE *fp)
{
    fprintf(fp,
        "usage: exgate [-c FILE] [-t | -T] [-f] [-v] [-h]\n"
        "  -c FILE  configuration file (default %s/exgate.conf)\n"
        "  -t       check the configuration and exit\n"
        "  -T       check it, print the effective configuration and exit\n"
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
    event_base_loopexit(m->base, NULL);
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

    if (m->stopping) {
        xg_log_info("exgate: %s again, stopping now", why);
        stop_done(m);
        return;
    }
    m->stopping = 1;
    notify("STOPPING=1");
    xg_log_info("exgate: %s, stopping", why);
    m->ev_stop_deadline = evtimer_new(m->base, on_stop_deadline, m);
    evtimer_add(m->ev_stop_deadline, &tv);

    /* upstreams: close each with 1000 (and listeners), then stop_done() */
    if (m->ls != NULL) {
        xg_listen_stop_all(m->ls);
    }
    xg_upstream_stop_all(m->ups, on_upstreams_stopped, m);
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct xg_main *m = arg;
    struct xg_main_conf *next;
    char *errors = NULL;

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
        notify("RELOADING=1");
        next = xg_conf_load(m->conf_path, &errors);
        if (next == NULL) {
            xg_log_error("exgate: SIGHUP: \"%s\" is not valid, keeping the "
                "running configuration:\n%s", m->conf_path,
                errors ? errors : "");
        } else {
            /* A valid conf may still carry warnings: show them too. */
            if (errors != NULL && errors[0] != '\0') {
                xg_log_warn("exgate: SIGHUP: \"%s\":\n%s", m->conf_path,
                    errors);
            }
            xg_log_info("exgate: SIGHUP: \"%s\" is valid; applying a new "
                "configuration needs a restart for now, keeping the running "
                "one", m->conf_path);
            xg_conf_free(next);
        }
        free(errors);
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
    int opt, test_only = 0, dump = 0, rc = 0;

    while ((opt = getopt(argc, argv, "c:tTfvh")) != -1) {
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
    m.conf = xg_conf_load(path, &errors);
    print_errors(errors);
    free(errors);
    if (m.conf == NULL) {
        fprintf(stderr, "exgate: %s: configuration check failed\n", path);
        return 1;
    }
    if (dump) {
        /* as nginx -T: the conf is valid (on stderr), here is what it says */
        fprintf(stderr, "%s: ok\n", path);
        rc = xg_conf_dump(stdout, m.conf) == XG_OK ? 0 : 1;
        xg_conf_free(m.conf);
        return rc;
    }
    if (test_only) {
        printf("%s: ok\n", path);
        xg_conf_free(m.conf);
        return 0;
    }

    if (xg_log_open(m.conf->error_log, m.conf->error_log_level) != XG_OK) {
        fprintf(stderr, "exgate: error_log \"%s\": %s\n", m.conf->error_log,
            strerror(errno));
        xg_conf_free(m.conf);
        return 1;
    }
    xg_log_set_format(m.conf->error_log_format);

    signal(SIGPIPE, SIG_IGN);
    m.base = event_base_new();
    if (m.base == NULL) {
        xg_log_error("exgate: cannot create the event base");
        xg_conf_free(m.conf);
        return 1;
    }
    m.dns = evdns_base_new(m.base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    if (m.dns == NULL) {
        /* No resolv.conf: numeric hosts still work. */
        m.dns = evdns_base_new(m.base, 0);
        xg_log_warn("exgate: no name servers configured; only numeric "
            "hosts can be resolved");
    }

    m.ev_term = evsignal_new(m.base, SIGTERM, on_signal, &m);
    m.ev_int = evsignal_new(m.base, SIGINT, on_signal, &m);
    m.ev_hup = evsignal_new(m.base, SIGHUP, on_signal, &m);
    m.ev_usr1 = evsignal_new(m.base, SIGUSR1, on_signal, &m);
    evsignal_add(m.ev_term, NULL);
    evsignal_add(m.ev_int, NULL);
    evsignal_add(m.ev_hup, NULL);
    evsignal_add(m.ev_usr1, NULL);

    m.fo = xg_client_fanout_new(m.base);
    if (m.fo == NULL) {
        xg_log_error("exgate: cannot create the fan-out event");
        rc = 1;
    }

    /* upstreams */
    m.ups = xg_upstream_set_new();
    if (rc == 0
        && xg_upstream_start_all(m.ups, m.base, m.dns, m.conf) != XG_OK)
    {
        rc = 1;
    }

    /* listeners */
    if (rc == 0) {
        xg_listen_raise_nofile();
        m.ls = xg_listen_start_all(m.base, m.fo, m.conf, m.ups);
        if (m.ls == NULL) {
            rc = 1;
        }
    }

    /* admin */
    if (rc == 0 && m.conf->admin_set) {
        m.admin = xg_admin_start(m.base, &m.conf->admin, m.ups);
        if (m.admin == NULL) {
            rc = 1;
        } else {
            xg_admin_allow_origins(m.admin, m.conf->admin_origins,
                m.conf->nadmin_origins);
            xg_admin_status_hook(m.admin, xg_listen_status, m.ls);
            xg_admin_status_hook(m.admin, xg_client_fanout_status, m.fo);
        }
    }

    if (rc == 0) {
        xg_log_info("exgate %s: started with \"%s\" (pid %ld)", XG_VERSION,
            path, (long) getpid());
        /* every listener and the admin endpoint are open: bots can come */
        notify("READY=1");
        if (event_base_dispatch(m.base) < 0) {
            xg_log_error("exgate: event loop failed");
            rc = 1;
        }
    }

    xg_admin_free(m.admin);
    xg_listen_free_all(m.ls);
    xg_client_fanout_free(m.fo);
    xg_upstream_free_all(m.ups);

    event_free(m.ev_term);
    event_free(m.ev_int);
    event_free(m.ev_hup);
    event_free(m.ev_usr1);
    if (m.ev_stop_deadline != NULL) {
        event_free(m.ev_stop_deadline);
    }
    evdns_base_free(m.dns, 0);
    event_base_free(m.base);
    xg_conf_free(m.conf);
    xg_tls_cleanup();
    xg_log_open(NULL, XG_LOG_INFO);
    return rc;
}
