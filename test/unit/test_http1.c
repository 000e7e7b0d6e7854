/*
 * test_http1: strict HTTP/1.1 framing: the three request forms, keep-alive
 * rules, pipelined bodies ending exactly where they should, chunked
 * re-framing, responses, and every smuggling shape the proxy must refuse
 * before anything goes upstream.
 */
#include <errno.h>
#include <string.h>

#include "http1.h"
#include "tap.h"

/* Parse a complete head given as a C string; returns the parse status. */
static int
parse(const char *s, struct http1_request *r, const char **why)
{
    long n = http1_head_scan(s, strlen(s), HTTP1_HEAD_MAX, why);

    if (n <= 0)
        return n == 0 ? -EAGAIN : (int)n;
    return http1_parse_request(s, (size_t)n, r, why);
}

static int
rejects(const char *s, const char *want_why)
{
    struct http1_request r;
    const char *why = "";
    int rc = parse(s, &r, &why);

    if (rc == 0) {
        http1_request_fini(&r);
        tap_diag("accepted: %s", s);
        return 0;
    }
    if (rc != -EBADMSG) {
        tap_diag("status %d for %s", rc, s);
        return 0;
    }
    if (!strstr(why, want_why)) {
        tap_diag("reason '%s', expected '%s'", why, want_why);
        return 0;
    }
    return 1;
}

static int
test_forms(void)
{
    struct http1_request r;
    const char *why;

    CHECK_INT(parse("CONNECT API.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n", &r,
                    &why),
              0);
    CHECK_INT(r.form, HTTP1_FORM_AUTHORITY);
    CHECK_STR(r.host, "api.example.com");
    CHECK_INT(r.port, 443);
    http1_request_fini(&r);

    CHECK_INT(parse("CONNECT [fd00::1]:8443 HTTP/1.1\r\nHost: [fd00::1]:8443\r\n\r\n", &r, &why),
              0);
    CHECK_STR(r.host, "fd00::1");
    CHECK_INT(r.port, 8443);
    http1_request_fini(&r);

    CHECK_INT(parse("GET http://Example.com:8080/a/b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\n"
                    "User-Agent: t\r\n\r\n",
                    &r, &why),
              0);
    CHECK_INT(r.form, HTTP1_FORM_ABSOLUTE);
    CHECK_STR(r.scheme, "http");
    CHECK_STR(r.host, "example.com");
    CHECK_INT(r.port, 8080);
    CHECK_STR(r.path, "/a/b?x=1");
    CHECK_STR(http1_request_header(&r, "user-agent"), "t");
    CHECK(r.keep_alive);
    http1_request_fini(&r);

    CHECK_INT(parse("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n", &r, &why), 0);
    CHECK_STR(r.path, "/");
    CHECK_INT(r.port, 80);
    http1_request_fini(&r);

    CHECK_INT(parse("POST /v1/x?y HTTP/1.1\r\nHost: api.test\r\nContent-Length: 5\r\n"
                    "Connection: close\r\n\r\n",
                    &r, &why),
              0);
    CHECK_INT(r.form, HTTP1_FORM_ORIGIN);
    CHECK_STR(r.path, "/v1/x?y");
    CHECK_STR(r.host, "api.test");
    CHECK(r.has_length && r.length == 5);
    CHECK(!r.keep_alive);
    http1_request_fini(&r);

    /* HTTP/1.0: no Host needed, close unless keep-alive. */
    CHECK_INT(parse("GET / HTTP/1.0\r\n\r\n", &r, &why), 0);
    CHECK(!r.keep_alive);
    http1_request_fini(&r);
    CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r, &why), 0);
    CHECK(r.keep_alive);
    http1_request_fini(&r);
    return TAP_PASS;
}

