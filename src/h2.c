/*
 * h2.c: HTTP/2 connections, streams and the router over nghttp2 and libevent
 * (contract in include/h2.h).
 *
 * Re-entrancy: nghttp2_session_send/mem_recv must not be called from inside
 * nghttp2's own callbacks, and application callbacks may free connections.
 * So every public call only queues work and activates the connection's
 * "kick" event; sending happens from libevent callbacks (read, write, kick),
 * each of which holds c->busy while it runs: a connection freed meanwhile is
 * only marked dead, and released when the outermost callback unwinds.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <nghttp2/nghttp2.h>

#include "h2.h"
#include "log.h"
#include "loop.h"
#include "tls.h"
#include "xfuncs.h"

#define DEF_MAX_BODY (1024 * 1024)
#define DEF_MAX_STREAMS 100
#define DEF_OUT_HIGH (256 * 1024)
#define DEF_WINDOW (256 * 1024)
#define CONN_WINDOW (4 * 1024 * 1024)
/* Bytes of a rejected request body read and dropped before a reset. */
#define H2_DISCARD_MAX (16 * 1024 * 1024)

struct h2_route {
    char *method;
    char **segs;
    size_t nsegs;
    unsigned flags;
    h2_handler_fn fn;
    void *arg;
    struct h2_route *next;
};

struct h2_router {
    struct h2_route *head, *tail;
};

struct h2_stream {
    struct h2_conn *conn;
    int32_t id;
    struct h2_stream *prev, *next;
    /* Headers received (request on a server, response on a client). */
    char *hname[H2_MAX_HEADERS], *hval[H2_MAX_HEADERS];
    size_t nh;
    bool too_many_headers;
    char *method, *path;
    char *params[H2_MAX_PARAMS];
    struct h2_req req;
    const struct h2_route *route;
    int status;
    /* Our output. */
    struct evbuffer *out;
    bool out_started, out_ended, out_deferred, out_blocked, want_drain;
    /* Their input. */
    bool remote_ended, handled, rejected, paused;
    size_t unconsumed, discarded;
    bool closed;
    struct h2_stream_cbs cbs;
    void *arg;
};

struct h2_conn {
    struct h2_server *srv; /* NULL for a client */
    struct event_base *base;
    struct bufferevent *bev;
    nghttp2_session *sess;
    struct event *kick;
    struct event *idle;
    bool idle_fired;
    struct h2_peer peer;
    struct tls_conn *tls; /* h2_conn_set_tls(): peer resolved from it */
    bool tls_peer_done;
    struct h2_limits lim;
    const char *scheme;
    struct h2_stream *streams;
    size_t nstreams;
    int busy;
    bool dead, freeing, closing;
    h2_conn_close_fn close_fn;
    void *close_arg;
    struct h2_conn *prev, *next;
};

struct h2_server {
    struct h2_server_stats stats;
    struct event_base *base;
    const struct h2_router *router;
    struct h2_limits lim;
    struct h2_conn *conns;
    size_t nconns;
    bool shutting_down;
    h2_conn_close_fn close_fn;
    void *close_arg;
    h2_auth_fn auth_fn;
    void *auth_arg;
};

static void conn_kick(struct h2_conn *c);

static void
limits_fill(struct h2_limits *dst, const struct h2_limits *src)
{
    if (src)
        *dst = *src;
    else
        memset(dst, 0, sizeof(*dst));
    if (!dst->max_body)
        dst->max_body = DEF_MAX_BODY;
    if (!dst->max_streams)
        dst->max_streams = DEF_MAX_STREAMS;
    if (!dst->stream_out_high)
        dst->stream_out_high = DEF_OUT_HIGH;
    if (!dst->stream_window)
        dst->stream_window = DEF_WINDOW;
}

/* ------------------------------------------------------------------ router */

struct h2_router *
h2_router_new(void)
{
    return xcalloc(1, sizeof(struct h2_router));
}

void
h2_router_free(struct h2_router *r)
{
    struct h2_route *rt, *next;

    if (!r)
        return;
    for (rt = r->head; rt; rt = next) {
        next = rt->next;
        for (size_t i = 0; i < rt->nsegs; i++)
            free(rt->segs[i]);
        free(rt->segs);
        free(rt->method);
        free(rt);
    }
    free(r);
}

void
h2_router_add(struct h2_router *r, const char *method, const char *pattern, unsigned flags,
              h2_handler_fn fn, void *arg)
{
    struct h2_route *rt = xcalloc(1, sizeof(*rt));
    const char *p = pattern;

    BUG_ON(pattern[0] != '/');
    rt->method = xstrdup(method);
    rt->flags = flags;
    rt->fn = fn;
    rt->arg = arg;
    while (*p == '/') {
        const char *end = strchr(p + 1, '/');
        size_t len = end ? (size_t)(end - p - 1) : strlen(p + 1);

        rt->segs = xrealloc(rt->segs, (rt->nsegs + 1) * sizeof(*rt->segs));
        rt->segs[rt->nsegs++] = xstrndup(p + 1, len);
        p += 1 + len;
    }
    if (r->tail)
        r->tail->next = rt;
    else
        r->head = rt;
    r->tail = rt;
}

/* Does PATH match RT's segments? Fills ST's params when it does.
 * Returns 1 match, 0 no match, -EINVAL bad encoding in a parameter. */
