/*
 * px_infer.c: inference.local, the model endpoint the proxy serves itself
 * (doc/providers.md "Proxy: inference.local").
 *
 * `CONNECT inference.local:443` is answered 200 before any policy; the
 * tunnel's TLS is terminated with a leaf for inference.local; then each
 * request on the kept-alive connection is read whole (bounded), checked
 * against the supported paths, cleaned (caller credentials and unknown
 * headers dropped, the route's key added, `model` forced) and sent to the
 * route's backend on a fresh upstream connection. Streaming protocols get
 * the backend's body back as it arrives, one HTTP chunk per read; the
 * others are buffered and sent with a Content-Length.
 */
#include "px_int.h"

#include <cjson/cJSON.h>

#include "policy.h"

#define PX_INF_BODY_MAX (10u * 1024 * 1024) /* request body, decoded */
#define PX_INF_CHUNKS_MAX 4096              /* chunks in a request body */
#define PX_INF_RESP_MAX (32u * 1024 * 1024) /* response body, either path */

enum px_inf_phase {
    INF_HEAD = 0, /* waiting for a request head */
    INF_BODY,     /* reading the request body */
    INF_DIAL,     /* connecting to the backend (TCP, then TLS) */
    INF_WAIT,     /* request sent, waiting for the response head */
    INF_STREAM,   /* relaying a streamed body */
    INF_BUFFER,   /* collecting a buffered body */
};

enum px_inf_proto {
    INF_CHAT = 0,
    INF_COMPLETIONS,
    INF_RESPONSES,
    INF_EMBEDDINGS,
    INF_MODELS,
    INF_MESSAGES,
};

struct px_infer {
    enum px_inf_phase phase;
    struct px_creds *creds; /* the document this request is served under */
    const struct px_route *route;
    enum px_inf_proto proto;
    bool streaming;
    bool client_close; /* the client asked to close after this exchange */
    struct http1_request req;
    bool have_req;
    struct http1_body *body;
    struct buf in;  /* decoded request body */
    struct buf out; /* the request for the backend */
    struct http1_response resp;
    bool have_resp;
    struct http1_body *rbody;
    struct buf rbuf; /* buffered response body / decoded piece */
    uint64_t resp_bytes;
    uint64_t t0_ms;
    int status;
    char method[16];
    char path[256];
};

static void px_infer_reply(struct px_conn *c, int status, const char *phrase, const char *json);
static void px_infer_request(struct px_conn *c);
static void px_infer_dial(struct px_conn *c);
static void px_infer_send(struct px_conn *c);
static void px_infer_done(struct px_conn *c);
static void px_infer_stream_fail(struct px_conn *c, const char *why);

/* The backend connection is done with. */
static void
px_infer_drop_up(struct px_conn *c)
{
    if (c->up) {
        bufferevent_free(c->up);
        c->up = NULL;
        c->up_tls = NULL;
    }
}

static void
px_infer_exchange_reset(struct px_infer *f)
{
    if (f->have_req)
        http1_request_fini(&f->req);
    if (f->have_resp)
        http1_response_fini(&f->resp);
    f->have_req = f->have_resp = false;
    http1_body_free(f->body);
    http1_body_free(f->rbody);
    f->body = f->rbody = NULL;
    buf_reset(&f->in);
    if (f->out.data)
        explicit_bzero(f->out.data, f->out.len); /* it carried the key */
    buf_reset(&f->out);
    buf_reset(&f->rbuf);
    px_creds_unref(f->creds);
    f->creds = NULL;
    f->route = NULL;
    f->resp_bytes = 0;
    f->status = 0;
    f->phase = INF_HEAD;
}

void
px_infer_free(struct px_conn *c)
{
    struct px_infer *f = c->inf;

    if (!f)
        return;
    px_infer_exchange_reset(f);
    buf_fini(&f->in);
    buf_fini(&f->out);
    buf_fini(&f->rbuf);
    free(f);
    c->inf = NULL;
}

/* CONNECT inference.local:443: no policy, no identity (any process may use
 * it), 200 at once; the TLS handshake follows (px_sniff). */
