/* Unit tests for src/h2.c: client and server in one event loop over a
 * socketpair: routing, errors, body limits, ndjson streams with a slow
 * reader, bidirectional frames, concurrency limits, graceful shutdown. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/bufferevent.h>
#include <event2/event.h>

#include "ca.h"
#include "h2.h"
#include "loop.h"
#include "tls.h"
#include "tap.h"
#include "xfuncs.h"

struct fixture {
    struct loop *loop;
    struct event_base *base;
    struct h2_router *router;
    struct h2_server *srv;
    struct h2_conn *cli;
    struct h2_conn *sconn;
    int sv[2];
};

/* Server-side test state. */
static struct h2_stream *held[8];
static int nheld, max_held, closes;
static int stream_lines;

static void
h_echo(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct buf b = BUF_INIT, q = BUF_INIT;

    (void)arg;
    buf_puts(&b, "{\"name\":");
    buf_put_json_str(&b, req->params[0], strlen(req->params[0]));
    if (h2_req_query(req, "x", &q) == 1) {
        buf_puts(&b, ",\"x\":");
        buf_put_json_str(&b, q.data ? q.data : "", q.len);
    }
    buf_printf(&b, ",\"body\":%zu,\"method\":\"%s\"}", req->body.len, req->method);
    h2_stream_respond(st, 200, "application/json", &(struct h2_header){ "etag", "\"7\"" }, 1,
                      b.data, b.len);
    buf_fini(&b);
    buf_fini(&q);
}

static void
held_close(struct h2_stream *st, uint32_t code, void *arg)
{
    (void)code;
    (void)arg;
    for (int i = 0; i < nheld; i++)
        if (held[i] == st) {
            held[i] = held[--nheld];
            break;
        }
    closes++;
}

static void
h_hold(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const struct h2_stream_cbs cbs = { .on_close = held_close };

    (void)req;
    (void)arg;
    h2_stream_set_cbs(st, &cbs, NULL);
    held[nheld++] = st;
    if (nheld > max_held)
        max_held = nheld;
}

/* ndjson: write lines until -EAGAIN, continue on drain. */
struct lines {
    int next, total;
};

static void
lines_pump(struct h2_stream *st, void *arg)
{
    struct lines *l = arg;

    while (l->next < l->total) {
        char line[128];
        int n = snprintf(line, sizeof(line), "{\"type\":\"n\",\"i\":%d,\"pad\":\"%064d\"}\n",
                         l->next, 0);
        int rc;

        l->next++;
        rc = h2_stream_write(st, line, (size_t)n);
        if (rc == -EAGAIN)
            return;
        if (rc < 0)
            return;
    }
    h2_stream_end(st);
}

static void
lines_close(struct h2_stream *st, uint32_t code, void *arg)
{
    (void)st;
    (void)code;
    free(arg);
}

static void
h_lines(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const struct h2_stream_cbs cbs = { .on_drain = lines_pump, .on_close = lines_close };
    struct lines *l = xcalloc(1, sizeof(*l));

    (void)req;
    (void)arg;
    l->total = stream_lines;
    h2_stream_set_cbs(st, &cbs, l);
    h2_stream_start(st, 200, "application/x-ndjson", NULL, 0);
    lines_pump(st, l);
}

/* Frames echo: STDIN -> STDOUT, EOF -> EXIT {"exit_code":0}. */
struct fecho {
    struct buf in;
};

static void
fecho_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct fecho *fe = arg;
    struct h2_frame f;
    size_t used;
    int rc;

    buf_append(&fe->in, p, n);
    while ((rc = h2_frame_parse((const uint8_t *)fe->in.data, fe->in.len, &f, &used, NULL)) == 1) {
        struct buf o = BUF_INIT;

        if (f.type == H2_FRAME_STDIN) {
            h2_frame_put(&o, H2_FRAME_STDOUT, f.payload, f.len);
        } else if (f.type == H2_FRAME_EOF) {
            h2_frame_put(&o, H2_FRAME_EXIT, "{\"exit_code\":0}", 15);
        }
        if (o.len)
            h2_stream_write(st, o.data, o.len);
        if (f.type == H2_FRAME_EOF)
            h2_stream_end(st);
        buf_fini(&o);
        buf_consume(&fe->in, used);
    }
    if (rc < 0)
        h2_stream_reset(st, 1);
}

