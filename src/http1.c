/*
 * http1.c: strict HTTP/1.1 heads and body framing (see include/http1.h).
 *
 * Our validator decides (RFC 9110/9112 grammar, minus every leniency that
 * has enabled request smuggling); http_parser, built with
 * HTTP_PARSER_STRICT, must agree on the same bytes, and tracks bodies.
 */
#include "http1.h"

#include <errno.h>
#include <http_parser.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "xfuncs.h"

long
http1_head_scan(const char *p, size_t n, size_t max, const char **why)
{
    size_t lim = n < max ? n : max;

    for (size_t i = 0; i < lim; i++) {
        char c = p[i];

        if (c == '\0') {
            *why = "NUL byte in message head";
            return -EBADMSG;
        }
        if (c == '\n' && (i == 0 || p[i - 1] != '\r')) {
            *why = "bare LF in message head";
            return -EBADMSG;
        }
        if (c == '\r' && i + 1 < n && p[i + 1] != '\n') {
            *why = "bare CR in message head";
            return -EBADMSG;
        }
        if (c == '\n' && i >= 3 && p[i - 2] == '\n' && p[i - 3] == '\r')
            return (long)(i + 1);
    }
    if (n >= max)
        return -EMSGSIZE;
    return 0;
}

/* RFC 9110 tchar. */
static bool
http1_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool
http1_token(const char *s, size_t n)
{
    if (n == 0)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!http1_tchar((unsigned char)s[i]))
            return false;
    return true;
}

/* Split at the next CRLF: returns the line (NUL-terminated in place) and
 * advances *P past the CRLF. */
static char *
http1_next_line(char **p)
{
    char *line = *p, *end = strstr(line, "\r\n");

    if (!end)
        return NULL;
    *end = '\0';
    *p = end + 2;
    return line;
}

/* Parse one header line into H; NULL on success or the reason. */
static const char *
http1_header_line(char *line, struct http1_header *h)
{
    char *colon, *v, *end;

    if (line[0] == ' ' || line[0] == '\t')
        return "obsolete line folding";
    colon = strchr(line, ':');
    if (!colon)
        return "header line without ':'";
    if (!http1_token(line, (size_t)(colon - line)))
        return "invalid header name (or whitespace before ':')";
    *colon = '\0';
    v = colon + 1;
    while (*v == ' ' || *v == '\t')
        v++;
    end = v + strlen(v);
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    for (const unsigned char *c = (const unsigned char *)v; *c; c++)
        if ((*c < 0x20 && *c != '\t') || *c == 0x7f)
            return "control byte in header value";
    h->name = line;
    h->value = v;
    return NULL;
}

static const char *
http1_find(const struct http1_header *hs, size_t n, const char *name, size_t *count)
{
    const char *first = NULL;

    *count = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(hs[i].name, name) == 0) {
            if (!first)
                first = hs[i].value;
            (*count)++;
        }
    }
    return first;
}

