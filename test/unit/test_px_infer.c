/*
 * test_px_infer: the proxy engine in process under ASan/UBSan, with what
 * needs no upstream: reference attack 41 (no CA: an auto-TLS endpoint and
 * inference.local are answered 503 tls_termination_unavailable before any
 * 200, a `tls: skip` endpoint still gets its tunnel decision), inference.local
 * answered 200 before any policy (an empty policy), a credentialed `tls:
 * skip` endpoint refused (attack 38), credentials swapped while idle; the
 * loop then frees everything (leaks show up here).
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
#include "px_cred.h"
#include "px_ident.h"
#include "tap.h"

static const char policy_yaml[] = "version: 1\n"
                                  "network_policies:\n"
                                  "  web:\n"
                                  "    endpoints:\n"
                                  "      - host: api.test\n"
                                  "        port: 443\n"
                                  "      - host: raw.test\n"
                                  "        port: 443\n"
                                  "        tls: skip\n"
                                  "    binaries:\n"
                                  "      - path: /usr/bin/curl\n";

static const char creds_json[] = "{\"revision\":1,\"credentials\":[{\"key\":\"K\",\"value\":\"v\","
                                 "\"endpoints\":[{\"host\":\"raw.test\",\"port\":443}]}]}";

struct exch {
    const char *send;
    char got[2048];
    size_t got_len;
};

static unsigned port;
static int done_pipe[2];
static struct exch cases[3];

static void
exchange(struct exch *x)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { 5, 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ssize_t n;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return;
    }
    (void)!write(fd, x->send, strlen(x->send));
    while (x->got_len < sizeof(x->got) - 1 &&
           (n = read(fd, x->got + x->got_len, sizeof(x->got) - 1 - x->got_len)) > 0)
        x->got_len += (size_t)n;
    x->got[x->got_len] = '\0';
    close(fd);
}

static void *
client_thread(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        exchange(&cases[i]);
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

/* Run the cases against a server with POLICY, CA (may be NULL) and CREDS. */
static int
run(const char *yaml, struct ca *ca, struct px_creds *creds)
{
    struct px_opts o = { .identity_off = true, .header_timeout_s = 2, .idle_timeout_s = 1 };
    struct policy *pol = NULL;
    struct loop *loop = loop_new();
    struct px_server *srv;
    struct event *ev;
    pthread_t th;
    struct err e;

    CHECK_INT(policy_load_mem("test", yaml, strlen(yaml), &pol, NULL, &e), 0);
    srv = px_server_new(loop, pol, ca, &o, &e);
    CHECK(srv);
    px_server_set_credentials(srv, creds);
    CHECK_INT(px_server_listen(srv, "127.0.0.1:0", &e), 0);
    port = px_server_port(srv);
    CHECK_INT(pipe(done_pipe), 0);
    ev = event_new(loop_base(loop), done_pipe[0], EV_READ, done_cb, loop);
    event_add(ev, NULL);
    CHECK_INT(pthread_create(&th, NULL, client_thread, NULL), 0);
    loop_run(loop);
    pthread_join(th, NULL);
    px_server_set_credentials(srv, NULL); /* idle swap: nothing to close */
    px_server_free(srv);
    event_free(ev);
    loop_free(loop);
    policy_unref(pol);
    close(done_pipe[0]);
    close(done_pipe[1]);
    return TAP_PASS;
}

static void
reset(void)
{
    memset(cases, 0, sizeof(cases));
    cases[0].send = "CONNECT inference.local:443 HTTP/1.1\r\nHost: inference.local:443\r\n\r\n";
    cases[1].send = "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\n";
    cases[2].send = "CONNECT raw.test:443 HTTP/1.1\r\nHost: raw.test:443\r\n\r\n";
}

