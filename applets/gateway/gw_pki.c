/*
 * gw_pki.c: the gateway's own PKI for its TLS listener, made on first start.
 *
 * Layout under DIR (STATE_DIR/tls), as the reference's generate-certs:
 *   ca.crt ca.key                 CN openshell-ca, O openshell, CA:TRUE
 *   server/tls.crt server/tls.key CN openshell-server, serverAuth, SANs
 *                                 localhost, openshell, 127.0.0.1, ::1
 *   client/tls.crt client/tls.key CN openshell-client, OU openshell-user,
 *                                 clientAuth
 * Keys are ECDSA P-256, files 0600 (certificates 0644), directories 0700.
 * Idempotency: all six files present -> used as they are; none -> created;
 * some -> an error naming what is missing (never a silent overwrite).
 * The client bundle is then copied where the CLI looks:
 * CONFIG/openshell/gateways/NAME/mtls/{ca.crt,tls.crt,tls.key}, with
 * metadata.json beside it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ecp.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#include "buf.h"
#include "gw_pki.h"
#include "log.h"
#include "tls.h"
#include "xfuncs.h"

#define PEM_MAX 8192

static const char *const pki_files[] = {
    "ca.crt", "ca.key", "server/tls.crt", "server/tls.key", "client/tls.crt", "client/tls.key",
};
#define NFILES (sizeof(pki_files) / sizeof(pki_files[0]))

static int
mbed_err(struct err *e, int rc, const char *what)
{
    char msg[160];

    mbedtls_strerror(rc, msg, sizeof(msg));
    return err_set(e, EIO, "%s: %s (-0x%04x)", what, msg, (unsigned)-rc);
}

static int
gen_key(mbedtls_pk_context *key, struct err *e)
{
    int rc = mbedtls_pk_setup(key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));

    if (rc == 0)
        rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*key), tls_rng,
                                 tls_rng_ctx());
    return rc ? mbed_err(e, rc, "generating a P-256 key") : 0;
}

static void
asn_time(char out[16], long days)
{
    time_t t = time(NULL) + days * 86400L;
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(out, 16, "%Y%m%d%H%M%S", &tm);
}

enum cert_kind { CERT_CA, CERT_SERVER, CERT_CLIENT };

/* Write a certificate for SUBJECT_KEY signed by ISSUER_KEY as PEM into OUT. */
static int
write_cert(enum cert_kind kind, const char *subject, mbedtls_pk_context *subject_key,
           mbedtls_pk_context *issuer_key, unsigned char *out, struct err *e)
{
    static const char issuer[] = "CN=openshell-ca,O=openshell";
    static unsigned char ip4[4] = { 127, 0, 0, 1 };
    static unsigned char ip6[16] = { [15] = 1 };
    mbedtls_x509_san_list san[4];
    mbedtls_x509write_cert w;
    mbedtls_asn1_sequence eku;
    unsigned char serial[16];
    char nb[16], na[16];
    int rc;

    memset(san, 0, sizeof(san));
    san[0].node.type = MBEDTLS_X509_SAN_DNS_NAME;
    san[0].node.san.unstructured_name.p = (unsigned char *)"localhost";
    san[0].node.san.unstructured_name.len = 9;
    san[0].next = &san[1];
    san[1].node.type = MBEDTLS_X509_SAN_DNS_NAME;
    san[1].node.san.unstructured_name.p = (unsigned char *)"openshell";
    san[1].node.san.unstructured_name.len = 9;
    san[1].next = &san[2];
    san[2].node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
    san[2].node.san.unstructured_name.p = ip4;
    san[2].node.san.unstructured_name.len = 4;
    san[2].next = &san[3];
    san[3].node.type = MBEDTLS_X509_SAN_IP_ADDRESS;
    san[3].node.san.unstructured_name.p = ip6;
    san[3].node.san.unstructured_name.len = 16;

    mbedtls_x509write_crt_init(&w);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, subject_key);
    mbedtls_x509write_crt_set_issuer_key(&w, issuer_key);
    /* Ten years: the gateway's local PKI is replaced by deleting it. */
    asn_time(nb, -1);
    asn_time(na, kind == CERT_CA ? 3650 : 3649);
    rc = tls_rng(tls_rng_ctx(), serial, sizeof(serial));
    serial[0] = (unsigned char)((serial[0] & 0x7f) | 0x01);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_serial_raw(&w, serial, sizeof(serial));
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_subject_name(&w, subject);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_issuer_name(&w, issuer);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_validity(&w, nb, na);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_basic_constraints(&w, kind == CERT_CA,
                                                         kind == CERT_CA ? 0 : -1);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_subject_key_identifier(&w);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_authority_key_identifier(&w);
    if (rc == 0)
        rc = mbedtls_x509write_crt_set_key_usage(
            &w, kind == CERT_CA ? MBEDTLS_X509_KU_KEY_CERT_SIGN | MBEDTLS_X509_KU_CRL_SIGN
                                : MBEDTLS_X509_KU_DIGITAL_SIGNATURE);
    if (rc == 0 && kind != CERT_CA) {
        memset(&eku, 0, sizeof(eku));
        eku.buf.tag = MBEDTLS_ASN1_OID;
        if (kind == CERT_SERVER) {
            eku.buf.p = (unsigned char *)MBEDTLS_OID_SERVER_AUTH;
            eku.buf.len = MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH);
        } else {
            eku.buf.p = (unsigned char *)MBEDTLS_OID_CLIENT_AUTH;
            eku.buf.len = MBEDTLS_OID_SIZE(MBEDTLS_OID_CLIENT_AUTH);
        }
        rc = mbedtls_x509write_crt_set_ext_key_usage(&w, &eku);
    }
    if (rc == 0 && kind == CERT_SERVER)
        rc = mbedtls_x509write_crt_set_subject_alternative_name(&w, san);
    if (rc == 0)
        rc = mbedtls_x509write_crt_pem(&w, out, PEM_MAX, tls_rng, tls_rng_ctx());
    mbedtls_x509write_crt_free(&w);
    return rc ? mbed_err(e, rc, "writing a certificate") : 0;
}