static int
test_smuggling(void)
{
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n",
                  "both Content-Length and Transfer-Encoding"));
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
                  "duplicate Content-Length"));
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n",
                  "duplicate Content-Length"));
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4, 4\r\n\r\n",
                  "invalid Content-Length"));
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +4\r\n\r\n",
                  "invalid Content-Length"));
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                  "other than chunked"));
    CHECK(rejects("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                  "Transfer-Encoding: chunked\r\n\r\n",
                  "duplicate Transfer-Encoding"));
    CHECK(rejects("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "HTTP/1.0"));
    CHECK(rejects("GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\n\n", "bare LF"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n", "bare CR"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", "obsolete line folding"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
                  "whitespace before ':'"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\r\nX: a\x01"
                  "b\r\n\r\n",
                  "control byte"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, content-length\r\n\r\n",
                  "nominates"));
    CHECK(rejects("GET / HTTP/1.1\r\n\r\n", "without Host"));
    CHECK(rejects("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "multiple Host"));
    CHECK(rejects("GET http://a/ HTTP/1.1\r\nHost: b\r\n\r\n", "differs"));
    CHECK(rejects("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", "unsupported HTTP version"));
    CHECK(rejects("GET  / HTTP/1.1\r\nHost: a\r\n\r\n", "invalid request line"));
    CHECK(rejects("GET /\x80 HTTP/1.1\r\nHost: a\r\n\r\n", "non-ASCII"));
    CHECK(rejects("GET /#f HTTP/1.1\r\nHost: a\r\n\r\n", "fragment"));
    CHECK(rejects("GET / HTTP/2.0\r\nHost: a\r\n\r\n", "version"));
    CHECK(rejects("G(T / HTTP/1.1\r\nHost: a\r\n\r\n", "method"));
    CHECK(rejects("GET * HTTP/1.1\r\nHost: a\r\n\r\n", "asterisk"));
    CHECK(rejects("GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n", "userinfo"));
    CHECK(rejects("CONNECT a HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT authority"));
    CHECK(rejects("CONNECT a:99999 HTTP/1.1\r\nHost: a\r\n\r\n", "CONNECT authority"));
    CHECK(rejects("\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", "method"));
    return TAP_PASS;
}

static int
test_h2c_flags(void)
{
    struct http1_request r;
    const char *why;
    char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                    "Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
                    &r, &why),
              0);
    CHECK(r.h2c);
    CHECK(r.upgrade);
    http1_request_fini(&r);
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                    "\r\n",
                    &r, &why),
              0);
    CHECK(r.websocket && !r.h2c);
    http1_request_fini(&r);
    /* The HTTP/2 preface is not an HTTP/1 request. */
    CHECK(rejects(preface, "version"));
    return TAP_PASS;
}

static int
test_head_scan(void)
{
    const char *why;
    char big[HTTP1_HEAD_MAX + 10];

    CHECK_INT(http1_head_scan("GET / HTTP/1.1\r\nHost: a\r\n", 25, 8192, &why), 0);
    CHECK_INT(http1_head_scan("GET / HTTP/1.1\r\n\r\nXYZ", 21, 8192, &why), 18);
    memset(big, 'a', sizeof(big));
    memcpy(big, "GET / HTTP/1.1\r\nX: ", 19);
    CHECK_INT(http1_head_scan(big, sizeof(big), HTTP1_HEAD_MAX, &why), -EMSGSIZE);
    CHECK_INT(http1_head_scan(big, 9000, HTTP1_HEAD_MAX_ENTRY, &why), -EMSGSIZE);
    CHECK_INT(http1_head_scan(big, 8000, HTTP1_HEAD_MAX_ENTRY, &why), 0);
    CHECK_INT(http1_head_scan("GET /\0 HTTP/1.1\r\n\r\n", 19, 8192, &why), -EBADMSG);
    return TAP_PASS;
}

/* Two pipelined requests in one buffer: the first body ends exactly where
 * the second request begins. */
static int
test_pipelined_bodies(void)
{
    const char *stream = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b "
                         "HTTP/1.1\r\nHost: a\r\n\r\n";
    size_t n = strlen(stream), off;
    struct http1_request r;
    struct http1_body *b;
    struct buf out = BUF_INIT;
    const char *why;
    bool done;
    long h, used;

    h = http1_head_scan(stream, n, HTTP1_HEAD_MAX, &why);
    CHECK(h > 0);
    CHECK_INT(http1_parse_request(stream, (size_t)h, &r, &why), 0);
    b = http1_body_request(&r);
    off = (size_t)h;
    /* Byte by byte to exercise partial feeds. */
    done = false;
    while (!done) {
        used = http1_body_feed(b, stream + off, 1, &out, &done, &why);
        CHECK(used >= 0);
        off += (size_t)used;
        CHECK(off <= n);
    }
    CHECK_STR(buf_cstr(&out), "hello");
    CHECK(strncmp(stream + off, "GET /b", 6) == 0);
    http1_body_free(b);
    http1_request_fini(&r);
    buf_reset(&out);

    h = http1_head_scan(stream + off, n - off, HTTP1_HEAD_MAX, &why);
    CHECK(h > 0);
    CHECK_INT(http1_parse_request(stream + off, (size_t)h, &r, &why), 0);
    CHECK_STR(r.path, "/b");
    b = http1_body_request(&r);
    CHECK_INT(http1_body_feed(b, "x", 1, &out, &done, &why), 0);
    CHECK(done);
    http1_body_free(b);
    http1_request_fini(&r);
    buf_fini(&out);
    return TAP_PASS;
}