/* Parse a decimal length (at most 15 digits); -1 when not one. */
static int
http1_length(const char *s, uint64_t *out)
{
    size_t n = strlen(s);
    uint64_t v = 0;

    if (n == 0 || n > 15)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Does comma-separated list LIST contain token TOK (case-insensitive)? Sets
 * *BAD when an element is not a token. */
static bool
http1_list_has(const char *list, const char *tok, bool *bad)
{
    const char *p = list;
    bool found = false;

    while (*p) {
        const char *s, *e;

        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (!*p)
            break;
        s = p;
        while (*p && *p != ',')
            p++;
        e = p;
        while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
            e--;
        if (bad && !http1_token(s, (size_t)(e - s)))
            *bad = true;
        if ((size_t)(e - s) == strlen(tok) && strncasecmp(s, tok, (size_t)(e - s)) == 0)
            found = true;
    }
    return found;
}

static bool
http1_hostchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* "host[:port]" or "[v6][:port]" into lowercase HOST (brackets dropped) and
 * PORT (DEFPORT when absent; 0 DEFPORT means the port is required). */
static int
http1_authority(const char *s, size_t n, char host[256], unsigned *port, unsigned defport,
                bool *explicit_port)
{
    const char *h = s, *he, *pp = NULL;
    size_t hl;

    if (n == 0)
        return -1;
    if (s[0] == '[') {
        he = memchr(s, ']', n);
        if (!he)
            return -1;
        h = s + 1;
        hl = (size_t)(he - h);
        for (size_t i = 0; i < hl; i++)
            if (!(h[i] == ':' || h[i] == '.' || (h[i] >= '0' && h[i] <= '9') ||
                  (h[i] >= 'a' && h[i] <= 'f') || (h[i] >= 'A' && h[i] <= 'F')))
                return -1;
        if (he + 1 < s + n) {
            if (he[1] != ':')
                return -1;
            pp = he + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);

        he = colon ? colon : s + n;
        hl = (size_t)(he - h);
        for (size_t i = 0; i < hl; i++)
            if (!http1_hostchar((unsigned char)h[i]))
                return -1;
        if (colon)
            pp = colon + 1;
    }
    if (hl == 0 || hl > 253)
        return -1;
    for (size_t i = 0; i < hl; i++)
        host[i] = (char)(h[i] >= 'A' && h[i] <= 'Z' ? h[i] + 32 : h[i]);
    host[hl] = '\0';
    if (pp) {
        unsigned long v = 0;
        size_t pl = (size_t)(s + n - pp);

        if (pl == 0 || pl > 5)
            return -1;
        for (size_t i = 0; i < pl; i++) {
            if (pp[i] < '0' || pp[i] > '9')
                return -1;
            v = v * 10 + (unsigned long)(pp[i] - '0');
        }
        if (v == 0 || v > 65535)
            return -1;
        *port = (unsigned)v;
        if (explicit_port)
            *explicit_port = true;
    } else {
        if (!defport)
            return -1;
        *port = defport;
    }
    return 0;
}

/* http_parser's opinion of the same head: it must parse without error. */
static int
http1_second_opinion(const char *head, size_t len, enum http_parser_type type)
{
    static const http_parser_settings settings;
    http_parser p;
    size_t n;

    http_parser_init(&p, type);
    n = http_parser_execute(&p, &settings, head, len);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
        return -1;
    return n == len || p.upgrade ? 0 : -1;
}

#define FAIL(reason)                                                                               \
    do {                                                                                           \
        *why = (reason);                                                                           \
        goto fail;                                                                                 \
    } while (0)

int
http1_parse_request(const char *head, size_t len, struct http1_request *r, const char **why)
{
    char *p, *line, *sp1, *sp2;
    const char *v, *conn, *te, *cl;
    size_t count, nte, ncl;
    bool bad = false, conn_close, conn_ka, conn_upgrade;

    memset(r, 0, sizeof(*r));
    r->head = p = xstrndup(head, len);
    if (strlen(p) != len)
        FAIL("NUL byte in message head");
    line = http1_next_line(&p);
    if (!line)
        FAIL("incomplete request line");
    /* METHOD SP request-target SP HTTP/1.x, exactly. */
    sp1 = strchr(line, ' ');
    if (!sp1 || !http1_token(line, (size_t)(sp1 - line)))
        FAIL("invalid request method");
    *sp1 = '\0';
    r->method = line;
    r->target = sp1 + 1;
    sp2 = strchr(sp1 + 1, ' ');
    if (!sp2 || sp2 == sp1 + 1)
        FAIL("invalid request line");
    *sp2 = '\0';
    for (const unsigned char *c = (const unsigned char *)r->target; *c; c++)
        if (*c <= 0x20 || *c >= 0x7f)
            FAIL("control byte, space or non-ASCII byte in request-target");
    if (strchr(r->target, '#'))
        FAIL("fragment in request-target");
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        r->minor = 1;
    else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
        r->minor = 0;
    else
        FAIL("unsupported HTTP version");
    while ((line = http1_next_line(&p)) && *line) {
        const char *bad_line;

        if (r->nheaders == HTTP1_MAX_HEADERS)
            FAIL("too many header fields");
        bad_line = http1_header_line(line, &r->headers[r->nheaders]);
        if (bad_line)
            FAIL(bad_line);
        r->nheaders++;
    }
    if (!line)
        FAIL("incomplete message head");

    /* Host: exactly one in HTTP/1.1, at most one in HTTP/1.0. */
    r->host_header = http1_find(r->headers, r->nheaders, "host", &count);
    if (count > 1)
        FAIL("multiple Host headers");
    if (count == 0 && r->minor == 1)
        FAIL("HTTP/1.1 request without Host");

    /* Framing: the smuggling rules. */
    cl = http1_find(r->headers, r->nheaders, "content-length", &ncl);
    te = http1_find(r->headers, r->nheaders, "transfer-encoding", &nte);
    if (ncl && nte)
        FAIL("both Content-Length and Transfer-Encoding");
    if (ncl > 1)
        FAIL("duplicate Content-Length");
    if (ncl) {
        if (http1_length(cl, &r->length) < 0)
            FAIL("invalid Content-Length");
        r->has_length = true;
    }
    if (nte > 1)
        FAIL("duplicate Transfer-Encoding");
    if (nte) {
        if (r->minor == 0)
            FAIL("Transfer-Encoding in HTTP/1.0");
        if (strcasecmp(te, "chunked") != 0)
            FAIL("Transfer-Encoding other than chunked");
        r->chunked = true;
    }

    conn = http1_find(r->headers, r->nheaders, "connection", &count);
    conn_close = conn_ka = conn_upgrade = false;
    for (size_t i = 0; i < r->nheaders; i++) {
        if (strcasecmp(r->headers[i].name, "connection") != 0)
            continue;
        v = r->headers[i].value;
        if (http1_list_has(v, "host", &bad) || http1_list_has(v, "content-length", &bad) ||
            http1_list_has(v, "transfer-encoding", &bad))
            FAIL("Connection nominates a framing header");
        conn_close |= http1_list_has(v, "close", &bad);
        conn_ka |= http1_list_has(v, "keep-alive", &bad);
        conn_upgrade |= http1_list_has(v, "upgrade", &bad);
        if (bad)
            FAIL("invalid Connection header");
    }
    (void)conn;
    r->keep_alive = r->minor == 1 ? !conn_close : (conn_ka && !conn_close);
    v = http1_find(r->headers, r->nheaders, "upgrade", &count);
    if (v) {
        r->upgrade = conn_upgrade;
        r->h2c = http1_list_has(v, "h2c", NULL);
        r->websocket = conn_upgrade && strcasecmp(v, "websocket") == 0;
    }
    if (http1_find(r->headers, r->nheaders, "http2-settings", &count))
        r->h2c = true;
    v = http1_find(r->headers, r->nheaders, "expect", &count);
    r->expect_continue = v && strcasecmp(v, "100-continue") == 0;

    /* The target's form and the authority it names. */
    r->port = 80;
    if (strcmp(r->method, "CONNECT") == 0) {
        r->form = HTTP1_FORM_AUTHORITY;
        if (http1_authority(r->target, strlen(r->target), r->host, &r->port, 0, &r->port_explicit) <
            0)
            FAIL("invalid CONNECT authority (host:port)");
    } else if (r->target[0] == '/') {
        r->form = HTTP1_FORM_ORIGIN;
        r->path = r->target;
        if (r->host_header && http1_authority(r->host_header, strlen(r->host_header), r->host,
                                              &r->port, 80, &r->port_explicit) < 0)
            FAIL("invalid Host header");
    } else if (strcmp(r->target, "*") == 0) {
        if (strcmp(r->method, "OPTIONS") != 0)
            FAIL("asterisk-form outside OPTIONS");
        r->form = HTTP1_FORM_ASTERISK;
        r->path = "*";
    } else {
        const char *colon = strstr(r->target, "://"), *auth, *slash;
        char hh[256];
        unsigned hp;

        r->form = HTTP1_FORM_ABSOLUTE;
        if (!colon || colon == r->target || (size_t)(colon - r->target) >= sizeof(r->scheme))
            FAIL("invalid request-target");
        for (size_t i = 0; i < (size_t)(colon - r->target); i++) {
            char c = r->target[i];

            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
                FAIL("invalid URI scheme");
            r->scheme[i] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        auth = colon + 3;
        slash = auth + strcspn(auth, "/?");
        if (memchr(auth, '@', (size_t)(slash - auth)))
            FAIL("userinfo in request-target");
        if (http1_authority(auth, (size_t)(slash - auth), r->host, &r->port,
                            strcmp(r->scheme, "https") == 0 ? 443 : 80, &r->port_explicit) < 0)
            FAIL("invalid authority in request-target");
        if (*slash == '?')
            FAIL("request-target query without a path");
        r->path = *slash ? slash : "/";
        /* The Host header must name the same authority (RFC 9112 3.2.2
         * says to ignore it; a proxy that disagrees with its upstream about
         * which one counts is how fronting slips through). */
        if (r->host_header) {
            if (http1_authority(r->host_header, strlen(r->host_header), hh, &hp, r->port, NULL) < 0)
                FAIL("invalid Host header");
            if (strcmp(hh, r->host) != 0 || hp != r->port)
                FAIL("Host header differs from the request-target authority");
        }
    }
    if (http1_second_opinion(head, len, HTTP_REQUEST) < 0)
        FAIL("malformed request (http_parser)");
    return 0;
fail:
    free(r->head);
    r->head = NULL;
    return -EBADMSG;
}

void
http1_request_fini(struct http1_request *r)
{
    free(r->head);
    r->head = NULL;
}

const char *
http1_request_header(const struct http1_request *r, const char *name)
{
    size_t count;

    return http1_find(r->headers, r->nheaders, name, &count);
}

bool
http1_request_hop_header(const struct http1_request *r, const char *name)
{
    static const char *const hop[] = {
        "connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
        "te",         "trailer",    "upgrade",          "transfer-encoding",
    };

    for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
        if (strcasecmp(name, hop[i]) == 0)
            return true;
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, "connection") == 0 &&
            http1_list_has(r->headers[i].value, name, NULL))
            return true;
    return false;
}