static void
fecho_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct fecho *fe = arg;

    (void)st;
    (void)code;
    buf_fini(&fe->in);
    free(fe);
}

static void
h_frames(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const struct h2_stream_cbs cbs = { .on_data = fecho_data, .on_close = fecho_close };

    (void)req;
    (void)arg;
    h2_stream_set_cbs(st, &cbs, xcalloc(1, sizeof(struct fecho)));
    h2_stream_start(st, 200, "application/x-openshell-frames", NULL, 0);
}

static void
fx_conn_closed(struct h2_conn *c, void *arg)
{
    (void)c;
    *(struct h2_conn **)arg = NULL;
}

static int
fx_init(struct fixture *fx, const struct h2_limits *lim)
{
    struct bufferevent *a, *b;
    struct h2_peer peer;

    memset(fx, 0, sizeof(*fx));
    nheld = max_held = closes = 0;
    fx->loop = loop_new();
    fx->base = loop_base(fx->loop);
    fx->router = h2_router_new();
    h2_router_add(fx->router, "GET", "/v1/echo/{}", 0, h_echo, NULL);
    h2_router_add(fx->router, "POST", "/v1/echo/{}", 0, h_echo, NULL);
    h2_router_add(fx->router, "GET", "/v1/hold", 0, h_hold, NULL);
    h2_router_add(fx->router, "GET", "/v1/lines", 0, h_lines, NULL);
    h2_router_add(fx->router, "POST", "/v1/frames", H2_ROUTE_STREAMING, h_frames, NULL);
    fx->srv = h2_server_new(fx->base, fx->router, lim);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fx->sv) < 0)
        return -1;
    if (h2_peer_from_unix_fd(fx->sv[0], &peer) < 0)
        return -1;
    a = bufferevent_socket_new(fx->base, fx->sv[0], BEV_OPT_CLOSE_ON_FREE);
    b = bufferevent_socket_new(fx->base, fx->sv[1], BEV_OPT_CLOSE_ON_FREE);
    fx->sconn = h2_server_adopt(fx->srv, a, &peer, NULL);
    fx->cli = h2_client_new(fx->base, b, false, lim, NULL);
    if (!fx->sconn || !fx->cli)
        return -1;
    h2_conn_set_close_cb(fx->cli, fx_conn_closed, &fx->cli);
    return 0;
}

static void
fx_fini(struct fixture *fx)
{
    h2_conn_free(fx->cli);
    h2_server_free(fx->srv);
    h2_router_free(fx->router);
    loop_free(fx->loop);
}

/* Run the loop until *FLAG or 5 s. */
static bool
run_until(struct fixture *fx, const bool *flag)
{
    struct timespec t0, t;

    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!*flag) {
        struct timeval tv = { 0, 20000 };

        event_base_loopexit(fx->base, &tv);
        event_base_loop(fx->base, EVLOOP_ONCE);
        clock_gettime(CLOCK_MONOTONIC, &t);
        if (t.tv_sec - t0.tv_sec > 5)
            return false;
    }
    return true;
}

static void
spin(struct fixture *fx, int ms)
{
    struct timespec t0, t;
    long left;

    /* Loop until MS have passed (earlier loopexit timers may stop a single
     * dispatch early). */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        struct timeval tv;

        clock_gettime(CLOCK_MONOTONIC, &t);
        left = ms - ((t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000);
        if (left <= 0)
            return;
        tv.tv_sec = left / 1000;
        tv.tv_usec = (left % 1000) * 1000;
        event_base_loopexit(fx->base, &tv);
        event_base_loop(fx->base, EVLOOP_ONCE);
    }
}

