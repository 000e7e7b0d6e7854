/*
 * test_tls: our mbedTLS/libevent glue end to end in one loop: a server
 * session (leaf minted by the CA module) and a client session (verifying
 * against the CA) over a socketpair, TLS 1.2 and 1.3, ALPN, SNI checks,
 * certificate verification failures, and a 4 MiB echo through bounded
 * buffers. Also the first-bytes sniffer.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/x509_crt.h>
#include <stdio.h>

#include "buf.h"
#include "ca.h"
#include "log.h"
#include "loop.h"
#include "tap.h"
#include "tls.h"
#include "xfuncs.h"

struct side {
    struct bufferevent *bev;
    struct tls_conn *tc;
    bool connected, failed, eof;
    size_t got;    /* plaintext bytes received */
    uint32_t hash; /* running hash of what was received (client) */
};

struct pair {
    struct loop *loop;
    struct side srv, cli;
    size_t total; /* bytes the client sends; the server echoes them */
    size_t sent;
    uint32_t hash; /* of what the client sent */
    struct ca_leaf *leaf;
};

static uint8_t
pattern(size_t i)
{
    return (uint8_t)((i * 7 + (i >> 10)) & 0xff);
}

static uint32_t
hash_add(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static void
stop_if_done(struct pair *p)
{
    if (p->srv.failed || p->cli.failed || (p->total && p->cli.got == p->total) ||
        (!p->total && p->cli.connected && p->srv.connected))
        loop_stop(p->loop);
}

/* Client writes in 64 KiB steps whenever its output drains (back-pressure). */
static void
cli_fill(struct pair *p)
{
    struct evbuffer *out = bufferevent_get_output(p->cli.bev);
    uint8_t chunk[65536];

    while (p->sent < p->total && evbuffer_get_length(out) < 128 * 1024) {
        size_t n = p->total - p->sent < sizeof(chunk) ? p->total - p->sent : sizeof(chunk);

        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(p->sent + i);
        p->hash = hash_add(p->hash, chunk, n);
        evbuffer_add(out, chunk, n);
        p->sent += n;
    }
}

static void
cli_read(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    uint8_t tmp[16384];
    int n;

    while ((n = evbuffer_remove(in, tmp, sizeof(tmp))) > 0) {
        p->cli.hash = hash_add(p->cli.hash, tmp, (size_t)n);
        p->cli.got += (size_t)n;
    }
    stop_if_done(p);
}

static void
cli_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    cli_fill(arg);
}

static void
cli_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED) {
        p->cli.connected = true;
        cli_fill(p);
    }
    if (what & BEV_EVENT_ERROR)
        p->cli.failed = true;
    if (what & BEV_EVENT_EOF)
        p->cli.eof = true;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
        loop_stop(p->loop);
    stop_if_done(p);
}

/* The server echoes, stopping reads while the client is slow. */
static void
srv_read(struct bufferevent *bev, void *arg)
{
    struct pair *p = arg;
    struct evbuffer *in = bufferevent_get_input(bev);

    p->srv.got += evbuffer_get_length(in);
    bufferevent_write_buffer(bev, in);
    if (evbuffer_get_length(bufferevent_get_output(bev)) > 256 * 1024)
        bufferevent_disable(bev, EV_READ);
}

static void
srv_write(struct bufferevent *bev, void *arg)
{
    (void)arg;
    bufferevent_enable(bev, EV_READ);
}

static void
srv_event(struct bufferevent *bev, short what, void *arg)
{
    struct pair *p = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        p->srv.connected = true;
    if (what & BEV_EVENT_ERROR)
        p->srv.failed = true;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
        loop_stop(p->loop);
    stop_if_done(p);
}

static void
timeout_cb(void *arg)
{
    loop_stop(arg);
}

struct run_opts {
    enum tls_version srv_version, cli_version;
    const char *leaf_host;  /* certificate minted for */
    const char *cli_host;   /* the client connects to (SNI + verification) */
    const char *expect_sni; /* server's domain-fronting check */
    size_t total;
    bool cli_trusts_ca;
    enum tls_client_auth client_auth; /* mTLS */
    struct mbedtls_x509_crt *client_ca;
    const char *cli_cert, *cli_key; /* client certificate files */
};

static struct ca *test_ca;
static char ca_file[64];

static int
setup_ca(void)
{
    struct err e;
    struct buf pem = BUF_INIT;
    int fd;

    if (test_ca)
        return 0;
    test_ca = ca_new(&e);
    if (!test_ca) {
        tap_diag("ca_new: %s", e.msg);
        return -1;
    }
    ca_cert_pem(test_ca, &pem);
    strcpy(ca_file, "/tmp/test_tls_ca.XXXXXX");
    fd = mkstemp(ca_file);
    if (fd < 0 || write_full(fd, pem.data, pem.len) < 0)
        return -1;
    close(fd);
    buf_fini(&pem);
    return 0;
}

