/*
 * tls.c: mbedTLS sessions as libevent filter bufferevents (see include/tls.h).
 *
 * mbedTLS does its I/O through two callbacks; ours read ciphertext from the
 * socket bufferevent's input and append ciphertext to its output, so mbedTLS
 * never touches the fd and never blocks. The filter's input function runs
 * the handshake and then decrypts; its output function encrypts. Events we
 * raise ourselves (CONNECTED, EOF on close_notify, ERROR) go through
 * bufferevent_trigger_event() on a BEV_OPT_DEFER_CALLBACKS bufferevent, so the
 * caller's callbacks never run inside mbedTLS.
 */
#include "tls.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
/* mbedtls/ssl.h tests a macro it may leave undefined. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wundef"
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>
#pragma GCC diagnostic pop
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "xfuncs.h"

/* Largest plaintext chunk handed to mbedtls_ssl_write/read at once: one
 * record. */
#define TLS_CHUNK 16384

struct tls_client_ctx {
    mbedtls_ssl_config conf;
    mbedtls_x509_crt trust;
    mbedtls_x509_crt own_cert; /* mTLS: tls_client_ctx_set_cert() */
    mbedtls_pk_context own_key;
};

struct tls_conn {
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf; /* server side: one per connection (its own leaf) */
    bool own_conf;
    bool is_server;
    bool established;
    bool failed;
    bool eof;
    bool sni_mismatch;
    bool has_sni;
    enum tls_client_auth client_auth;
    struct bufferevent *bev;   /* the filter (what the caller holds) */
    struct bufferevent *under; /* the socket bufferevent */
    char peer[256];            /* host name for messages */
    char expect_sni[256];
    char sni[256];
    char error[384];
};

static const char *const tls_alpn_default[] = { "http/1.1", NULL };

static bool tls_ready;
static mbedtls_entropy_context tls_entropy;
static mbedtls_ctr_drbg_context tls_drbg;

int
tls_global_init(struct err *e)
{
    static const char pers[] = "openshell tls";
    char msg[160];
    int rc;

    if (tls_ready)
        return 0;
    if (psa_crypto_init() != PSA_SUCCESS)
        return err_set(e, EIO, "initialising PSA crypto");
    mbedtls_entropy_init(&tls_entropy);
    mbedtls_ctr_drbg_init(&tls_drbg);
    rc = mbedtls_ctr_drbg_seed(&tls_drbg, mbedtls_entropy_func, &tls_entropy,
                               (const unsigned char *)pers, sizeof(pers) - 1);
    if (rc != 0) {
        tls_error_from_mbedtls(rc, msg, sizeof(msg));
        return err_set(e, EIO, "seeding the random generator: %s", msg);
    }
    tls_ready = true;
    return 0;
}

int
tls_rng(void *p_rng, unsigned char *out, size_t len)
{
    return mbedtls_ctr_drbg_random(p_rng, out, len);
}

void *
tls_rng_ctx(void)
{
    return &tls_drbg;
}