void
px_infer_start(struct px_conn *c)
{
    c->inf = xcalloc(1, sizeof(*c->inf));
    buf_copy_fixed(c->acct_policy, sizeof(c->acct_policy), "inference.local");
    if (!c->srv->ca) {
        px_log_decision(c, "deny", "connect", "CONNECT", NULL, "no CA for TLS termination");
        px_reply_json(c, 503, "Service Unavailable", "tls_termination_unavailable",
                      "the proxy has no CA to terminate TLS", NULL);
        return;
    }
    px_exchange_reset(c);
    bufferevent_write(c->cli, "HTTP/1.1 200 Connection Established\r\n\r\n", 39);
    px_log_decision(c, "allow", "connect", "CONNECT", NULL, "inference.local");
    c->state = PX_SNIFF;
    px_timer(c, c->srv->o.idle_timeout_s);
}

/* {"error":...} (JSON built by the caller), Connection: close. */
static void
px_infer_reply(struct px_conn *c, int status, const char *phrase, const char *json)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, json);
    px_infer_drop_up(c);
    px_reply(c, status, phrase, NULL, NULL, &b);
    buf_fini(&b);
}

static void
px_infer_err(struct px_conn *c, int status, const char *phrase, const char *msg)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "{\"error\":");
    buf_put_json_str(&b, msg, strlen(msg));
    buf_puts(&b, "}");
    px_infer_reply(c, status, phrase, buf_cstr(&b));
    buf_fini(&b);
}

static void
px_infer_log(struct px_conn *c, const char *result, const char *detail)
{
    struct px_infer *f = c->inf;
    char id[24], st[8], ms[24];

    buf_fmt_fixed(id, sizeof(id), "%llu", (unsigned long long)c->id);
    buf_fmt_fixed(st, sizeof(st), "%d", f->status);
    buf_fmt_fixed(ms, sizeof(ms), "%llu", (unsigned long long)(px_now(c) - f->t0_ms));
    log_kv(LOG_LVL_INFO, "inference", "sandbox", c->srv->o.sandbox, "conn", id, "result", result,
           "method", f->method, "path", f->path, "model", f->route ? f->route->model : NULL,
           "provider", f->route && f->route->provider[0] ? f->route->provider : NULL, "status",
           f->status ? st : NULL, "latency_ms", ms, "detail", detail, NULL);
}

/* Which protocol METHOD PATH is, or -1. */
static int
px_infer_match(const char *method, const char *path)
{
    static const struct {
        const char *method, *path;
        enum px_inf_proto proto;
    } tab[] = {
        { "POST", "/v1/chat/completions", INF_CHAT },
        { "POST", "/v1/completions", INF_COMPLETIONS },
        { "POST", "/v1/responses", INF_RESPONSES },
        { "POST", "/v1/embeddings", INF_EMBEDDINGS },
        { "POST", "/v1/messages", INF_MESSAGES },
        { "GET", "/v1/models", INF_MODELS },
    };

    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (strcmp(method, tab[i].method) == 0 && strcmp(path, tab[i].path) == 0)
            return (int)tab[i].proto;
    /* GET /v1/models/ID: one more segment. */
    if (strcmp(method, "GET") == 0 && strncmp(path, "/v1/models/", 11) == 0 && path[11] &&
        !strchr(path + 11, '/'))
        return INF_MODELS;
    return -1;
}

static bool
px_infer_api_serves(enum px_route_api api, enum px_inf_proto p)
{
    if (p == INF_MODELS)
        return true;
    if (api == PX_API_ANTHROPIC)
        return p == INF_MESSAGES;
    return p != INF_MESSAGES;
}

