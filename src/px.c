/*
 * px.c: the egress proxy engine (see include/px.h).
 *
 * One `struct px_conn` per client connection owns everything about it: the
 * client and upstream bufferevents (plain sockets, or TLS filters stacked on
 * them), the pinned policy generation, the request and response being
 * relayed, its timer. Callbacks never free a connection directly: they mark
 * it dead and the deferred `wake` event frees it, so no callback can run on
 * freed state.
 *
 * The life of a connection:
 *
 *   HEAD     read a request head (8 KiB max) from the client
 *     CONNECT  -> L4 decision -> RESOLVE -> SSRF -> CONNECTING -> "200" ->
 *                 SNIFF: TLS -> HANDSHAKE (both sides) -> REQ (HTTP relay)
 *                        HTTP -> REQ;  other -> RAW (or 403 on L7 endpoints)
 *                 (tls: skip -> RAW at once)
 *     absolute -> L4 (+ L7) decision -> RESOLVE -> SSRF -> CONNECTING ->
 *                 send one request, relay its response -> HEAD again
 *   REQ      read a request head inside the tunnel (16 KiB), check its
 *            authority and (on inspected endpoints) the L7 rules, forward it
 *            and its body, relay the response -> REQ again
 *   RAW      copy bytes both ways until either side ends
 *   CLOSING  flush what is queued to the client, then free
 */
#include "px.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "ca.h"
#include "http1.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "tls.h"
#include "xfuncs.h"

#define PX_HIGH (256 * 1024)        /* a relay's output bound: stop reading the other side */
#define PX_MAX_ADDRS 16             /* resolved addresses kept */
#define PX_IO_CHUNK (64 * 1024)     /* largest single read or write on a socket */
#define PX_SPLICE_PIPE (256 * 1024) /* pipe size per spliced direction */

enum px_state {
    PX_HEAD = 0,
    PX_RESOLVE,
    PX_CONNECTING,
    PX_SNIFF,
    PX_HANDSHAKE,
    PX_REQ,
    PX_RAW,
    PX_CLOSING,
};

struct px_map {
    char host[256];
    struct policy_addr addr;
};

struct px_listener {
    struct evconnlistener *lev;
    struct px_server *srv;
    struct event *backoff; /* re-enable after an accept failure */
    unsigned failures;
    unsigned port;
    struct px_listener *next;
};

struct px_conn;

/* One direction of a spliced relay: SRC -> pipe -> DST (fds borrowed from
 * the connection's bufferevents). */
struct px_splice_dir {
    struct px_conn *c;
    int src, dst;
    int pipe[2];
    size_t inpipe; /* bytes in the pipe not yet written to DST */
    bool eof, done;
    struct event *rd, *wr;
    uint64_t *count;
};

struct px_splice {
    struct px_splice_dir d[2]; /* [0] client -> upstream, [1] upstream -> client */
    bool counted;              /* in the server's nspliced */
};

struct px_server {
    struct loop *loop;
    struct event_base *base;
    struct evdns_base *dns;
    struct policy *policy;
    struct ca *ca;
    struct tls_client_ctx *upstream;
    struct px_opts o;
    struct px_map *map;
    size_t nmap;
    struct px_listener *listeners;
    struct px_conn *conns;
    unsigned nconns;
    unsigned nspliced, max_spliced; /* pipes cost 4 descriptors a tunnel */
    uint64_t next_id;
};

struct px_conn {
    struct px_server *srv;
    struct px_conn *prev, *next;
    uint64_t id;
    enum px_state state;
    bool dead;
    int fd_peer_port;
    char peer[64];

    struct bufferevent *cli;
    struct bufferevent *up;
    struct tls_conn *cli_tls, *up_tls;
    struct ca_leaf *leaf;
    struct event *wake; /* deferred work: free, DNS result, buffered input */
    struct event *timer;
    uint64_t last_active_ms;
    uint64_t closing_since_ms;
    uint64_t head_started_ms; /* first byte of a still incomplete request head */
    bool drain_both;          /* CLOSING flushes the upstream's output too */
    bool cli_eof, up_eof;     /* raw relay half-closes */
    bool cli_shut, up_shut;
    bool up_failed;     /* upstream TLS failed before the client's finished */
    char up_error[384]; /* and why */
    /* Raw relay between two plain sockets runs in the kernel (splice). */
    bool splice_pending; /* waiting for the bufferevents' output to drain */
    struct px_splice *sp;

    /* The decision this connection (tunnel) or request (forward) runs under. */
    struct policy *pol;
    bool tunnel;     /* CONNECT; else forward proxy */
    bool l7;         /* inspected endpoint */
    bool tls_skip;   /* tls: skip */
    bool terminated; /* TLS terminated inside the tunnel */
    char policy_name[128];
    char host[256];
    unsigned port;

    /* DNS */
    struct evdns_getaddrinfo_request *dns_req;
    bool dns_done;
    int dns_result;
    struct policy_addr addrs[PX_MAX_ADDRS];
    size_t naddrs, next_addr;

    /* The HTTP exchange in flight. */
    bool have_req;
    struct http1_request *req; /* allocated while a request is handled */
    struct http1_body *req_body;
    bool req_body_done;
    struct buf pending; /* forward: the rewritten request waiting for the dial */
    bool have_resp;
    struct http1_response *resp;
    struct http1_body *resp_body;
    bool resp_started; /* bytes of a response went to the client */
    bool keep_alive;   /* after this exchange */
    char method[32];
    char path[512]; /* for logs: path without query */
    unsigned nreq;

    uint64_t bytes_up, bytes_down;
    uint64_t start_ms;
};

static void px_conn_close(struct px_conn *c);
static void px_splice_free(struct px_conn *c);
static void px_process_input(struct px_conn *c);
static void px_pump_response(struct px_conn *c);
static void px_cli_read(struct bufferevent *bev, void *arg);
static void px_cli_write(struct bufferevent *bev, void *arg);
static void px_cli_event(struct bufferevent *bev, short what, void *arg);
static void px_up_read(struct bufferevent *bev, void *arg);
static void px_up_write(struct bufferevent *bev, void *arg);
static void px_up_event(struct bufferevent *bev, short what, void *arg);
static void px_dial_next(struct px_conn *c);

/* ------------------------------------------------------------ helpers */

static uint64_t
px_now(struct px_conn *c)
{
    return loop_now_ms(c->srv->loop);
}

static void
px_touch(struct px_conn *c)
{
    c->last_active_ms = px_now(c);
}

/* Arm the phase timer: SECS from now. */
static void
px_timer(struct px_conn *c, unsigned secs)
{
    struct timeval tv = { .tv_sec = secs, .tv_usec = 0 };

    evtimer_add(c->timer, &tv);
}

static void
px_wake(struct px_conn *c)
{
    event_active(c->wake, 0, 0);
}

static const char *
px_state_name(enum px_state s)
{
    static const char *const names[] = { "head",      "resolve", "connecting", "sniff",
                                         "handshake", "request", "relay",      "closing" };

    return names[s];
}

static void
px_port_str(char out[8], unsigned port)
{
    buf_fmt_fixed(out, 8, "%u", port);
}

/* One decision record. Never a body, a query string or a header value. */
static void
px_log_decision(struct px_conn *c, const char *action, const char *stage, const char *method,
                const char *path, const char *reason)
{
    char port[8], id[24];

    px_port_str(port, c->port);
    buf_fmt_fixed(id, sizeof(id), "%llu", (unsigned long long)c->id);
    log_kv(strcmp(action, "deny") == 0 ? LOG_LVL_WARN : LOG_LVL_INFO, "decision", "conn", id,
           "action", action, "stage", stage, "peer", c->peer, "binary",
           c->srv->o.identity_off ? "-" : NULL, "host", c->host[0] ? c->host : NULL, "port",
           c->port ? port : NULL, "method", method, "path", path, "policy",
           c->policy_name[0] ? c->policy_name : NULL, "reason", reason && *reason ? reason : NULL,
           NULL);
}

/* Copy the path part of TARGET (no query) for logs. */
static void
px_log_path(char *out, size_t size, const char *target)
{
    size_t n = strcspn(target, "?");

    if (n >= size)
        n = size - 1;
    memcpy(out, target, n);
    out[n] = '\0';
}

/* ------------------------------------------------------------ replies */

/* Answer the client and close: STATUS with a body (JSON unless TYPE says
 * otherwise), Connection: close. EXTRA is more header lines or NULL. */
static void
px_reply(struct px_conn *c, int status, const char *reason_phrase, const char *type,
         const char *extra, const struct buf *body)
{
    struct buf out = BUF_INIT;
    size_t blen = body ? body->len : 0;

    if (c->resp_started || !c->cli) {
        px_conn_close(c);
        return;
    }
    buf_printf(&out, "HTTP/1.1 %d %s\r\n", status, reason_phrase);
    if (blen)
        buf_printf(&out, "Content-Type: %s\r\n", type ? type : "application/json");
    buf_printf(&out, "Content-Length: %zu\r\nConnection: close\r\n", blen);
    if (extra)
        buf_puts(&out, extra);
    buf_puts(&out, "\r\n");
    if (blen)
        buf_append(&out, body->data, blen);
    bufferevent_write(c->cli, out.data, out.len);
    buf_fini(&out);
    c->resp_started = true;
    c->keep_alive = false;
    px_conn_close(c);
}