const char *
tls_system_bundle_path(void)
{
    static const char *const paths[] = {
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/ca-bundle.pem",
        "/etc/ssl/cert.pem",
    };
    struct stat st;

    for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
        if (stat(paths[i], &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0)
            return paths[i];
    return NULL;
}

int
tls_error_from_mbedtls(int rc, char *msg, size_t size)
{
    char tmp[200];

    mbedtls_strerror(rc, tmp, sizeof(tmp));
    if (msg && size)
        buf_copy_fixed(msg, size, tmp);
    switch (rc) {
    case MBEDTLS_ERR_SSL_WANT_READ:
    case MBEDTLS_ERR_SSL_WANT_WRITE: return -EAGAIN;
    case MBEDTLS_ERR_SSL_CONN_EOF:
    case MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY: return -ECONNRESET;
    case MBEDTLS_ERR_X509_CERT_VERIFY_FAILED: return -EKEYREJECTED;
    case MBEDTLS_ERR_SSL_ALLOC_FAILED:
    case MBEDTLS_ERR_X509_ALLOC_FAILED:
    case MBEDTLS_ERR_PK_ALLOC_FAILED: return -ENOMEM;
    case MBEDTLS_ERR_X509_FILE_IO_ERROR:
    case MBEDTLS_ERR_PK_FILE_IO_ERROR: return -EIO;
    case MBEDTLS_ERR_SSL_BAD_INPUT_DATA:
    case MBEDTLS_ERR_X509_BAD_INPUT_DATA:
    case MBEDTLS_ERR_PK_BAD_INPUT_DATA: return -EINVAL;
    default: return -EPROTO;
    }
}

/* ------------------------------------------------------------ client context */

static int
tls_apply_version(mbedtls_ssl_config *conf, enum tls_version v)
{
    switch (v) {
    case TLS_VERSION_1_2:
        mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
        mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
        break;
    case TLS_VERSION_1_3:
        mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_3);
        mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_3);
        break;
    case TLS_VERSION_ANY:
        mbedtls_ssl_conf_min_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_2);
        mbedtls_ssl_conf_max_tls_version(conf, MBEDTLS_SSL_VERSION_TLS1_3);
        break;
    }
    return 0;
}

struct tls_client_ctx *
tls_client_ctx_new(const char *ca_file, const char *const *alpn, enum tls_version version,
                   struct err *e)
{
    struct tls_client_ctx *c;
    char msg[200];
    int rc;

    if (tls_global_init(e) < 0)
        return NULL;
    if (!ca_file)
        ca_file = tls_system_bundle_path();
    if (!ca_file) {
        err_set(e, ENOENT, "no system trust bundle found (/etc/ssl/certs/ca-certificates.crt)");
        return NULL;
    }
    c = xcalloc(1, sizeof(*c));
    mbedtls_ssl_config_init(&c->conf);
    mbedtls_x509_crt_init(&c->trust);
    mbedtls_x509_crt_init(&c->own_cert);
    mbedtls_pk_init(&c->own_key);
    /* A positive return counts certificates mbedTLS could not parse (some
     * system bundles carry a few); any usable one is enough. */
    rc = mbedtls_x509_crt_parse_file(&c->trust, ca_file);
    if (rc < 0 || c->trust.version == 0) {
        if (rc < 0)
            tls_error_from_mbedtls(rc, msg, sizeof(msg));
        else
            buf_copy_fixed(msg, sizeof(msg), "no certificate in it");
        err_set(e, rc < 0 ? -tls_error_from_mbedtls(rc, NULL, 0) : EINVAL,
                "loading trust bundle %s: %s", ca_file, msg);
        tls_client_ctx_free(c);
        return NULL;
    }
    rc = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0)
        rc = mbedtls_ssl_conf_alpn_protocols(&c->conf,
                                             (const char **)(alpn ? alpn : tls_alpn_default));
    if (rc != 0) {
        tls_error_from_mbedtls(rc, msg, sizeof(msg));
        err_set(e, EINVAL, "TLS client configuration: %s", msg);
        tls_client_ctx_free(c);
        return NULL;
    }
    mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&c->conf, &c->trust, NULL);
    mbedtls_ssl_conf_rng(&c->conf, tls_rng, &tls_drbg);
    tls_apply_version(&c->conf, version);
    return c;
}

void
tls_client_ctx_free(struct tls_client_ctx *c)
{
    if (!c)
        return;
    mbedtls_ssl_config_free(&c->conf);
    mbedtls_x509_crt_free(&c->trust);
    mbedtls_x509_crt_free(&c->own_cert);
    mbedtls_pk_free(&c->own_key);
    free(c);
}

int
tls_client_ctx_set_cert(struct tls_client_ctx *c, const char *cert_file, const char *key_file,
                        struct err *e)
{
    char msg[200];
    int rc;