static int
route_match(const struct h2_route *rt, const char *path, struct h2_stream *st)
{
    const char *p = path;
    size_t i = 0, np = 0;
    char *params[H2_MAX_PARAMS] = { 0 };

    while (*p == '/' && i < rt->nsegs) {
        const char *end = strchr(p + 1, '/');
        size_t len = end ? (size_t)(end - p - 1) : strlen(p + 1);
        const char *seg = rt->segs[i];

        if (strcmp(seg, "{}") == 0) {
            struct buf b = BUF_INIT;

            if (len == 0 || np == H2_MAX_PARAMS)
                goto nomatch;
            if (h2_pct_decode(p + 1, len, &b) < 0) {
                buf_fini(&b);
                for (size_t k = 0; k < np; k++)
                    free(params[k]);
                return -EINVAL;
            }
            params[np++] = buf_steal(&b);
        } else if (strlen(seg) != len || memcmp(seg, p + 1, len) != 0) {
            goto nomatch;
        }
        p += 1 + len;
        i++;
    }
    if (*p || i != rt->nsegs)
        goto nomatch;
    if (st) {
        for (size_t k = 0; k < np; k++) {
            st->params[k] = params[k];
            st->req.params[k] = params[k];
        }
        st->req.nparams = np;
    } else {
        for (size_t k = 0; k < np; k++)
            free(params[k]);
    }
    return 1;
nomatch:
    for (size_t k = 0; k < np; k++)
        free(params[k]);
    return 0;
}

/* ------------------------------------------------------------------ streams */

static struct h2_stream *
stream_new(struct h2_conn *c, int32_t id)
{
    struct h2_stream *st = xcalloc(1, sizeof(*st));

    st->conn = c;
    st->id = id;
    st->out = evbuffer_new();
    if (!st->out)
        BUG();
    buf_init(&st->req.body);
    st->next = c->streams;
    if (c->streams)
        c->streams->prev = st;
    c->streams = st;
    c->nstreams++;
    return st;
}

static void
stream_unlink(struct h2_stream *st)
{
    struct h2_conn *c = st->conn;

    if (st->prev)
        st->prev->next = st->next;
    else
        c->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    c->nstreams--;
}

static void
stream_free(struct h2_stream *st)
{
    for (size_t i = 0; i < st->nh; i++) {
        free(st->hname[i]);
        free(st->hval[i]);
    }
    for (size_t i = 0; i < H2_MAX_PARAMS; i++)
        free(st->params[i]);
    free(st->method);
    free(st->path);
    buf_fini(&st->req.body);
    evbuffer_free(st->out);
    free(st);
}

/* The stream is over: tell the application, then free it. */
static void
stream_close(struct h2_stream *st, uint32_t code)
{
    st->closed = true;
    stream_unlink(st);
    if (st->cbs.on_close)
        st->cbs.on_close(st, code, st->arg);
    stream_free(st);
}

void
h2_stream_set_cbs(struct h2_stream *st, const struct h2_stream_cbs *cbs, void *arg)
{
    if (cbs)
        st->cbs = *cbs;
    else
        memset(&st->cbs, 0, sizeof(st->cbs));
    st->arg = arg;
}

struct h2_conn *
h2_stream_conn(const struct h2_stream *st)
{
    return st->conn;
}

/* A TLS connection's identity is known only once its handshake finished,
 * which precedes any stream: resolve it on first use. */
static void
conn_resolve_tls_peer(struct h2_conn *c)
{
    if (!c->tls || c->tls_peer_done || c->peer.kind != H2_PEER_NONE ||
        !tls_conn_established(c->tls))
        return;
    c->tls_peer_done = true;
    if (tls_conn_peer_subject(c->tls, c->peer.subject, sizeof(c->peer.subject), NULL, 0, NULL, 0) ==
        0)
        c->peer.kind = H2_PEER_TLS;
    else
        c->peer.subject[0] = '\0';
}

void
h2_conn_set_tls(struct h2_conn *c, struct tls_conn *t)
{
    c->tls = t;
}

const struct h2_peer *
h2_stream_peer(const struct h2_stream *st)
{
    conn_resolve_tls_peer(st->conn);
    return &st->conn->peer;
}

int32_t
h2_stream_id(const struct h2_stream *st)
{
    return st->id;
}

const char *
h2_stream_path(const struct h2_stream *st)
{
    return st->req.path;
}

const char *
h2_stream_header(const struct h2_stream *st, const char *name)
{
    for (size_t i = 0; i < st->nh; i++)
        if (strcmp(st->hname[i], name) == 0)
            return st->hval[i];
    return NULL;
}

size_t
h2_stream_out_pending(const struct h2_stream *st)
{
    return evbuffer_get_length(st->out);
}

static nghttp2_ssize
data_read_cb(nghttp2_session *sess, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
             nghttp2_data_source *src, void *ud)
{
    struct h2_stream *st = src->ptr;
    size_t avail = evbuffer_get_length(st->out);
    size_t n = avail < len ? avail : len;

    (void)sess;
    (void)id;
    (void)ud;
    if (n)
        evbuffer_remove(st->out, buf, n);
    if (st->out_blocked && evbuffer_get_length(st->out) < st->conn->lim.stream_out_high / 2) {
        st->out_blocked = false;
        st->want_drain = true;
    }
    if (evbuffer_get_length(st->out) == 0) {
        if (st->out_ended) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
        } else if (n == 0) {
            st->out_deferred = true;
            return NGHTTP2_ERR_DEFERRED;
        }
    }
    return (nghttp2_ssize)n;
}

/* Build the nghttp2 header list: STATUS (when > 0), CTYPE, HDRS, and
 * content-length when CLEN >= 0. Names and values are borrowed. */