/* Write DATA to DIR/NAME atomically (temp file, fsync, rename) with MODE. */
static int
write_file_at(const char *dir, const char *name, const char *data, unsigned mode, struct err *e)
{
    char *path = xasprintf("%s/%s", dir, name), *tmp = xasprintf("%s.tmp", path);
    int fd, rc = 0;

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) {
        rc = err_errno(e, "creating %s", tmp);
        goto out;
    }
    if ((rc = write_full(fd, data, strlen(data))) < 0 || fchmod(fd, mode) < 0 || fsync(fd) < 0) {
        errno = rc < 0 ? -rc : errno;
        rc = err_errno(e, "writing %s", tmp);
        close(fd);
        unlink(tmp);
        goto out;
    }
    close(fd);
    if (rename(tmp, path) < 0) {
        rc = err_errno(e, "renaming %s", tmp);
        unlink(tmp);
    }
out:
    free(path);
    free(tmp);
    return rc;
}

static int
mkdir_0700(const char *path, struct err *e)
{
    if (mkdir(path, 0700) < 0 && errno != EEXIST)
        return err_errno(e, "creating %s", path);
    return 0;
}

static int
pki_create(const char *dir, struct err *e)
{
    mbedtls_pk_context ca, srv, cli;
    unsigned char *pem = xmalloc(PEM_MAX);
    char *sub;
    int rc;

    mbedtls_pk_init(&ca);
    mbedtls_pk_init(&srv);
    mbedtls_pk_init(&cli);
    sub = xasprintf("%s/server", dir);
    rc = mkdir_0700(sub, e);
    free(sub);
    sub = xasprintf("%s/client", dir);
    if (rc == 0)
        rc = mkdir_0700(sub, e);
    free(sub);
    if (rc < 0)
        goto out;
    if ((rc = gen_key(&ca, e)) < 0 || (rc = gen_key(&srv, e)) < 0 || (rc = gen_key(&cli, e)) < 0)
        goto out;
#define PUT(kind, subject, key, file, keyfile)                                                     \
    do {                                                                                           \
        if ((rc = write_cert(kind, subject, &key, &ca, pem, e)) < 0 ||                             \
            (rc = write_file_at(dir, file, (char *)pem, 0644, e)) < 0)                             \
            goto out;                                                                              \
        if ((rc = mbedtls_pk_write_key_pem(&key, pem, PEM_MAX)) != 0) {                            \
            rc = mbed_err(e, rc, "writing a key");                                                 \
            goto out;                                                                              \
        }                                                                                          \
        if ((rc = write_file_at(dir, keyfile, (char *)pem, 0600, e)) < 0)                          \
            goto out;                                                                              \
    } while (0)
    /* Leaves first and the CA last: a crash in between leaves a partial
     * set, which the next start reports instead of half-trusting it. */
    PUT(CERT_SERVER, "CN=openshell-server", srv, "server/tls.crt", "server/tls.key");
    PUT(CERT_CLIENT, "CN=openshell-client,OU=openshell-user", cli, "client/tls.crt",
        "client/tls.key");
    PUT(CERT_CA, "CN=openshell-ca,O=openshell", ca, "ca.crt", "ca.key");
#undef PUT
    log_info("created the gateway PKI in %s", dir);
out:
    mbedtls_platform_zeroize(pem, PEM_MAX);
    free(pem);
    mbedtls_pk_free(&ca);
    mbedtls_pk_free(&srv);
    mbedtls_pk_free(&cli);
    return rc;
}

static int
copy_file(const char *from, const char *to_dir, const char *to_name, unsigned mode, struct err *e)
{
    struct buf b = BUF_INIT;
    int rc = read_file(from, 64 * 1024, &b, e);

    if (rc == 0)
        rc = write_file_at(to_dir, to_name, buf_cstr(&b), mode, e);
    buf_fini(&b);
    return rc;
}