    if (access(cert_file, R_OK) < 0)
        return err_errno(e, "client certificate %s", cert_file);
    if (access(key_file, R_OK) < 0)
        return err_errno(e, "client key %s", key_file);
    if (c->own_cert.version != 0)
        return err_set(e, EINVAL, "client certificate already set");
    rc = mbedtls_x509_crt_parse_file(&c->own_cert, cert_file);
    if (rc != 0 || c->own_cert.version == 0) {
        if (rc < 0)
            tls_error_from_mbedtls(rc, msg, sizeof(msg));
        else
            buf_copy_fixed(msg, sizeof(msg), "not a PEM certificate");
        mbedtls_x509_crt_free(&c->own_cert);
        mbedtls_x509_crt_init(&c->own_cert);
        return err_set(e, EINVAL, "client certificate %s: %s", cert_file, msg);
    }
    rc = mbedtls_pk_parse_keyfile(&c->own_key, key_file, NULL, tls_rng, &tls_drbg);
    if (rc == 0)
        rc = mbedtls_pk_check_pair(&c->own_cert.pk, &c->own_key, tls_rng, &tls_drbg);
    if (rc == 0)
        rc = mbedtls_ssl_conf_own_cert(&c->conf, &c->own_cert, &c->own_key);
    if (rc != 0) {
        tls_error_from_mbedtls(rc, msg, sizeof(msg));
        mbedtls_x509_crt_free(&c->own_cert);
        mbedtls_x509_crt_init(&c->own_cert);
        mbedtls_pk_free(&c->own_key);
        mbedtls_pk_init(&c->own_key);
        return err_set(e, EINVAL, "client key %s (for %s): %s", key_file, cert_file, msg);
    }
    return 0;
}

/* ------------------------------------------------------------ the session */

/* mbedTLS send callback: append ciphertext to the socket's output. The
 * output filter bounds how much we encrypt, so this never refuses. */
static int
tls_bio_send(void *ctx, const unsigned char *p, size_t n)
{
    struct tls_conn *t = ctx;

    if (evbuffer_add(bufferevent_get_output(t->under), p, n) < 0)
        return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)n;
}

/* mbedTLS receive callback: take ciphertext from the socket's input. */
static int
tls_bio_recv(void *ctx, unsigned char *p, size_t n)
{
    struct tls_conn *t = ctx;
    int got = evbuffer_remove(bufferevent_get_input(t->under), p, n);

    if (got <= 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    return got;
}

/* Record a failure and tell the caller (deferred ERROR event). */
static void
tls_fail(struct tls_conn *t, int rc, const char *what)
{
    char msg[200], info[200];
    uint32_t flags;

    if (t->failed)
        return;
    t->failed = true;
    tls_error_from_mbedtls(rc, msg, sizeof(msg));
    if (t->sni_mismatch) {
        buf_fmt_fixed(t->error, sizeof(t->error), "%s: client SNI '%s' differs from '%s'", what,
                      t->sni, t->expect_sni);
    } else if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED &&
               (flags = mbedtls_ssl_get_verify_result(&t->ssl)) != 0) {
        mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
        info[strcspn(info, "\n")] = '\0';
        buf_fmt_fixed(t->error, sizeof(t->error), "%s with %s: certificate verify failed: %s", what,
                      t->peer, info);
    } else {
        buf_fmt_fixed(t->error, sizeof(t->error), "%s with %s: %s", what, t->peer, msg);
    }
    bufferevent_trigger_event(t->bev, BEV_EVENT_ERROR, 0);
}

/* Run the handshake as far as the available input allows. Returns 1 when it
 * completed now, 0 when it needs more, -1 on failure (already reported). */
static int
tls_step_handshake(struct tls_conn *t)
{
    int rc = mbedtls_ssl_handshake(&t->ssl);

    if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
        return 0;
    if (rc != 0) {
        tls_fail(t, rc, "TLS handshake");
        return -1;
    }
    t->established = true;
    bufferevent_trigger_event(t->bev, BEV_EVENT_CONNECTED, 0);
    return 1;
}