/* {"error":ERROR,"detail":DETAIL[,"reason":REASON]} */
static void
px_reply_json(struct px_conn *c, int status, const char *phrase, const char *error,
              const char *detail, const char *reason)
{
    struct buf body = BUF_INIT;

    buf_puts(&body, "{\"error\":");
    buf_put_json_str(&body, error, strlen(error));
    buf_puts(&body, ",\"detail\":");
    buf_put_json_str(&body, detail, strlen(detail));
    if (reason) {
        buf_puts(&body, ",\"reason\":");
        buf_put_json_str(&body, reason, strlen(reason));
    }
    buf_puts(&body, "}");
    px_reply(c, status, phrase, NULL, NULL, &body);
    buf_fini(&body);
}

static void
px_reply_empty(struct px_conn *c, int status, const char *phrase)
{
    px_reply(c, status, phrase, NULL, NULL, NULL);
}

static void
px_json_kv(struct buf *b, const char *key, const char *val, bool comma)
{
    if (comma)
        buf_putc(b, ',');
    buf_put_json_str(b, key, strlen(key));
    buf_putc(b, ':');
    buf_put_json_str(b, val, strlen(val));
}

/* The structured L7 denial (reference: cli §4.3). */
static void
px_reply_l7_deny(struct px_conn *c, const char *method, const char *path, const char *policy,
                 const char *reason)
{
    struct buf body = BUF_INIT, rule = BUF_INIT, extra = BUF_INIT;
    const char *binary = "-";
    int i;

    buf_printf(&rule, "%s %s", method, path);
    buf_puts(&body, "{");
    px_json_kv(&body, "error", "policy_denied", false);
    px_json_kv(&body, "policy", policy ? policy : "", true);
    px_json_kv(&body, "rule", buf_cstr(&rule), true);
    px_json_kv(&body, "detail", reason, true);
    px_json_kv(&body, "layer", "l7", true);
    px_json_kv(&body, "protocol", "rest", true);
    px_json_kv(&body, "method", method, true);
    px_json_kv(&body, "path", path, true);
    px_json_kv(&body, "host", c->host, true);
    buf_printf(&body, ",\"port\":%u", c->port);
    px_json_kv(&body, "binary", binary, true);
    buf_puts(&body, ",\"rule_missing\":{");
    px_json_kv(&body, "type", "rest_allow", false);
    px_json_kv(&body, "layer", "l7", true);
    px_json_kv(&body, "method", method, true);
    px_json_kv(&body, "path", path, true);
    px_json_kv(&body, "host", c->host, true);
    buf_printf(&body, ",\"port\":%u", c->port);
    px_json_kv(&body, "binary", binary, true);
    buf_puts(&body, "},\"next_steps\":[]}");
    /* The policy name goes into a header: only printable bytes. */
    buf_puts(&extra, "X-OpenShell-Policy: ");
    for (i = 0; policy && policy[i]; i++)
        buf_putc(&extra, policy[i] >= 0x20 && policy[i] < 0x7f ? policy[i] : '?');
    buf_puts(&extra, "\r\n");
    px_reply(c, 403, "Forbidden", NULL, buf_cstr(&extra), &body);
    buf_fini(&body);
    buf_fini(&rule);
    buf_fini(&extra);
}

/* ------------------------------------------------------------ lifetime */

static void
px_exchange_reset(struct px_conn *c)
{
    if (c->have_req)
        http1_request_fini(c->req);
    if (c->have_resp)
        http1_response_fini(c->resp);
    free(c->req);
    free(c->resp);
    c->req = NULL;
    c->resp = NULL;
    http1_body_free(c->req_body);
    http1_body_free(c->resp_body);
    c->req_body = c->resp_body = NULL;
    c->have_req = c->have_resp = c->req_body_done = false;
    buf_reset(&c->pending);
}

static void
px_conn_free(struct px_conn *c)
{
    struct px_server *s = c->srv;
    char up[24], down[24], ms[24], id[24], nreq[16];

    buf_fmt_fixed(id, sizeof(id), "%llu", (unsigned long long)c->id);
    buf_fmt_fixed(up, sizeof(up), "%llu", (unsigned long long)c->bytes_up);
    buf_fmt_fixed(down, sizeof(down), "%llu", (unsigned long long)c->bytes_down);
    buf_fmt_fixed(nreq, sizeof(nreq), "%u", c->nreq);
    buf_fmt_fixed(ms, sizeof(ms), "%llu", (unsigned long long)(px_now(c) - c->start_ms));
    log_kv(LOG_LVL_DEBUG, "close", "conn", id, "host", c->host[0] ? c->host : NULL, "bytes_up", up,
           "bytes_down", down, "duration_ms", ms, "requests", nreq, NULL);
    if (c->dns_req)
        evdns_getaddrinfo_cancel(c->dns_req);
    px_splice_free(c);
    if (c->cli)
        bufferevent_free(c->cli);
    if (c->up)
        bufferevent_free(c->up);
    ca_leaf_put(c->leaf);
    px_exchange_reset(c);
    buf_fini(&c->pending);
    policy_unref(c->pol);
    event_free(c->wake);
    event_free(c->timer);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    free(c);
}

/* Close now (nothing more to flush): the free itself is deferred. */
static void
px_conn_kill(struct px_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    if (c->sp)
        for (int i = 0; i < 2; i++) {
            event_del(c->sp->d[i].rd);
            event_del(c->sp->d[i].wr);
        }
    if (c->cli)
        bufferevent_disable(c->cli, EV_READ | EV_WRITE);
    if (c->up)
        bufferevent_disable(c->up, EV_READ | EV_WRITE);
    evtimer_del(c->timer);
    px_wake(c);
}

/* Bytes queued for writing on BEV, TLS records below a filter included. */
static size_t
px_pending(struct bufferevent *bev, bool tls)
{
    size_t n;
    struct bufferevent *under;

    if (!bev)
        return 0;
    n = evbuffer_get_length(bufferevent_get_output(bev));
    under = tls ? bufferevent_get_underlying(bev) : NULL;
    if (under)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

static size_t
px_cli_pending(struct px_conn *c)
{
    return px_pending(c->cli, c->cli_tls != NULL) +
           (c->drain_both ? px_pending(c->up, c->up_tls != NULL) : 0);
}

/* Close after what is queued for the client has been written: checked on
 * each write callback and every 20 ms (TLS records drain below the
 * filter, out of its sight), for at most 5 s. */
static void
px_conn_close(struct px_conn *c)
{
    struct timeval tv = { 0, 20000 };

    if (c->dead || c->state == PX_CLOSING)
        return;
    c->state = PX_CLOSING;
    if (c->up) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    if (c->cli_tls)
        tls_conn_close_notify(c->cli_tls);
    if (!c->cli || px_cli_pending(c) == 0) {
        px_conn_kill(c);
        return;
    }
    c->closing_since_ms = px_now(c);
    bufferevent_disable(c->cli, EV_READ);
    bufferevent_setwatermark(c->cli, EV_WRITE, 0, 0);
    bufferevent_enable(c->cli, EV_WRITE);
    evtimer_add(c->timer, &tv);
}

/* Close a relay once both directions' queued bytes are written (at most
 * 5 s). */
static void
px_conn_drain(struct px_conn *c)
{
    struct timeval tv = { 0, 20000 };

    if (c->dead || c->state == PX_CLOSING)
        return;
    c->state = PX_CLOSING;
    c->drain_both = true;
    if (px_cli_pending(c) == 0) {
        px_conn_kill(c);
        return;
    }
    c->closing_since_ms = px_now(c);
    bufferevent_disable(c->cli, EV_READ);
    bufferevent_setwatermark(c->cli, EV_WRITE, 0, 0);
    if (c->up) {
        bufferevent_disable(c->up, EV_READ);
        bufferevent_setwatermark(c->up, EV_WRITE, 0, 0);
    }
    evtimer_add(c->timer, &tv);
}

static void px_copy(struct px_conn *c, struct bufferevent *src, struct bufferevent *dst,
                    uint64_t *count);

/* Half-closes in a raw relay over plain sockets: an EOF from one side
 * becomes a shutdown(SHUT_WR) towards the other once what it sent has been
 * written, and the relay ends when both directions are done. */
static void
px_raw_eof_step(struct px_conn *c)
{
    if (c->cli_eof && !c->up_shut && px_pending(c->up, false) == 0) {
        shutdown(bufferevent_getfd(c->up), SHUT_WR);
        c->up_shut = true;
    }
    if (c->up_eof && !c->cli_shut && px_pending(c->cli, false) == 0) {
        shutdown(bufferevent_getfd(c->cli), SHUT_WR);
        c->cli_shut = true;
    }
    if (c->up_shut && c->cli_shut)
        px_conn_kill(c);
}

/* One side of a raw relay reached EOF (FROM_CLI: the client). */
static void
px_raw_eof(struct px_conn *c, bool from_cli)
{
    if (from_cli) {
        px_copy(c, c->cli, c->up, &c->bytes_up);
        c->cli_eof = true;
        bufferevent_setwatermark(c->up, EV_WRITE, 0, 0);
    } else {
        px_copy(c, c->up, c->cli, &c->bytes_down);
        c->up_eof = true;
        bufferevent_setwatermark(c->cli, EV_WRITE, 0, 0);
    }
    /* Over TLS a half-close has no clean equivalent: flush and end. */
    if (c->cli_tls || c->up_tls) {
        px_conn_drain(c);
        return;
    }
    px_raw_eof_step(c);
}

static void px_handle_dns(struct px_conn *c);

static void
px_wake_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;

    (void)fd;
    (void)what;
    if (c->dead) {
        px_conn_free(c);
        return;
    }
    if (c->dns_done && c->state == PX_RESOLVE) {
        px_handle_dns(c);
        return;
    }
    px_process_input(c);
}

