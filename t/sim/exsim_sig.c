/*
 * exsim_sig.c: Deribit's WebSocket client_signature (exchange-protocols.md
 * A2.2). Kept free of the rest of exsim so a unit test can link it alone.
 */
#include "exsim.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

/*
 * Computes lowercase hex HMAC-SHA256(key SECRET, "TS\nNONCE\nDATA") into
 * OUT (64 hex digits and a NUL). DATA NULL means "". Borrows everything.
 * Returns 0, or -1 when OpenSSL fails.
 */
int
exsim_sig_compute(const char *secret, const char *ts, const char *nonce,
    const char *data, char out[65])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    size_t lt = strlen(ts), ln = strlen(nonce);
    size_t ld = data ? strlen(data) : 0;
    size_t n = lt + 1 + ln + 1 + ld;
    unsigned char *msg = xg_malloc(n + 1);
    unsigned char *res;
    unsigned int i;

    memcpy(msg, ts, lt);
    msg[lt] = '\n';
    memcpy(msg + lt + 1, nonce, ln);
    msg[lt + 1 + ln] = '\n';
    if (ld > 0) {
        memcpy(msg + lt + 2 + ln, data, ld);
    }
    res = HMAC(EVP_sha256(), secret, (int) strlen(secret), msg, n, mac,
        &maclen);
    free(msg);
    if (res == NULL || maclen != 32) {
        out[0] = '\0';
        return -1;
    }
    for (i = 0; i < maclen; i++) {
        out[2 * i] = hex[mac[i] >> 4];
        out[2 * i + 1] = hex[mac[i] & 0x0f];
    }
    out[64] = '\0';
    return 0;
}