/* Filter input: ciphertext (socket input) -> plaintext (caller's input). */
static enum bufferevent_filter_result
tls_filter_in(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
              enum bufferevent_flush_mode mode, void *ctx)
{
    struct tls_conn *t = ctx;
    ev_ssize_t produced = 0;

    (void)mode;
    if (t->failed || t->eof) {
        evbuffer_drain(src, evbuffer_get_length(src));
        return BEV_NEED_MORE;
    }
    if (!t->established) {
        int hs = tls_step_handshake(t);

        if (hs < 0)
            return BEV_ERROR;
        if (hs == 0)
            return BEV_NEED_MORE;
        /* Plaintext the caller queued during the handshake can go now. */
        bufferevent_flush(t->bev, EV_WRITE, BEV_NORMAL);
    }
    for (;;) {
        struct evbuffer_iovec v;
        int rc;

        /* Stop at the caller's high-water mark, but never leave decrypted
         * bytes inside mbedTLS: nothing would wake us to fetch them. */
        if (limit >= 0 && produced >= limit && mbedtls_ssl_get_bytes_avail(&t->ssl) == 0)
            break;
        if (evbuffer_reserve_space(dst, TLS_CHUNK, &v, 1) < 1)
            break;
        rc = mbedtls_ssl_read(&t->ssl, v.iov_base, v.iov_len < TLS_CHUNK ? v.iov_len : TLS_CHUNK);
        if (rc > 0) {
            v.iov_len = (size_t)rc;
            evbuffer_commit_space(dst, &v, 1);
            produced += rc;
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
            break;
        /* Not an error: a ticket arrived (only when the library is built
         * with session tickets); read on. */
        if (rc == MBEDTLS_ERR_SSL_RECEIVED_NEW_SESSION_TICKET)
            continue;
        if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY) {
            t->eof = true;
            bufferevent_trigger_event(t->bev, BEV_EVENT_EOF | BEV_EVENT_READING, 0);
            break;
        }
        tls_fail(t, rc, "TLS read");
        return BEV_ERROR;
    }
    return produced ? BEV_OK : BEV_NEED_MORE;
}

/* Filter output: plaintext (caller's output) -> ciphertext (socket output),
 * at most LIMIT bytes (about) per call: the back-pressure point. */
static enum bufferevent_filter_result
tls_filter_out(struct evbuffer *src, struct evbuffer *dst, ev_ssize_t limit,
               enum bufferevent_flush_mode mode, void *ctx)
{
    struct tls_conn *t = ctx;
    ev_ssize_t written = 0;

    (void)dst;
    (void)mode;
    if (t->failed) {
        evbuffer_drain(src, evbuffer_get_length(src));
        return BEV_ERROR;
    }
    if (!t->established)
        return BEV_NEED_MORE;
    while (evbuffer_get_length(src) > 0 && (limit < 0 || written < limit)) {
        size_t n = evbuffer_get_length(src);
        unsigned char *p;
        int rc;

        if (n > TLS_CHUNK)
            n = TLS_CHUNK;
        p = evbuffer_pullup(src, (ev_ssize_t)n);
        rc = mbedtls_ssl_write(&t->ssl, p, n);
        if (rc > 0) {
            evbuffer_drain(src, (size_t)rc);
            written += rc;
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
            break;
        tls_fail(t, rc, "TLS write");
        return BEV_ERROR;
    }
    return written ? BEV_OK : BEV_NEED_MORE;
}

static void
tls_conn_free_cb(void *ctx)
{
    struct tls_conn *t = ctx;

    mbedtls_ssl_free(&t->ssl);
    if (t->own_conf)
        mbedtls_ssl_config_free(&t->conf);
    free(t);
}

/* Stack the filter on UNDER and bind the session's I/O to it. On failure the
 * whole stack (UNDER included) is freed. */
static struct bufferevent *
tls_stack(struct bufferevent *under, struct tls_conn *t, const mbedtls_ssl_config *conf,
          struct err *e)
{
    char msg[200];
    int rc;