struct nv_list {
    nghttp2_nv nv[H2_MAX_HEADERS + 8];
    size_t n;
    char status[16], clen[24];
};

static void
nv_add(struct nv_list *l, const char *name, const char *value)
{
    nghttp2_nv *nv;

    if (l->n == sizeof(l->nv) / sizeof(l->nv[0]))
        BUG();
    nv = &l->nv[l->n++];
    nv->name = (uint8_t *)name;
    nv->namelen = strlen(name);
    nv->value = (uint8_t *)value;
    nv->valuelen = strlen(value);
    nv->flags = NGHTTP2_NV_FLAG_NONE;
}

static int
nv_build(struct nv_list *l, int status, const char *ctype, const struct h2_header *hdrs,
         size_t nhdrs, long long clen)
{
    l->n = 0;
    if (nhdrs > H2_MAX_HEADERS)
        return -E2BIG;
    if (status > 0) {
        snprintf(l->status, sizeof(l->status), "%d", status);
        nv_add(l, ":status", l->status);
    }
    if (ctype)
        nv_add(l, "content-type", ctype);
    for (size_t i = 0; i < nhdrs; i++)
        nv_add(l, hdrs[i].name, hdrs[i].value);
    if (clen >= 0) {
        snprintf(l->clen, sizeof(l->clen), "%lld", clen);
        nv_add(l, "content-length", l->clen);
    }
    return 0;
}

static void
count_response(struct h2_stream *st, int status)
{
    if (st->conn->srv && status >= 100 && status < 600)
        st->conn->srv->stats.responses[status / 100]++;
}

int
h2_stream_respond(struct h2_stream *st, int status, const char *ctype, const struct h2_header *hdrs,
                  size_t nhdrs, const void *body, size_t len)
{
    struct nv_list l;
    nghttp2_data_provider2 prd = { .source.ptr = st, .read_callback = data_read_cb };
    int rc;

    if (st->closed)
        return -EPIPE;
    if (st->out_started)
        return -EALREADY;
    if ((rc = nv_build(&l, status, ctype, hdrs, nhdrs, (long long)len)) < 0)
        return rc;
    if (len)
        evbuffer_add(st->out, body, len);
    st->out_started = st->out_ended = true;
    rc = nghttp2_submit_response2(st->conn->sess, st->id, l.nv, l.n, len ? &prd : NULL);
    if (rc != 0)
        return -EPIPE;
    count_response(st, status);
    conn_kick(st->conn);
    return 0;
}

int
h2_stream_error(struct h2_stream *st, int status, const char *code, const char *fmt, ...)
{
    struct buf msg = BUF_INIT, body = BUF_INIT;
    va_list ap;
    int rc;

    va_start(ap, fmt);
    buf_vprintf(&msg, fmt, ap);
    va_end(ap);
    buf_puts(&body, "{\"error\":{\"code\":");
    buf_put_json_str(&body, code, strlen(code));
    buf_puts(&body, ",\"message\":");
    buf_put_json_str(&body, msg.data ? msg.data : "", msg.len);
    buf_puts(&body, "}}\n");
    rc = h2_stream_respond(st, status, "application/json", NULL, 0, body.data, body.len);
    buf_fini(&msg);
    buf_fini(&body);
    return rc;
}

int
h2_stream_start(struct h2_stream *st, int status, const char *ctype, const struct h2_header *hdrs,
                size_t nhdrs)
{
    struct nv_list l;
    nghttp2_data_provider2 prd = { .source.ptr = st, .read_callback = data_read_cb };
    int rc;

    if (st->closed)
        return -EPIPE;
    if (st->out_started)
        return -EALREADY;
    if ((rc = nv_build(&l, status, ctype, hdrs, nhdrs, -1)) < 0)
        return rc;
    st->out_started = true;
    if (nghttp2_submit_response2(st->conn->sess, st->id, l.nv, l.n, &prd) != 0)
        return -EPIPE;
    count_response(st, status);
    conn_kick(st->conn);
    return 0;
}

static void
stream_resume(struct h2_stream *st)
{
    if (st->out_deferred) {
        st->out_deferred = false;
        nghttp2_session_resume_data(st->conn->sess, st->id);
    }
    conn_kick(st->conn);
}

int
h2_stream_write(struct h2_stream *st, const void *p, size_t n)
{
    if (st->closed || st->out_ended || !st->out_started)
        return -EPIPE;
    if (n)
        evbuffer_add(st->out, p, n);
    stream_resume(st);
    if (evbuffer_get_length(st->out) >= st->conn->lim.stream_out_high) {
        st->out_blocked = true;
        return -EAGAIN;
    }
    return 0;
}

int
h2_stream_end(struct h2_stream *st)
{
    if (st->closed || !st->out_started)
        return -EPIPE;
    if (st->out_ended)
        return 0;
    st->out_ended = true;
    stream_resume(st);
    return 0;
}

void
h2_stream_reset(struct h2_stream *st, uint32_t code)
{
    if (st->closed)
        return;
    nghttp2_submit_rst_stream(st->conn->sess, NGHTTP2_FLAG_NONE, st->id, code);
    conn_kick(st->conn);
}

void
h2_stream_pause_input(struct h2_stream *st, bool pause)
{
    if (st->closed)
        return;
    st->paused = pause;
    if (!pause && st->unconsumed) {
        nghttp2_session_consume(st->conn->sess, st->id, st->unconsumed);
        st->unconsumed = 0;
        conn_kick(st->conn);
    }
}

/* ------------------------------------------------------------------ nghttp2 callbacks */

