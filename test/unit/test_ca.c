/*
 * test_ca: the sandbox CA: leaves verify against the CA for their host (DNS
 * and IP), not for another; the cache returns the same leaf and is dropped
 * when full without freeing leaves still referenced; the PEM export and
 * the trust bundle.
 */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wundef"
#include <mbedtls/x509_crt.h>
#pragma GCC diagnostic pop
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ca.h"
#include "tap.h"
#include "tls.h"
#include "xfuncs.h"

static int
parse_ca(const struct ca *ca, mbedtls_x509_crt *crt)
{
    struct buf pem = BUF_INIT;
    int rc;

    ca_cert_pem(ca, &pem);
    mbedtls_x509_crt_init(crt);
    /* PEM parsing wants the terminating NUL in the length. */
    rc = mbedtls_x509_crt_parse(crt, (const unsigned char *)pem.data, pem.len + 1);
    buf_fini(&pem);
    return rc;
}

static int
verify(struct ca_leaf *leaf, mbedtls_x509_crt *trust, const char *name)
{
    uint32_t flags = 0;

    return mbedtls_x509_crt_verify(ca_leaf_chain(leaf), trust, NULL, name, &flags, NULL, NULL);
}

static int
test_leaf_verifies(void)
{
    struct err e;
    struct ca *ca = ca_new(&e);
    mbedtls_x509_crt trust;
    struct ca_leaf *leaf, *ip, *ip6;
    char dn[256];

    CHECK(ca);
    CHECK_INT(parse_ca(ca, &trust), 0);
    CHECK(trust.MBEDTLS_PRIVATE(ca_istrue));
    mbedtls_x509_dn_gets(dn, sizeof(dn), &trust.subject);
    CHECK_STR(dn, "CN=OpenShell Sandbox CA, O=OpenShell");
    leaf = ca_leaf_get(ca, "API.Example.test", &e);
    CHECK(leaf);
    CHECK_INT(verify(leaf, &trust, "api.example.test"), 0);
    CHECK(verify(leaf, &trust, "other.example.test") != 0);
    CHECK(!ca_leaf_chain(leaf)->MBEDTLS_PRIVATE(ca_istrue));
    CHECK(ca_leaf_chain(leaf)->next != NULL); /* chain carries the CA */
    ip = ca_leaf_get(ca, "10.1.2.3", &e);
    CHECK(ip);
    CHECK_INT(verify(ip, &trust, "10.1.2.3"), 0);
    CHECK(verify(ip, &trust, "10.1.2.4") != 0);
    ip6 = ca_leaf_get(ca, "fd00::1", &e);
    CHECK(ip6);
    CHECK_INT(verify(ip6, &trust, "fd00::1"), 0);
    /* Another CA's leaf does not verify against this one. */
    {
        struct ca *other = ca_new(&e);
        struct ca_leaf *o = ca_leaf_get(other, "api.example.test", &e);

        CHECK(o);
        CHECK(verify(o, &trust, "api.example.test") != 0);
        ca_leaf_put(o);
        ca_free(other);
    }
    ca_leaf_put(leaf);
    ca_leaf_put(ip);
    ca_leaf_put(ip6);
    mbedtls_x509_crt_free(&trust);
    ca_free(ca);
    return TAP_PASS;
}

static int
test_bad_hosts(void)
{
    struct err e;
    struct ca *ca = ca_new(&e);
    char longname[300];

    CHECK(ca);
    CHECK(!ca_leaf_get(ca, "", &e));
    CHECK(!ca_leaf_get(ca, "a,CN=evil", &e));
    CHECK_CONTAINS(e.msg, "bad host");
    CHECK(!ca_leaf_get(ca, "x:y", &e));
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CHECK(!ca_leaf_get(ca, longname, &e));
    CHECK_INT(ca_minted(ca), 0);
    ca_free(ca);
    return TAP_PASS;
}

static int
test_cache(void)
{
    struct err e;
    struct ca *ca = ca_new(&e);
    struct ca_leaf *a, *b, *held;
    mbedtls_x509_crt trust;
    char host[64];

    CHECK(ca);
    a = ca_leaf_get(ca, "a.example.test", &e);
    b = ca_leaf_get(ca, "A.EXAMPLE.TEST", &e);
    CHECK(a && a == b);
    CHECK_INT(ca_minted(ca), 1);
    CHECK_INT(ca_cache_count(ca), 1);
    ca_leaf_put(b);
    held = a;
    /* Fill past the limit: the cache is dropped, HELD survives. */
    for (int i = 0; i < CA_CACHE_MAX; i++) {
        struct ca_leaf *l;

        snprintf(host, sizeof(host), "h%d.example.test", i);
        l = ca_leaf_get(ca, host, &e);
        CHECK(l);
        ca_leaf_put(l);
    }
    CHECK_INT(ca_minted(ca), CA_CACHE_MAX + 1);
    CHECK_INT(ca_cache_count(ca), 1);
    CHECK_INT(parse_ca(ca, &trust), 0);
    CHECK_INT(verify(held, &trust, "a.example.test"), 0);
    ca_leaf_put(held);
    /* Minted again after the drop. */
    a = ca_leaf_get(ca, "a.example.test", &e);
    CHECK_INT(ca_minted(ca), CA_CACHE_MAX + 2);
    ca_leaf_put(a);
    mbedtls_x509_crt_free(&trust);
    ca_free(ca);
    return TAP_PASS;
}

static int
test_bundle(void)
{
    struct err e;
    struct ca *ca = ca_new(&e);
    struct buf pem = BUF_INIT, bundle = BUF_INIT, sys = BUF_INIT;
    const char *path = tls_system_bundle_path();
    char tmp[] = "/tmp/test_ca_sys.XXXXXX";
    int fd;

    CHECK(ca);
    ca_cert_pem(ca, &pem);
    CHECK(strncmp(buf_cstr(&pem), "-----BEGIN CERTIFICATE-----\n", 28) == 0);
    CHECK_CONTAINS(buf_cstr(&pem), "-----END CERTIFICATE-----\n");
    /* A bundle without a trailing newline still yields valid PEM. */
    fd = mkstemp(tmp);
    CHECK(fd >= 0);
    CHECK_INT(write_full(fd, "SYSTEM", 6), 0);
    close(fd);
    CHECK_INT(ca_bundle_pem(ca, tmp, &bundle, &e), 0);
    unlink(tmp);
    CHECK(strncmp(buf_cstr(&bundle), "SYSTEM\n-----BEGIN", 17) == 0);
    CHECK_INT(bundle.len, 7 + pem.len);
    buf_reset(&bundle);
    CHECK(ca_bundle_pem(ca, "/nonexistent/x.pem", &bundle, &e) < 0);
    CHECK_CONTAINS(e.msg, "/nonexistent/x.pem");
    if (path) {
        buf_reset(&bundle);
        CHECK_INT(ca_bundle_pem(ca, NULL, &bundle, &e), 0);
        CHECK_INT(read_file(path, 16 << 20, &sys, &e), 0);
        CHECK(bundle.len >= sys.len + pem.len);
        CHECK(memcmp(bundle.data, sys.data, sys.len) == 0);
        CHECK(memcmp(bundle.data + bundle.len - pem.len, pem.data, pem.len) == 0);
    }
    buf_fini(&pem);
    buf_fini(&bundle);
    buf_fini(&sys);
    ca_free(ca);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_leaf_verifies), TAP_TEST(test_bad_hosts), TAP_TEST(test_cache),
         TAP_TEST(test_bundle))