    t->under = under;
    mbedtls_ssl_init(&t->ssl);
    rc = mbedtls_ssl_setup(&t->ssl, conf);
    if (rc != 0) {
        tls_error_from_mbedtls(rc, msg, sizeof(msg));
        err_set(e, EINVAL, "TLS session setup for %s: %s", t->peer, msg);
        tls_conn_free_cb(t);
        bufferevent_free(under);
        return NULL;
    }
    mbedtls_ssl_set_bio(&t->ssl, t, tls_bio_send, tls_bio_recv, NULL);
    t->bev = bufferevent_filter_new(under, tls_filter_in, tls_filter_out,
                                    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS,
                                    tls_conn_free_cb, t);
    if (!t->bev) {
        err_set(e, ENOMEM, "TLS filter for %s", t->peer);
        tls_conn_free_cb(t);
        bufferevent_free(under);
        return NULL;
    }
    /* The filter's output limit is the socket's write high-water mark; the
     * socket's low mark wakes the filter to encrypt more. */
    bufferevent_setwatermark(under, EV_WRITE, TLS_OUT_HIGH / 2, TLS_OUT_HIGH);
    bufferevent_enable(under, EV_READ | EV_WRITE);
    bufferevent_enable(t->bev, EV_READ | EV_WRITE);
    /* Bytes already read (a ClientHello the caller peeked at) would wait
     * for the next packet: process them now. */
    if (evbuffer_get_length(bufferevent_get_input(under)))
        bufferevent_trigger(under, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    return t->bev;
}

struct bufferevent *
tls_wrap_client(struct bufferevent *under, struct tls_client_ctx *ctx, const char *host,
                struct tls_conn **out, struct err *e)
{
    struct tls_conn *t = xcalloc(1, sizeof(*t));
    struct bufferevent *bev;
    char msg[200];
    int rc;

    buf_copy_fixed(t->peer, sizeof(t->peer), host);
    bev = tls_stack(under, t, &ctx->conf, e);
    if (!bev)
        return NULL;
    /* SNI and the name the certificate must carry (DNS name or IP). */
    rc = mbedtls_ssl_set_hostname(&t->ssl, host);
    if (rc != 0) {
        tls_error_from_mbedtls(rc, msg, sizeof(msg));
        err_set(e, EINVAL, "TLS server name %s: %s", host, msg);
        bufferevent_free(bev);
        return NULL;
    }
    /* Start: this queues the ClientHello and returns "want read". */
    if (tls_step_handshake(t) < 0) {
        err_set(e, EPROTO, "%s", t->error);
        bufferevent_free(bev);
        return NULL;
    }
    if (out)
        *out = t;
    return bev;
}

/* SNI callback: remember the name, and refuse a name other than the one
 * the tunnel was opened for (domain fronting). */
static int
tls_sni_cb(void *ctx, mbedtls_ssl_context *ssl, const unsigned char *name, size_t len)
{
    struct tls_conn *t = ctx;

    (void)ssl;
    t->has_sni = true;
    if (len >= sizeof(t->sni) || memchr(name, '\0', len)) {
        t->sni_mismatch = t->expect_sni[0] != '\0';
        buf_copy_fixed(t->sni, sizeof(t->sni), "(invalid)");
        return t->sni_mismatch ? -1 : 0;
    }
    memcpy(t->sni, name, len);
    t->sni[len] = '\0';
    if (t->expect_sni[0] && strcasecmp(t->sni, t->expect_sni) != 0) {
        t->sni_mismatch = true;
        return -1;
    }
    return 0;
}

struct bufferevent *
tls_wrap_server(struct bufferevent *under, const struct tls_server_opts *o, struct tls_conn **out,
                struct err *e)
{
    struct tls_conn *t;
    char msg[200];
    int rc;