static int
test_unary_routes(void)
{
    struct fixture fx;
    struct buf resp = BUF_INIT;
    struct err e;
    int status;

    CHECK_INT(fx_init(&fx, NULL), 0);
    CHECK_INT(h2_client_call(fx.cli, "GET", "/v1/echo/a%20b?y=1&x=hello%2Cworld", NULL, 0, NULL, 0,
                             &status, &resp, 65536, &e),
              0);
    CHECK_INT(status, 200);
    CHECK_STR(buf_cstr(&resp), "{\"name\":\"a b\",\"x\":\"hello,world\",\"body\":0,"
                               "\"method\":\"GET\"}");
    buf_reset(&resp);
    CHECK_INT(h2_client_call(fx.cli, "POST", "/v1/echo/z", NULL, 0, "12345", 5, &status, &resp,
                             65536, &e),
              0);
    CHECK_INT(status, 200);
    CHECK_CONTAINS(buf_cstr(&resp), "\"body\":5");
    buf_reset(&resp);
    /* Unknown path, wrong method, bad escape, trailing slash. */
    CHECK_INT(
        h2_client_call(fx.cli, "GET", "/v1/nope", NULL, 0, NULL, 0, &status, &resp, 65536, &e), 0);
    CHECK_INT(status, 404);
    CHECK_CONTAINS(buf_cstr(&resp), "{\"error\":{\"code\":\"not_found\"");
    buf_reset(&resp);
    CHECK_INT(
        h2_client_call(fx.cli, "DELETE", "/v1/echo/a", NULL, 0, NULL, 0, &status, &resp, 65536, &e),
        0);
    CHECK_INT(status, 405);
    CHECK_CONTAINS(buf_cstr(&resp), "allowed: GET, POST");
    buf_reset(&resp);
    CHECK_INT(
        h2_client_call(fx.cli, "GET", "/v1/echo/%zz", NULL, 0, NULL, 0, &status, &resp, 65536, &e),
        0);
    CHECK_INT(status, 400);
    buf_reset(&resp);
    CHECK_INT(
        h2_client_call(fx.cli, "GET", "/v1/echo/", NULL, 0, NULL, 0, &status, &resp, 65536, &e), 0);
    CHECK_INT(status, 404);
    buf_fini(&resp);
    fx_fini(&fx);
    return TAP_PASS;
}

static int
test_body_limit(void)
{
    struct fixture fx;
    struct h2_limits lim = { .max_body = 1024 };
    struct buf resp = BUF_INIT;
    struct err e;
    char *big = xcalloc(1, 100000);
    int status;

    memset(big, 'x', 100000);
    CHECK_INT(fx_init(&fx, &lim), 0);
    CHECK_INT(
        h2_client_call(fx.cli, "POST", "/v1/echo/a", NULL, 0, big, 1024, &status, &resp, 65536, &e),
        0);
    CHECK_INT(status, 200);
    buf_reset(&resp);
    /* Over the limit: 413 (the rest of the upload is read and dropped). */
    h2_client_call(fx.cli, "POST", "/v1/echo/a", NULL, 0, big, 100000, &status, &resp, 65536, &e);
    CHECK_INT(status, 413);
    CHECK_CONTAINS(buf_cstr(&resp), "payload_too_large");
    buf_reset(&resp);
    /* Declared too big by content-length: refused before any body. */
    h2_client_call(fx.cli, "POST", "/v1/echo/a", &(struct h2_header){ "content-length", "2000" }, 1,
                   big, 2000, &status, &resp, 65536, &e);
    CHECK_INT(status, 413);
    buf_reset(&resp);
    /* The connection survives. */
    CHECK_INT(
        h2_client_call(fx.cli, "GET", "/v1/echo/ok", NULL, 0, NULL, 0, &status, &resp, 65536, &e),
        0);
    CHECK_INT(status, 200);
    free(big);
    buf_fini(&resp);
    fx_fini(&fx);
    return TAP_PASS;
}

/* Client side of the ndjson stream: optionally a slow reader. */
struct reader {
    struct buf data;
    bool done, paused;
    int status;
    uint32_t code;
    struct h2_stream *st;
};

static void
rd_response(struct h2_stream *st, int status, void *arg)
{
    struct reader *r = arg;

    r->status = status;
    (void)st;
}

static void
rd_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct reader *r = arg;

    buf_append(&r->data, p, n);
    if (r->paused)
        h2_stream_pause_input(st, true);
}

static void
rd_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct reader *r = arg;

    (void)st;
    r->done = true;
    r->code = code;
    r->st = NULL;
}

static const struct h2_stream_cbs rd_cbs = { .on_response = rd_response,
                                             .on_data = rd_data,
                                             .on_close = rd_close };

static int
count_lines(const struct buf *b, int *last)
{
    int n = 0;

    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] == '\n')
            n++;
    if (n) {
        const char *p = b->data + b->len - 1;
        while (p > b->data && p[-1] != '\n')
            p--;
        sscanf(p, "{\"type\":\"n\",\"i\":%d", last);
    }
    return n;
}