/* Run one client/server exchange; the result is in P. */
static int
run_pair(struct pair *p, const struct run_opts *o)
{
    struct tls_client_ctx *cctx;
    struct tls_server_opts so = { 0 };
    struct loop_timer *timer;
    struct err e;
    int sv[2];

    memset(p, 0, sizeof(*p));
    if (setup_ca() < 0)
        return -1;
    p->loop = loop_new();
    p->total = o->total;
    p->leaf = ca_leaf_get(test_ca, o->leaf_host, &e);
    if (!p->leaf) {
        tap_diag("leaf: %s", e.msg);
        return -1;
    }
    cctx = tls_client_ctx_new(o->cli_trusts_ca ? ca_file : "/etc/ssl/certs/ca-certificates.crt",
                              NULL, o->cli_version, &e);
    if (!cctx) {
        tap_diag("client ctx: %s", e.msg);
        return -1;
    }
    if (o->cli_cert && tls_client_ctx_set_cert(cctx, o->cli_cert, o->cli_key, &e) < 0) {
        tap_diag("client cert: %s", e.msg);
        tls_client_ctx_free(cctx);
        return -1;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0)
        return -1;
    so.chain = ca_leaf_chain(p->leaf);
    so.key = ca_leaf_key(p->leaf);
    so.expect_sni = o->expect_sni;
    so.version = o->srv_version;
    so.client_auth = o->client_auth;
    so.client_ca = o->client_ca;
    p->srv.bev =
        tls_wrap_server(bufferevent_socket_new(loop_base(p->loop), sv[0], BEV_OPT_CLOSE_ON_FREE),
                        &so, &p->srv.tc, &e);
    p->cli.bev =
        tls_wrap_client(bufferevent_socket_new(loop_base(p->loop), sv[1], BEV_OPT_CLOSE_ON_FREE),
                        cctx, o->cli_host, &p->cli.tc, &e);
    if (!p->srv.bev || !p->cli.bev) {
        tap_diag("wrap: %s", e.msg);
        return -1;
    }
    bufferevent_setcb(p->srv.bev, srv_read, srv_write, srv_event, p);
    bufferevent_setcb(p->cli.bev, cli_read, cli_write, cli_event, p);
    bufferevent_setwatermark(p->srv.bev, EV_WRITE, 64 * 1024, 0);
    bufferevent_setwatermark(p->cli.bev, EV_WRITE, 64 * 1024, 0);
    bufferevent_setwatermark(p->srv.bev, EV_READ, 0, 128 * 1024);
    timer = loop_timer_new(p->loop, timeout_cb, p->loop);
    loop_timer_start(timer, 20000, false);
    loop_run(p->loop);
    loop_timer_free(timer);
    tls_client_ctx_free(cctx);
    return 0;
}

static void
free_pair(struct pair *p)
{
    if (p->srv.bev)
        bufferevent_free(p->srv.bev);
    if (p->cli.bev)
        bufferevent_free(p->cli.bev);
    ca_leaf_put(p->leaf);
    loop_free(p->loop);
}

static int
check_echo(enum tls_version v, const char *want_version)
{
    struct run_opts o = {
        .srv_version = TLS_VERSION_ANY,
        .cli_version = v,
        .leaf_host = "api.example.test",
        .cli_host = "api.example.test",
        .expect_sni = "api.example.test",
        .total = 4 << 20,
        .cli_trusts_ca = true,
    };
    struct pair p;

    if (run_pair(&p, &o) < 0)
        return TAP_FAIL;
    if (p.cli.failed)
        tap_diag("client: %s", tls_conn_error(p.cli.tc));
    if (p.srv.failed)
        tap_diag("server: %s", tls_conn_error(p.srv.tc));
    CHECK(p.cli.connected && p.srv.connected);
    CHECK_STR(tls_conn_version(p.cli.tc), want_version);
    CHECK_STR(tls_conn_version(p.srv.tc), want_version);
    CHECK_STR(tls_conn_alpn(p.cli.tc), "http/1.1");
    CHECK_STR(tls_conn_sni(p.srv.tc), "api.example.test");
    CHECK_INT(p.cli.got, o.total);
    CHECK_INT(p.srv.got, o.total);
    CHECK(p.cli.hash == p.hash);
    free_pair(&p);
    return TAP_PASS;
}

