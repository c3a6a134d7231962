/*
 * fuzz_conf.c: libFuzzer target for the conf language. Any bytes in: the
 * load either succeeds or reports errors; it never crashes or leaks.
 */
#include "xg_core.h"
#include "xg_conf.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct xg_main_conf *mc;
    char *errors = NULL;

    /* `include` reads files relative to this name: keep it in /nonexistent. */
    mc = xg_conf_load_mem("/nonexistent/fuzz.conf", (const char *) data, size,
        &errors);
    xg_conf_free(mc);
    free(errors);
    return 0;
}