static int
test_ndjson_slow_reader(void)
{
    struct fixture fx;
    struct h2_limits lim = { .stream_out_high = 8192, .stream_window = 16384 };
    struct reader r = { .paused = true };
    int last = -1;

    stream_lines = 20000; /* ~2 MB */
    CHECK_INT(fx_init(&fx, &lim), 0);
    r.st =
        h2_client_request(fx.cli, "GET", "/v1/lines", NULL, 0, NULL, 0, false, &rd_cbs, &r, NULL);
    CHECK(r.st != NULL);
    spin(&fx, 200);
    /* The reader paused after its first chunk: the server is held back by
     * flow control and its own buffer bound, not buffering 2 MB. */
    CHECK(!r.done);
    CHECK(r.data.len <= 16384 + 16384);
    CHECK(fx.sconn != NULL);
    r.paused = false;
    h2_stream_pause_input(r.st, false);
    CHECK(run_until(&fx, &r.done));
    CHECK_INT(r.status, 200);
    CHECK_INT(r.code, 0);
    CHECK_INT(count_lines(&r.data, &last), stream_lines);
    CHECK_INT(last, stream_lines - 1);
    buf_fini(&r.data);
    fx_fini(&fx);
    return TAP_PASS;
}

/* Many streams draining at once: every one of them finishes. */
static int
test_many_draining_streams(void)
{
    struct fixture fx;
    struct h2_limits lim = { .stream_out_high = 4096, .stream_window = 8192 };
    struct reader r[20];
    int last;

    memset(r, 0, sizeof(r));
    stream_lines = 3000;
    CHECK_INT(fx_init(&fx, &lim), 0);
    for (int i = 0; i < 20; i++)
        CHECK(h2_client_request(fx.cli, "GET", "/v1/lines", NULL, 0, NULL, 0, false, &rd_cbs, &r[i],
                                NULL) != NULL);
    for (int i = 0; i < 20; i++) {
        CHECK(run_until(&fx, &r[i].done));
        CHECK_INT(r[i].code, 0);
        CHECK_INT(count_lines(&r[i].data, &last), stream_lines);
        CHECK_INT(last, stream_lines - 1);
        buf_fini(&r[i].data);
    }
    fx_fini(&fx);
    return TAP_PASS;
}

static int
test_bidi_frames(void)
{
    struct fixture fx;
    struct reader r = { 0 };
    struct buf out = BUF_INIT;
    struct h2_frame f;
    size_t used, off = 0;
    int nout = 0;
    bool exited = false;

    CHECK_INT(fx_init(&fx, NULL), 0);
    r.st =
        h2_client_request(fx.cli, "POST", "/v1/frames",
                          &(struct h2_header){ "content-type", "application/x-openshell-frames" },
                          1, NULL, 0, true, &rd_cbs, &r, NULL);
    CHECK(r.st != NULL);
    for (int i = 0; i < 100; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof(msg), "line %d\n", i);

        buf_reset(&out);
        CHECK_INT(h2_frame_put(&out, H2_FRAME_STDIN, msg, (size_t)n), 0);
        /* Split frames across writes to exercise reassembly. */
        CHECK(h2_stream_write(r.st, out.data, 3) >= -EAGAIN);
        CHECK(h2_stream_write(r.st, out.data + 3, out.len - 3) >= -EAGAIN);
        if (i % 10 == 0)
            spin(&fx, 1);
    }
    buf_reset(&out);
    h2_frame_put(&out, H2_FRAME_EOF, "\x02", 1);
    h2_stream_write(r.st, out.data, out.len);
    h2_stream_end(r.st);
    CHECK(run_until(&fx, &r.done));
    CHECK_INT(r.status, 200);
    while (h2_frame_parse((const uint8_t *)r.data.data + off, r.data.len - off, &f, &used, NULL) ==
           1) {
        if (f.type == H2_FRAME_STDOUT) {
            char want[32];
            snprintf(want, sizeof(want), "line %d\n", nout);
            CHECK_INT(f.len, strlen(want));
            CHECK(memcmp(f.payload, want, f.len) == 0);
            nout++;
        } else if (f.type == H2_FRAME_EXIT) {
            CHECK(memcmp(f.payload, "{\"exit_code\":0}", 15) == 0);
            exited = true;
        }
        off += used;
    }
    CHECK_INT(off, r.data.len);
    CHECK_INT(nout, 100);
    CHECK(exited);
    buf_fini(&out);
    buf_fini(&r.data);
    fx_fini(&fx);
    return TAP_PASS;
}