static void
px_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_conn *c = arg;
    char detail[300];
    uint64_t idle_ms = (uint64_t)c->srv->o.idle_timeout_s * 1000, quiet;

    (void)fd;
    (void)what;
    if (c->dead)
        return;
    switch (c->state) {
    case PX_RESOLVE:
    case PX_CONNECTING:
        buf_fmt_fixed(detail, sizeof(detail), "connection to %s:%u timed out", c->host, c->port);
        px_log_decision(c, "error", "connect", NULL, NULL, detail);
        px_reply_json(c, 502, "Bad Gateway", "upstream_unreachable", detail, NULL);
        return;
    case PX_REQ:
    case PX_RAW: {
        bool waiting = c->state == PX_REQ && c->have_req && !c->have_resp;
        uint64_t limit = waiting ? (uint64_t)c->srv->o.response_timeout_s * 1000 : idle_ms;

        if (c->state == PX_REQ && !c->have_req && c->head_started_ms) {
            uint64_t head_ms = (uint64_t)c->srv->o.header_timeout_s * 1000;
            uint64_t took = px_now(c) - c->head_started_ms;

            if (took >= head_ms) {
                log_debug("conn %llu: request head not complete after %llu ms, closing",
                          (unsigned long long)c->id, (unsigned long long)took);
                px_conn_kill(c);
                return;
            }
            px_timer(c, (unsigned)((head_ms - took) / 1000) + 1);
            return;
        }
        quiet = px_now(c) - c->last_active_ms;
        if (quiet < limit) {
            px_timer(c, (unsigned)((limit - quiet) / 1000) + 1);
            return;
        }
        if (waiting && c->req_body_done && !c->resp_started) {
            buf_fmt_fixed(detail, sizeof(detail), "no response from %s:%u", c->host, c->port);
            px_log_decision(c, "error", "response", c->method, c->path, detail);
            px_reply_json(c, 504, "Gateway Timeout", "upstream_timeout", detail, NULL);
            return;
        }
        log_debug("conn %llu: idle for %llu ms in %s, closing", (unsigned long long)c->id,
                  (unsigned long long)quiet, px_state_name(c->state));
        px_conn_kill(c);
        return;
    }
    case PX_CLOSING:
        if (px_cli_pending(c) == 0 || px_now(c) - c->closing_since_ms > 5000) {
            px_conn_kill(c);
        } else {
            struct timeval tv = { 0, 20000 };

            evtimer_add(c->timer, &tv);
        }
        return;
    default:
        log_debug("conn %llu: timed out in %s", (unsigned long long)c->id, px_state_name(c->state));
        px_conn_kill(c);
        return;
    }
}

/* ------------------------------------------------------------ decisions */

static void
px_request_init(struct px_conn *c, struct policy_request *pr, enum policy_transport t)
{
    memset(pr, 0, sizeof(*pr));
    pr->transport = t;
    pr->host = c->host;
    pr->port = c->port;
    /* Standalone: no caller identity; binary rules pass (reference's
     * "relaxed" binary identity). */
    pr->binary_identity_relaxed = c->srv->o.identity_off;
}

/* Pin the current generation and decide L4. Returns true on allow (the
 * denial has been answered otherwise). FORWARD: METHOD and TARGET given. */
static bool
px_decide_l4(struct px_conn *c, const char *method, const char *target)
{
    struct policy_request pr;
    struct policy_l4_result *l4 = xmalloc(sizeof(*l4));
    char detail[600];
    bool ok;

    policy_unref(c->pol);
    c->pol = policy_ref(c->srv->policy);
    px_request_init(c, &pr, c->tunnel ? POLICY_TRANSPORT_CONNECT : POLICY_TRANSPORT_FORWARD);
    if (!c->tunnel) {
        pr.method = method;
        pr.raw_target = target;
    }
    ok = policy_decide_l4(c->pol, &pr, l4) == 0 && l4->allow;
    c->policy_name[0] = '\0';
    if (ok) {
        buf_copy_fixed(c->policy_name, sizeof(c->policy_name), l4->policy ? l4->policy : "");
        c->l7 = l4->l7;
        c->tls_skip = l4->tls == POLICY_TLS_SKIP;
    } else if (c->tunnel) {
        buf_fmt_fixed(detail, sizeof(detail), "CONNECT %s:%u not permitted by policy", c->host,
                      c->port);
        px_log_decision(c, "deny", "connect", "CONNECT", NULL, l4->reason);
        px_reply_json(c, 403, "Forbidden", "policy_denied", detail, l4->reason);
    } else {
        buf_fmt_fixed(detail, sizeof(detail), "%s %s:%u%s not permitted by policy", method, c->host,
                      c->port, c->path);
        px_log_decision(c, "deny", "forward", method, c->path, l4->reason);
        px_reply_json(c, 403, "Forbidden", "policy_denied", detail, NULL);
    }
    free(l4);
    return ok;
}

/* L7 rules for one request. Returns true to forward (allow or audit) with
 * the canonical path in CANON; the denial has been answered otherwise. */
static bool
px_decide_l7(struct px_conn *c, const char *method, const char *target, struct buf *canon)
{
    struct policy_request pr;
    struct policy_l7_result *r = xmalloc(sizeof(*r));
    const char *stage = c->tunnel ? "l7" : "forward";
    bool ok;

    px_request_init(c, &pr, c->tunnel ? POLICY_TRANSPORT_L7 : POLICY_TRANSPORT_FORWARD);
    pr.method = method;
    pr.raw_target = target;
    pr.websocket_upgrade = c->req->websocket;
    policy_decide_l7(c->pol, &pr, r);
    ok = r->verdict != POLICY_L7_DENY;
    if (ok) {
        buf_puts(canon, r->path[0] ? r->path : "/");
        px_log_decision(c, r->verdict == POLICY_L7_AUDIT ? "audit" : "allow", stage, method,
                        c->path, r->reason);
    } else {
        px_log_decision(c, "deny", stage, method, c->path, r->reason);
        px_reply_l7_deny(c, method, r->path[0] ? r->path : c->path,
                         r->policy ? r->policy : c->policy_name, r->reason);
    }
    free(r);
    return ok;
}

/* ------------------------------------------------------------ DNS and dial */

static void
px_dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct px_conn *c = arg;

    if (result == EVUTIL_EAI_CANCEL)
        return; /* the connection is going away */
    c->dns_req = NULL;
    c->dns_done = true;
    c->dns_result = result;
    c->naddrs = 0;
    for (struct evutil_addrinfo *ai = res; ai && c->naddrs < PX_MAX_ADDRS; ai = ai->ai_next) {
        struct policy_addr *a = &c->addrs[c->naddrs];

        if (ai->ai_family == AF_INET) {
            a->family = 4;
            memcpy(a->a, &((struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
        } else if (ai->ai_family == AF_INET6) {
            a->family = 6;
            memcpy(a->a, &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
        } else {
            continue;
        }
        c->naddrs++;
    }
    if (res)
        evutil_freeaddrinfo(res);
    /* May run inside evdns_getaddrinfo(): continue from the loop. */
    px_wake(c);
}

/* Resolve c->host: IP literal, static map, then evdns. */
static void
px_resolve(struct px_conn *c)
{
    struct evutil_addrinfo hints;
    struct evdns_getaddrinfo_request *req;

    c->state = PX_RESOLVE;
    c->dns_done = false;
    c->naddrs = c->next_addr = 0;
    px_timer(c, c->srv->o.connect_timeout_s);
    if (policy_addr_parse(c->host, &c->addrs[0]) == 0) {
        c->naddrs = 1;
        c->dns_done = true;
        px_wake(c);
        return;
    }
    for (size_t i = 0; i < c->srv->nmap; i++) {
        if (strcasecmp(c->srv->map[i].host, c->host) == 0) {
            c->addrs[c->naddrs++] = c->srv->map[i].addr;
            if (c->naddrs == PX_MAX_ADDRS)
                break;
        }
    }
    if (c->naddrs) {
        c->dns_done = true;
        px_wake(c);
        return;
    }
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    req = evdns_getaddrinfo(c->srv->dns, c->host, NULL, &hints, px_dns_cb, c);
    if (!c->dns_done)
        c->dns_req = req;
}

/* DNS answered: SSRF check, then dial. */
static void
px_handle_dns(struct px_conn *c)
{
    struct policy_request pr;
    enum policy_ssrf k;
    char detail[600];
    const char *verb = c->tunnel ? "CONNECT" : c->method;

    c->dns_done = false;
    if (c->dns_result != 0 || c->naddrs == 0) {
        buf_fmt_fixed(detail, sizeof(detail), "connection to %s:%u failed: %s", c->host, c->port,
                      c->dns_result ? evutil_gai_strerror(c->dns_result) : "no address");
        px_log_decision(c, "error", "dns", NULL, NULL, detail);
        px_reply_json(c, 502, "Bad Gateway", "upstream_unreachable", detail, NULL);
        return;
    }
    px_request_init(c, &pr, c->tunnel ? POLICY_TRANSPORT_CONNECT : POLICY_TRANSPORT_FORWARD);
    k = policy_ssrf_check(c->pol, &pr, c->addrs, c->naddrs, NULL);
    if (k != POLICY_SSRF_OK) {
        buf_fmt_fixed(detail, sizeof(detail), "%s %s:%u blocked: %s", verb, c->host, c->port,
                      policy_ssrf_kind(k));
        px_log_decision(c, "deny", "ssrf", verb, NULL, detail);
        px_reply_json(c, 403, "Forbidden", "ssrf_denied", detail, NULL);
        return;
    }
    c->state = PX_CONNECTING;
    px_dial_next(c);
}

static void
px_dial_next(struct px_conn *c)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    char detail[300];

    if (c->up) {
        bufferevent_free(c->up);
        c->up = NULL;
    }
    while (c->next_addr < c->naddrs) {
        const struct policy_addr *a = &c->addrs[c->next_addr++];

        memset(&ss, 0, sizeof(ss));
        if (a->family == 4) {
            struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

            sin->sin_family = AF_INET;
            sin->sin_port = htons((uint16_t)c->port);
            memcpy(&sin->sin_addr, a->a, 4);
            sl = sizeof(*sin);
        } else {
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

            sin6->sin6_family = AF_INET6;
            sin6->sin6_port = htons((uint16_t)c->port);
            memcpy(&sin6->sin6_addr, a->a, 16);
            sl = sizeof(*sin6);
        }
        c->up = bufferevent_socket_new(c->srv->base, -1, BEV_OPT_CLOSE_ON_FREE);
        bufferevent_setcb(c->up, px_up_read, px_up_write, px_up_event, c);
        if (bufferevent_socket_connect(c->up, (struct sockaddr *)&ss, (int)sl) == 0)
            return;
        bufferevent_free(c->up);
        c->up = NULL;
    }
    buf_fmt_fixed(detail, sizeof(detail), "connection to %s:%u failed", c->host, c->port);
    px_log_decision(c, "error", "connect", NULL, NULL, detail);
    px_reply_json(c, 502, "Bad Gateway", "upstream_unreachable", detail, NULL);
}

/* Every socket of a relay: no Nagle delay (reference 7.1), and reads and
 * writes of up to PX_IO_CHUNK per call (libevent's default 16 KiB caps a
 * tunnel's throughput at a fraction of the link's). */
static void
px_tune(struct bufferevent *bev)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);

    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bufferevent_set_max_single_read(bev, PX_IO_CHUNK);
    bufferevent_set_max_single_write(bev, PX_IO_CHUNK);
}