static int
test_no_ca(void)
{
    struct px_creds *c = NULL;
    struct err e;

    log_set_level(LOG_LVL_ERROR);
    CHECK_INT(px_creds_parse(creds_json, strlen(creds_json), &c, &e), 0);
    reset();
    CHECK_INT(run(policy_yaml, NULL, c), TAP_PASS);
    px_creds_unref(c);
    /* 503 first, never a 200 before it. */
    CHECK(strncmp(cases[0].got, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    CHECK_CONTAINS(cases[0].got, "tls_termination_unavailable");
    CHECK(strncmp(cases[1].got, "HTTP/1.1 503 Service Unavailable\r\n", 34) == 0);
    CHECK_CONTAINS(cases[1].got, "tls_termination_unavailable");
    /* tls: skip needs no CA; but a credential is bound there: refused. */
    CHECK(strncmp(cases[2].got, "HTTP/1.1 403 Forbidden\r\n", 24) == 0);
    CHECK_CONTAINS(cases[2].got, "uninspected_credentials");
    return TAP_PASS;
}

static int
test_inference_before_policy(void)
{
    struct ca *ca;
    struct err e;

    log_set_level(LOG_LVL_ERROR);
    ca = ca_new(&e);
    CHECK(ca);
    reset();
    /* No network policies at all: everything else is denied, inference.local
     * still gets its 200 (the client then sends no TLS: closed). */
    CHECK_INT(run("version: 1\n", ca, NULL), TAP_PASS);
    ca_free(ca);
    CHECK(strncmp(cases[0].got, "HTTP/1.1 200 Connection Established\r\n\r\n", 39) == 0);
    CHECK_INT(cases[0].got_len, 39);
    CHECK_CONTAINS(cases[1].got, "HTTP/1.1 403 Forbidden\r\n");
    CHECK_CONTAINS(cases[1].got, "policy_denied");
    return TAP_PASS;
}

/* The control channel: a credentials line may come before "agent PID"; a
 * connection waiting for the anchor keeps waiting for it. */
static int ctl_lines;
static char ctl_last[256];

static void
ctl_json(void *arg, const char *line, size_t n)
{
    (void)arg;
    ctl_lines++;
    snprintf(ctl_last, sizeof(ctl_last), "%.*s", (int)n, line);
}

static int ctl_pipe[2];

static void *
late_agent(void *arg)
{
    (void)arg;
    usleep(200 * 1000);
    (void)!write(ctl_pipe[1], "agent 4242\n", 11);
    return NULL;
}

static int
test_control_order(void)
{
    struct px_ident *id = px_ident_new("/proc");
    static const char line[] = "{\"type\":\"credentials\",\"doc\":{\"revision\":1}}\n";
    pthread_t th;

    CHECK_INT(pipe(ctl_pipe), 0);
    px_ident_set_control_handler(id, ctl_json, NULL);
    CHECK_INT(write(ctl_pipe[1], line, sizeof(line) - 1), (long)sizeof(line) - 1);
    CHECK_INT(pthread_create(&th, NULL, late_agent, NULL), 0);
    CHECK_INT(px_ident_read_control(id, ctl_pipe[0], 3000), 1);
    pthread_join(th, NULL);
    CHECK_INT(px_ident_anchor(id), 4242);
    CHECK_INT(ctl_lines, 1);
    CHECK_STR(ctl_last, "{\"type\":\"credentials\",\"doc\":{\"revision\":1}}");
    /* A line split across writes, then end of file. */
    (void)!write(ctl_pipe[1], "{\"type\":", 9);
    CHECK_INT(px_ident_read_control(id, ctl_pipe[0], 0), 1);
    CHECK_INT(ctl_lines, 1);
    (void)!write(ctl_pipe[1], "\"x\"}\n", 6);
    CHECK_INT(px_ident_read_control(id, ctl_pipe[0], 0), 1);
    CHECK_INT(ctl_lines, 2);
    close(ctl_pipe[1]);
    CHECK_INT(px_ident_read_control(id, ctl_pipe[0], 0), -EPIPE);
    close(ctl_pipe[0]);
    px_ident_free(id);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_no_ca), TAP_TEST(test_inference_before_policy), TAP_TEST(test_control_order))