static nghttp2_ssize
send_cb(nghttp2_session *sess, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct h2_conn *c = ud;
    struct evbuffer *out = bufferevent_get_output(c->bev);

    (void)sess;
    (void)flags;
    /* Connection-level back-pressure: let the socket drain first. */
    if (evbuffer_get_length(out) >= H2_CONN_OUT_HIGH)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (evbuffer_add(out, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (nghttp2_ssize)len;
}

static int
on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    struct h2_stream *st;

    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST || !c->srv)
        return 0;
    st = stream_new(c, f->hd.stream_id);
    nghttp2_session_set_stream_user_data(sess, f->hd.stream_id, st);
    c->srv->stats.streams_total++;
    return 0;
}

static int
on_header(nghttp2_session *sess, const nghttp2_frame *f, const uint8_t *name, size_t namelen,
          const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    struct h2_conn *c = ud;

    (void)flags;
    if (!st || f->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (namelen && name[0] == ':') {
        if (c->srv && namelen == 7 && memcmp(name, ":method", 7) == 0 && !st->method)
            st->method = xstrndup((const char *)value, valuelen);
        else if (c->srv && namelen == 5 && memcmp(name, ":path", 5) == 0 && !st->path)
            st->path = xstrndup((const char *)value, valuelen);
        else if (!c->srv && namelen == 7 && memcmp(name, ":status", 7) == 0)
            st->status = atoi((const char *)value);
        return 0;
    }
    if (st->nh == H2_MAX_HEADERS) {
        st->too_many_headers = true;
        return 0;
    }
    st->hname[st->nh] = xstrndup((const char *)name, namelen);
    st->hval[st->nh] = xstrndup((const char *)value, valuelen);
    st->nh++;
    return 0;
}

/* Route ST's request (server): 404/405/413/431/400 answer at once. */
static void
stream_route(struct h2_stream *st)
{
    const struct h2_router *r = st->conn->srv->router;
    const struct h2_route *rt;
    struct buf allow = BUF_INIT;
    const char *cl;
    char *q;
    int m;

    if (!st->method || !st->path || st->path[0] != '/') {
        st->rejected = true;
        h2_stream_error(st, 400, "invalid_argument", "request without :method or origin :path");
        return;
    }
    if (st->too_many_headers) {
        st->rejected = true;
        h2_stream_error(st, 431, "invalid_argument", "more than %d request headers",
                        H2_MAX_HEADERS);
        return;
    }
    q = strchr(st->path, '?');
    if (q) {
        *q = '\0';
        st->req.query = q + 1;
    }
    st->req.method = st->method;
    st->req.path = st->path;
    for (rt = r->head; rt; rt = rt->next) {
        m = route_match(rt, st->path, NULL);
        if (m < 0) {
            st->rejected = true;
            h2_stream_error(st, 400, "invalid_argument", "bad percent-encoding in path");
            buf_fini(&allow);
            return;
        }
        if (!m)
            continue;
        if (strcmp(rt->method, st->method) != 0) {
            if (!strstr(buf_cstr(&allow), rt->method)) {
                if (allow.len)
                    buf_puts(&allow, ", ");
                buf_puts(&allow, rt->method);
            }
            continue;
        }
        route_match(rt, st->path, st);
        st->route = rt;
        break;
    }
    if (!st->route) {
        st->rejected = true;
        if (allow.len) {
            struct h2_header h = { "allow", buf_cstr(&allow) };
            struct buf body = BUF_INIT;

            buf_puts(&body, "{\"error\":{\"code\":\"method_not_allowed\",\"message\":");
            buf_printf(&body, "\"method %s not allowed here (allowed: %s)\"}}\n",
                       strchr(st->method, '"') ? "?" : st->method, buf_cstr(&allow));
            h2_stream_respond(st, 405, "application/json", &h, 1, body.data, body.len);
            buf_fini(&body);
        } else {
            h2_stream_error(st, 404, "not_found", "no such endpoint");
        }
        buf_fini(&allow);
        return;
    }
    buf_fini(&allow);
    /* Authorize before buffering anything a caller sends. */
    if (!(st->route->flags & H2_ROUTE_PUBLIC) && st->conn->srv->auth_fn &&
        !st->conn->srv->auth_fn(st, st->conn->srv->auth_arg)) {
        st->rejected = true;
        return;
    }
    cl = h2_stream_header(st, "content-length");
    if (cl && !(st->route->flags & H2_ROUTE_STREAMING) &&
        strtoull(cl, NULL, 10) > st->conn->lim.max_body) {
        st->rejected = true;
        h2_stream_error(st, 413, "payload_too_large", "request body over %zu bytes",
                        st->conn->lim.max_body);
        return;
    }
    if (st->route->flags & H2_ROUTE_STREAMING) {
        st->handled = true;
        st->route->fn(st, &st->req, st->route->arg);
    }
}

static void
stream_remote_end(struct h2_stream *st)
{
    st->remote_ended = true;
    if (st->rejected)
        return;
    if (st->conn->srv && st->route && !st->handled) {
        st->handled = true;
        st->route->fn(st, &st->req, st->route->arg);
        return;
    }
    if (st->cbs.on_end)
        st->cbs.on_end(st, st->arg);
}

static int
on_frame_recv(nghttp2_session *sess, const nghttp2_frame *f, void *ud)
{
    struct h2_conn *c = ud;
    struct h2_stream *st;

    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    st = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (!st || st->closed)
        return 0;
    if (f->hd.type == NGHTTP2_HEADERS) {
        if (c->srv && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
            stream_route(st);
        } else if (!c->srv && f->headers.cat == NGHTTP2_HCAT_RESPONSE) {
            if (st->status >= 200 && st->cbs.on_response)
                st->cbs.on_response(st, st->status, st->arg);
        }
    }
    if (!st->closed && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        stream_remote_end(st);
    return 0;
}

static int
on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
              void *ud)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(sess, id);
    struct h2_conn *c = ud;

    (void)flags;
    if (!st || st->closed || st->rejected) {
        nghttp2_session_consume(sess, id, len);
        /* A rejected request body is read and dropped rather than reset at
         * once: RFC 9113 section 8.1 allows RST_STREAM(NO_ERROR) here, but
         * common clients (curl 7.88) then discard the response. Past a
         * bound we reset anyway. */
        if (st && !st->closed && (st->discarded += len) > H2_DISCARD_MAX)
            nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, id, NGHTTP2_NO_ERROR);
        return 0;
    }
    if (c->srv)
        c->srv->stats.bytes_in += len;
    if (c->srv && st->route && !(st->route->flags & H2_ROUTE_STREAMING)) {
        nghttp2_session_consume(sess, id, len);
        if (st->req.body.len + len > c->lim.max_body) {
            st->rejected = true;
            buf_fini(&st->req.body);
            h2_stream_error(st, 413, "payload_too_large", "request body over %zu bytes",
                            c->lim.max_body);
            return 0;
        }
        buf_append(&st->req.body, data, len);
        return 0;
    }
    if (st->cbs.on_data)
        st->cbs.on_data(st, data, len, st->arg);
    if (st->closed)
        return 0;
    if (st->paused)
        st->unconsumed += len;
    else
        nghttp2_session_consume(sess, id, len);
    return 0;
}