/* A request head: which route, which protocol; then read its body. */
static void
px_infer_head(struct px_conn *c)
{
    struct px_infer *f = c->inf;
    struct evbuffer *in = bufferevent_get_input(c->cli);
    size_t n = evbuffer_get_length(in);
    char canon[POLICY_PATH_MAX + 1];
    const char *p, *why = "", *q;
    long h;
    int proto;

    if (n == 0)
        return;
    if (n > HTTP1_HEAD_MAX + 1)
        n = HTTP1_HEAD_MAX + 1;
    p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    h = http1_head_scan(p, n, HTTP1_HEAD_MAX, &why);
    if (h == 0) {
        if (!c->head_started_ms) {
            c->head_started_ms = px_now(c);
            px_timer(c, c->srv->o.header_timeout_s);
        }
        return;
    }
    c->head_started_ms = 0;
    if (h == -EMSGSIZE) {
        px_infer_err(c, 431, "Request Header Fields Too Large", "request head too large");
        return;
    }
    if (h < 0 || http1_parse_request(p, (size_t)h, &f->req, &why) < 0) {
        px_log_decision(c, "deny", "framing", NULL, NULL, why);
        px_infer_err(c, 400, "Bad Request", "bad request");
        return;
    }
    f->have_req = true;
    evbuffer_drain(in, (size_t)h);
    c->nreq++;
    f->t0_ms = px_now(c);
    buf_copy_fixed(f->method, sizeof(f->method), f->req.method);
    px_log_path(f->path, sizeof(f->path),
                f->req.form == HTTP1_FORM_ABSOLUTE ? f->req.path : f->req.target);
    q = f->req.form == HTTP1_FORM_ABSOLUTE ? f->req.path : f->req.target;
    if (f->req.form == HTTP1_FORM_AUTHORITY || f->req.form == HTTP1_FORM_ASTERISK ||
        policy_canon_path(q, strlen(q), false, canon, sizeof(canon), NULL, &why) < 0)
        proto = -1;
    else
        proto = px_infer_match(f->req.method, canon);
    if (proto < 0) {
        /* Anything else on inference.local ends the connection, whatever
         * came before on it. */
        px_infer_log(c, "denied", "not an inference path");
        px_infer_reply(c, 403, "Forbidden", "{\"error\":\"connection not allowed by policy\"}");
        return;
    }
    buf_copy_fixed(f->path, sizeof(f->path), canon);
    f->proto = (enum px_inf_proto)proto;
    f->streaming = proto != INF_EMBEDDINGS && proto != INF_MODELS;
    f->client_close = !f->req.keep_alive;
    /* One credentials revision (route and key) for the whole request. */
    f->creds = px_creds_ref(c->srv->creds);
    f->route = px_creds_route(f->creds);
    if (!f->route) {
        px_infer_log(c, "error", "no route");
        px_infer_reply(c, 503, "Service Unavailable",
                       "{\"error\":\"cluster inference is not configured\","
                       "\"hint\":\"run: openshell inference set --help\"}");
        return;
    }
    if (!px_infer_api_serves(f->route->api, f->proto)) {
        px_infer_log(c, "error", "route api does not serve this path");
        px_infer_err(c, 400, "Bad Request", "no compatible inference route available");
        return;
    }
    if (f->req.has_length && f->req.length > PX_INF_BODY_MAX) {
        px_infer_log(c, "error", "request body too large");
        px_infer_err(c, 413, "Payload Too Large", "request body too large");
        return;
    }
    f->body = http1_body_request(&f->req);
    http1_body_set_decode(f->body);
    f->phase = INF_BODY;
    /* The proxy is this request's server: a client waiting before it sends
     * its body (curl does past 1 MiB) is told to go on. */
    if (f->req.expect_continue && f->req.minor == 1 &&
        (f->req.chunked || (f->req.has_length && f->req.length > 0)))
        bufferevent_write(c->cli, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    px_timer(c, c->srv->o.header_timeout_s);
}

/* Take request body bytes; once whole, build the backend request. */
static void
px_infer_body(struct px_conn *c)
{
    struct px_infer *f = c->inf;
    struct evbuffer *in = bufferevent_get_input(c->cli);
    const char *why = "";
    bool done = false;

    for (;;) {
        struct evbuffer_iovec v[8];
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        size_t total = 0;

        if (nv > 8)
            nv = 8;
        if (nv <= 0) {
            (void)http1_body_feed(f->body, "", 0, &f->in, &done, &why);
        }
        for (int i = 0; i < nv && !done; i++) {
            long used = http1_body_feed(f->body, v[i].iov_base, v[i].iov_len, &f->in, &done, &why);

            if (used < 0) {
                px_infer_log(c, "error", why);
                px_infer_err(c, 400, "Bad Request", "bad request");
                return;
            }
            total += (size_t)used;
            if ((size_t)used < v[i].iov_len)
                break;
        }
        evbuffer_drain(in, total);
        if (f->in.len > PX_INF_BODY_MAX) {
            px_infer_log(c, "error", "request body too large");
            px_infer_err(c, 413, "Payload Too Large", "request body too large");
            return;
        }
        if (http1_body_chunks(f->body) > PX_INF_CHUNKS_MAX + 1) {
            px_infer_log(c, "error", "too many chunks");
            px_infer_err(c, 400, "Bad Request", "bad request");
            return;
        }
        if (done || total == 0)
            break;
    }
    if (!done) {
        px_touch(c);
        return;
    }
    px_infer_request(c);
}

static bool
px_infer_keep_header(enum px_route_api api, const char *n)
{
    static const char *const common[] = { "content-type", "accept", "accept-encoding",
                                          "user-agent" };
    static const char *const openai[] = { "openai-organization", "x-model-id" };
    static const char *const anthropic[] = { "anthropic-version", "anthropic-beta" };

    for (size_t i = 0; i < 4; i++)
        if (strcasecmp(n, common[i]) == 0)
            return true;
    for (size_t i = 0; i < 2; i++)
        if (strcasecmp(n, api == PX_API_OPENAI ? openai[i] : anthropic[i]) == 0)
            return true;
    return false;
}

/* The backend request: URL, cleaned headers, key, model. */
static void
px_infer_request(struct px_conn *c)
{
    struct px_infer *f = c->inf;
    const struct px_route *r = f->route;
    const char *path = f->path;
    struct buf body = BUF_INIT;
    bool default_port = r->port == (r->https ? 443u : 80u);
    bool have_version = false;
    cJSON *j = NULL;

    /* {base}{path}, one "/v1" dropped when the base already ends with it. */
    if (strlen(r->prefix) >= 3 && strcmp(r->prefix + strlen(r->prefix) - 3, "/v1") == 0 &&
        strncmp(path, "/v1/", 4) == 0)
        path += 3;
    buf_printf(&f->out, "%s %s%s HTTP/1.1\r\n", f->req.method, r->prefix, path);
    if (strchr(r->host, ':'))
        buf_printf(&f->out, "Host: [%s]", r->host);
    else
        buf_printf(&f->out, "Host: %s", r->host);
    if (!default_port)
        buf_printf(&f->out, ":%u", r->port);
    buf_puts(&f->out, "\r\n");
    for (size_t i = 0; i < f->req.nheaders; i++) {
        const char *n = f->req.headers[i].name;

        if (!px_infer_keep_header(r->api, n))
            continue;
        if (strcasecmp(n, "anthropic-version") == 0)
            have_version = true;
        buf_printf(&f->out, "%s: %s\r\n", n, f->req.headers[i].value);
    }
    if (r->auth_bearer)
        buf_printf(&f->out, "Authorization: Bearer %s\r\n", r->api_key);
    else
        buf_printf(&f->out, "x-api-key: %s\r\n", r->api_key);
    if (r->api == PX_API_ANTHROPIC && !have_version)
        buf_puts(&f->out, "anthropic-version: 2023-06-01\r\n");
    /* The route's model, whatever the caller asked for. */
    if (f->in.len)
        j = cJSON_ParseWithLength(f->in.data, f->in.len);
    if (cJSON_IsObject(j)) {
        char *s;

        cJSON_DeleteItemFromObjectCaseSensitive(j, "model");
        cJSON_AddStringToObject(j, "model", r->model);
        s = cJSON_PrintUnformatted(j);
        buf_puts(&body, s);
        cJSON_free(s);
    } else {
        buf_append(&body, f->in.data, f->in.len);
    }
    cJSON_Delete(j);
    if (body.len || strcmp(f->req.method, "GET") != 0)
        buf_printf(&f->out, "Content-Length: %zu\r\n", body.len);
    buf_puts(&f->out, "Connection: close\r\n\r\n");
    buf_append(&f->out, body.data, body.len);
    buf_fini(&body);
    px_infer_dial(c);
}

/* Dial the backend: a --resolve mapping, an address literal, or DNS. */
static void
px_infer_dial(struct px_conn *c)
{
    struct px_infer *f = c->inf;
    const struct px_route *r = f->route;
    char addr[INET6_ADDRSTRLEN];
    const char *host = r->host;
    int family = AF_UNSPEC;

    for (size_t i = 0; i < c->srv->nmap; i++)
        if (strcasecmp(c->srv->map[i].host, r->host) == 0) {
            const struct policy_addr *a = &c->srv->map[i].addr;

            family = a->family == 4 ? AF_INET : AF_INET6;
            inet_ntop(family, a->a, addr, sizeof(addr));
            host = addr;
            break;
        }
    f->phase = INF_DIAL;
    px_infer_drop_up(c);
    c->up = bufferevent_socket_new(c->srv->base, -1, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->up, px_up_read, px_up_write, px_up_event, c);
    bufferevent_disable(c->cli, EV_READ); /* one request at a time */
    px_timer(c, c->srv->o.connect_timeout_s);
    if (bufferevent_socket_connect_hostname(c->up, c->srv->dns, family, host, (int)r->port) < 0) {
        px_infer_log(c, "error", "connect failed");
        px_infer_err(c, 503, "Service Unavailable", "inference service unavailable");
    }
}

static void
px_infer_send(struct px_conn *c)
{
    struct px_infer *f = c->inf;

    f->phase = INF_WAIT;
    bufferevent_write(c->up, f->out.data, f->out.len);
    c->bytes_up += f->out.len;
    explicit_bzero(f->out.data, f->out.len);
    buf_reset(&f->out);
    bufferevent_enable(c->up, EV_READ);
    px_touch(c);
    px_timer(c, f->streaming ? c->srv->o.infer_idle_s : f->route->timeout_s);
}

void
px_infer_up_event(struct px_conn *c, short what)
{
    struct px_infer *f = c->inf;
    struct err e;

    if (!f)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        if (f->phase != INF_DIAL)
            return;
        if (f->route->https && !c->up_tls) {
            struct tls_client_ctx *ctx = px_upstream_ctx(c->srv, &e);

            px_tune(c->up);
            if (!ctx) {
                bufferevent_free(c->up);
                c->up = NULL;
            } else {
                c->up = tls_wrap_client(c->up, ctx, f->route->host, &c->up_tls, &e);
            }
            if (!c->up) {
                px_infer_log(c, "error", e.msg);
                px_infer_err(c, 502, "Bad Gateway", "inference service error");
                return;
            }
            bufferevent_setcb(c->up, px_up_read, px_up_write, px_up_event, c);
            return;
        }
        if (!c->up_tls)
            px_tune(c->up);
        px_infer_send(c);
        return;
    }
    /* Error or end of stream. */
    if (f->phase == INF_DIAL) {
        px_infer_log(c, "error",
                     c->up_tls && tls_conn_error(c->up_tls)[0]
                         ? tls_conn_error(c->up_tls)
                         : "connection to the backend failed");
        px_infer_err(c, 503, "Service Unavailable", "inference service unavailable");
        return;
    }
    px_infer_up_read(c);
    if (c->dead || !c->inf || c->state != PX_INFER)
        return;
    if (f->phase == INF_STREAM || f->phase == INF_BUFFER) {
        const char *why = "";

        if (f->rbody && http1_body_eof(f->rbody, &why) == 0) {
            px_infer_done(c);
            return;
        }
        if (f->phase == INF_STREAM) {
            px_infer_stream_fail(c, "upstream connection closed");
            return;
        }
    }
    if (f->phase == INF_WAIT || f->phase == INF_BUFFER) {
        px_infer_log(c, "error", "backend closed without a complete response");
        px_infer_err(c, 502, "Bad Gateway", "inference service error");
    }
}