static int
test_max_streams_and_shutdown(void)
{
    struct fixture fx;
    struct h2_limits lim = { .max_streams = 2 };
    struct reader r[3] = { 0 };
    struct reader late = { 0 };
    struct err e;

    CHECK_INT(fx_init(&fx, &lim), 0);
    spin(&fx, 20); /* settings exchanged */
    for (int i = 0; i < 3; i++)
        CHECK(h2_client_request(fx.cli, "GET", "/v1/hold", NULL, 0, NULL, 0, false, &rd_cbs, &r[i],
                                NULL) != NULL);
    spin(&fx, 100);
    /* Never more than two at once: the third waits. */
    CHECK_INT(nheld, 2);
    h2_stream_respond(held[0], 200, NULL, NULL, 0, "a", 1);
    spin(&fx, 100);
    CHECK_INT(max_held, 2);
    CHECK_INT(nheld, 2);
    /* Graceful shutdown: GOAWAY, in-flight streams still complete. */
    h2_server_shutdown(fx.srv);
    spin(&fx, 50);
    CHECK_INT(h2_server_conn_count(fx.srv), 1);
    CHECK(fx.cli != NULL);
    /* A request after GOAWAY is never processed (queued behind the two held
     * streams, then refused). */
    if (!h2_client_request(fx.cli, "GET", "/v1/echo/x", NULL, 0, NULL, 0, false, &rd_cbs, &late,
                           &e))
        late.done = true;
    for (int i = 0; i < nheld; i++)
        h2_stream_respond(held[i], 200, NULL, NULL, 0, "b", 1);
    CHECK(run_until(&fx, &late.done));
    CHECK_INT(late.status, 0);
    for (int i = 0; i < 3; i++) {
        CHECK(run_until(&fx, &r[i].done));
        CHECK_INT(r[i].status, 200);
    }
    spin(&fx, 50);
    CHECK_INT(h2_server_conn_count(fx.srv), 0);
    CHECK(fx.cli == NULL);
    for (int i = 0; i < 3; i++)
        buf_fini(&r[i].data);
    fx_fini(&fx);
    return TAP_PASS;
}