static int
on_stream_close(nghttp2_session *sess, int32_t id, uint32_t code, void *ud)
{
    struct h2_stream *st = nghttp2_session_get_stream_user_data(sess, id);

    (void)ud;
    if (!st)
        return 0;
    nghttp2_session_set_stream_user_data(sess, id, NULL);
    stream_close(st, code);
    return 0;
}

/* ------------------------------------------------------------------ connections */

static void
conn_free_now(struct h2_conn *c)
{
    struct h2_server *s = c->srv;

    c->freeing = true;
    while (c->streams) {
        struct h2_stream *st = c->streams;

        if (c->sess)
            nghttp2_session_set_stream_user_data(c->sess, st->id, NULL);
        stream_close(st, NGHTTP2_CANCEL);
    }
    if (c->close_fn)
        c->close_fn(c, c->close_arg);
    if (s) {
        if (c->prev)
            c->prev->next = c->next;
        else
            s->conns = c->next;
        if (c->next)
            c->next->prev = c->prev;
        s->nconns--;
    }
    if (c->sess)
        nghttp2_session_del(c->sess);
    if (c->kick)
        event_free(c->kick);
    if (c->idle)
        event_free(c->idle);
    if (c->bev)
        bufferevent_free(c->bev);
    free(c);
    if (s && s->close_fn)
        s->close_fn(NULL, s->close_arg);
}

void
h2_conn_free(struct h2_conn *c)
{
    if (!c || c->freeing)
        return;
    if (c->busy) {
        c->dead = true;
        return;
    }
    conn_free_now(c);
}

/* End of a libevent callback: free the connection if it died meanwhile.
 * Returns true when it is gone. */
static bool
conn_unbusy(struct h2_conn *c)
{
    if (--c->busy == 0 && c->dead) {
        conn_free_now(c);
        return true;
    }
    return false;
}

/* Arm the idle timer while the connection has no stream, disarm it when it
 * has one. */
static void
idle_update(struct h2_conn *c)
{
    struct timeval tv;

    if (!c->idle || c->idle_fired)
        return;
    if (c->nstreams) {
        evtimer_del(c->idle);
        return;
    }
    if (evtimer_pending(c->idle, NULL))
        return;
    tv.tv_sec = c->lim.idle_timeout_ms / 1000;
    tv.tv_usec = (c->lim.idle_timeout_ms % 1000) * 1000;
    evtimer_add(c->idle, &tv);
}

/* Idle: GOAWAY first; if the connection is still there a second later
 * (a peer that does not read, a handshake that never finished), close it. */
static void
idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;
    struct timeval grace = { 1, 0 };

    (void)fd;
    (void)what;
    if (c->idle_fired) {
        h2_conn_free(c);
        return;
    }
    if (c->nstreams)
        return;
    log_debug("h2: closing an idle connection");
    if (c->srv)
        c->srv->stats.idle_closed++;
    c->idle_fired = true;
    h2_conn_shutdown(c);
    evtimer_add(c->idle, &grace);
}

/* Hand queued frames to the bufferevent; fire drain callbacks; close when
 * the session is finished. Called with c->busy held. */
static void
conn_send(struct h2_conn *c)
{
    struct h2_stream *st;
    int rc;

    if (c->dead)
        return;
    /* Send, then run one pending drain callback (it may write more, or
     * change the stream list), and repeat until none is pending. Each
     * callback clears its flag and sending stops at the connection's
     * output bound, so this ends. */
    for (;;) {
        bool called = false;

        if ((rc = nghttp2_session_send(c->sess)) != 0) {
            log_debug("h2: send: %s", nghttp2_strerror(rc));
            c->dead = true;
            return;
        }
        for (st = c->streams; st; st = st->next) {
            if (!st->want_drain)
                continue;
            st->want_drain = false;
            if (st->cbs.on_drain) {
                st->cbs.on_drain(st, st->arg);
                called = true;
                break;
            }
        }
        if (!called || c->dead)
            break;
    }
    idle_update(c);
    if (!nghttp2_session_want_read(c->sess) && !nghttp2_session_want_write(c->sess)) {
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
            c->dead = true;
        } else {
            c->closing = true;
            bufferevent_setwatermark(c->bev, EV_WRITE, 0, 0);
        }
    }
}