/* Response head lines to relay: not hop-by-hop, not the framing. */
static void
px_infer_resp_head(struct px_conn *c, bool chunked, size_t length)
{
    struct px_infer *f = c->inf;
    struct buf out = BUF_INIT;

    buf_printf(&out, "HTTP/1.1 %d %s\r\n", f->resp.status,
               f->resp.reason && *f->resp.reason ? f->resp.reason : "OK");
    for (size_t i = 0; i < f->resp.nheaders; i++) {
        const char *n = f->resp.headers[i].name;

        if (!strcasecmp(n, "content-length") || !strcasecmp(n, "transfer-encoding") ||
            !strcasecmp(n, "connection") || !strcasecmp(n, "keep-alive") ||
            !strcasecmp(n, "proxy-connection") || !strcasecmp(n, "upgrade") ||
            !strcasecmp(n, "te") || !strcasecmp(n, "trailer"))
            continue;
        buf_printf(&out, "%s: %s\r\n", n, f->resp.headers[i].value);
    }
    if (chunked)
        buf_puts(&out, "Transfer-Encoding: chunked\r\n");
    else
        buf_printf(&out, "Content-Length: %zu\r\n", length);
    if (f->client_close)
        buf_puts(&out, "Connection: close\r\n");
    buf_puts(&out, "\r\n");
    bufferevent_write(c->cli, out.data, out.len);
    c->bytes_down += out.len;
    c->resp_started = true;
    buf_fini(&out);
}