static int
test_peer_gone(void)
{
    struct fixture fx;
    struct reader r = { 0 };

    CHECK_INT(fx_init(&fx, NULL), 0);
    r.st = h2_client_request(fx.cli, "GET", "/v1/hold", NULL, 0, NULL, 0, false, &rd_cbs, &r, NULL);
    spin(&fx, 50);
    CHECK_INT(nheld, 1);
    /* The server side goes away: the client's stream closes, no hang. */
    h2_conn_free(fx.sconn);
    CHECK_INT(nheld, 0);
    CHECK(run_until(&fx, &r.done));
    CHECK(r.code != 0);
    CHECK(fx.cli == NULL);
    /* Garbage instead of a preface: the server drops the connection. */
    {
        int sv[2];
        struct bufferevent *a;

        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        a = bufferevent_socket_new(fx.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
        CHECK(h2_server_adopt(fx.srv, a, NULL, NULL) != NULL);
        CHECK_INT(write(sv[1], "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27), 27);
        spin(&fx, 50);
        CHECK_INT(h2_server_conn_count(fx.srv), 0);
        close(sv[1]);
    }
    fx_fini(&fx);
    return TAP_PASS;
}

/* The transport seam: the same h2 code over tls.h's filter bufferevents,
 * TLS 1.3 with ALPN h2, server and client in one loop. */
static int
test_over_tls(void)
{
    static const char *const alpn[] = { "h2", NULL };
    struct fixture fx;
    struct err e;
    struct ca *ca;
    struct ca_leaf *leaf;
    struct tls_client_ctx *cctx;
    struct tls_conn *stc = NULL, *ctc = NULL;
    struct bufferevent *a, *b, *ta, *tb;
    struct buf pem = BUF_INIT, resp = BUF_INIT;
    char cafile[] = "/tmp/test_h2_ca.XXXXXX";
    int sv[2], fd, status;

    CHECK_INT(fx_init(&fx, NULL), 0);
    CHECK((ca = ca_new(&e)) != NULL);
    CHECK((leaf = ca_leaf_get(ca, "localhost", &e)) != NULL);
    ca_cert_pem(ca, &pem);
    CHECK((fd = mkstemp(cafile)) >= 0);
    CHECK_INT(write_full(fd, pem.data, pem.len), 0);
    close(fd);
    cctx = tls_client_ctx_new(cafile, alpn, TLS_VERSION_1_3, &e);
    unlink(cafile);
    CHECK(cctx != NULL);
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    a = bufferevent_socket_new(fx.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    b = bufferevent_socket_new(fx.base, sv[1], BEV_OPT_CLOSE_ON_FREE);
    {
        struct tls_server_opts so = { .chain = ca_leaf_chain(leaf),
                                      .key = ca_leaf_key(leaf),
                                      .alpn = alpn,
                                      .version = TLS_VERSION_1_3 };
        CHECK((ta = tls_wrap_server(a, &so, &stc, &e)) != NULL);
    }
    CHECK((tb = tls_wrap_client(b, cctx, "localhost", &ctc, &e)) != NULL);
    CHECK(h2_server_adopt(fx.srv, ta, NULL, &e) != NULL);
    {
        struct h2_conn *tcli = h2_client_new(fx.base, tb, true, NULL, &e);

        CHECK(tcli != NULL);
        CHECK_INT(h2_client_call(tcli, "GET", "/v1/echo/tls", NULL, 0, NULL, 0, &status, &resp,
                                 65536, &e),
                  0);
        CHECK_INT(status, 200);
        CHECK_CONTAINS(buf_cstr(&resp), "\"name\":\"tls\"");
        CHECK_STR(tls_conn_alpn(ctc), "h2");
        CHECK_STR(tls_conn_version(ctc), "TLSv1.3");
        h2_conn_free(tcli);
    }
    buf_fini(&pem);
    buf_fini(&resp);
    fx_fini(&fx);
    tls_client_ctx_free(cctx);
    ca_leaf_put(leaf);
    ca_free(ca);
    return TAP_PASS;
}

/* An idle connection is closed (GOAWAY then close); a busy one is not. */
static int
test_idle_timeout(void)
{
    struct fixture fx;
    struct h2_limits lim = { .idle_timeout_ms = 150 };
    struct reader r = { 0 };

    CHECK_INT(fx_init(&fx, &lim), 0);
    r.st = h2_client_request(fx.cli, "GET", "/v1/hold", NULL, 0, NULL, 0, false, &rd_cbs, &r, NULL);
    spin(&fx, 400);
    /* A stream is open: not idle. */
    CHECK_INT(h2_server_conn_count(fx.srv), 1);
    CHECK(fx.cli != NULL);
    h2_stream_respond(held[0], 200, NULL, NULL, 0, "x", 1);
    CHECK(run_until(&fx, &r.done));
    spin(&fx, 400);
    CHECK_INT(h2_server_conn_count(fx.srv), 0);
    CHECK(fx.cli == NULL);
    /* A peer that connects and says nothing is closed too. */
    {
        int sv[2];
        struct bufferevent *a;

        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
        a = bufferevent_socket_new(fx.base, sv[0], BEV_OPT_CLOSE_ON_FREE);
        CHECK(h2_server_adopt(fx.srv, a, NULL, NULL) != NULL);
        spin(&fx, 100);
        CHECK_INT(h2_server_conn_count(fx.srv), 1);
        spin(&fx, 1400); /* idle, GOAWAY unread, then the hard close */
        CHECK_INT(h2_server_conn_count(fx.srv), 0);
        close(sv[1]);
    }
    buf_fini(&r.data);
    fx_fini(&fx);
    return TAP_PASS;
}

static int handler_calls;

static bool
deny_uploads(struct h2_stream *st, void *arg)
{
    (void)arg;
    if (h2_stream_header(st, "x-user"))
        return true;
    h2_stream_error(st, 401, "unauthenticated", "who are you");
    return false;
}

static void
h_count(struct h2_stream *st, struct h2_req *req, void *arg)
{
    (void)req;
    (void)arg;
    handler_calls++;
    h2_stream_respond(st, 200, NULL, NULL, 0, "ok", 2);
}

/* The authorization hook runs on the headers: a refused caller's body is
 * never buffered and its handler never runs; public routes skip it. */
static int
test_auth_hook(void)
{
    struct fixture fx;
    struct h2_limits lim = { .max_body = 64 * 1024 * 1024 };
    struct buf resp = BUF_INIT;
    struct err e;
    size_t big = 8 * 1024 * 1024;
    char *body = xcalloc(1, big);
    int status;

    CHECK_INT(fx_init(&fx, &lim), 0);
    h2_router_add(fx.router, "POST", "/v1/upload", 0, h_count, NULL);
    h2_router_add(fx.router, "GET", "/v1/public", H2_ROUTE_PUBLIC, h_count, NULL);
    h2_server_set_auth(fx.srv, deny_uploads, NULL);
    handler_calls = 0;
    h2_client_call(fx.cli, "POST", "/v1/upload", NULL, 0, body, big, &status, &resp, 65536, &e);
    CHECK_INT(status, 401);
    CHECK_INT(handler_calls, 0);
    buf_reset(&resp);
    CHECK_INT(h2_client_call(fx.cli, "POST", "/v1/upload", &(struct h2_header){ "x-user", "me" }, 1,
                             "x", 1, &status, &resp, 65536, &e),
              0);
    CHECK_INT(status, 200);
    CHECK_INT(handler_calls, 1);
    buf_reset(&resp);
    CHECK_INT(
        h2_client_call(fx.cli, "GET", "/v1/public", NULL, 0, NULL, 0, &status, &resp, 65536, &e),
        0);
    CHECK_INT(status, 200);
    CHECK_INT(handler_calls, 2);
    free(body);
    buf_fini(&resp);
    fx_fini(&fx);
    return TAP_PASS;
}

static int
test_frames_codec(void)
{
    struct buf b = BUF_INIT;
    struct h2_frame f;
    struct err e;
    size_t used;

    CHECK_INT(h2_frame_put(&b, H2_FRAME_RESIZE, "{\"cols\":80,\"rows\":24}", 21), 0);
    CHECK_INT(b.len, 26);
    CHECK_INT((unsigned char)b.data[0], 0x05);
    CHECK_INT((unsigned char)b.data[4], 21);
    for (size_t n = 0; n < b.len; n++)
        CHECK_INT(h2_frame_parse((const uint8_t *)b.data, n, &f, &used, &e), 0);
    CHECK_INT(h2_frame_parse((const uint8_t *)b.data, b.len, &f, &used, &e), 1);
    CHECK_INT(used, 26);
    CHECK_INT(f.len, 21);
    CHECK_INT(h2_frame_put(&b, 0x42, "", 0), -EINVAL);
    CHECK_INT(h2_frame_put(&b, H2_FRAME_STDOUT, "", H2_FRAME_MAX + 1), -EMSGSIZE);
    CHECK_INT(h2_frame_parse((const uint8_t *)"\x42", 1, &f, &used, &e), -EBADMSG);
    CHECK_CONTAINS(e.msg, "0x42");
    CHECK_INT(h2_frame_parse((const uint8_t *)"\x03\x7f\x00\x00\x00", 5, &f, &used, &e), -EBADMSG);
    CHECK_INT(h2_frame_parse((const uint8_t *)"\x07\x00\x00\x00\x00", 5, &f, &used, &e), 1);
    CHECK_INT(f.len, 0);
    buf_fini(&b);
    return TAP_PASS;
}

static int
test_query_decode(void)
{
    struct h2_req r = { .query = "a=1&label_selector=env%3Dprod%2Cteam%3Da&flag&bad=%G1" };
    struct buf v = BUF_INIT;

    CHECK_INT(h2_req_query(&r, "label_selector", &v), 1);
    CHECK_STR(buf_cstr(&v), "env=prod,team=a");
    CHECK_INT(h2_req_query(&r, "flag", &v), 1);
    CHECK_STR(buf_cstr(&v), "");
    CHECK_INT(h2_req_query(&r, "nope", &v), 0);
    CHECK_INT(h2_req_query(&r, "bad", &v), -EINVAL);
    buf_reset(&v);
    CHECK_INT(h2_pct_decode("a%00b", 5, &v), -EINVAL);
    CHECK_INT(h2_pct_decode("a%4", 3, &v), -EINVAL);
    buf_fini(&v);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_unary_routes), TAP_TEST(test_body_limit), TAP_TEST(test_ndjson_slow_reader),
         TAP_TEST(test_many_draining_streams), TAP_TEST(test_bidi_frames),
         TAP_TEST(test_max_streams_and_shutdown), TAP_TEST(test_peer_gone), TAP_TEST(test_over_tls),
         TAP_TEST(test_idle_timeout), TAP_TEST(test_auth_hook), TAP_TEST(test_frames_codec),
         TAP_TEST(test_query_decode))