static void
kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct h2_conn *c = arg;

    (void)fd;
    (void)what;
    c->busy++;
    conn_send(c);
    conn_unbusy(c);
}

static void
conn_kick(struct h2_conn *c)
{
    if (!c->dead && !event_pending(c->kick, EV_TIMEOUT, NULL))
        event_active(c->kick, EV_TIMEOUT, 0);
}

static void
read_cb(struct bufferevent *bev, void *arg)
{
    struct h2_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    nghttp2_ssize rv;

    c->busy++;
    if (len && !c->dead) {
        rv = nghttp2_session_mem_recv2(c->sess, evbuffer_pullup(in, -1), len);
        if (rv < 0) {
            log_debug("h2: receive: %s", nghttp2_strerror((int)rv));
            if (c->srv)
                c->srv->stats.protocol_errors++;
            c->dead = true;
        } else {
            evbuffer_drain(in, (size_t)rv);
        }
    }
    conn_send(c);
    conn_unbusy(c);
}

static void
write_cb(struct bufferevent *bev, void *arg)
{
    struct h2_conn *c = arg;

    c->busy++;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        c->dead = true;
    else
        conn_send(c);
    conn_unbusy(c);
}

static void
event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct h2_conn *c = arg;

    (void)bev;
    c->busy++;
    if (what & BEV_EVENT_CONNECTED)
        conn_send(c);
    else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
        c->dead = true;
    conn_unbusy(c);
}

/* nghttp2's frame and buffer allocations share libevent's block cache:
 * a bulk stream allocates and frees one per DATA frame. */
static void *
h2_mem_malloc(size_t n, void *ud)
{
    (void)ud;
    return loop_mem_alloc(n);
}

static void
h2_mem_free(void *p, void *ud)
{
    (void)ud;
    loop_mem_free(p);
}

static void *
h2_mem_calloc(size_t k, size_t n, void *ud)
{
    void *p;

    (void)ud;
    if (n && k > SIZE_MAX / n)
        return NULL;
    p = loop_mem_alloc(k * n);
    memset(p, 0, k * n);
    return p;
}

static void *
h2_mem_realloc(void *p, size_t n, void *ud)
{
    (void)ud;
    return loop_mem_realloc(p, n);
}

static nghttp2_mem h2_mem = { NULL, h2_mem_malloc, h2_mem_free, h2_mem_calloc, h2_mem_realloc };

static struct h2_conn *
conn_new(struct event_base *base, struct bufferevent *bev, bool server, const struct h2_limits *lim,
         struct err *e)
{
    struct h2_conn *c = xcalloc(1, sizeof(*c));
    nghttp2_session_callbacks *cbs;
    nghttp2_option *opt;
    nghttp2_settings_entry iv[3];
    size_t niv = 0;
    int rc;

    c->base = base;
    c->bev = bev;
    c->scheme = "http";
    limits_fill(&c->lim, lim);
    c->kick = event_new(base, -1, 0, kick_cb, c);
    if (!c->kick)
        BUG();
    if (c->lim.idle_timeout_ms && !(c->idle = evtimer_new(base, idle_cb, c)))
        BUG();
    if (nghttp2_session_callbacks_new(&cbs) != 0 || nghttp2_option_new(&opt) != 0)
        BUG(); /* allocation only */
    nghttp2_session_callbacks_set_send_callback2(cbs, send_cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    /* We grant receive window ourselves (back-pressure on paused streams). */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (server)
        rc = nghttp2_session_server_new3(&c->sess, cbs, c, opt, &h2_mem);
    else
        rc = nghttp2_session_client_new3(&c->sess, cbs, c, opt, &h2_mem);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_option_del(opt);
    if (rc != 0) {
        err_set(e, ENOMEM, "creating HTTP/2 session: %s", nghttp2_strerror(rc));
        conn_free_now(c);
        return NULL;
    }
    if (server) {
        iv[niv].settings_id = NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS;
        iv[niv++].value = c->lim.max_streams;
    } else {
        iv[niv].settings_id = NGHTTP2_SETTINGS_ENABLE_PUSH;
        iv[niv++].value = 0;
    }
    iv[niv].settings_id = NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE;
    iv[niv++].value = c->lim.stream_window;
    nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, niv);
    nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    bufferevent_setcb(bev, read_cb, write_cb, event_cb, c);
    bufferevent_setwatermark(bev, EV_WRITE, H2_CONN_OUT_HIGH / 2, 0);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    idle_update(c);
    conn_kick(c);
    return c;
}

void
h2_conn_shutdown(struct h2_conn *c)
{
    if (!c || c->dead)
        return;
    if (c->srv)
        nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->sess), NGHTTP2_NO_ERROR,
                              NULL, 0);
    else
        nghttp2_session_terminate_session(c->sess, NGHTTP2_NO_ERROR);
    conn_kick(c);
}

const struct h2_peer *
h2_conn_peer(const struct h2_conn *c)
{
    conn_resolve_tls_peer((struct h2_conn *)c);
    return &c->peer;
}

