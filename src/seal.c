/*
 * seal.c: AES-256-GCM sealing of secrets under a key file (include/seal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/base64.h>
#include <mbedtls/gcm.h>

#include "seal.h"
#include "xfuncs.h"

#define SEAL_NONCE 12
#define SEAL_TAG 16
#define SEAL_PREFIX "v1."

struct seal {
    unsigned char key[SEAL_KEY_LEN];
};

static int
fill_random(void *p, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom((char *)p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -EIO;
        got += (size_t)r;
    }
    return 0;
}

/* Make PATH with a fresh key (O_EXCL: a racing creator wins, we load its). */
static int
create_key(const char *path, struct err *e)
{
    unsigned char k[SEAL_KEY_LEN];
    int fd, rc = 0;

    if (fill_random(k, sizeof(k)) < 0)
        return err_set(e, EIO, "provider key %s: no entropy from getrandom", path);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        explicit_bzero(k, sizeof(k));
        return errno == EEXIST ? 0 : err_errno(e, "provider key %s: create", path);
    }
    if (write_full(fd, k, sizeof(k)) < 0 || fsync(fd) < 0) {
        rc = err_errno(e, "provider key %s: write", path);
        unlink(path);
    }
    explicit_bzero(k, sizeof(k));
    close(fd);
    return rc;
}

int
seal_open(const char *path, struct seal **out, struct err *e)
{
    struct seal *s;
    struct stat st;
    ssize_t n;
    int fd, rc;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0 && errno == ENOENT) {
        if ((rc = create_key(path, e)) < 0)
            return rc;
        fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    if (fd < 0) {
        if (errno == ELOOP)
            return err_set(e, EPROTO, "provider key %s: a symbolic link (refusing to use it)",
                           path);
        return err_errno(e, "provider key %s: open", path);
    }
    if (fstat(fd, &st) < 0) {
        rc = err_errno(e, "provider key %s: stat", path);
        close(fd);
        return rc;
    }
    /* The key opens every credential: refuse a file others could read or
     * swap, rather than trusting it. */
    if (!S_ISREG(st.st_mode))
        rc = err_set(e, EPROTO, "provider key %s: not a regular file (refusing to use it)", path);
    else if (st.st_uid != geteuid())
        rc = err_set(e, EPROTO, "provider key %s: owned by uid %u, not %u (refusing to use it)",
                     path, (unsigned)st.st_uid, (unsigned)geteuid());
    else if (st.st_mode & 077)
        rc = err_set(e, EPROTO, "provider key %s: mode %04o, must be 0600 (refusing to use it)",
                     path, (unsigned)(st.st_mode & 07777));
    else if (st.st_size != SEAL_KEY_LEN)
        rc = err_set(e, EPROTO,
                     "provider key %s: %lld bytes, expected %d (damaged or replaced; refusing "
                     "to use it)",
                     path, (long long)st.st_size, SEAL_KEY_LEN);
    else
        rc = 0;
    if (rc < 0) {
        close(fd);
        return rc;
    }
    s = xcalloc(1, sizeof(*s));
    n = read_full(fd, s->key, sizeof(s->key));
    close(fd);
    if (n != (ssize_t)sizeof(s->key)) {
        seal_free(s);
        return err_set(e, EPROTO, "provider key %s: short read", path);
    }
    *out = s;
    return 0;
}

void
seal_free(struct seal *s)
{
    if (!s)
        return;
    explicit_bzero(s->key, sizeof(s->key));
    free(s);
}

int
seal_encrypt(struct seal *s, const char *aad, const void *pt, size_t n, struct buf *out,
             struct err *e)
{
    size_t raw_len = SEAL_NONCE + n + SEAL_TAG, b64_len = 0;
    unsigned char *raw = xmalloc(raw_len);
    mbedtls_gcm_context g;
    int rc;

    mbedtls_gcm_init(&g);
    if (fill_random(raw, SEAL_NONCE) < 0) {
        rc = err_set(e, EIO, "seal: no entropy from getrandom");
        goto out;
    }
    if (mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, s->key, SEAL_KEY_LEN * 8) != 0 ||
        mbedtls_gcm_crypt_and_tag(&g, MBEDTLS_GCM_ENCRYPT, n, raw, SEAL_NONCE,
                                  (const unsigned char *)aad, strlen(aad), pt, raw + SEAL_NONCE,
                                  SEAL_TAG, raw + SEAL_NONCE + n) != 0) {
        rc = err_set(e, EIO, "seal: AES-256-GCM encryption failed");
        goto out;
    }
    mbedtls_base64_encode(NULL, 0, &b64_len, raw, raw_len);
    buf_puts(out, SEAL_PREFIX);
    buf_reserve(out, b64_len + 1);
    if (mbedtls_base64_encode((unsigned char *)out->data + out->len, out->cap - out->len, &b64_len,
                              raw, raw_len) != 0) {
        rc = err_set(e, EIO, "seal: base64 encoding failed");
        goto out;
    }
    out->len += b64_len;
    out->data[out->len] = '\0';
    rc = 0;
out:
    mbedtls_gcm_free(&g);
    explicit_bzero(raw, raw_len);
    free(raw);
    return rc;
}

int
seal_decrypt(struct seal *s, const char *aad, const char *text, struct buf *out, struct err *e)
{
    const char *b64;
    size_t raw_len = 0, n;
    unsigned char *raw = NULL;
    mbedtls_gcm_context g;
    int rc;

    if (strncmp(text, SEAL_PREFIX, strlen(SEAL_PREFIX)) != 0)
        return err_set(e, EBADMSG, "sealed text: not a v1 seal");
    b64 = text + strlen(SEAL_PREFIX);
    mbedtls_gcm_init(&g);
    if (mbedtls_base64_decode(NULL, 0, &raw_len, (const unsigned char *)b64, strlen(b64)) ==
            MBEDTLS_ERR_BASE64_INVALID_CHARACTER ||
        raw_len < SEAL_NONCE + SEAL_TAG) {
        rc = err_set(e, EBADMSG, "sealed text: malformed");
        goto out;
    }
    raw = xmalloc(raw_len);
    if (mbedtls_base64_decode(raw, raw_len, &raw_len, (const unsigned char *)b64, strlen(b64)) !=
            0 ||
        raw_len < SEAL_NONCE + SEAL_TAG) {
        rc = err_set(e, EBADMSG, "sealed text: malformed");
        goto out;
    }
    n = raw_len - SEAL_NONCE - SEAL_TAG;
    buf_reserve(out, n + 1);
    if (mbedtls_gcm_setkey(&g, MBEDTLS_CIPHER_ID_AES, s->key, SEAL_KEY_LEN * 8) != 0) {
        rc = err_set(e, EIO, "seal: AES-256-GCM key setup failed");
        goto out;
    }
    /* Authenticated: a changed byte, another key or another AAD fails
     * here and nothing is released. */
    if (mbedtls_gcm_auth_decrypt(&g, n, raw, SEAL_NONCE, (const unsigned char *)aad, strlen(aad),
                                 raw + SEAL_NONCE + n, SEAL_TAG, raw + SEAL_NONCE,
                                 (unsigned char *)out->data + out->len) != 0) {
        explicit_bzero(out->data + out->len, n);
        rc = err_set(e, EBADMSG,
                     "sealed text does not open with this key (key replaced or record altered)");
        goto out;
    }
    out->len += n;
    out->data[out->len] = '\0';
    rc = 0;
out:
    mbedtls_gcm_free(&g);
    if (raw) {
        explicit_bzero(raw, raw_len);
        free(raw);
    }
    return rc;
}