/* A streamed response cannot go on: one JSON-escaped SSE error event (the
 * backend's text cannot forge frames), then the last chunk. */
static void
px_infer_stream_fail(struct px_conn *c, const char *why)
{
    struct px_infer *f = c->inf;
    struct buf msg = BUF_INIT, ev = BUF_INIT, out = BUF_INIT;

    buf_printf(&msg, "response truncated: %s", why);
    buf_puts(&ev, "data: {\"error\":{\"message\":");
    buf_put_json_str(&ev, msg.data, msg.len);
    buf_puts(&ev, ",\"type\":\"proxy_stream_error\"}}\n\n");
    buf_printf(&out, "%zx\r\n", ev.len);
    buf_append(&out, ev.data, ev.len);
    buf_puts(&out, "\r\n0\r\n\r\n");
    bufferevent_write(c->cli, out.data, out.len);
    px_infer_log(c, "truncated", buf_cstr(&msg));
    buf_fini(&msg);
    buf_fini(&ev);
    buf_fini(&out);
    f->client_close = true;
    px_infer_drop_up(c);
    px_conn_close(c);
}

/* The exchange is complete: the next request, or close. */
static void
px_infer_done(struct px_conn *c)
{
    struct px_infer *f = c->inf;

    if (f->phase == INF_STREAM) {
        bufferevent_write(c->cli, "0\r\n\r\n", 5);
        c->bytes_down += 5;
    } else if (f->phase == INF_BUFFER) {
        px_infer_resp_head(c, false, f->rbuf.len);
        bufferevent_write(c->cli, f->rbuf.data, f->rbuf.len);
        c->bytes_down += f->rbuf.len;
    }
    px_infer_log(c, "ok", NULL);
    px_infer_drop_up(c);
    if (f->client_close) {
        px_conn_close(c);
        return;
    }
    px_infer_exchange_reset(f);
    c->resp_started = false;
    bufferevent_enable(c->cli, EV_READ);
    px_timer(c, c->srv->o.idle_timeout_s);
    px_touch(c);
    px_infer_input(c);
}