static int
test_tls13_echo(void)
{
    return check_echo(TLS_VERSION_1_3, "TLSv1.3");
}

static int
test_tls12_echo(void)
{
    return check_echo(TLS_VERSION_1_2, "TLSv1.2");
}

static int
test_ip_leaf(void)
{
    struct run_opts o = {
        .leaf_host = "10.20.30.40",
        .cli_host = "10.20.30.40",
        .total = 1000,
        .cli_trusts_ca = true,
    };
    struct pair p;

    if (run_pair(&p, &o) < 0)
        return TAP_FAIL;
    if (p.cli.failed)
        tap_diag("client: %s", tls_conn_error(p.cli.tc));
    CHECK(p.cli.connected && !p.cli.failed);
    CHECK_INT(p.cli.got, 1000);
    free_pair(&p);
    return TAP_PASS;
}

/* A client asking for another name than the tunnel's: the server refuses
 * (domain fronting) and says why. */
static int
test_sni_mismatch(void)
{
    struct run_opts o = {
        .leaf_host = "api.example.test",
        .cli_host = "evil.example.test",
        .expect_sni = "api.example.test",
        .cli_trusts_ca = true,
    };
    struct pair p;

    if (run_pair(&p, &o) < 0)
        return TAP_FAIL;
    CHECK(p.srv.failed);
    CHECK(tls_conn_sni_mismatch(p.srv.tc));
    CHECK_CONTAINS(tls_conn_error(p.srv.tc), "evil.example.test");
    CHECK(!p.cli.connected);
    free_pair(&p);
    return TAP_PASS;
}

/* The certificate does not name the host the client wanted. */
static int
test_verify_name(void)
{
    struct run_opts o = {
        .leaf_host = "api.example.test",
        .cli_host = "other.example.test",
        .cli_trusts_ca = true,
    };
    struct pair p;

    if (run_pair(&p, &o) < 0)
        return TAP_FAIL;
    CHECK(p.cli.failed);
    CHECK(!p.cli.connected);
    CHECK_CONTAINS(tls_conn_error(p.cli.tc), "certificate verify failed");
    free_pair(&p);
    return TAP_PASS;
}

/* The system store does not trust our sandbox CA. */
static int
test_verify_untrusted(void)
{
    struct run_opts o = {
        .leaf_host = "api.example.test",
        .cli_host = "api.example.test",
        .cli_trusts_ca = false,
    };
    struct pair p;

    if (!tls_system_bundle_path())
        TAP_SKIP_BECAUSE("no system trust bundle");
    if (run_pair(&p, &o) < 0)
        return TAP_FAIL;
    CHECK(p.cli.failed);
    CHECK_CONTAINS(tls_conn_error(p.cli.tc), "certificate verify failed");
    free_pair(&p);
    return TAP_PASS;
}

static int
test_version_mismatch(void)
{
    struct run_opts o = {
        .srv_version = TLS_VERSION_1_2,
        .cli_version = TLS_VERSION_1_3,
        .leaf_host = "api.example.test",
        .cli_host = "api.example.test",
        .cli_trusts_ca = true,
    };
    struct pair p;

    if (run_pair(&p, &o) < 0)
        return TAP_FAIL;
    CHECK(p.cli.failed || p.srv.failed);
    CHECK(!p.cli.connected);
    free_pair(&p);
    return TAP_PASS;
}

static int
test_bad_trust_file(void)
{
    struct err e;

    CHECK(!tls_client_ctx_new("/nonexistent/bundle.pem", NULL, TLS_VERSION_ANY, &e));
    CHECK_CONTAINS(e.msg, "/nonexistent/bundle.pem");
    CHECK(!tls_client_ctx_new("/etc/hostname", NULL, TLS_VERSION_ANY, &e));
    CHECK_CONTAINS(e.msg, "/etc/hostname");
    return TAP_PASS;
}