int
http1_parse_response(const char *head, size_t len, bool for_head, struct http1_response *r,
                     const char **why)
{
    char *p, *line;
    const char *cl, *te, *conn;
    size_t ncl, nte, count;
    bool conn_close = false;

    memset(r, 0, sizeof(*r));
    r->head = p = xstrndup(head, len);
    if (strlen(p) != len)
        FAIL("NUL byte in response head");
    line = http1_next_line(&p);
    if (!line)
        FAIL("incomplete status line");
    if (strncmp(line, "HTTP/1.1 ", 9) == 0)
        r->minor = 1;
    else if (strncmp(line, "HTTP/1.0 ", 9) == 0)
        r->minor = 0;
    else
        FAIL("invalid status line");
    if (!(line[9] >= '1' && line[9] <= '5' && line[10] >= '0' && line[10] <= '9' &&
          line[11] >= '0' && line[11] <= '9' && (line[12] == ' ' || line[12] == '\0')))
        FAIL("invalid status code");
    r->status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
    r->reason = line[12] ? line + 13 : "";
    while ((line = http1_next_line(&p)) && *line) {
        const char *bad_line;

        if (r->nheaders == HTTP1_MAX_HEADERS)
            FAIL("too many header fields");
        bad_line = http1_header_line(line, &r->headers[r->nheaders]);
        if (bad_line)
            FAIL(bad_line);
        r->nheaders++;
    }
    if (!line)
        FAIL("incomplete response head");
    cl = http1_find(r->headers, r->nheaders, "content-length", &ncl);
    te = http1_find(r->headers, r->nheaders, "transfer-encoding", &nte);
    if (ncl && nte)
        FAIL("both Content-Length and Transfer-Encoding in response");
    if (ncl > 1)
        FAIL("duplicate Content-Length in response");
    if (ncl) {
        if (http1_length(cl, &r->length) < 0)
            FAIL("invalid Content-Length in response");
        r->has_length = true;
    }
    if (nte > 1)
        FAIL("duplicate Transfer-Encoding in response");
    if (nte) {
        if (strcasecmp(te, "chunked") != 0)
            FAIL("Transfer-Encoding other than chunked in response");
        r->chunked = true;
    }
    for (size_t i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, "connection") == 0)
            conn_close |= http1_list_has(r->headers[i].value, "close", NULL);
    conn = http1_find(r->headers, r->nheaders, "connection", &count);
    r->bodiless = for_head || r->status < 200 || r->status == 204 || r->status == 304;
    r->until_eof = !r->bodiless && !r->chunked && !r->has_length;
    r->keep_alive =
        !r->until_eof &&
        (r->minor == 1 ? !conn_close
                       : (conn && http1_list_has(conn, "keep-alive", NULL) && !conn_close));
    if (http1_second_opinion(head, len, HTTP_RESPONSE) < 0 && !for_head)
        FAIL("malformed response (http_parser)");
    return 0;