void
h2_conn_set_close_cb(struct h2_conn *c, h2_conn_close_fn fn, void *arg)
{
    c->close_fn = fn;
    c->close_arg = arg;
}

size_t
h2_conn_stream_count(const struct h2_conn *c)
{
    return c->nstreams;
}

/* ------------------------------------------------------------------ server */

struct h2_server *
h2_server_new(struct event_base *base, const struct h2_router *router,
              const struct h2_limits *limits)
{
    struct h2_server *s = xcalloc(1, sizeof(*s));

    s->base = base;
    s->router = router;
    limits_fill(&s->lim, limits);
    return s;
}

void
h2_server_free(struct h2_server *s)
{
    if (!s)
        return;
    s->close_fn = NULL;
    while (s->conns)
        conn_free_now(s->conns);
    free(s);
}

struct h2_conn *
h2_server_adopt(struct h2_server *s, struct bufferevent *bev, const struct h2_peer *peer,
                struct err *e)
{
    struct h2_conn *c;

    if (s->shutting_down) {
        bufferevent_free(bev);
        err_set(e, ESHUTDOWN, "server is shutting down");
        return NULL;
    }
    if (!(c = conn_new(s->base, bev, true, &s->lim, e)))
        return NULL;
    c->srv = s;
    s->stats.conns_total++;
    if (peer)
        c->peer = *peer;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    return c;
}

void
h2_server_shutdown(struct h2_server *s)
{
    s->shutting_down = true;
    for (struct h2_conn *c = s->conns; c; c = c->next) {
        nghttp2_submit_shutdown_notice(c->sess);
        h2_conn_shutdown(c);
    }
}

size_t
h2_server_conn_count(const struct h2_server *s)
{
    return s->nconns;
}

void
h2_server_set_auth(struct h2_server *s, h2_auth_fn fn, void *arg)
{
    s->auth_fn = fn;
    s->auth_arg = arg;
}

void
h2_server_get_stats(const struct h2_server *s, struct h2_server_stats *out)
{
    *out = s->stats;
}

void
h2_server_set_conn_close_cb(struct h2_server *s, h2_conn_close_fn fn, void *arg)
{
    s->close_fn = fn;
    s->close_arg = arg;
}

/* ------------------------------------------------------------------ client */

struct h2_conn *
h2_client_new(struct event_base *base, struct bufferevent *bev, bool tls,
              const struct h2_limits *limits, struct err *e)
{
    struct h2_conn *c = conn_new(base, bev, false, limits, e);

    if (c)
        c->scheme = tls ? "https" : "http";
    return c;
}

int
h2_client_connect_unix(struct event_base *base, const char *path, const struct h2_limits *limits,
                       struct h2_conn **out, struct err *e)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct bufferevent *bev;
    int fd;

    *out = NULL;
    if (buf_copy_fixed(sa.sun_path, sizeof(sa.sun_path), path) < 0)
        return err_set(e, ENAMETOOLONG, "socket path %s: too long", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return err_errno(e, "socket");
    /* A local connect completes (or fails) at once. */
    if (RETRY_EINTR(connect(fd, (struct sockaddr *)&sa, sizeof(sa))) < 0) {
        int rc = err_errno(e, "connecting to %s", path);
        close(fd);
        return rc;
    }
    evutil_make_socket_nonblocking(fd);
    bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return err_set(e, ENOMEM, "bufferevent for %s", path);
    }
    if (!(*out = h2_client_new(base, bev, false, limits, e)))
        return -(e && e->code ? e->code : EIO);
    return 0;
}

struct h2_stream *
h2_client_request(struct h2_conn *c, const char *method, const char *path,
                  const struct h2_header *hdrs, size_t nhdrs, const void *body, size_t len,
                  bool open_body, const struct h2_stream_cbs *cbs, void *arg, struct err *e)
{
    struct nv_list l;
    nghttp2_data_provider2 prd;
    struct h2_stream *st;
    int32_t id;

    if (c->dead || c->closing) {
        err_set(e, EPIPE, "%s %s: connection closed", method, path);
        return NULL;
    }
    if (nv_build(&l, 0, NULL, NULL, 0, -1) < 0 || nhdrs > H2_MAX_HEADERS) {
        err_set(e, E2BIG, "%s %s: too many headers", method, path);
        return NULL;
    }
    nv_add(&l, ":method", method);
    nv_add(&l, ":scheme", c->scheme);
    nv_add(&l, ":authority", "localhost");
    nv_add(&l, ":path", path);
    for (size_t i = 0; i < nhdrs; i++)
        nv_add(&l, hdrs[i].name, hdrs[i].value);
    st = stream_new(c, -1);
    h2_stream_set_cbs(st, cbs, arg);
    if (len)
        evbuffer_add(st->out, body, len);
    st->out_started = true;
    st->out_ended = !open_body;
    prd.source.ptr = st;
    prd.read_callback = data_read_cb;
    id = nghttp2_submit_request2(c->sess, NULL, l.nv, l.n, (len || open_body) ? &prd : NULL, st);
    if (id < 0) {
        stream_unlink(st);
        stream_free(st);
        err_set(e, EPIPE, "%s %s: %s", method, path, nghttp2_strerror(id));
        return NULL;
    }
    st->id = id;
    conn_kick(c);
    return st;
}

struct call_state {
    bool done;
    int status;
    uint32_t code;
    struct buf *resp;
    size_t max;
    bool too_big;
};

static void
call_on_response(struct h2_stream *st, int status, void *arg)
{
    (void)st;
    ((struct call_state *)arg)->status = status;
}