/* ------------------------------------------------------------ relays */

/* Read from BEV again. A TLS filter also needs a nudge: records that
 * arrived while it was paused sit below it until the next packet. */
static void
px_resume(struct bufferevent *bev, bool tls)
{
    bufferevent_enable(bev, EV_READ);
    if (tls)
        bufferevent_flush(bev, EV_READ, BEV_NORMAL);
}

/* Move SRC's input to DST's output; stop reading SRC when DST is full. */
static void
px_copy(struct px_conn *c, struct bufferevent *src, struct bufferevent *dst, uint64_t *count)
{
    struct evbuffer *in = bufferevent_get_input(src);

    *count += evbuffer_get_length(in);
    bufferevent_write_buffer(dst, in);
    if (evbuffer_get_length(bufferevent_get_output(dst)) >= PX_HIGH)
        bufferevent_disable(src, EV_READ);
    px_touch(c);
}

/* ------------------------------------------------------------ splice */

static void
px_splice_free(struct px_conn *c)
{
    struct px_splice *sp = c->sp;

    if (!sp)
        return;
    if (sp->counted)
        c->srv->nspliced--;
    for (int i = 0; i < 2; i++) {
        struct px_splice_dir *d = &sp->d[i];

        if (d->rd)
            event_free(d->rd);
        if (d->wr)
            event_free(d->wr);
        if (d->pipe[0] >= 0)
            close(d->pipe[0]);
        if (d->pipe[1] >= 0)
            close(d->pipe[1]);
    }
    free(sp);
    c->sp = NULL;
}

/* Move what can move in direction D without blocking; arm the event that
 * lets it continue. */
static void
px_splice_pump(struct px_splice_dir *d)
{
    struct px_conn *c = d->c;
    const unsigned fl = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
    ssize_t n;

    for (;;) {
        while (d->inpipe) {
            n = splice(d->pipe[0], NULL, d->dst, NULL, d->inpipe, fl);
            if (n > 0) {
                d->inpipe -= (size_t)n;
                *d->count += (uint64_t)n;
                px_touch(c);
                continue;
            }
            if (n < 0 && errno == EAGAIN) {
                event_del(d->rd);
                event_add(d->wr, NULL);
                return;
            }
            log_debug("conn %llu: relay write: %s", (unsigned long long)c->id,
                      n < 0 ? strerror(errno) : "closed");
            px_conn_kill(c);
            return;
        }
        event_del(d->wr);
        if (d->eof) {
            /* Everything SRC sent has been written: pass the half-close on. */
            shutdown(d->dst, SHUT_WR);
            d->done = true;
            event_del(d->rd);
            if (c->sp->d[0].done && c->sp->d[1].done)
                px_conn_kill(c);
            return;
        }
        n = splice(d->src, NULL, d->pipe[1], NULL, PX_SPLICE_PIPE, fl);
        if (n > 0) {
            d->inpipe += (size_t)n;
            continue;
        }
        if (n == 0) {
            d->eof = true;
            continue;
        }
        if (errno == EAGAIN) {
            event_add(d->rd, NULL);
            return;
        }
        log_debug("conn %llu: relay read: %s", (unsigned long long)c->id, strerror(errno));
        px_conn_kill(c);
        return;
    }
}

static void
px_splice_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_splice_dir *d = arg;

    (void)fd;
    (void)what;
    if (d->c->dead)
        return;
    px_splice_pump(d);
}

/* A raw relay that stays on bufferevents. */
static void
px_splice_fallback(struct px_conn *c)
{
    bufferevent_setwatermark(c->cli, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_setwatermark(c->up, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_enable(c->cli, EV_READ);
    bufferevent_enable(c->up, EV_READ);
}

/* Switch a raw relay to splice once the bufferevents have nothing queued;
 * without pipes (descriptor limit) it stays on bufferevents. */
static void
px_splice_maybe_start(struct px_conn *c)
{
    struct px_splice *sp;
    int fds[2] = { bufferevent_getfd(c->cli), bufferevent_getfd(c->up) };

    if (!c->splice_pending || px_pending(c->cli, false) || px_pending(c->up, false))
        return;
    c->splice_pending = false;
    if (c->srv->nspliced >= c->srv->max_spliced) {
        /* Keep descriptors for sockets: this one relays in user space. */
        px_splice_fallback(c);
        return;
    }
    sp = xcalloc(1, sizeof(*sp));
    for (int i = 0; i < 2; i++) {
        struct px_splice_dir *d = &sp->d[i];

        d->c = c;
        d->src = fds[i];
        d->dst = fds[1 - i];
        d->count = i == 0 ? &c->bytes_up : &c->bytes_down;
        d->pipe[0] = d->pipe[1] = -1;
        if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
            log_debug("conn %llu: pipe: %s; relaying in user space", (unsigned long long)c->id,
                      strerror(errno));
            c->sp = sp;
            px_splice_free(c);
            px_splice_fallback(c);
            return;
        }
        fcntl(d->pipe[1], F_SETPIPE_SZ, PX_SPLICE_PIPE);
        d->rd = event_new(c->srv->base, d->src, EV_READ | EV_PERSIST, px_splice_cb, d);
        d->wr = event_new(c->srv->base, d->dst, EV_WRITE | EV_PERSIST, px_splice_cb, d);
    }
    c->sp = sp;
    c->srv->nspliced++;
    sp->counted = true;
    bufferevent_disable(c->cli, EV_READ | EV_WRITE);
    bufferevent_disable(c->up, EV_READ | EV_WRITE);
    /* An EOF seen by the bufferevents before the switch carries over. */
    sp->d[0].eof = c->cli_eof;
    sp->d[1].eof = c->up_eof;
    px_splice_pump(&sp->d[0]);
    if (!c->dead)
        px_splice_pump(&sp->d[1]);
}

static void
px_start_raw(struct px_conn *c)
{
    c->state = PX_RAW;
    px_touch(c);
    px_timer(c, c->srv->o.idle_timeout_s);
    if (!c->cli_tls && !c->up_tls) {
        /* Plain sockets both sides: what the bufferevents already hold goes
         * first, then the kernel moves the rest (px_splice_start). */
        bufferevent_disable(c->cli, EV_READ);
        bufferevent_disable(c->up, EV_READ);
        c->bytes_up += evbuffer_get_length(bufferevent_get_input(c->cli));
        bufferevent_write_buffer(c->up, bufferevent_get_input(c->cli));
        c->bytes_down += evbuffer_get_length(bufferevent_get_input(c->up));
        bufferevent_write_buffer(c->cli, bufferevent_get_input(c->up));
        c->splice_pending = true;
        bufferevent_setwatermark(c->cli, EV_WRITE, 0, 0);
        bufferevent_setwatermark(c->up, EV_WRITE, 0, 0);
        px_splice_maybe_start(c);
        return;
    }
    bufferevent_enable(c->cli, EV_READ);
    bufferevent_enable(c->up, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->cli)))
        px_copy(c, c->cli, c->up, &c->bytes_up);
    if (evbuffer_get_length(bufferevent_get_input(c->up)))
        px_copy(c, c->up, c->cli, &c->bytes_down);
}

