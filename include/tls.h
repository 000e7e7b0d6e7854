#ifndef OPENSHELL_TLS_H
#define OPENSHELL_TLS_H
/*
 * tls: mbedTLS 3.6 over libevent 2.1 bufferevents (libevent has no mbedTLS
 * bufferevent, so this glue is ours).
 *
 * A TLS session is a libevent *filter* bufferevent stacked on a connected
 * socket bufferevent: the caller reads and writes plaintext with the ordinary
 * bufferevent API, records go through the socket underneath. The filter
 * bufferevent OWNS the socket bufferevent (freeing it frees both) and the
 * `struct tls_conn` state (released by the same bufferevent_free()).
 *
 * Events the caller's event callback sees on the filter bufferevent:
 *   BEV_EVENT_CONNECTED             the handshake finished (peer verified when
 *                                   client): plaintext may flow
 *   BEV_EVENT_EOF|BEV_EVENT_READING the peer sent close_notify, or TCP EOF
 *   BEV_EVENT_ERROR                 TLS failure; tls_conn_error() says what
 * The caller must keep EV_READ enabled on the filter until CONNECTED (the
 * handshake is driven by input processing). Plaintext written before the
 * handshake completes is queued and sent once it does.
 *
 * Buffers are bounded: at most TLS_OUT_HIGH bytes of ciphertext wait in the
 * socket's output before the filter stops encrypting (back-pressure reaches
 * the caller's output buffer, whose writecb fires as it drains); decryption
 * stops when the caller's input reaches its read high-water mark (at most
 * one record, 16 KiB, over it).
 *
 * mbedTLS error codes never leave this module: failures become negative
 * errno values and a message naming the peer and the mbedTLS reason.
 */
#include <stdbool.h>
#include <stddef.h>

#include "err.h"

struct bufferevent;
struct mbedtls_x509_crt;
struct mbedtls_pk_context;
struct tls_client_ctx;
struct tls_conn;

#define TLS_OUT_HIGH (64 * 1024)

enum tls_version {
    TLS_VERSION_ANY = 0, /* 1.2 or 1.3, 1.3 preferred */
    TLS_VERSION_1_2,
    TLS_VERSION_1_3,
};

/* Once per process before any other tls_ call: PSA crypto and the random
 * generator. Idempotent. Returns 0 or -EIO (E says why). */
int tls_global_init(struct err *e);

/* An mbedTLS-compatible random callback (f_rng) over the process DRBG and
 * its context (p_rng). tls_global_init() first. */
int tls_rng(void *p_rng, unsigned char *out, size_t len);
void *tls_rng_ctx(void);

/* The first non-empty system trust bundle (Debian's
 * /etc/ssl/certs/ca-certificates.crt first), or NULL when none exists. */
const char *tls_system_bundle_path(void);

/*
 * Upstream (client) context, shared by every client connection: the trust
 * store parsed once. CA_FILE NULL means the system bundle. ALPN offered is
 * "http/1.1" unless ALPN is given (NULL-terminated list, borrowed: must
 * outlive the context). VERSION limits the protocol (tests). Returns NULL
 * with E set when the trust store cannot be read or holds no certificate.
 * Free with tls_client_ctx_free() after every connection using it.
 */
struct tls_client_ctx *tls_client_ctx_new(const char *ca_file, const char *const *alpn,
                                          enum tls_version version, struct err *e);
void tls_client_ctx_free(struct tls_client_ctx *c);

/*
 * Present a client certificate (mTLS): CERT_FILE (PEM chain, leaf first)
 * and KEY_FILE (its PEM private key, unencrypted), loaded now into C and
 * used by every later connection made with it. Returns 0, -ENOENT/-EACCES
 * when a file cannot be read, or -EINVAL when it does not parse or the key
 * does not match the certificate (E names the file and the reason).
 */
int tls_client_ctx_set_cert(struct tls_client_ctx *c, const char *cert_file, const char *key_file,
                            struct err *e);