fail:
    free(r->head);
    r->head = NULL;
    return -EBADMSG;
}

#undef FAIL

void
http1_response_fini(struct http1_response *r)
{
    free(r->head);
    r->head = NULL;
}

const char *
http1_response_header(const struct http1_response *r, const char *name)
{
    size_t count;

    return http1_find(r->headers, r->nheaders, name, &count);
}

/* ------------------------------------------------------------ bodies */

struct http1_body {
    http_parser parser;
    bool reframe; /* request chunked: re-emit decoded data as fresh chunks */
    bool decode;  /* OUT gets the decoded data only */
    bool done;
    unsigned chunks; /* chunk headers seen */
    http1_tap_fn tap;
    void *tap_arg;
    bool tapped;     /* the tap refused the data */
    struct buf *out; /* during a feed */
};

static int
http1_on_body(http_parser *p, const char *at, size_t len)
{
    struct http1_body *b = p->data;

    if (b->tap && b->tap(b->tap_arg, at, len) != 0) {
        b->tapped = true;
        return -1;
    }
    if (b->decode) {
        if (b->out)
            buf_append(b->out, at, len);
    } else if (b->reframe) {
        BUG_ON(!b->out); /* a re-framed body needs somewhere to go */
        buf_printf(b->out, "%zx\r\n", len);
        buf_append(b->out, at, len);
        buf_puts(b->out, "\r\n");
    }
    return 0;
}