void
px_infer_up_read(struct px_conn *c)
{
    struct px_infer *f = c->inf;
    struct evbuffer *in;
    const char *why = "";

    if (!f || !c->up)
        return;
    in = bufferevent_get_input(c->up);
    if (f->phase == INF_WAIT) {
        long h = px_response_head(in, false, &f->resp, &why);

        if (h == 0)
            return;
        if (h < 0) {
            px_infer_log(c, "error", why);
            px_infer_err(c, 502, "Bad Gateway", "inference service error");
            return;
        }
        f->have_resp = true;
        evbuffer_drain(in, (size_t)h);
        if (f->resp.status < 200) { /* interim: wait for the final answer */
            http1_response_fini(&f->resp);
            f->have_resp = false;
            px_infer_up_read(c);
            return;
        }
        f->status = f->resp.status;
        f->rbody = http1_body_response(&f->resp);
        http1_body_set_decode(f->rbody);
        if (f->streaming) {
            f->phase = INF_STREAM;
            px_infer_resp_head(c, true, 0);
            px_timer(c, c->srv->o.infer_idle_s);
        } else {
            f->phase = INF_BUFFER;
        }
    }
    while (f->phase == INF_STREAM || f->phase == INF_BUFFER) {
        struct evbuffer_iovec v[8];
        int nv = evbuffer_peek(in, -1, NULL, v, 8);
        size_t total = 0;
        bool done = false;

        if (nv > 8)
            nv = 8;
        buf_reset(&f->in); /* reused for the decoded piece */
        if (nv <= 0)
            (void)http1_body_feed(f->rbody, "", 0, &f->in, &done, &why);
        for (int i = 0; i < nv && !done; i++) {
            long used = http1_body_feed(f->rbody, v[i].iov_base, v[i].iov_len, &f->in, &done, &why);

            if (used < 0) {
                if (f->phase == INF_STREAM) {
                    px_infer_stream_fail(c, "upstream framing error");
                } else {
                    px_infer_log(c, "error", why);
                    px_infer_err(c, 502, "Bad Gateway", "inference service error");
                }
                return;
            }
            total += (size_t)used;
            if ((size_t)used < v[i].iov_len)
                break;
        }
        evbuffer_drain(in, total);
        if (f->in.len) {
            f->resp_bytes += f->in.len;
            if (f->resp_bytes > PX_INF_RESP_MAX) {
                if (f->phase == INF_STREAM) {
                    px_infer_stream_fail(c, "response exceeds 33554432 bytes");
                } else {
                    px_infer_log(c, "error", "response too large");
                    px_infer_err(c, 502, "Bad Gateway", "inference service error");
                }
                return;
            }
            if (f->phase == INF_STREAM) {
                /* One chunk per piece, written at once: SSE events reach
                 * the caller as the backend produces them. */
                char sz[24];
                int l = snprintf(sz, sizeof(sz), "%zx\r\n", f->in.len);

                bufferevent_write(c->cli, sz, (size_t)l);
                bufferevent_write(c->cli, f->in.data, f->in.len);
                bufferevent_write(c->cli, "\r\n", 2);
                c->bytes_down += f->in.len + (size_t)l + 2;
                px_timer(c, c->srv->o.infer_idle_s);
            } else {
                buf_append(&f->rbuf, f->in.data, f->in.len);
            }
            px_touch(c);
        }
        if (done) {
            px_infer_done(c);
            return;
        }
        if (evbuffer_get_length(bufferevent_get_output(c->cli)) >= PX_HIGH) {
            bufferevent_disable(c->up, EV_READ);
            return;
        }
        if (total == 0)
            return;
    }
}

