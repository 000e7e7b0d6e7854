/*
 * ca.c: the in-memory sandbox CA and its cached leaf certificates (see
 * include/ca.h).
 */
#include "ca.h"

#include <arpa/inet.h>
#include <errno.h>
#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/pem.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tls.h"
#include "xfuncs.h"

#define CA_DER_MAX 4096
#define CA_HOST_MAX 253

struct ca_leaf {
    int refs;
    char host[CA_HOST_MAX + 1];
    mbedtls_x509_crt chain;
    mbedtls_pk_context key;
};

struct ca {
    mbedtls_pk_context key;
    unsigned char der[CA_DER_MAX];
    size_t der_len;
    struct ca_leaf *cache[CA_CACHE_MAX];
    size_t cached;
    size_t minted;
};

static int
ca_mbedtls_err(struct err *e, int rc, const char *what)
{
    char msg[200];
    int code = -tls_error_from_mbedtls(rc, msg, sizeof(msg));

    return err_set(e, code, "%s: %s", what, msg);
}

/* A fresh P-256 key into KEY (initialised by the caller). */
static int
ca_gen_key(mbedtls_pk_context *key, struct err *e)
{
    int rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));

    if (rc == 0)
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), tls_rng,
                                 tls_rng_ctx());
    return rc ? ca_mbedtls_err(e, rc, "generating a P-256 key") : 0;
}

/* "YYYYMMDDhhmmss" for now + DAYS (may be negative), UTC. */
static void
ca_time(char out[16], long days)
{
    time_t t = time(NULL) + days * 86400L;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

struct ca_cert_spec {
    const char *subject; /* DN string */
    bool is_ca;
    const mbedtls_x509_san_list *sans; /* leaf only */
    long days;                         /* validity from now */
};

/* Sign a certificate for SUBJECT_KEY with the CA key; DER into OUT (the
 * written bytes end at OUT + CA_DER_MAX; *START and *LEN locate them). */
static int
ca_write_cert(struct ca *ca, const struct ca_cert_spec *s, mbedtls_pk_context *subject_key,
              unsigned char *out, unsigned char **start, size_t *len, struct err *e)
{
    static const char issuer[] = "CN=" CA_COMMON_NAME ",O=OpenShell";
    mbedtls_x509write_cert w;
    mbedtls_asn1_sequence eku;
    unsigned char serial[16];
    char nb[16], na[16];
    int rc;

    mbedtls_x509write_crt_init(&w);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, subject_key);
    mbedtls_x509write_crt_set_issuer_key(&w, &ca->key);
    ca_time(nb, -1);
    ca_time(na, s->days);
    rc = tls_rng(tls_rng_ctx(), serial, sizeof(serial));
    serial[0] &= 0x7f; /* a positive INTEGER */
    serial[0] |= 0x01; /* and never a leading zero byte */
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_serial_raw(&w, serial, sizeof(serial));
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_subject_name(&w, s->subject);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_issuer_name(&w, issuer);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_validity(&w, nb, na);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_basic_constraints(&w, s->is_ca, -1);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_subject_key_identifier(&w);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_authority_key_identifier(&w);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_key_usage(&w, s->is_ca ? MBEDTLS_X509_KU_KEY_CERT_SIGN |
                                                                    MBEDTLS_X509_KU_CRL_SIGN
                                                              : MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    if (rc == 0 && !s->is_ca) {
        memset(&eku, 0, sizeof(eku));
        eku.buf.tag = MBEDTLS_ASN1_OID;
        eku.buf.p = (unsigned char *)MBEDTLS_OID_SERVER_AUTH;
        eku.buf.len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH);
        rc = mbedtls_x509write_crt_set_ext_key_usage(&w, &eku);
    }
    if (rc == 0 && s->sans)
        rc = mbedtls_x509write_crt_set_subject_alternative_name(&w, s->sans);
    if (rc == 0) {
        rc = mbedtls_x509write_crt_der(&w, out, CA_DER_MAX, tls_rng, tls_rng_ctx());
        if (rc > 0) {
            *len = (size_t)rc;
            *start = out + CA_DER_MAX - *len;
            rc = 0;
        }
    }
    mbedtls_x509write_crt_free(&w);
    return rc ? ca_mbedtls_err(e, rc, "writing a certificate") : 0;
}

struct ca *
ca_new(struct err *e)
{
    struct ca_cert_spec spec = {
        .subject = "CN=" CA_COMMON_NAME ",O=OpenShell",
        .is_ca = true,
        .days = 3650,
    };
    unsigned char *der = xmalloc(CA_DER_MAX), *start;
    struct ca *ca;
    size_t len;

    if (tls_global_init(e) < 0) {
        free(der);
        return NULL;
    }
    ca = xcalloc(1, sizeof(*ca));
    mbedtls_pk_init(&ca->key);
    if (ca_gen_key(&ca->key, e) < 0 ||
        ca_write_cert(ca, &spec, &ca->key, der, &start, &len, e) < 0) {
        err_wrap(e, "creating the sandbox CA");
        free(der);
        ca_free(ca);
        return NULL;
    }
    memcpy(ca->der, start, len);
    ca->der_len = len;
    free(der);
    return ca;
}

static void
ca_cache_drop(struct ca *ca)
{
    for (size_t i = 0; i < ca->cached; i++) {
        ca_leaf_put(ca->cache[i]);
        ca->cache[i] = NULL;
    }
    ca->cached = 0;
}

void
ca_free(struct ca *ca)
{
    if (!ca)
        return;
    ca_cache_drop(ca);
    mbedtls_pk_free(&ca->key);
    explicit_bzero(ca, sizeof(*ca));
    free(ca);
}