/* Upstream TCP is up (CONNECTING -> ...). */
static void
px_upstream_connected(struct px_conn *c)
{
    px_tune(c->up);
    bufferevent_setwatermark(c->up, EV_WRITE, PX_HIGH / 2, 0);
    evtimer_del(c->timer);
    if (c->tunnel) {
        bufferevent_write(c->cli, "HTTP/1.1 200 Connection Established\r\n\r\n", 39);
        px_log_decision(c, "allow", "connect", "CONNECT", NULL, NULL);
        if (c->tls_skip) {
            px_start_raw(c);
            return;
        }
        c->state = PX_SNIFF;
        px_timer(c, c->srv->o.idle_timeout_s);
        px_process_input(c);
        return;
    }
    /* Forward: the rewritten request was prepared before the dial. */
    if (!c->l7)
        px_log_decision(c, "allow", "forward", c->method, c->path, NULL);
    c->state = PX_REQ;
    bufferevent_write(c->up, c->pending.data, c->pending.len);
    c->bytes_up += c->pending.len;
    buf_reset(&c->pending);
    bufferevent_enable(c->up, EV_READ);
    px_touch(c);
    px_timer(c, c->srv->o.response_timeout_s);
    px_process_input(c);
}

/* Build the head we send upstream for the parsed request: origin-form
 * target PATH, hop-by-hop headers dropped, Host regenerated. */
static void
px_build_request(struct px_conn *c, const char *path, bool close_upstream, struct buf *out)
{
    const struct http1_request *r = c->req;
    bool default_port = (c->terminated && c->port == 443) || (!c->terminated && c->port == 80);

    buf_printf(out, "%s %s HTTP/1.1\r\n", r->method, path);
    if (strchr(c->host, ':'))
        buf_printf(out, "Host: [%s]", c->host);
    else
        buf_printf(out, "Host: %s", c->host);
    if (!default_port)
        buf_printf(out, ":%u", c->port);
    buf_puts(out, "\r\n");
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name;

        if (strcasecmp(n, "host") == 0 || http1_request_hop_header(r, n))
            continue;
        buf_printf(out, "%s: %s\r\n", n, r->headers[i].value);
    }
    if (r->chunked)
        buf_puts(out, "Transfer-Encoding: chunked\r\n");
    if (r->websocket && !close_upstream)
        buf_printf(out, "Connection: Upgrade\r\nUpgrade: %s\r\n",
                   http1_request_header(r, "upgrade"));
    else if (close_upstream)
        buf_puts(out, "Connection: close\r\n");
    buf_puts(out, "\r\n");
}

/* Forward request body bytes from the client to the upstream. */
/* Feed SRC's buffered bytes to body B chain by chain (no linearising);
 * what belongs to the message goes to DST: moved as is, or re-framed when
 * REFRAME. Returns the bytes taken from SRC (0: nothing more can be taken
 * now), or -EBADMSG with *WHY. *DONE: the message ended. */
static long
px_body_move(struct http1_body *b, bool reframe, struct evbuffer *src, struct bufferevent *dst,
             uint64_t *count, bool *done, const char **why)
{
    struct evbuffer_iovec v[16];
    struct buf out = BUF_INIT;
    size_t total = 0;
    int nv;

    nv = evbuffer_peek(src, -1, NULL, v, 16);
    if (nv > 16)
        nv = 16;
    if (nv <= 0)
        return http1_body_feed(b, "", 0, NULL, done, why); /* bodiless: done at once */
    for (int i = 0; i < nv; i++) {
        long used =
            http1_body_feed(b, v[i].iov_base, v[i].iov_len, reframe ? &out : NULL, done, why);

        if (used < 0) {
            buf_fini(&out);
            return used;
        }
        total += (size_t)used;
        if (*done || (size_t)used < v[i].iov_len)
            break;
    }
    if (reframe) {
        evbuffer_drain(src, total);
        bufferevent_write(dst, out.data, out.len);
        *count += out.len;
    } else {
        evbuffer_remove_buffer(src, bufferevent_get_output(dst), total);
        *count += total;
    }
    buf_fini(&out);
    return (long)total;
}

static void
px_pump_request_body(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->cli);
    const char *why = "";
    bool done = false;
    long used;

    while (!c->req_body_done) {
        used = px_body_move(c->req_body, c->req->chunked, in, c->up, &c->bytes_up, &done, &why);
        if (used < 0) {
            px_log_decision(c, "deny", "framing", c->method, c->path, why);
            px_reply_empty(c, 400, "Bad Request");
            return;
        }
        c->req_body_done = done;
        if (evbuffer_get_length(bufferevent_get_output(c->up)) >= PX_HIGH) {
            bufferevent_disable(c->cli, EV_READ);
            break;
        }
        if (used == 0)
            break;
    }
    px_touch(c);
    /* Pipelined requests wait in the client's input (bounded by its read
     * high-water mark) until this one has been answered. */
}

/* A complete exchange: log-free bookkeeping, then the next request. */
static void
px_exchange_done(struct px_conn *c)
{
    bool keep = c->keep_alive;

    px_exchange_reset(c);
    c->resp_started = false;
    if (!keep) {
        px_conn_close(c);
        return;
    }
    if (!c->tunnel) {
        /* Forward proxy: one upstream per request. */
        if (c->up) {
            bufferevent_free(c->up);
            c->up = NULL;
        }
        c->state = PX_HEAD;
        policy_unref(c->pol);
        c->pol = NULL;
        c->host[0] = '\0';
        c->port = 0;
        c->policy_name[0] = '\0';
    } else {
        c->state = PX_REQ;
    }
    px_touch(c);
    px_timer(c, c->srv->o.idle_timeout_s);
    px_resume(c->cli, c->cli_tls != NULL);
    px_wake(c); /* pipelined input may already be here */
}

/* The response head for the client: hop-by-hop headers dropped, our
 * Connection decision added. */
static void
px_build_response(struct px_conn *c, struct buf *out)
{
    const struct http1_response *r = c->resp;
    static const char *const hop[] = { "connection", "keep-alive", "proxy-connection",
                                       "te",         "trailer",    "upgrade" };
    const char *conn = http1_response_header(r, "connection");

    buf_printf(out, "HTTP/1.1 %d %s\r\n", r->status, r->reason);
    for (size_t i = 0; i < r->nheaders; i++) {
        const char *n = r->headers[i].name;
        bool skip = false;

        for (size_t j = 0; j < sizeof(hop) / sizeof(hop[0]); j++)
            skip |= strcasecmp(n, hop[j]) == 0;
        for (size_t j = 0; j < r->nheaders && !skip; j++)
            if (strcasecmp(r->headers[j].name, "connection") == 0 && conn &&
                strcasestr(r->headers[j].value, n))
                skip = true;
        if (!skip)
            buf_printf(out, "%s: %s\r\n", n, r->headers[i].value);
    }
    buf_puts(out, c->keep_alive ? "" : "Connection: close\r\n");
    buf_puts(out, "\r\n");
}

static void
px_pump_response(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->up);
    struct buf out = BUF_INIT;
    const char *why = "";
    bool done = false;

    while (!c->dead && c->state == PX_REQ && c->have_req) {
        if (!c->have_resp) {
            size_t n = evbuffer_get_length(in);
            const char *p;
            long h;

            if (n == 0)
                break;
            if (n > HTTP1_HEAD_MAX + 1)
                n = HTTP1_HEAD_MAX + 1;
            p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
            h = http1_head_scan(p, n, HTTP1_HEAD_MAX, &why);
            if (h == 0)
                break;
            if (!c->resp)
                c->resp = xmalloc(sizeof(*c->resp));
            if (h < 0 || http1_parse_response(p, (size_t)h, strcmp(c->method, "HEAD") == 0, c->resp,
                                              &why) < 0) {
                if (h == -EMSGSIZE)
                    why = "response head too large";
                px_log_decision(c, "error", "response", c->method, c->path, why);
                px_reply_json(c, 502, "Bad Gateway", "upstream_invalid_response", why, NULL);
                break;
            }
            if (c->resp->status == 101) {
                /* Only an upgrade the client asked for (and policy allowed). */
                http1_response_fini(c->resp);
                if (!c->req->upgrade) {
                    px_conn_kill(c);
                    break;
                }
                bufferevent_write(c->cli, p, (size_t)h);
                c->bytes_down += (size_t)h;
                evbuffer_drain(in, (size_t)h);
                c->resp_started = true;
                px_exchange_reset(c);
                px_start_raw(c);
                break;
            }
            if (c->resp->status < 200) {
                /* Interim (100 Continue): relay as is, wait for the final. */
                bufferevent_write(c->cli, p, (size_t)h);
                c->bytes_down += (size_t)h;
                evbuffer_drain(in, (size_t)h);
                http1_response_fini(c->resp);
                continue;
            }
            c->have_resp = true;
            c->resp_started = true;
            /* Keep the client connection only if both sides frame it. */
            c->keep_alive =
                c->keep_alive && !c->resp->until_eof && (c->resp->keep_alive || !c->tunnel);
            evbuffer_drain(in, (size_t)h);
            px_build_response(c, &out);
            bufferevent_write(c->cli, out.data, out.len);
            c->bytes_down += out.len;
            buf_reset(&out);
            c->resp_body = http1_body_response(c->resp);
        }
        {
            long used = px_body_move(c->resp_body, false, in, c->cli, &c->bytes_down, &done, &why);

            if (used < 0) {
                px_log_decision(c, "error", "response", c->method, c->path, why);
                px_conn_kill(c);
                break;
            }
            px_touch(c);
            if (done) {
                if (!c->req_body_done) {
                    /* Answered before the body was sent: the framing of
                     * what follows is unknowable, so stop here. */
                    c->keep_alive = false;
                }
                px_exchange_done(c);
                break;
            }
            if (evbuffer_get_length(bufferevent_get_output(c->cli)) >= PX_HIGH) {
                bufferevent_disable(c->up, EV_READ);
                break;
            }
            if (used == 0)
                break;
        }
    }
    buf_fini(&out);
}