    if (tls_global_init(e) < 0) {
        bufferevent_free(under);
        return NULL;
    }
    t = xcalloc(1, sizeof(*t));
    t->is_server = true;
    buf_copy_fixed(t->peer, sizeof(t->peer), "client");
    if (o->expect_sni)
        buf_copy_fixed(t->expect_sni, sizeof(t->expect_sni), o->expect_sni);
    mbedtls_ssl_config_init(&t->conf);
    t->own_conf = true;
    rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_SERVER, MBEDTLS_SSL_TRANSPORT_STREAM,
                                     MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc == 0)
        rc = mbedtls_ssl_conf_own_cert(&t->conf, o->chain, o->key);
    if (rc == 0)
        rc = mbedtls_ssl_conf_alpn_protocols(&t->conf,
                                             (const char **)(o->alpn ? o->alpn : tls_alpn_default));
    if (rc != 0) {
        tls_error_from_mbedtls(rc, msg, sizeof(msg));
        err_set(e, EINVAL, "TLS server configuration: %s", msg);
        tls_conn_free_cb(t);
        bufferevent_free(under);
        return NULL;
    }
    if (o->client_auth != TLS_CLIENT_AUTH_NONE && !o->client_ca) {
        err_set(e, EINVAL, "TLS server configuration: client authentication without a CA");
        tls_conn_free_cb(t);
        bufferevent_free(under);
        return NULL;
    }
    switch (o->client_auth) {
    case TLS_CLIENT_AUTH_NONE: mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_NONE); break;
    case TLS_CLIENT_AUTH_OPTIONAL:
    case TLS_CLIENT_AUTH_REQUIRED:
        /* mbedTLS's OPTIONAL lets the handshake finish with a missing or
         * unverified certificate; tls_conn_peer_subject() then reports no
         * identity, so callers fail closed either way. */
        mbedtls_ssl_conf_authmode(&t->conf, o->client_auth == TLS_CLIENT_AUTH_REQUIRED
                                                ? MBEDTLS_SSL_VERIFY_REQUIRED
                                                : MBEDTLS_SSL_VERIFY_OPTIONAL);
        mbedtls_ssl_conf_ca_chain(&t->conf, o->client_ca, NULL);
        break;
    }
    t->client_auth = o->client_auth;
    mbedtls_ssl_conf_rng(&t->conf, tls_rng, &tls_drbg);
    mbedtls_ssl_conf_sni(&t->conf, tls_sni_cb, t);
    tls_apply_version(&t->conf, o->version);
    if (!tls_stack(under, t, &t->conf, e))
        return NULL;
    if (out)
        *out = t;
    return t->bev;
}

const char *
tls_conn_error(const struct tls_conn *t)
{
    return t->error;
}

bool
tls_conn_sni_mismatch(const struct tls_conn *t)
{
    return t->sni_mismatch;
}

const char *
tls_conn_version(const struct tls_conn *t)
{
    return t->established ? mbedtls_ssl_get_version(&t->ssl) : "none";
}

const char *
tls_conn_alpn(const struct tls_conn *t)
{
    return t->established ? mbedtls_ssl_get_alpn_protocol(&t->ssl) : NULL;
}

const char *
tls_conn_sni(const struct tls_conn *t)
{
    return t->has_sni ? t->sni : NULL;
}

bool
tls_conn_established(const struct tls_conn *t)
{
    return t->established;
}

/* The value of the first attribute OID in NAME into OUT[SIZE] ("" if none). */
static int
tls_dn_attr(const mbedtls_x509_name *name, const char *oid, size_t oid_len, char *out, size_t size)
{
    if (!out)
        return 0;
    out[0] = '\0';
    for (; name; name = name->next) {
        if (name->oid.len != oid_len || memcmp(name->oid.p, oid, oid_len) != 0)
            continue;
        if (name->val.len >= size)
            return -ENOSPC;
        memcpy(out, name->val.p, name->val.len);
        out[name->val.len] = '\0';
        /* Control bytes or NULs in a name never reach callers. */
        for (size_t i = 0; i < name->val.len; i++)
            if ((unsigned char)out[i] < 0x20 || out[i] == 0x7f)
                out[i] = '?';
        return 0;
    }
    return 0;
}