void
ca_cert_pem(const struct ca *ca, struct buf *out)
{
    unsigned char pem[CA_DER_MAX * 2];
    size_t olen = 0;

    if (mbedtls_pem_write_buffer("-----BEGIN CERTIFICATE-----\n", "-----END CERTIFICATE-----\n",
                                 ca->der, ca->der_len, pem, sizeof(pem), &olen) != 0)
        BUG(); /* the buffer is sized for any DER we write */
    /* olen counts the terminating NUL. */
    buf_append(out, pem, olen ? olen - 1 : 0);
}

int
ca_bundle_pem(const struct ca *ca, const char *system_bundle, struct buf *out, struct err *e)
{
    const char *path = system_bundle ? system_bundle : tls_system_bundle_path();
    int rc;

    if (path) {
        rc = read_file(path, 16 << 20, out, e);
        if (rc < 0)
            return err_wrap(e, "reading the system trust bundle");
        if (out->len && out->data[out->len - 1] != '\n')
            buf_putc(out, '\n');
    }
    ca_cert_pem(ca, out);
    return 0;
}

/* HOST is a DNS name we are willing to put in a certificate: LDH labels,
 * dots, and "_" (seen in real service names); or an IP literal. */
static bool
ca_host_ok(const char *host)
{
    size_t n = strlen(host);

    if (n == 0 || n > CA_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = host[i];

        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_' || c == ':'))
            return false;
    }
    return true;
}

static struct ca_leaf *
ca_mint(struct ca *ca, const char *host, struct err *e)
{
    unsigned char ip[16];
    mbedtls_x509_san_list san = { 0 };
    struct ca_cert_spec spec = { .is_ca = false, .days = 397, .sans = &san };
    unsigned char *der, *start;
    struct ca_leaf *leaf;
    struct buf subject = BUF_INIT;
    size_t len;
    int rc;

    if (inet_pton(AF_INET, host, ip) == 1) {
        san.node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
        san.node.san.unstructured_name.p = ip;
        san.node.san.unstructured_name.len = 4;
    } else if (inet_pton(AF_INET6, host, ip) == 1) {
        san.node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
        san.node.san.unstructured_name.p = ip;
        san.node.san.unstructured_name.len = 16;
    } else if (strchr(host, ':')) {
        err_set(e, EINVAL, "minting a certificate: bad host '%s'", host);
        return NULL;
    } else {
        san.node.type = MBEDTLS_X509_SAN_DNS_NAME;
        san.node.san.unstructured_name.p = (unsigned char *)host;
        san.node.san.unstructured_name.len = strlen(host);
    }
    leaf = xcalloc(1, sizeof(*leaf));
    leaf->refs = 1;
    buf_copy_fixed(leaf->host, sizeof(leaf->host), host);
    mbedtls_x509_crt_init(&leaf->chain);
    mbedtls_pk_init(&leaf->key);
    der = xmalloc(CA_DER_MAX);
    /* Colons in an IPv6 literal are fine in a DN value; nothing else that
     * needs escaping gets past ca_host_ok(). */
    buf_printf(&subject, "CN=%s", host);
    spec.subject = buf_cstr(&subject);
    rc = ca_gen_key(&leaf->key, e);
    if (rc == 0)
        rc = ca_write_cert(ca, &spec, &leaf->key, der, &start, &len, e);
    if (rc == 0 && (rc = mbedtls_x509_crt_parse_der(&leaf->chain, start, len)) != 0)
        rc = ca_mbedtls_err(e, rc, "parsing the minted leaf");
    if (rc == 0 && (rc = mbedtls_x509_crt_parse_der(&leaf->chain, ca->der, ca->der_len)) != 0)
        rc = ca_mbedtls_err(e, rc, "parsing the CA certificate");
    free(der);
    buf_fini(&subject);
    if (rc < 0) {
        err_wrap(e, "minting a certificate for %s", host);
        ca_leaf_put(leaf);
        return NULL;
    }
    ca->minted++;
    return leaf;
}

struct ca_leaf *
ca_leaf_get(struct ca *ca, const char *host, struct err *e)
{
    struct ca_leaf *leaf;

    if (!ca_host_ok(host)) {
        err_set(e, EINVAL, "minting a certificate: bad host '%s'", host);
        return NULL;
    }
    for (size_t i = 0; i < ca->cached; i++) {
        if (strcasecmp(ca->cache[i]->host, host) == 0) {
            ca->cache[i]->refs++;
            return ca->cache[i];
        }
    }
    leaf = ca_mint(ca, host, e);
    if (!leaf)
        return NULL;
    /* Full: drop everything (as the reference does) rather than track use. */
    if (ca->cached == CA_CACHE_MAX)
        ca_cache_drop(ca);
    leaf->refs++; /* the cache's reference */
    ca->cache[ca->cached++] = leaf;
    return leaf;
}

void
ca_leaf_put(struct ca_leaf *leaf)
{
    if (!leaf || --leaf->refs > 0)
        return;
    mbedtls_x509_crt_free(&leaf->chain);
    mbedtls_pk_free(&leaf->key);
    free(leaf);
}

struct mbedtls_x509_crt *
ca_leaf_chain(struct ca_leaf *leaf)
{
    return &leaf->chain;
}

struct mbedtls_pk_context *
ca_leaf_key(struct ca_leaf *leaf)
{
    return &leaf->key;
}

size_t
ca_cache_count(const struct ca *ca)
{
    return ca->cached;
}

size_t
ca_minted(const struct ca *ca)
{
    return ca->minted;
}