/* ------------------------------------------------------------ requests */

/* A request head inside a tunnel (or the next one on a forward
 * connection), parsed into c->req-> */
static void
px_tunnel_request(struct px_conn *c)
{
    struct http1_request *r = c->req;
    struct buf canon = BUF_INIT, head = BUF_INIT;
    unsigned want_default = c->terminated ? 443 : 80;
    unsigned got_port;
    const char *q;
    char detail[700];

    c->nreq++;
    buf_copy_fixed(c->method, sizeof(c->method), r->method);
    px_log_path(c->path, sizeof(c->path), r->form == HTTP1_FORM_ABSOLUTE ? r->path : r->target);
    /* Domain fronting: the request must name the tunnel's authority. */
    got_port = r->port_explicit ? r->port : want_default;
    if (r->form == HTTP1_FORM_AUTHORITY || r->form == HTTP1_FORM_ASTERISK ||
        ((r->host_header || r->form == HTTP1_FORM_ABSOLUTE) &&
         (strcmp(r->host, c->host) != 0 || got_port != c->port))) {
        buf_fmt_fixed(detail, sizeof(detail), "request authority '%s:%u' differs from %s:%u",
                      r->host, got_port, c->host, c->port);
        px_log_decision(c, "deny", "authority", c->method, c->path, detail);
        px_reply_json(c, 403, "Forbidden", "request_authority_mismatch", detail, NULL);
        return;
    }
    if (r->h2c && c->l7) {
        px_log_decision(c, "deny", "l7", c->method, c->path, "HTTP/2 upgrade on a rest endpoint");
        px_reply_json(c, 403, "Forbidden", "unsupported_l7_protocol",
                      "HTTP/2 (h2c upgrade) is not supported on an inspected endpoint", NULL);
        return;
    }
    if (c->l7) {
        const char *target = r->form == HTTP1_FORM_ABSOLUTE ? r->path : r->target;

        if (!px_decide_l7(c, c->method, target, &canon)) {
            buf_fini(&canon);
            return;
        }
        q = strchr(target, '?');
        if (q)
            buf_puts(&canon, q);
    } else {
        px_log_decision(c, "allow", "http", c->method, c->path, NULL);
        buf_puts(&canon, r->form == HTTP1_FORM_ABSOLUTE ? r->path : r->target);
    }
    c->keep_alive = r->keep_alive;
    px_build_request(c, buf_cstr(&canon), !r->keep_alive && !r->websocket, &head);
    bufferevent_write(c->up, head.data, head.len);
    c->bytes_up += head.len;
    buf_fini(&head);
    buf_fini(&canon);
    c->req_body = http1_body_request(r);
    c->req_body_done = false;
    bufferevent_enable(c->up, EV_READ);
    px_timer(c, c->srv->o.response_timeout_s);
    px_pump_request_body(c);
    if (!c->dead && c->state == PX_REQ)
        px_pump_response(c);
}

/* An absolute-form request at the proxy's door: decide, then dial. */
static void
px_forward_request(struct px_conn *c)
{
    struct http1_request *r = c->req;
    struct buf canon = BUF_INIT;
    const char *q;
    char detail[700];

    c->tunnel = false;
    c->nreq++;
    buf_copy_fixed(c->method, sizeof(c->method), r->method);
    if (r->form != HTTP1_FORM_ABSOLUTE) {
        px_log_decision(c, "deny", "framing", c->method, NULL, "origin-form request to the proxy");
        px_reply_json(c, 400, "Bad Request", "invalid_request_target",
                      "a proxy request needs an absolute URI (or CONNECT)", NULL);
        return;
    }
    if (strcmp(r->scheme, "https") == 0) {
        struct buf body = BUF_INIT;

        buf_puts(&body, "Use CONNECT for HTTPS URLs");
        px_log_decision(c, "deny", "forward", c->method, NULL, "https URL on the forward path");
        px_reply(c, 400, "Bad Request", "text/plain", NULL, &body);
        buf_fini(&body);
        return;
    }
    if (strcmp(r->scheme, "http") != 0) {
        buf_fmt_fixed(detail, sizeof(detail), "scheme '%s' is not supported", r->scheme);
        px_log_decision(c, "deny", "forward", c->method, NULL, detail);
        px_reply_json(c, 400, "Bad Request", "unsupported_proxy_scheme", detail, NULL);
        return;
    }
    buf_copy_fixed(c->host, sizeof(c->host), r->host);
    c->port = r->port;
    px_log_path(c->path, sizeof(c->path), r->path);
    if (r->h2c) {
        px_log_decision(c, "deny", "forward", c->method, c->path, "HTTP/2 upgrade");
        px_reply_json(c, 403, "Forbidden", "unsupported_l7_protocol",
                      "HTTP/2 (h2c upgrade) is not supported through the proxy", NULL);
        return;
    }
    if (!px_decide_l4(c, c->method, r->path))
        return;
    if (c->l7) {
        if (!px_decide_l7(c, c->method, r->path, &canon)) {
            buf_fini(&canon);
            return;
        }
        q = strchr(r->path, '?');
        if (q)
            buf_puts(&canon, q);
    } else {
        /* Logged once the upstream is reached (SSRF may still refuse). */
        buf_puts(&canon, r->path);
    }
    c->keep_alive = r->keep_alive;
    buf_reset(&c->pending);
    px_build_request(c, buf_cstr(&canon), true, &c->pending);
    buf_fini(&canon);
    c->req_body = http1_body_request(r);
    c->req_body_done = false;
    /* The body waits in the client's input until the upstream is dialed. */
    px_resolve(c);
}

static void
px_connect_request(struct px_conn *c)
{
    struct http1_request *r = c->req;

    c->tunnel = true;
    buf_copy_fixed(c->host, sizeof(c->host), r->host);
    c->port = r->port;
    buf_copy_fixed(c->method, sizeof(c->method), "CONNECT");
    if (!px_decide_l4(c, "CONNECT", NULL))
        return;
    if (!c->tls_skip && !c->srv->ca) {
        px_log_decision(c, "deny", "connect", "CONNECT", NULL, "no CA for TLS termination");
        px_reply_json(c, 503, "Service Unavailable", "tls_termination_unavailable",
                      "the proxy has no CA to terminate TLS", NULL);
        return;
    }
    px_exchange_reset(c);
    px_resolve(c);
}

/* Try to take one request head from the client's input. */
static void
px_read_head(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->cli);
    size_t max = c->state == PX_HEAD ? HTTP1_HEAD_MAX_ENTRY : HTTP1_HEAD_MAX;
    size_t n = evbuffer_get_length(in);
    const char *p, *why = "";
    long h;

    if (n == 0)
        return;
    if (n > max + 1)
        n = max + 1;
    p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    /* HTTP/2 prior knowledge inside a tunnel. */
    if (c->state == PX_REQ && tls_sniff((const unsigned char *)p, n) == TLS_SNIFF_H2C) {
        px_log_decision(c, "deny", "l7", NULL, NULL, "HTTP/2 connection preface");
        if (c->l7)
            px_reply_json(c, 403, "Forbidden", "unsupported_l7_protocol",
                          "HTTP/2 is not supported on an inspected endpoint", NULL);
        else
            px_reply_empty(c, 400, "Bad Request");
        return;
    }
    h = http1_head_scan(p, n, max, &why);
    if (h == 0) {
        /* A head has begun: it must be complete within the header timeout,
         * however slowly its bytes trickle in (slowloris). */
        if (!c->head_started_ms) {
            c->head_started_ms = px_now(c);
            px_timer(c, c->srv->o.header_timeout_s);
        }
        return;
    }
    c->head_started_ms = 0;
    if (h == -EMSGSIZE) {
        px_log_decision(c, "deny", "framing", NULL, NULL, "request head too large");
        px_reply_empty(c, 431, "Request Header Fields Too Large");
        return;
    }
    if (!c->req)
        c->req = xmalloc(sizeof(*c->req));
    if (h < 0 || http1_parse_request(p, (size_t)h, c->req, &why) < 0) {
        px_log_decision(c, "deny", "framing", NULL, NULL, why);
        px_reply_empty(c, 400, "Bad Request");
        return;
    }
    c->have_req = true;
    evbuffer_drain(in, (size_t)h);
    px_touch(c);
    if (c->state == PX_REQ) {
        px_tunnel_request(c);
        return;
    }
    if (c->req->form == HTTP1_FORM_AUTHORITY)
        px_connect_request(c);
    else
        px_forward_request(c);
}