static int
test_sniff(void)
{
    const unsigned char hello[] = { 0x16, 0x03, 0x01, 0x02, 0x00 };
    const unsigned char ssl2[] = { 0x16, 0x03, 0x05 };

    CHECK_INT(tls_sniff(hello, sizeof(hello)), TLS_SNIFF_TLS);
    CHECK_INT(tls_sniff(hello, 1), TLS_SNIFF_NEED_MORE);
    CHECK_INT(tls_sniff(hello, 2), TLS_SNIFF_NEED_MORE);
    CHECK_INT(tls_sniff(ssl2, 3), TLS_SNIFF_OTHER);
    CHECK_INT(tls_sniff((const unsigned char *)"GET / HTTP/1.1", 14), TLS_SNIFF_HTTP1);
    CHECK_INT(tls_sniff((const unsigned char *)"DELETE /x", 9), TLS_SNIFF_HTTP1);
    CHECK_INT(tls_sniff((const unsigned char *)"DEL", 3), TLS_SNIFF_NEED_MORE);
    CHECK_INT(tls_sniff((const unsigned char *)"GETX /", 6), TLS_SNIFF_HTTP1);
    CHECK_INT(tls_sniff((const unsigned char *)"GET\t/", 5), TLS_SNIFF_OTHER);
    CHECK_INT(tls_sniff((const unsigned char *)"get /", 5), TLS_SNIFF_OTHER);
    CHECK_INT(tls_sniff((const unsigned char *)"PRI * HTTP/2.0\r\n", 16), TLS_SNIFF_H2C);
    CHECK_INT(tls_sniff((const unsigned char *)"PRI *", 5), TLS_SNIFF_NEED_MORE);
    CHECK_INT(tls_sniff((const unsigned char *)"SSH-2.0-x", 9), TLS_SNIFF_OTHER);
    /* Unlisted methods are still HTTP when the line looks like a request. */
    CHECK_INT(tls_sniff((const unsigned char *)"PROPFIND /x HTTP/1.1", 20), TLS_SNIFF_HTTP1);
    CHECK_INT(tls_sniff((const unsigned char *)"MKCOL http://a/", 15), TLS_SNIFF_HTTP1);
    CHECK_INT(tls_sniff((const unsigned char *)"MKCOL ht", 8), TLS_SNIFF_NEED_MORE);
    CHECK_INT(tls_sniff((const unsigned char *)"PROPF", 5), TLS_SNIFF_NEED_MORE);
    CHECK_INT(tls_sniff((const unsigned char *)"SET k v\r\n", 9), TLS_SNIFF_OTHER);
    CHECK_INT(tls_sniff((const unsigned char *)"PING\r\n", 6), TLS_SNIFF_OTHER);
    CHECK_INT(tls_sniff((const unsigned char *)"", 0), TLS_SNIFF_NEED_MORE);
    return TAP_PASS;
}

/* mTLS: a client CA and a client certificate made with openssl(1). */
static char mtls_dir[64];

static int
setup_mtls(void)
{
    struct buf cmd = BUF_INIT;
    int rc;

    if (mtls_dir[0])
        return 0;
    if (system("command -v openssl >/dev/null 2>&1") != 0)
        return -ENOENT;
    strcpy(mtls_dir, "/tmp/test_tls_mtls.XXXXXX");
    if (!mkdtemp(mtls_dir))
        return -errno;
    buf_printf(&cmd,
               "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
               "-days 1 -subj /CN=test-client-ca -keyout ca.key -out ca.crt 2>/dev/null && "
               "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
               "-subj /CN=alice/OU=users -keyout c.key -out c.csr 2>/dev/null && "
               "printf 'extendedKeyUsage=clientAuth\\n' >c.ext && "
               "openssl x509 -req -in c.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 "
               "-extfile c.ext -out c.crt 2>/dev/null && "
               "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 "
               "-subj /CN=alice/OU=users -keyout self.key -out self.crt 2>/dev/null",
               mtls_dir);
    rc = system(cmd.data);
    buf_fini(&cmd);
    return rc == 0 ? 0 : -EIO;
}

/* Run an mTLS pair: client presents CERT/KEY (or none), server wants AUTH. */
static int
run_mtls(struct pair *p, enum tls_client_auth auth, const char *cert, const char *key,
         mbedtls_x509_crt *client_ca)
{
    struct run_opts o = {
        .leaf_host = "api.example.test",
        .cli_host = "api.example.test",
        .total = 1024,
        .cli_trusts_ca = true,
        .client_auth = auth,
        .client_ca = client_ca,
        .cli_cert = cert,
        .cli_key = key,
    };

    return run_pair(p, &o);
}