static void
call_on_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct call_state *cs = arg;

    if (cs->resp->len + n > cs->max) {
        cs->too_big = true;
        h2_stream_reset(st, NGHTTP2_CANCEL);
        return;
    }
    buf_append(cs->resp, p, n);
}

static void
call_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct call_state *cs = arg;

    (void)st;
    cs->done = true;
    cs->code = code;
}

int
h2_client_call(struct h2_conn *c, const char *method, const char *path,
               const struct h2_header *hdrs, size_t nhdrs, const void *body, size_t len,
               int *status, struct buf *resp, size_t max, struct err *e)
{
    static const struct h2_stream_cbs cbs = {
        .on_response = call_on_response,
        .on_data = call_on_data,
        .on_close = call_on_close,
    };
    struct call_state cs = { .resp = resp, .max = max };
    struct event_base *base = c->base;

    *status = 0;
    if (!h2_client_request(c, method, path, hdrs, nhdrs, body, len, false, &cbs, &cs, e))
        return -EPIPE;
    while (!cs.done)
        if (event_base_loop(base, EVLOOP_ONCE) < 0)
            return err_set(e, EIO, "%s %s: event loop failed", method, path);
    if (cs.too_big)
        return err_set(e, EFBIG, "%s %s: response over %zu bytes", method, path, max);
    if (cs.status == 0)
        return err_set(e, EPIPE, "%s %s: no response (%s)", method, path,
                       cs.code ? nghttp2_http2_strerror(cs.code) : "connection closed");
    *status = cs.status;
    if (cs.code != NGHTTP2_NO_ERROR)
        return err_set(e, EPIPE, "%s %s: stream reset: %s", method, path,
                       nghttp2_http2_strerror(cs.code));
    return 0;
}

/* ------------------------------------------------------------------ helpers */

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
h2_pct_decode(const char *s, size_t n, struct buf *out)
{
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];

        if (ch == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -EINVAL;
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (ch == '\0')
            return -EINVAL;
        buf_putc(out, ch);
    }
    return 0;
}

int
h2_req_query(const struct h2_req *req, const char *key, struct buf *out)
{
    const char *p = req->query;

    if (!p)
        return 0;
    while (*p) {
        const char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        struct buf k = BUF_INIT;
        int rc = h2_pct_decode(p, klen, &k);

        if (rc < 0) {
            buf_fini(&k);
            return rc;
        }
        if (strcmp(buf_cstr(&k), key) == 0) {
            buf_fini(&k);
            buf_reset(out);
            if (eq)
                return h2_pct_decode(eq + 1, len - klen - 1, out) < 0 ? -EINVAL : 1;
            return 1;
        }
        buf_fini(&k);
        if (!amp)
            break;
        p = amp + 1;
    }
    return 0;
}

int
h2_peer_from_unix_fd(int fd, struct h2_peer *out)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);

    memset(out, 0, sizeof(*out));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return -errno;
    out->kind = H2_PEER_UNIX;
    out->uid = cred.uid;
    out->gid = cred.gid;
    out->pid = cred.pid;
    return 0;
}

int
h2_listen_unix(const char *path, unsigned mode, struct err *e)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    int fd, rc;

    if (buf_copy_fixed(sa.sun_path, sizeof(sa.sun_path), path) < 0)
        return err_set(e, ENAMETOOLONG, "socket path %s: longer than %zu bytes", path,
                       sizeof(sa.sun_path) - 1);
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode))
            return err_set(e, EEXIST, "%s exists and is not a socket", path);
        if (unlink(path) < 0)
            return err_errno(e, "removing stale socket %s", path);
    }
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return err_errno(e, "socket");
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        rc = err_errno(e, "binding %s", path);
        close(fd);
        return rc;
    }
    if (chmod(path, mode) < 0 || listen(fd, 128) < 0) {
        rc = err_errno(e, "listening on %s", path);
        close(fd);
        return rc;
    }
    return fd;
}

/* ------------------------------------------------------------------ frames */

int
h2_frame_put(struct buf *out, uint8_t type, const void *p, size_t n)
{
    unsigned char hdr[H2_FRAME_HDR];

    if (type < H2_FRAME_INIT || type > H2_FRAME_ERROR)
        return -EINVAL;
    if (n > H2_FRAME_MAX)
        return -EMSGSIZE;
    hdr[0] = type;
    hdr[1] = (unsigned char)(n >> 24);
    hdr[2] = (unsigned char)(n >> 16);
    hdr[3] = (unsigned char)(n >> 8);
    hdr[4] = (unsigned char)n;
    buf_append(out, hdr, sizeof(hdr));
    if (n)
        buf_append(out, p, n);
    return 0;
}

int
h2_frame_parse(const uint8_t *p, size_t n, struct h2_frame *f, size_t *used, struct err *e)
{
    uint32_t len;

    *used = 0;
    if (n < 1)
        return 0;
    if (p[0] < H2_FRAME_INIT || p[0] > H2_FRAME_ERROR)
        return err_set(e, EBADMSG, "frame type 0x%02x unknown", p[0]);
    if (n < H2_FRAME_HDR)
        return 0;
    len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 8 | p[4];
    if (len > H2_FRAME_MAX)
        return err_set(e, EBADMSG, "frame of %u bytes over the %d limit", len, H2_FRAME_MAX);
    if (n - H2_FRAME_HDR < len)
        return 0;
    f->type = p[0];
    f->len = len;
    f->payload = p + H2_FRAME_HDR;
    *used = H2_FRAME_HDR + len;
    return 1;
}