/* TLS auto-detection on the first bytes of a tunnel. */
static void
px_sniff(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->cli);
    size_t n = evbuffer_get_length(in);
    const unsigned char *p;
    struct tls_server_opts so = { 0 };
    struct err e;

    if (n == 0)
        return;
    p = evbuffer_pullup(in, (ev_ssize_t)(n < 24 ? n : 24));
    switch (tls_sniff(p, n < 24 ? n : 24)) {
    case TLS_SNIFF_NEED_MORE: return;
    case TLS_SNIFF_HTTP1:
        c->state = PX_REQ;
        px_read_head(c);
        return;
    case TLS_SNIFF_H2C:
    case TLS_SNIFF_OTHER:
        if (c->l7) {
            px_log_decision(c, "deny", "l7", NULL, NULL, "unsupported protocol in the tunnel");
            px_reply_json(c, 403, "Forbidden", "unsupported_l7_protocol",
                          "only HTTP/1.1 (optionally over TLS) is supported on this endpoint",
                          NULL);
            return;
        }
        px_start_raw(c);
        return;
    case TLS_SNIFF_TLS: break;
    }
    /* Terminate: a leaf for the CONNECT host (not the client's SNI), and a
     * verified session to the upstream for the same name. */
    c->leaf = ca_leaf_get(c->srv->ca, c->host, &e);
    if (!c->leaf) {
        px_log_decision(c, "error", "tls", NULL, NULL, e.msg);
        px_conn_kill(c);
        return;
    }
    so.chain = ca_leaf_chain(c->leaf);
    so.key = ca_leaf_key(c->leaf);
    so.expect_sni = c->host;
    c->state = PX_HANDSHAKE;
    c->terminated = true;
    bufferevent_disable(c->up, EV_READ);
    c->cli = tls_wrap_server(c->cli, &so, &c->cli_tls, &e);
    if (!c->cli) {
        px_log_decision(c, "error", "tls", NULL, NULL, e.msg);
        px_conn_kill(c);
        return;
    }
    bufferevent_setcb(c->cli, px_cli_read, px_cli_write, px_cli_event, c);
    c->up = tls_wrap_client(c->up, c->srv->upstream, c->host, &c->up_tls, &e);
    if (!c->up) {
        px_log_decision(c, "error", "tls", NULL, NULL, e.msg);
        px_conn_kill(c);
        return;
    }
    bufferevent_setcb(c->up, px_up_read, px_up_write, px_up_event, c);
    bufferevent_setwatermark(c->up, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_setwatermark(c->cli, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_setwatermark(c->cli, EV_READ, 0, PX_HIGH);
    bufferevent_setwatermark(c->up, EV_READ, 0, PX_HIGH);
    px_timer(c, c->srv->o.tls_timeout_s);
}

static void
px_handshake_step(struct px_conn *c)
{
    if (c->state != PX_HANDSHAKE || !tls_conn_established(c->cli_tls))
        return;
    if (c->up_failed) {
        /* The client's session is up: it can be told why, in HTTP. */
        px_reply_json(c, 502, "Bad Gateway", "upstream_tls_failed", c->up_error, NULL);
        return;
    }
    if (!tls_conn_established(c->up_tls))
        return;
    log_debug("conn %llu: TLS terminated for %s (client %s, upstream %s)",
              (unsigned long long)c->id, c->host, tls_conn_version(c->cli_tls),
              tls_conn_version(c->up_tls));
    c->state = PX_REQ;
    px_touch(c);
    px_timer(c, c->srv->o.idle_timeout_s);
    px_read_head(c);
}

/* Whatever the state, make progress on buffered input. */
static void
px_process_input(struct px_conn *c)
{
    if (c->dead || !c->cli)
        return;
    switch (c->state) {
    case PX_HEAD: px_read_head(c); break;
    case PX_SNIFF: px_sniff(c); break;
    case PX_REQ:
        if (!c->have_req)
            px_read_head(c);
        else if (!c->req_body_done)
            px_pump_request_body(c);
        else
            px_pump_response(c);
        break;
    case PX_RAW:
        if (!c->sp && !c->splice_pending)
            px_copy(c, c->cli, c->up, &c->bytes_up);
        break;
    default: break;
    }
}

/* ------------------------------------------------------------ callbacks */

static void
px_cli_read(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    px_process_input(c);
}

static void
px_cli_write(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    if (c->state == PX_CLOSING) {
        if (px_cli_pending(c) == 0)
            px_conn_kill(c);
        return;
    }
    if (c->state == PX_RAW && c->splice_pending) {
        px_splice_maybe_start(c);
        return;
    }
    if (c->state == PX_RAW && (c->cli_eof || c->up_eof)) {
        px_raw_eof_step(c);
        if (c->dead || c->up_eof)
            return;
    }
    /* The client drained: the upstream may be read again. */
    if (c->up && (c->state == PX_RAW || (c->state == PX_REQ && c->have_req))) {
        px_resume(c->up, c->up_tls != NULL);
        if (evbuffer_get_length(bufferevent_get_input(c->up))) {
            if (c->state == PX_RAW)
                px_copy(c, c->up, c->cli, &c->bytes_down);
            else
                px_pump_response(c);
        }
    }
}

static void
px_cli_event(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        px_handshake_step(c);
        return;
    }
    if (c->cli_tls && (what & BEV_EVENT_ERROR) && tls_conn_error(c->cli_tls)[0]) {
        if (tls_conn_sni_mismatch(c->cli_tls))
            px_log_decision(c, "deny", "tls", NULL, NULL, tls_conn_error(c->cli_tls));
        else
            log_info("conn %llu: %s", (unsigned long long)c->id, tls_conn_error(c->cli_tls));
    }
    if (c->state == PX_RAW && (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->up) {
        px_raw_eof(c, true);
        return;
    }
    px_conn_kill(c);
}

static void
px_up_read(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    if (c->state == PX_RAW)
        px_copy(c, c->up, c->cli, &c->bytes_down);
    else if (c->state == PX_REQ && c->have_req)
        px_pump_response(c);
}

static void
px_up_write(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    if (c->state == PX_CLOSING) {
        if (px_cli_pending(c) == 0)
            px_conn_kill(c);
        return;
    }
    if (c->state == PX_RAW && c->splice_pending) {
        px_splice_maybe_start(c);
        return;
    }
    if (c->state == PX_RAW && (c->cli_eof || c->up_eof)) {
        px_raw_eof_step(c);
        if (c->dead || c->cli_eof)
            return;
    }
    if (c->state == PX_RAW || (c->state == PX_REQ && !c->req_body_done)) {
        px_resume(c->cli, c->cli_tls != NULL);
        px_process_input(c);
    }
}

static void
px_up_event(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;
    const char *why = "";

    (void)bev;
    if (c->dead)
        return;
    if (what & BEV_EVENT_CONNECTED) {
        if (c->state == PX_CONNECTING)
            px_upstream_connected(c);
        else
            px_handshake_step(c);
        return;
    }
    if (c->state == PX_CONNECTING) {
        log_debug("conn %llu: connect to %s:%u failed: %s", (unsigned long long)c->id, c->host,
                  c->port, evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        px_dial_next(c);
        return;
    }
    if (c->state == PX_HANDSHAKE) {
        /* The upstream refused or failed verification: keep the client's
         * handshake going so the answer can be an HTTP 502 with the reason. */
        if (tls_conn_error(c->up_tls)[0])
            buf_copy_fixed(c->up_error, sizeof(c->up_error), tls_conn_error(c->up_tls));
        else
            buf_fmt_fixed(c->up_error, sizeof(c->up_error),
                          "TLS handshake with %s: connection closed", c->host);
        px_log_decision(c, "error", "upstream_tls", NULL, NULL, c->up_error);
        bufferevent_free(c->up);
        c->up = NULL;
        c->up_tls = NULL;
        c->up_failed = true;
        px_handshake_step(c);
        return;
    }
    if (c->up_tls && (what & BEV_EVENT_ERROR) && tls_conn_error(c->up_tls)[0])
        px_log_decision(c, "error", "upstream_tls", NULL, NULL, tls_conn_error(c->up_tls));
    if (c->state == PX_RAW && (what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR)) {
        px_raw_eof(c, false);
        return;
    }
    if (c->state == PX_RAW) {
        px_conn_kill(c);
        return;
    }
    if (c->state == PX_REQ && c->have_req) {
        /* The upstream ended: a response running to EOF is complete. */
        px_pump_response(c);
        if (c->dead || c->state != PX_REQ || !c->have_req)
            return;
        if (c->have_resp && http1_body_eof(c->resp_body, &why) == 0) {
            c->keep_alive = false;
            px_exchange_done(c);
            return;
        }
        if (!c->resp_started) {
            char detail[300];

            buf_fmt_fixed(detail, sizeof(detail), "connection to %s:%u closed without a response",
                          c->host, c->port);
            px_log_decision(c, "error", "response", c->method, c->path, detail);
            px_reply_json(c, 502, "Bad Gateway", "upstream_unreachable", detail, NULL);
            return;
        }
    }
    px_conn_kill(c);
}

/* ------------------------------------------------------------ accept */

static void
px_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct px_listener *l = arg;
    struct px_server *s = l->srv;
    struct px_conn *c;
    char host[INET6_ADDRSTRLEN] = "?";

    (void)lev;
    (void)salen;
    l->failures = 0;
    if (s->nconns >= s->o.max_conns) {
        log_warnx("connection limit (%u) reached: refusing a client", s->o.max_conns);
        close(fd);
        return;
    }
    c = xcalloc(1, sizeof(*c));
    c->srv = s;
    c->id = ++s->next_id;
    buf_init(&c->pending);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        buf_fmt_fixed(c->peer, sizeof(c->peer), "%s:%u", host, ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        buf_fmt_fixed(c->peer, sizeof(c->peer), "[%s]:%u", host, ntohs(sin6->sin6_port));
    } else {
        buf_copy_fixed(c->peer, sizeof(c->peer), "local");
    }
    c->wake = event_new(s->base, -1, 0, px_wake_cb, c);
    c->timer = evtimer_new(s->base, px_timer_cb, c);
    c->cli = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(c->cli, px_cli_read, px_cli_write, px_cli_event, c);
    bufferevent_setwatermark(c->cli, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_setwatermark(c->cli, EV_READ, 0, PX_HIGH);
    px_tune(c->cli);
    bufferevent_enable(c->cli, EV_READ | EV_WRITE);
    c->start_ms = loop_now_ms(s->loop);
    px_touch(c);
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    px_timer(c, s->o.header_timeout_s);
}

static void
px_backoff_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_listener *l = arg;

    (void)fd;
    (void)what;
    evconnlistener_enable(l->lev);
}

/* Accept errors (reference §7.1): out of descriptors or memory backs off
 * exponentially (100 ms doubling, 5 s cap); anything else waits 100 ms. */
static void
px_accept_error(struct evconnlistener *lev, void *arg)
{
    struct px_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    unsigned ms = 100;
    struct timeval tv;

    l->failures++;
    if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        for (unsigned i = 1; i < l->failures && ms < 5000; i++)
            ms *= 2;
        if (ms > 5000)
            ms = 5000;
    }
    log_warnx("accept: %s (retrying in %u ms)", strerror(err), ms);
    evconnlistener_disable(lev);
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    evtimer_add(l->backoff, &tv);
}