static int
test_mtls(void)
{
    mbedtls_x509_crt cca;
    struct pair p;
    struct err e;
    char dn[256], cn[64], ou[64], cert[96], key[96], self[96], selfkey[96];
    struct tls_client_ctx *cctx;
    int rc;

    if ((rc = setup_mtls()) == -ENOENT)
        TAP_SKIP_BECAUSE("openssl(1) not installed");
    CHECK_INT(rc, 0);
    snprintf(cert, sizeof(cert), "%s/c.crt", mtls_dir);
    snprintf(key, sizeof(key), "%s/c.key", mtls_dir);
    snprintf(self, sizeof(self), "%s/self.crt", mtls_dir);
    snprintf(selfkey, sizeof(selfkey), "%s/self.key", mtls_dir);
    mbedtls_x509_crt_init(&cca);
    snprintf(dn, sizeof(dn), "%s/ca.crt", mtls_dir);
    CHECK_INT(mbedtls_x509_crt_parse_file(&cca, dn), 0);

    /* A certificate from the client CA: verified, subject reported. */
    CHECK_INT(run_mtls(&p, TLS_CLIENT_AUTH_REQUIRED, cert, key, &cca), 0);
    CHECK(p.cli.connected && p.srv.connected);
    CHECK_INT(tls_conn_peer_subject(p.srv.tc, dn, sizeof(dn), cn, sizeof(cn), ou, sizeof(ou)), 0);
    CHECK_STR(cn, "alice");
    CHECK_STR(ou, "users");
    CHECK_CONTAINS(dn, "CN=alice");
    CHECK_INT(tls_conn_peer_subject(p.cli.tc, dn, sizeof(dn), NULL, 0, NULL, 0), -ENOENT);
    CHECK_INT(tls_conn_peer_subject(p.srv.tc, dn, 4, NULL, 0, NULL, 0), -ENOSPC);
    free_pair(&p);

    /* Optional and no certificate: connected, no identity. */
    CHECK_INT(run_mtls(&p, TLS_CLIENT_AUTH_OPTIONAL, NULL, NULL, &cca), 0);
    CHECK(p.srv.connected);
    CHECK_INT(tls_conn_peer_subject(p.srv.tc, dn, sizeof(dn), cn, sizeof(cn), NULL, 0), -ENOENT);
    free_pair(&p);

    /* Optional and a self-signed certificate with the same names: no identity. */
    CHECK_INT(run_mtls(&p, TLS_CLIENT_AUTH_OPTIONAL, self, selfkey, &cca), 0);
    CHECK_INT(tls_conn_peer_subject(p.srv.tc, dn, sizeof(dn), cn, sizeof(cn), NULL, 0), -ENOENT);
    free_pair(&p);

    /* Required: no certificate or an untrusted one fails the handshake. */
    CHECK_INT(run_mtls(&p, TLS_CLIENT_AUTH_REQUIRED, NULL, NULL, &cca), 0);
    CHECK(p.srv.failed && !p.srv.connected);
    free_pair(&p);
    CHECK_INT(run_mtls(&p, TLS_CLIENT_AUTH_REQUIRED, self, selfkey, &cca), 0);
    CHECK(p.srv.failed && !p.srv.connected);
    free_pair(&p);

    /* No client auth: a presented certificate is not an identity. */
    CHECK_INT(run_mtls(&p, TLS_CLIENT_AUTH_NONE, cert, key, NULL), 0);
    CHECK(p.srv.connected);
    CHECK_INT(tls_conn_peer_subject(p.srv.tc, dn, sizeof(dn), NULL, 0, NULL, 0), -ENOENT);
    free_pair(&p);

    /* Bad client material: one clear error each. */
    cctx = tls_client_ctx_new(ca_file, NULL, TLS_VERSION_ANY, &e);
    CHECK(cctx != NULL);
    CHECK_INT(tls_client_ctx_set_cert(cctx, "/nonexistent.crt", key, &e), -ENOENT);
    CHECK_CONTAINS(e.msg, "/nonexistent.crt");
    CHECK_INT(tls_client_ctx_set_cert(cctx, "/etc/hostname", key, &e), -EINVAL);
    CHECK_INT(tls_client_ctx_set_cert(cctx, cert, selfkey, &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "self.key");
    CHECK_INT(tls_client_ctx_set_cert(cctx, cert, key, &e), 0);
    tls_client_ctx_free(cctx);
    mbedtls_x509_crt_free(&cca);
    return TAP_PASS;
}

static int
test_cleanup(void)
{
    ca_free(test_ca);
    test_ca = NULL;
    if (ca_file[0])
        unlink(ca_file);
    if (mtls_dir[0]) {
        struct buf cmd = BUF_INIT;

        buf_printf(&cmd, "rm -rf %s", mtls_dir);
        if (system(cmd.data) != 0)
            tap_diag("could not remove %s", mtls_dir);
        buf_fini(&cmd);
    }
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_tls13_echo), TAP_TEST(test_tls12_echo), TAP_TEST(test_ip_leaf),
         TAP_TEST(test_sni_mismatch), TAP_TEST(test_verify_name), TAP_TEST(test_verify_untrusted),
         TAP_TEST(test_version_mismatch), TAP_TEST(test_bad_trust_file), TAP_TEST(test_sniff),
         TAP_TEST(test_mtls), TAP_TEST(test_cleanup))