/* mkdir -p (0700 for what we create). */
static int
mkdir_p(const char *path, struct err *e)
{
    char *p = xstrdup(path);
    int rc = 0;

    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        rc = mkdir_0700(p, e);
        *s = '/';
    }
    if (rc == 0)
        rc = mkdir_0700(p, e);
    free(p);
    return rc;
}

int
gw_pki_ensure(const struct gw_pki_opts *o, struct err *e)
{
    size_t present = 0;
    char *path, *mtls = NULL;
    struct buf missing = BUF_INIT, meta = BUF_INIT;
    struct stat st;
    int rc;

    if ((rc = tls_global_init(e)) < 0)
        return rc;
    if ((rc = mkdir_0700(o->dir, e)) < 0)
        return rc;
    for (size_t i = 0; i < NFILES; i++) {
        path = xasprintf("%s/%s", o->dir, pki_files[i]);
        if (stat(path, &st) == 0)
            present++;
        else
            buf_printf(&missing, "%s%s", missing.len ? ", " : "", pki_files[i]);
        free(path);
    }
    if (present == 0) {
        if ((rc = pki_create(o->dir, e)) < 0) {
            err_wrap(e, "creating the PKI in %s", o->dir);
            goto out;
        }
    } else if (present < NFILES) {
        rc = err_set(e, EEXIST,
                     "%s holds a partial PKI (missing %s): remove the directory to have it "
                     "created again, or restore the files",
                     o->dir, buf_cstr(&missing));
        goto out;
    }
    if (!o->client_dir)
        goto out;
    /* The client bundle where the CLI finds it. */
    mtls = xasprintf("%s/mtls", o->client_dir);
    if ((rc = mkdir_p(mtls, e)) < 0)
        goto out;
    path = xasprintf("%s/ca.crt", o->dir);
    rc = copy_file(path, mtls, "ca.crt", 0644, e);
    free(path);
    path = xasprintf("%s/client/tls.crt", o->dir);
    if (rc == 0)
        rc = copy_file(path, mtls, "tls.crt", 0644, e);
    free(path);
    path = xasprintf("%s/client/tls.key", o->dir);
    if (rc == 0)
        rc = copy_file(path, mtls, "tls.key", 0600, e);
    free(path);
    if (rc < 0)
        goto out;
    buf_puts(&meta, "{\"name\":");
    buf_put_json_str(&meta, o->name, strlen(o->name));
    buf_puts(&meta, ",\"gateway_endpoint\":");
    buf_put_json_str(&meta, o->endpoint, strlen(o->endpoint));
    buf_printf(&meta, ",\"is_remote\":false,\"gateway_port\":%u,\"auth_mode\":\"mtls\"", o->port);
    if (o->socket) {
        buf_puts(&meta, ",\"unix_socket\":");
        buf_put_json_str(&meta, o->socket, strlen(o->socket));
    }
    buf_puts(&meta, "}\n");
    rc = write_file_at(o->client_dir, "metadata.json", buf_cstr(&meta), 0644, e);
out:
    free(mtls);
    buf_fini(&missing);
    buf_fini(&meta);
    return rc;
}

/* Parse PEM file PATH into CRT (appending). */
static int
load_crt(mbedtls_x509_crt *crt, const char *path, struct err *e)
{
    struct buf b = BUF_INIT;
    int rc = read_file(path, 64 * 1024, &b, e);

    /* mbedtls wants the terminating NUL counted for PEM input. */
    if (rc == 0 &&
        (rc = mbedtls_x509_crt_parse(crt, (const unsigned char *)buf_cstr(&b), b.len + 1)) != 0) {
        mbed_err(e, rc, "parse");
        rc = err_wrap(e, "loading certificate %s", path);
    }
    buf_fini(&b);
    return rc;
}

int
gw_pki_load_server(const char *dir, struct mbedtls_x509_crt *chain, struct mbedtls_pk_context *key,
                   struct mbedtls_x509_crt *ca, struct err *e)
{
    char *leaf = xasprintf("%s/server/tls.crt", dir), *cacrt = xasprintf("%s/ca.crt", dir);
    char *keyf = xasprintf("%s/server/tls.key", dir);
    struct buf b = BUF_INIT;
    int rc;

    if ((rc = load_crt(chain, leaf, e)) < 0 || (rc = load_crt(chain, cacrt, e)) < 0 ||
        (rc = load_crt(ca, cacrt, e)) < 0 || (rc = read_file(keyf, 64 * 1024, &b, e)) < 0)
        goto out;
    rc = mbedtls_pk_parse_key(key, (const unsigned char *)buf_cstr(&b), b.len + 1, NULL, 0, tls_rng,
                              tls_rng_ctx());
    if (rc != 0) {
        mbed_err(e, rc, "parse");
        rc = err_wrap(e, "loading key %s", keyf);
    }
out:
    if (b.data)
        mbedtls_platform_zeroize(b.data, b.len);
    buf_fini(&b);
    free(leaf);
    free(cacrt);
    free(keyf);
    return rc;
}