static int
test_chunked_reframe(void)
{
    const char *head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *body = "5;ext=1\r\nhello\r\n3\r\nabc\r\n0\r\nTrailer: x\r\n\r\nNEXT";
    struct http1_request r;
    struct http1_body *b;
    struct buf out = BUF_INIT;
    const char *why;
    bool done;
    long used;

    CHECK_INT(http1_parse_request(head, strlen(head), &r, &why), 0);
    CHECK(r.chunked);
    b = http1_body_request(&r);
    used = http1_body_feed(b, body, strlen(body), &out, &done, &why);
    CHECK(done);
    CHECK_INT(used, strlen(body) - 4);
    CHECK_STR(buf_cstr(&out), "5\r\nhello\r\n3\r\nabc\r\n0\r\n\r\n");
    http1_body_free(b);

    /* Bad chunk size: rejected. */
    buf_reset(&out);
    b = http1_body_request(&r);
    CHECK(http1_body_feed(b, "zz\r\n", 4, &out, &done, &why) == -EBADMSG);
    http1_body_free(b);
    http1_request_fini(&r);
    buf_fini(&out);
    return TAP_PASS;
}

static int
test_responses(void)
{
    struct http1_response r;
    struct http1_body *b;
    struct buf out = BUF_INIT;
    const char *why;
    const char *h1 = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n";
    const char *h2 = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    const char *h3 = "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n";
    const char *h4 = "HTTP/1.1 204 No Content\r\n\r\n";
    const char *h5 = "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    bool done;

    CHECK_INT(http1_parse_response(h1, strlen(h1), false, &r, &why), 0);
    CHECK_INT(r.status, 200);
    CHECK(r.keep_alive && r.has_length);
    b = http1_body_response(&r);
    CHECK_INT(http1_body_feed(b, "abcHTTP", 7, &out, &done, &why), 3);
    CHECK(done);
    CHECK_STR(buf_cstr(&out), "abc");
    http1_body_free(b);
    http1_response_fini(&r);

    buf_reset(&out);
    CHECK_INT(http1_parse_response(h2, strlen(h2), false, &r, &why), 0);
    b = http1_body_response(&r);
    CHECK_INT(http1_body_feed(b, "2\r\nok\r\n0\r\n\r\n", 12, &out, &done, &why), 12);
    CHECK(done);
    CHECK_STR(buf_cstr(&out), "2\r\nok\r\n0\r\n\r\n"); /* relayed as received */
    http1_body_free(b);
    http1_response_fini(&r);

    buf_reset(&out);
    CHECK_INT(http1_parse_response(h3, strlen(h3), false, &r, &why), 0);
    CHECK(r.until_eof && !r.keep_alive);
    b = http1_body_response(&r);
    CHECK_INT(http1_body_feed(b, "data", 4, &out, &done, &why), 4);
    CHECK(!done);
    CHECK_INT(http1_body_eof(b, &why), 0);
    http1_body_free(b);
    http1_response_fini(&r);

    CHECK_INT(http1_parse_response(h4, strlen(h4), false, &r, &why), 0);
    CHECK(r.bodiless);
    http1_response_fini(&r);
    /* HEAD: a Content-Length but no body. */
    CHECK_INT(http1_parse_response(h5, strlen(h5), true, &r, &why), 0);
    CHECK(r.bodiless);
    b = http1_body_response(&r);
    CHECK_INT(http1_body_feed(b, "x", 1, &out, &done, &why), 0);
    CHECK(done);
    http1_body_free(b);
    http1_response_fini(&r);
    /* Truncated body. */
    CHECK_INT(http1_parse_response(h5, strlen(h5), false, &r, &why), 0);
    b = http1_body_response(&r);
    CHECK_INT(http1_body_feed(b, "abc", 3, &out, &done, &why), 3);
    CHECK(http1_body_eof(b, &why) == -EBADMSG);
    http1_body_free(b);
    http1_response_fini(&r);

    CHECK(http1_parse_response("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: "
                               "chunked\r\n\r\n",
                               76, false, &r, &why) == -EBADMSG);
    CHECK(http1_parse_response("HTTP/2 200\r\n\r\n", 14, false, &r, &why) == -EBADMSG);
    buf_fini(&out);
    return TAP_PASS;
}

static int
test_hop_headers(void)
{
    struct http1_request r;
    const char *why;

    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\nX-Secret: 1\r\n"
                    "Proxy-Connection: keep-alive\r\n\r\n",
                    &r, &why),
              0);
    CHECK(http1_request_hop_header(&r, "x-secret"));
    CHECK(http1_request_hop_header(&r, "Proxy-Connection"));
    CHECK(!http1_request_hop_header(&r, "Host"));
    http1_request_fini(&r);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_forms), TAP_TEST(test_smuggling), TAP_TEST(test_h2c_flags),
         TAP_TEST(test_head_scan), TAP_TEST(test_pipelined_bodies), TAP_TEST(test_chunked_reframe),
         TAP_TEST(test_responses), TAP_TEST(test_hop_headers))
