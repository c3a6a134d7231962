/*
 * list_directives: prints every directive exgate knows, one per line, as
 * "CONTEXT NAME", read from the directive tables through their public
 * arrays (never from the matching code):
 *
 *   main, upstream          the modules of xg_modules[] (src/xg_module.c)
 *   upstream:PROTOCOL       each protocol module's (xg_venues[])
 *   reconnect:POLICY        each reconnect policy's (xg_reconnect_policies[])
 *   breaker                 inside `breaker { }` (modules/reconnect)
 *   any                     `include`, the parser's own keyword
 *
 * t/integ/test_man.sh checks man/exgate.conf.5 against this list both
 * ways, and t/integ/test_cli.sh checks that `exgate -T` writes each one.
 */
#include "xg_core.h"
#include "xg_conf.h"
#include "xg_venue.h"
#include "xg_reconnect.h"

#include <stdio.h>
#include <string.h>

static int
print_table(const char *ctx, const struct xg_command *table, unsigned want)
{
    const struct xg_command *c;
    int n = 0;

    for (c = table; c != NULL && c->name != NULL; c++) {
        if (c->type & want) {
            printf("%s %s\n", ctx, c->name);
            n++;
        }
    }
    return n;
}

int
main(void)
{
    const struct xg_module *const *m;
    const struct xg_venue *const *p;
    const struct xg_reconnect_policy *const *r;
    char ctx[128];
    int n = 0;

    for (m = xg_modules; *m != NULL; m++) {
        n += print_table("main", (*m)->commands, XG_CONF_MAIN);
        n += print_table("upstream", (*m)->commands, XG_CONF_UPSTREAM);
    }
    for (p = xg_venues; *p != NULL; p++) {
        snprintf(ctx, sizeof(ctx), "upstream:%s", (*p)->name);
        n += print_table(ctx, (*p)->commands, XG_CONF_UPSTREAM);
    }
    for (r = xg_reconnect_policies; *r != NULL; r++) {
        snprintf(ctx, sizeof(ctx), "reconnect:%s", (*r)->name);
        n += print_table(ctx, (*r)->commands, XG_CONF_RECONNECT);
    }
    n += print_table("breaker", xg_reconnect_breaker_commands,
        XG_CONF_BREAKER);
    printf("any include\n");
    /* An empty walk would make every check against it pass. */
    return n > 0 ? 0 : 1;
}