/*
 * Client TLS over UNDER (a connected socket bufferevent; ownership passes to
 * the returned filter bufferevent even on failure). HOST is the name sent as
 * SNI and checked against the certificate (DNS name or IP literal). The
 * handshake starts at once. Returns the filter bufferevent and sets *OUT
 * (borrowed, lives as long as the filter), or NULL with E set.
 */
struct bufferevent *tls_wrap_client(struct bufferevent *under, struct tls_client_ctx *ctx,
                                    const char *host, struct tls_conn **out, struct err *e);

/* Whether a server asks for a client certificate. */
enum tls_client_auth {
    TLS_CLIENT_AUTH_NONE = 0, /* never asked for */
    TLS_CLIENT_AUTH_OPTIONAL, /* asked for; the handshake succeeds without
                               * one or with one that does not verify, but
                               * then tls_conn_peer_subject() says -ENOENT */
    TLS_CLIENT_AUTH_REQUIRED, /* a client without a verified one fails */
};

struct tls_server_opts {
    /* Certificate chain (leaf first) and its private key: borrowed, must
     * outlive the connection (the CA module refcounts them). */
    struct mbedtls_x509_crt *chain;
    struct mbedtls_pk_context *key;
    /* When set, a client SNI naming anything else (case-insensitive) fails
     * the handshake: domain fronting. A client sending no SNI is allowed. */
    const char *expect_sni;
    const char *const *alpn; /* NULL: "http/1.1" only */
    enum tls_version version;
    /* Client certificates: verified against CLIENT_CA (borrowed, must
     * outlive the connection; required unless CLIENT_AUTH is NONE). */
    enum tls_client_auth client_auth;
    struct mbedtls_x509_crt *client_ca;
};

/* Server TLS over UNDER, same ownership and events as tls_wrap_client. */
struct bufferevent *tls_wrap_server(struct bufferevent *under, const struct tls_server_opts *o,
                                    struct tls_conn **out, struct err *e);

/* Why the session failed ("" when it has not). Borrowed. */
const char *tls_conn_error(const struct tls_conn *t);
/* True when the failure was the SNI check (domain fronting). */
bool tls_conn_sni_mismatch(const struct tls_conn *t);
/* After CONNECTED: "TLSv1.3"/"TLSv1.2", the ALPN protocol (NULL if none),
 * and on a server the SNI the client sent (NULL if none). Borrowed. */
const char *tls_conn_version(const struct tls_conn *t);
const char *tls_conn_alpn(const struct tls_conn *t);
const char *tls_conn_sni(const struct tls_conn *t);
bool tls_conn_established(const struct tls_conn *t);
/*
 * After CONNECTED on a server: the subject of the client certificate that
 * VERIFIED against tls_server_opts.client_ca, as an RFC 4514-like string
 * ("CN=openshell-client, OU=openshell-user") into DN[DN_SIZE], and its CN
 * and first OU into CN[CN_SIZE] / OU[OU_SIZE] ("" when absent; any of the
 * three may be NULL). Returns 0, or -ENOENT when the client sent no
 * certificate or it did not verify (fail closed), -ENOSPC when a field
 * does not fit.
 */
int tls_conn_peer_subject(const struct tls_conn *t, char *dn, size_t dn_size, char *cn,
                          size_t cn_size, char *ou, size_t ou_size);
/* Queue a close_notify alert (best effort); the caller then waits for the
 * output to drain before freeing the bufferevent. */
void tls_conn_close_notify(struct tls_conn *t);

/* What the first bytes of a stream are (TLS auto-detection by peeking). */
enum tls_sniff {
    TLS_SNIFF_NEED_MORE = 0, /* a prefix of something known: wait */
    TLS_SNIFF_TLS,           /* 16 03 0x (x <= 4): a TLS handshake record */
    TLS_SNIFF_HTTP1,         /* a known HTTP/1 method then a space */
    TLS_SNIFF_H2C,           /* the HTTP/2 connection preface */
    TLS_SNIFF_OTHER,
};
enum tls_sniff tls_sniff(const unsigned char *p, size_t n);

/* Translate an mbedTLS return code into a negative errno (module boundary)
 * and write its text into MSG[SIZE]. */
int tls_error_from_mbedtls(int rc, char *msg, size_t size);

#endif