int
tls_conn_peer_subject(const struct tls_conn *t, char *dn, size_t dn_size, char *cn, size_t cn_size,
                      char *ou, size_t ou_size)
{
    const mbedtls_x509_crt *crt;
    int rc;

    if (!t->is_server || !t->established || t->client_auth == TLS_CLIENT_AUTH_NONE)
        return -ENOENT;
    crt = mbedtls_ssl_get_peer_cert(&t->ssl);
    /* Fail closed: only a certificate that chained to client_ca with no
     * verification flag at all counts. */
    if (!crt || mbedtls_ssl_get_verify_result(&t->ssl) != 0)
        return -ENOENT;
    if (dn) {
        rc = mbedtls_x509_dn_gets(dn, dn_size, &crt->subject);
        if (rc < 0)
            return -ENOSPC;
    }
    if ((rc = tls_dn_attr(&crt->subject, MBEDTLS_OID_AT_CN, MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_CN), cn,
                          cn_size)) < 0)
        return rc;
    return tls_dn_attr(&crt->subject, MBEDTLS_OID_AT_ORG_UNIT,
                       MBEDTLS_OID_SIZE(MBEDTLS_OID_AT_ORG_UNIT), ou, ou_size);
}

void
tls_conn_close_notify(struct tls_conn *t)
{
    if (t->established && !t->failed)
        (void)mbedtls_ssl_close_notify(&t->ssl);
}

/* ------------------------------------------------------------ sniffing */

enum tls_sniff
tls_sniff(const unsigned char *p, size_t n)
{
    static const char *const methods[] = {
        "GET ", "HEAD ", "POST ", "PUT ", "DELETE ", "PATCH ", "OPTIONS ", "CONNECT ", "TRACE ",
    };
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    bool maybe = false;

    if (n == 0)
        return TLS_SNIFF_NEED_MORE;
    /* A TLS record: handshake (22), major version 3, minor <= 4. */
    if (p[0] == 0x16) {
        if (n < 3)
            return n == 1 || p[1] == 0x03 ? TLS_SNIFF_NEED_MORE : TLS_SNIFF_OTHER;
        return p[1] == 0x03 && p[2] <= 0x04 ? TLS_SNIFF_TLS : TLS_SNIFF_OTHER;
    }
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        size_t m = strlen(methods[i]);

        if (n >= m && memcmp(p, methods[i], m) == 0)
            return TLS_SNIFF_HTTP1;
        if (n < m && memcmp(p, methods[i], n) == 0)
            maybe = true;
    }
    if (n >= 8 && memcmp(p, preface, 8) == 0)
        return TLS_SNIFF_H2C;
    if (n < 8 && memcmp(p, preface, n) == 0)
        maybe = true;
    if (maybe)
        return TLS_SNIFF_NEED_MORE;
    /* Any other method (WebDAV, made-up ones) in a request line is HTTP too,
     * so that it cannot slip past the per-request checks as "raw": an
     * upper-case token, a space, then "/", "*" or "http". */
    {
        size_t i = 0;

        while (i < n && i < 20 && p[i] >= 'A' && p[i] <= 'Z')
            i++;
        if (i == n && i < 20)
            return TLS_SNIFF_NEED_MORE;
        if (i > 0 && i < n && p[i] == ' ') {
            if (i + 1 == n)
                return TLS_SNIFF_NEED_MORE;
            if (p[i + 1] == '/' || p[i + 1] == '*')
                return TLS_SNIFF_HTTP1;
            if (p[i + 1] == 'h' && (n < i + 5 || memcmp(p + i + 1, "http", 4) == 0))
                return n < i + 5 ? TLS_SNIFF_NEED_MORE : TLS_SNIFF_HTTP1;
        }
    }
    return TLS_SNIFF_OTHER;
}