/* ------------------------------------------------------------ server */

static int
px_add_listener(struct px_server *s, struct evconnlistener *lev, struct err *e)
{
    struct px_listener *l;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    evutil_socket_t fd;

    if (!lev)
        return err_errno(e, "listen");
    l = xcalloc(1, sizeof(*l));
    l->lev = lev;
    l->srv = s;
    l->backoff = evtimer_new(s->base, px_backoff_cb, l);
    fd = evconnlistener_get_fd(lev);
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET)
            l->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
        else if (ss.ss_family == AF_INET6)
            l->port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    evconnlistener_set_cb(lev, px_accept, l);
    evconnlistener_set_error_cb(lev, px_accept_error);
    l->next = s->listeners;
    s->listeners = l;
    return 0;
}

/* "1.2.3.4:PORT" or "[::1]:PORT" (PORT 0: any). */
static int
px_parse_listen(const char *addr, struct sockaddr_storage *ss, int *sl)
{
    const char *colon = strrchr(addr, ':');
    char host[INET6_ADDRSTRLEN + 2];
    char *end;
    unsigned long port;
    size_t hl;

    memset(ss, 0, sizeof(*ss));
    if (!colon || !colon[1])
        return -1;
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno || *end || port > 65535)
        return -1;
    hl = (size_t)(colon - addr);
    if (hl >= 2 && addr[0] == '[' && addr[hl - 1] == ']') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        if (hl - 2 >= sizeof(host))
            return -1;
        memcpy(host, addr + 1, hl - 2);
        host[hl - 2] = '\0';
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *sl = sizeof(*sin6);
        return inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1 ? 0 : -1;
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;

        if (hl >= sizeof(host))
            return -1;
        memcpy(host, addr, hl);
        host[hl] = '\0';
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *sl = sizeof(*sin);
        return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
    }
}

int
px_server_listen(struct px_server *s, const char *addr, struct err *e)
{
    struct sockaddr_storage ss;
    int sl;

    if (px_parse_listen(addr, &ss, &sl) < 0)
        return err_set(e, EINVAL, "listen address '%s': expected IPV4:PORT or [IPV6]:PORT", addr);
    if (px_add_listener(s,
                        evconnlistener_new_bind(s->base, NULL, NULL,
                                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                                    LEV_OPT_CLOSE_ON_EXEC,
                                                1024, (struct sockaddr *)&ss, sl),
                        e) < 0)
        return err_wrap(e, "listening on %s", addr);
    return 0;
}

int
px_server_listen_fd(struct px_server *s, int fd, struct err *e)
{
    int type = 0, acc = 0;
    socklen_t len = sizeof(type);

    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
        return err_set(e, ENOTSOCK, "listening fd %d is not a stream socket", fd);
    len = sizeof(acc);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc)
        return err_set(e, EINVAL, "fd %d is not listening", fd);
    evutil_make_socket_nonblocking(fd);
    evutil_make_socket_closeonexec(fd);
    if (px_add_listener(s, evconnlistener_new(s->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE, -1, fd),
                        e) < 0)
        return err_wrap(e, "serving fd %d", fd);
    return 0;
}

unsigned
px_server_port(const struct px_server *s)
{
    const struct px_listener *l = s->listeners;

    while (l && l->next)
        l = l->next; /* the first one added */
    return l ? l->port : 0;
}

unsigned
px_server_conns(const struct px_server *s)
{
    return s->nconns;
}

static int
px_parse_map(struct px_server *s, const char *spec, struct err *e)
{
    const char *colon = strchr(spec, ':');
    struct px_map *m;
    size_t hl;

    if (!colon || colon == spec || (hl = (size_t)(colon - spec)) >= sizeof(m->host))
        return err_set(e, EINVAL, "--resolve '%s': expected HOST:ADDRESS", spec);
    s->map = xrealloc(s->map, (s->nmap + 1) * sizeof(*s->map));
    m = &s->map[s->nmap];
    memcpy(m->host, spec, hl);
    m->host[hl] = '\0';
    if (policy_addr_parse(colon + 1, &m->addr) < 0)
        return err_set(e, EINVAL, "--resolve '%s': '%s' is not an IP address", spec, colon + 1);
    s->nmap++;
    return 0;
}

struct px_server *
px_server_new(struct loop *loop, struct policy *policy, struct ca *ca, const struct px_opts *o,
              struct err *e)
{
    struct px_server *s = xcalloc(1, sizeof(*s));

    s->loop = loop;
    s->base = loop_base(loop);
    s->o = *o;
    if (!s->o.header_timeout_s)
        s->o.header_timeout_s = 30;
    if (!s->o.connect_timeout_s)
        s->o.connect_timeout_s = 10;
    if (!s->o.tls_timeout_s)
        s->o.tls_timeout_s = 15;
    if (!s->o.response_timeout_s)
        s->o.response_timeout_s = 60;
    if (!s->o.idle_timeout_s)
        s->o.idle_timeout_s = 300;
    if (!s->o.max_conns)
        s->o.max_conns = 8192;
    s->policy = policy_ref(policy);
    s->ca = ca;
    /* Pipes for spliced tunnels may use up to a third of the descriptors;
     * the rest stay for sockets. */
    {
        struct rlimit rl;

        s->max_spliced = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                             ? (unsigned)(rl.rlim_cur / 12)
                             : 1024;
    }
    for (unsigned i = 0; i < o->nresolve; i++) {
        if (px_parse_map(s, o->resolve[i], e) < 0) {
            px_server_free(s);
            return NULL;
        }
    }
    s->upstream = tls_client_ctx_new(o->upstream_ca, NULL, TLS_VERSION_ANY, e);
    if (!s->upstream) {
        err_wrap(e, "upstream TLS");
        px_server_free(s);
        return NULL;
    }
    if (o->dns_server) {
        s->dns = evdns_base_new(s->base, 0);
        if (!s->dns || evdns_base_nameserver_ip_add(s->dns, o->dns_server) != 0) {
            err_set(e, EINVAL, "DNS server '%s': expected IP[:PORT]", o->dns_server);
            px_server_free(s);
            return NULL;
        }
    } else {
        s->dns = evdns_base_new(s->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        if (!s->dns) {
            err_set(e, EIO, "DNS: cannot read /etc/resolv.conf");
            px_server_free(s);
            return NULL;
        }
    }
    evdns_base_set_option(s->dns, "timeout:", "3");
    evdns_base_set_option(s->dns, "attempts:", "2");
    return s;
}

void
px_server_set_policy(struct px_server *s, struct policy *p)
{
    struct policy *old = s->policy;

    s->policy = policy_ref(p);
    /* Connections decided under the old generation end (reference 7.10). */
    for (struct px_conn *c = s->conns; c; c = c->next)
        if (c->pol && c->pol != p)
            px_conn_kill(c);
    policy_unref(old);
}

void
px_server_free(struct px_server *s)
{
    if (!s)
        return;
    while (s->conns)
        px_conn_free(s->conns);
    while (s->listeners) {
        struct px_listener *l = s->listeners;

        s->listeners = l->next;
        evconnlistener_free(l->lev);
        event_free(l->backoff);
        free(l);
    }
    if (s->dns)
        evdns_base_free(s->dns, 1);
    tls_client_ctx_free(s->upstream);
    policy_unref(s->policy);
    free(s->map);
    free(s);
}