void
px_infer_timer(struct px_conn *c)
{
    struct px_infer *f = c->inf;
    uint64_t quiet = px_now(c) - c->last_active_ms;

    switch (f->phase) {
    case INF_HEAD:
        if (c->head_started_ms &&
            px_now(c) - c->head_started_ms >= (uint64_t)c->srv->o.header_timeout_s * 1000) {
            px_conn_kill(c);
            return;
        }
        if (!c->head_started_ms && quiet >= (uint64_t)c->srv->o.idle_timeout_s * 1000) {
            px_conn_kill(c);
            return;
        }
        px_timer(c, 1);
        return;
    case INF_BODY:
        if (quiet >= (uint64_t)c->srv->o.header_timeout_s * 1000) {
            px_conn_kill(c);
            return;
        }
        px_timer(c, 1);
        return;
    case INF_DIAL:
    case INF_WAIT:
    case INF_BUFFER:
        px_infer_log(c, "error", "backend timed out");
        px_infer_err(c, 503, "Service Unavailable", "inference service unavailable");
        return;
    case INF_STREAM:
        /* Only the backend's silence counts: a slow reader holding the
         * relay back (its output still queued) is back-pressure. */
        if (evbuffer_get_length(bufferevent_get_output(c->cli)) || px_cli_pending(c))
            px_touch(c);
        else if (quiet >= (uint64_t)c->srv->o.infer_idle_s * 1000) {
            px_infer_stream_fail(c, "upstream idle too long");
            return;
        }
        px_timer(c, 1);
        return;
    }
}

void
px_infer_input(struct px_conn *c)
{
    struct px_infer *f = c->inf;

    if (c->dead || !f || c->state != PX_INFER)
        return;
    if (f->phase == INF_HEAD) {
        px_infer_head(c);
        if (c->dead || c->state != PX_INFER || f->phase != INF_BODY)
            return;
    }
    if (f->phase == INF_BODY)
        px_infer_body(c);
}