static int
http1_on_complete(http_parser *p)
{
    struct http1_body *b = p->data;

    b->done = true;
    if (b->reframe && !b->decode && b->out)
        buf_puts(b->out, "0\r\n\r\n");
    http_parser_pause(p, 1);
    return 0;
}

static int
http1_on_chunk_header(http_parser *p)
{
    struct http1_body *b = p->data;

    b->chunks++;
    return 0;
}

static const http_parser_settings http1_body_settings = {
    .on_body = http1_on_body,
    .on_chunk_header = http1_on_chunk_header,
    .on_message_complete = http1_on_complete,
};

/* Prime a parser with a synthetic head carrying only the framing. */
static struct http1_body *
http1_body_new(enum http_parser_type type, const char *head, bool reframe)
{
    struct http1_body *b = xcalloc(1, sizeof(*b));
    struct buf dummy = BUF_INIT;
    size_t n;

    http_parser_init(&b->parser, type);
    b->parser.data = b;
    b->out = &dummy;
    n = http_parser_execute(&b->parser, &http1_body_settings, head, strlen(head));
    BUG_ON(n != strlen(head) || HTTP_PARSER_ERRNO(&b->parser) != HPE_OK);
    buf_fini(&dummy);
    b->reframe = reframe;
    b->out = NULL;
    return b;
}

struct http1_body *
http1_body_request(const struct http1_request *r)
{
    struct http1_body *b;
    char head[96];

    if (r->chunked)
        return http1_body_new(HTTP_REQUEST, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                              true);
    if (r->has_length && r->length > 0) {
        buf_fmt_fixed(head, sizeof(head), "POST / HTTP/1.1\r\nContent-Length: %llu\r\n\r\n",
                      (unsigned long long)r->length);
        return http1_body_new(HTTP_REQUEST, head, false);
    }
    b = xcalloc(1, sizeof(*b));
    b->done = true;
    return b;
}

struct http1_body *
http1_body_response(const struct http1_response *r)
{
    struct http1_body *b;
    char head[96];

    if (r->bodiless || (r->has_length && r->length == 0)) {
        b = xcalloc(1, sizeof(*b));
        b->done = true;
        return b;
    }
    if (r->chunked)
        return http1_body_new(HTTP_RESPONSE,
                              "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false);
    if (r->has_length) {
        buf_fmt_fixed(head, sizeof(head), "HTTP/1.1 200 OK\r\nContent-Length: %llu\r\n\r\n",
                      (unsigned long long)r->length);
        return http1_body_new(HTTP_RESPONSE, head, false);
    }
    return http1_body_new(HTTP_RESPONSE, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false);
}

long
http1_body_feed(struct http1_body *b, const char *p, size_t n, struct buf *out, bool *done,
                const char **why)
{
    size_t used;

    *done = b->done;
    if (b->done || n == 0)
        return 0;
    b->out = out;
    used = http_parser_execute(&b->parser, &http1_body_settings, p, n);
    b->out = NULL;
    if (HTTP_PARSER_ERRNO(&b->parser) != HPE_OK && HTTP_PARSER_ERRNO(&b->parser) != HPE_PAUSED) {
        *why = b->tapped ? "refused by the body check"
                         : http_errno_description(HTTP_PARSER_ERRNO(&b->parser));
        return -EBADMSG;
    }
    if (!b->reframe && !b->decode && out)
        buf_append(out, p, used);
    *done = b->done;
    return (long)used;
}

int
http1_body_eof(struct http1_body *b, const char **why)
{
    if (b->done)
        return 0;
    http_parser_execute(&b->parser, &http1_body_settings, NULL, 0);
    if (b->done)
        return 0;
    *why = "connection closed inside a message body";
    return -EBADMSG;
}

void
http1_body_set_decode(struct http1_body *b)
{
    b->decode = true;
}

void
http1_body_set_tap(struct http1_body *b, http1_tap_fn fn, void *arg)
{
    b->tap = fn;
    b->tap_arg = arg;
}

bool
http1_body_tapped(const struct http1_body *b)
{
    return b && b->tapped;
}

unsigned
http1_body_chunks(const struct http1_body *b)
{
    return b ? b->chunks : 0;
}

void
http1_body_free(struct http1_body *b)
{
    free(b);
}
