/*
 * test_px: the proxy engine in process, under ASan/UBSan: a client thread
 * speaks to a px_server running on the main thread's loop over loopback and
 * checks the answers that need no upstream (denials, SSRF, framing, 431,
 * timeouts, policy swaps); the loop then shuts down and frees everything, so
 * leaks and use-after-free in the connection state machine show up here.
 * Upstream relays are covered end to end by test/e2e/proxy.py.
 */
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "ca.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "px.h"
#include "tap.h"
#include "tls.h"

static const char policy_yaml[] = "version: 1\n"
                                  "network_policies:\n"
                                  "  web:\n"
                                  "    endpoints:\n"
                                  "      - host: loop.test\n"
                                  "        port: 8080\n"
                                  "      - host: api.test\n"
                                  "        port: 443\n"
                                  "        protocol: rest\n"
                                  "        enforcement: enforce\n"
                                  "        access: read-only\n"
                                  "    binaries:\n"
                                  "      - path: /usr/bin/curl\n";

struct exch {
    const char *send;
    size_t send_len;
    char got[4096];
    size_t got_len;
};

static unsigned port;
static int done_pipe[2];

/* Send, then read until the proxy closes (or 5 s pass). */
static void
exchange(struct exch *x)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { 5, 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ssize_t n;

    x->got_len = 0;
    x->got[0] = '\0';
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return;
    }
    if (x->send_len)
        (void)!write(fd, x->send, x->send_len);
    while (x->got_len < sizeof(x->got) - 1 &&
           (n = read(fd, x->got + x->got_len, sizeof(x->got) - 1 - x->got_len)) > 0)
        x->got_len += (size_t)n;
    x->got[x->got_len] = '\0';
    close(fd);
}

static struct exch cases[8];
static char big[9000 + 200];

static void *
client_thread(void *arg)
{
    (void)arg;
    cases[0].send = "CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n";
    cases[1].send =
        "GET http://loop.test:8080/x?token=s3cret HTTP/1.1\r\nHost: loop.test:8080\r\n\r\n";
    cases[2].send = "POST http://loop.test:8080/ HTTP/1.1\r\nHost: loop.test:8080\r\n"
                    "Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    cases[3].send = big;
    cases[4].send = "GET https://api.test/ HTTP/1.1\r\nHost: api.test\r\n\r\n";
    cases[5].send = "GET ftp://loop.test/ HTTP/1.1\r\nHost: loop.test\r\n\r\n";
    cases[6].send = "GET /not-a-proxy-request HTTP/1.1\r\nHost: x\r\n\r\n";
    cases[7].send = "GET http://loop.test:8080/ HTTP/1.1\r\nHost: loop.test:8080\r\n"; /* stalls */
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        cases[i].send_len = strlen(cases[i].send);
        exchange(&cases[i]);
    }
    (void)!write(done_pipe[1], "x", 1);
    return NULL;
}

static void
done_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loop_stop(arg);
}

static void
timeout_cb(void *arg)
{
    loop_stop(arg);
}

static int
test_denials(void)
{
    static const char *const resolve[] = { "loop.test:127.0.0.1" };
    struct px_opts o = {
        .resolve = resolve,
        .nresolve = 1,
        .identity_off = true,
        .header_timeout_s = 1,
    };
    struct policy *pol = NULL;
    struct loop *loop;
    struct px_server *srv;
    struct ca *ca;
    struct err e;
    struct event *ev;
    struct loop_timer *t;
    pthread_t th;

    if (!tls_system_bundle_path())
        TAP_SKIP_BECAUSE("no system trust bundle");
    log_set_level(LOG_LVL_ERROR);
    CHECK_INT(policy_load_mem("test", policy_yaml, sizeof(policy_yaml) - 1, &pol, NULL, &e), 0);
    ca = ca_new(&e);
    CHECK(ca);
    loop = loop_new();
    srv = px_server_new(loop, pol, ca, &o, &e);
    if (!srv)
        tap_diag("px_server_new: %s", e.msg);
    CHECK(srv);
    CHECK_INT(px_server_listen(srv, "127.0.0.1:0", &e), 0);
    port = px_server_port(srv);
    CHECK(port > 0);
    CHECK(px_server_listen(srv, "nonsense", &e) < 0);
    CHECK_CONTAINS(e.msg, "nonsense");
    CHECK(px_server_listen_fd(srv, 0, &e) < 0);

    memset(big, 'a', sizeof(big) - 1);
    memcpy(big, "GET http://loop.test:8080/ HTTP/1.1\r\nX: ", 40);
    CHECK_INT(pipe(done_pipe), 0);
    ev = event_new(loop_base(loop), done_pipe[0], EV_READ, done_cb, loop);
    event_add(ev, NULL);
    t = loop_timer_new(loop, timeout_cb, loop);
    loop_timer_start(t, 30000, false);
    CHECK_INT(pthread_create(&th, NULL, client_thread, NULL), 0);
    loop_run(loop);
    pthread_join(th, NULL);

    /* A policy swap while idle: nothing to close, nothing leaks. */
    px_server_set_policy(srv, pol);
    px_server_free(srv);
    event_free(ev);
    loop_timer_free(t);
    loop_free(loop);
    ca_free(ca);
    policy_unref(pol);
    close(done_pipe[0]);
    close(done_pipe[1]);

    CHECK_CONTAINS(cases[0].got, "HTTP/1.1 403 Forbidden\r\n");
    CHECK_CONTAINS(cases[0].got, "\r\n\r\n{\"error\":\"policy_denied\",\"detail\":\"CONNECT "
                                 "evil.test:443 not permitted by policy\",\"reason\":\"endpoint "
                                 "evil.test:443 is not allowed by any policy\"}");
    /* SSRF: the declared name resolves to loopback. */
    CHECK_CONTAINS(cases[1].got, "HTTP/1.1 403 Forbidden\r\n");
    CHECK_CONTAINS(cases[1].got, "{\"error\":\"ssrf_denied\",\"detail\":\"GET loop.test:8080 "
                                 "blocked: ");
    CHECK(!strstr(cases[1].got, "s3cret"));
    CHECK_CONTAINS(cases[2].got, "HTTP/1.1 400 Bad Request\r\n");
    CHECK_CONTAINS(cases[3].got, "HTTP/1.1 431 Request Header Fields Too Large\r\n");
    CHECK_CONTAINS(cases[4].got, "HTTP/1.1 400 Bad Request\r\n");
    CHECK_CONTAINS(cases[4].got, "Use CONNECT for HTTPS URLs");
    CHECK_CONTAINS(cases[5].got, "unsupported_proxy_scheme");
    CHECK_CONTAINS(cases[6].got, "invalid_request_target");
    /* An unfinished head is dropped at the header timeout, unanswered. */
    CHECK_INT(cases[7].got_len, 0);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_denials))
