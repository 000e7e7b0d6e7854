/*
 * px_http.c: the proxy's requests: the request head at the door and in
 * tunnels, policy decisions (L4, L7), the answers the proxy makes itself,
 * TLS auto-detection and termination, and the HTTP/1.1 relay of requests
 * and responses with their bodies (see px.c for the connection's life).
 */
#include "px_int.h"

static void px_reply_empty(struct px_conn *c, int status, const char *phrase);
static void px_json_kv(struct buf *b, const char *key, const char *val, bool comma);
static void px_reply_l7_deny(struct px_conn *c, const char *method, const char *path,
                             const char *policy, const char *reason);
static bool px_decide_l4(struct px_conn *c, const char *method, const char *target);
static bool px_decide_l7(struct px_conn *c, const char *method, const char *target,
                         struct buf *canon);
static bool px_build_request(struct px_conn *c, const char *path, bool close_upstream,
                             struct buf *out);
static long px_body_move(struct http1_body *b, bool reframe, struct evbuffer *src,
                         struct bufferevent *dst, uint64_t *count, bool *done, const char **why);
static void px_build_response(struct px_conn *c, struct buf *out);
static void px_tunnel_request(struct px_conn *c);
static void px_forward_request(struct px_conn *c);
static void px_connect_request(struct px_conn *c);

/* Answer the client and close: STATUS with a body (JSON unless TYPE says
 * otherwise), Connection: close. EXTRA is more header lines or NULL. */
void
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
void
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
    const char *binary = c->have_caller ? c->caller.binary : "-";
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

void
px_request_init(struct px_conn *c, struct policy_request *pr, enum policy_transport t)
{
    memset(pr, 0, sizeof(*pr));
    pr->transport = t;
    pr->host = c->host;
    pr->port = c->port;
    /* Standalone: no caller identity; binary rules pass (reference's
     * "relaxed" binary identity). */
    pr->binary_identity_relaxed = c->srv->o.identity_off;
    if (c->have_caller) {
        pr->binary = c->caller.binary;
        pr->ancestors = (const char *const *)c->caller.ancestors;
        pr->nancestors = c->caller.nancestors;
        pr->cmdline_paths = (const char *const *)c->caller.cmdline;
        pr->ncmdline_paths = c->caller.ncmdline;
    }
}

/* Who is calling (unless identity is off). Returns true when known; the
 * denial has been answered otherwise (identity fails closed). */
static bool
px_identify(struct px_conn *c, const char *verb)
{
    struct px_server *s = c->srv;
    char detail[600];
    struct err e;
    int rc;

    px_ident_caller_fini(&c->caller);
    c->have_caller = false;
    if (s->o.identity_off)
        return true;
    err_clear(&e);
    if (!s->o.ident) {
        rc = err_set(&e, EACCES, "caller identity unavailable");
    } else {
        if (!px_ident_anchor(s->o.ident) && s->o.ident_wait)
            s->o.ident_wait(s->o.ident_wait_arg);
        rc = px_ident_lookup(s->o.ident, (struct sockaddr *)&c->peer_sa,
                             (struct sockaddr *)&c->local_sa, &c->caller, &e);
    }
    if (rc == 0) {
        c->have_caller = true;
        return true;
    }
    if (rc == -EINPROGRESS) {
        /* A binary is being hashed off the loop: this request waits (its
         * input stays buffered) and is dispatched again when it is done. */
        log_debug("conn %llu: %s", (unsigned long long)c->id, e.msg);
        c->state = PX_IDENT;
        if (!c->tunnel)
            c->nreq--;
        px_timer(c, c->srv->o.connect_timeout_s);
        return false;
    }
    if (c->tunnel)
        buf_fmt_fixed(detail, sizeof(detail), "CONNECT %s:%u not permitted by policy", c->host,
                      c->port);
    else
        buf_fmt_fixed(detail, sizeof(detail), "%s %s:%u%s not permitted by policy", verb, c->host,
                      c->port, c->path);
    px_log_decision(c, "deny", "identity", verb, c->tunnel ? NULL : c->path, e.msg);
    /* The forward path's deny body has no reason, as the reference's (the
     * log has it). */
    px_reply_json(c, 403, "Forbidden", "policy_denied", detail, c->tunnel ? e.msg : NULL);
    return false;
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
    if (!px_identify(c, method)) {
        free(l4);
        return false;
    }
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
        c->body_rewrite = l4->body_rewrite;
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

/* The request cannot carry its credentials: answer as the reference does
 * (never naming the key or the value). */
static void
px_cred_fail(struct px_conn *c, enum px_cred_status st, const char *why)
{
    px_log_decision(c, "deny", "credentials", c->method, c->path, why);
    switch (st) {
    case PX_CRED_MISMATCH:
        px_reply_json(c, 403, "Forbidden", "credential_endpoint_mismatch", why, NULL);
        break;
    case PX_CRED_BAD_SYNTAX:
        px_reply_json(c, 400, "Bad Request", "invalid_credential_placeholder", why, NULL);
        break;
    default:
        px_reply_json(c, 500, "Internal Server Error",
                      c->tunnel ? "credential_unavailable" : "credential_injection_failed", why,
                      NULL);
        break;
    }
}

/* The request body is checked for placeholders as it streams (a body is
 * never rewritten): a marker, even split across reads or percent-encoded,
 * stops the request before it is complete upstream. */
static int
px_body_tap(void *arg, const char *p, size_t n)
{
    struct px_conn *c = arg;

    return px_cred_scan_feed(&c->scan, p, n) ? -1 : 0;
}

/* Build the head we send upstream for the parsed request: origin-form
 * target PATH, hop-by-hop headers dropped, Host regenerated, credential
 * placeholders resolved for this destination (the last step before the
 * upstream write). Returns false when the request must not go upstream
 * (answered). */
static bool
px_build_request(struct px_conn *c, const char *path, bool close_upstream, struct buf *out)
{
    const struct http1_request *r = c->req;
    bool default_port = (c->terminated && c->port == 443) || (!c->terminated && c->port == 80);
    struct px_cred_ctx x = { .creds = c->creds, .host = c->host, .port = c->port };
    struct buf target = BUF_INIT;
    enum px_cred_status st;

    st = px_cred_target(&x, path, &target);
    if (st != PX_CRED_OK)
        goto fail;
    buf_printf(out, "%s %s HTTP/1.1\r\n", r->method, buf_cstr(&target));
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
        if (c->hold && strcasecmp(n, "content-length") == 0)
            continue; /* the rewritten body has its own length */
        buf_printf(out, "%s: ", n);
        if ((st = px_cred_header(&x, n, r->headers[i].value, out)) != PX_CRED_OK)
            goto fail;
        buf_puts(out, "\r\n");
    }
    if (c->hold)
        buf_printf(out, "Content-Length: %zu\r\n", c->hold_body.len);
    else if (r->chunked)
        buf_puts(out, "Transfer-Encoding: chunked\r\n");
    /* The forward path says who relayed (as the reference does), once. */
    if (!c->tunnel && !http1_request_header(r, "via"))
        buf_puts(out, "Via: 1.1 openshell-sandbox\r\n");
    if (r->websocket && !close_upstream)
        buf_printf(out, "Connection: Upgrade\r\nUpgrade: %s\r\n",
                   http1_request_header(r, "upgrade"));
    else if (close_upstream)
        buf_puts(out, "Connection: close\r\n");
    buf_puts(out, "\r\n");
    /* Fail closed: no marker may remain anywhere in what goes upstream. */
    if (px_cred_marker(out->data, out->len)) {
        st = PX_CRED_UNAVAILABLE;
        buf_copy_fixed(x.why, sizeof(x.why), "credential placeholder left in the request");
        goto fail;
    }
    c->injected += x.injected;
    if (x.injected)
        log_debug("conn %llu: %u credential placeholder(s) resolved for %s:%u",
                  (unsigned long long)c->id, x.injected, c->host, c->port);
    buf_fini(&target);
    if (c->req_body && px_creds_count(c->creds) && !c->hold)
        http1_body_set_tap(c->req_body, px_body_tap, c);
    return true;
fail:
    /* OUT may hold resolved secrets: wipe it before it is released. */
    if (out->data)
        explicit_bzero(out->data, out->len);
    buf_reset(out);
    buf_fini(&target);
    px_cred_fail(c, st, x.why);
    return false;
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

/* A body to rewrite (request_body_credential_rewrite): collected whole,
 * decoded, at most PX_REWRITE_MAX bytes; then its placeholders are
 * resolved and the request goes upstream with a Content-Length. */
#define PX_REWRITE_MAX (256 * 1024)

static void
px_hold_finish(struct px_conn *c)
{
    struct px_cred_ctx x = { .creds = c->creds, .host = c->host, .port = c->port };
    const char *ct = http1_request_header(c->req, "content-type");
    struct buf body = BUF_INIT, head = BUF_INIT;
    enum px_cred_status st;

    st = px_cred_body(&x, c->hold_body.data, c->hold_body.len, ct, &body);
    if (st == PX_CRED_OK && px_cred_marker(body.data, body.len)) {
        st = PX_CRED_UNAVAILABLE;
        buf_copy_fixed(x.why, sizeof(x.why), "credential placeholder left in the request body");
    }
    if (st != PX_CRED_OK) {
        if (body.data)
            explicit_bzero(body.data, body.len);
        buf_fini(&body);
        px_cred_fail(c, st, x.why);
        return;
    }
    explicit_bzero(c->hold_body.data, c->hold_body.len);
    buf_reset(&c->hold_body);
    buf_append(&c->hold_body, body.data, body.len); /* for the Content-Length */
    if (!px_build_request(c, buf_cstr(&c->hold_target), c->tunnel ? !c->req->keep_alive : true,
                          &head)) {
        explicit_bzero(body.data, body.len);
        buf_fini(&body);
        buf_fini(&head);
        return;
    }
    buf_append(&head, body.data, body.len);
    explicit_bzero(body.data, body.len);
    buf_fini(&body);
    c->req_body_done = true;
    if (!c->tunnel) {
        buf_reset(&c->pending);
        buf_append(&c->pending, head.data, head.len);
        explicit_bzero(head.data, head.len);
        buf_fini(&head);
        px_resolve(c);
        return;
    }
    bufferevent_write(c->up, head.data, head.len);
    c->bytes_up += head.len;
    explicit_bzero(head.data, head.len);
    buf_fini(&head);
    bufferevent_enable(c->up, EV_READ);
    px_timer(c, c->srv->o.response_timeout_s);
    px_pump_response(c);
}

static void
px_hold_collect(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->cli);
    struct evbuffer_iovec v[16];
    const char *why = "";
    bool done = false;
    size_t total = 0;
    int nv = evbuffer_peek(in, -1, NULL, v, 16);

    if (nv > 16)
        nv = 16;
    if (nv <= 0)
        (void)http1_body_feed(c->req_body, "", 0, &c->hold_body, &done, &why);
    for (int i = 0; i < nv && !done; i++) {
        long used =
            http1_body_feed(c->req_body, v[i].iov_base, v[i].iov_len, &c->hold_body, &done, &why);

        if (used < 0) {
            px_log_decision(c, "deny", "framing", c->method, c->path, why);
            px_reply_empty(c, 400, "Bad Request");
            return;
        }
        total += (size_t)used;
        if ((size_t)used < v[i].iov_len)
            break;
    }
    evbuffer_drain(in, total);
    px_touch(c);
    if (c->hold_body.len > PX_REWRITE_MAX) {
        px_log_decision(c, "deny", "credentials", c->method, c->path,
                        "body to rewrite over 262144 bytes");
        px_reply_json(c, 413, "Payload Too Large", "credential_rewrite_body_too_large",
                      "a request body whose credentials are rewritten is limited to 262144 bytes",
                      NULL);
        return;
    }
    if (done)
        px_hold_finish(c);
    else if (total && evbuffer_get_length(in))
        px_hold_collect(c);
}

/* Start collecting the body of the request in c->req, to be sent with
 * TARGET once rewritten. */
static void
px_hold_start(struct px_conn *c, const char *target)
{
    c->hold = true;
    buf_reset(&c->hold_body);
    buf_reset(&c->hold_target);
    buf_puts(&c->hold_target, target);
    http1_body_set_decode(c->req_body);
    c->state = PX_REQ;
    px_timer(c, c->srv->o.header_timeout_s);
    px_hold_collect(c);
}

void
px_pump_request_body(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->cli);
    const char *why = "";
    bool done = false;
    long used;

    if (c->hold) {
        px_hold_collect(c);
        return;
    }
    while (!c->req_body_done) {
        used = px_body_move(c->req_body, c->req->chunked, in, c->up, &c->bytes_up, &done, &why);
        if (used < 0) {
            if (http1_body_tapped(c->req_body)) {
                px_log_decision(c, "deny", "credentials", c->method, c->path,
                                "credential placeholder in the request body");
                px_reply_json(c, 403, "Forbidden", "credential_in_body",
                              "a credential placeholder in the request body is not resolved: "
                              "the endpoint does not set request_body_credential_rewrite",
                              NULL);
                return;
            }
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
void
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

/* Parse the response head at the start of IN into R (HEAD: the request
 * was a HEAD): its length, 0 while incomplete, or <0 with *WHY saying what
 * is wrong. IN is not drained. */
long
px_response_head(struct evbuffer *in, bool head, struct http1_response *r, const char **why)
{
    size_t n = evbuffer_get_length(in);
    const char *p;
    long h;

    if (n == 0)
        return 0;
    if (n > HTTP1_HEAD_MAX + 1)
        n = HTTP1_HEAD_MAX + 1;
    p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
    h = http1_head_scan(p, n, HTTP1_HEAD_MAX, why);
    if (h == -EMSGSIZE)
        *why = "response head too large";
    if (h <= 0)
        return h;
    if (http1_parse_response(p, (size_t)h, head, r, why) < 0)
        return -EBADMSG;
    return h;
}

void
px_pump_response(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->up);
    struct buf out = BUF_INIT;
    const char *why = "";
    bool done = false;

    while (!c->dead && c->state == PX_REQ && c->have_req) {
        if (!c->have_resp) {
            const char *p;
            long h;

            if (!c->resp)
                c->resp = xmalloc(sizeof(*c->resp));
            h = px_response_head(in, strcmp(c->method, "HEAD") == 0, c->resp, &why);
            if (h == 0)
                break;
            if (h < 0) {
                px_log_decision(c, "error", "response", c->method, c->path, why);
                px_reply_json(c, 502, "Bad Gateway", "upstream_invalid_response", why, NULL);
                break;
            }
            p = (const char *)evbuffer_pullup(in, (ev_ssize_t)h);
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
    /* One credentials revision for the whole request. */
    px_creds_unref(c->creds);
    c->creds = px_creds_ref(c->srv->creds);
    c->req_body = http1_body_request(r);
    c->req_body_done = false;
    if (c->body_rewrite && px_creds_count(c->creds) && (r->chunked || r->length > 0)) {
        bufferevent_enable(c->up, EV_READ);
        px_hold_start(c, buf_cstr(&canon));
        buf_fini(&canon);
        return;
    }
    if (!px_build_request(c, buf_cstr(&canon), !r->keep_alive && !r->websocket, &head)) {
        buf_fini(&head);
        buf_fini(&canon);
        return;
    }
    bufferevent_write(c->up, head.data, head.len);
    c->bytes_up += head.len;
    explicit_bzero(head.data, head.len);
    buf_fini(&head);
    buf_fini(&canon);
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
    px_creds_unref(c->creds);
    c->creds = px_creds_ref(c->srv->creds);
    c->req_body = http1_body_request(r);
    c->req_body_done = false;
    if (c->body_rewrite && px_creds_count(c->creds) && (r->chunked || r->length > 0)) {
        px_hold_start(c, buf_cstr(&canon));
        buf_fini(&canon);
        return;
    }
    /* One request per upstream connection, unless it upgrades. */
    if (!px_build_request(c, buf_cstr(&canon), !r->websocket, &c->pending)) {
        buf_fini(&canon);
        return;
    }
    buf_fini(&canon);
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
    /* inference.local is the proxy's own: before policy and identity. */
    if (c->port == 443 && strcmp(c->host, "inference.local") == 0) {
        px_infer_start(c);
        return;
    }
    if (!px_decide_l4(c, "CONNECT", NULL))
        return;
    if (c->tls_skip && px_creds_bound_to(c->srv->creds, c->host, c->port)) {
        char detail[400];

        buf_fmt_fixed(detail, sizeof(detail),
                      "CONNECT %s:%u: a credential is bound to this endpoint but tls: skip "
                      "leaves its traffic uninspected",
                      c->host, c->port);
        px_log_decision(c, "deny", "connect", "CONNECT", NULL, detail);
        px_reply_json(c, 403, "Forbidden", "uninspected_credentials", detail, NULL);
        return;
    }
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
void
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
    px_dispatch_request(c);
}

/* A request head at the door (CONNECT or absolute-form), parsed in c->req;
 * run again when it waited for the caller's identity. */
void
px_dispatch_request(struct px_conn *c)
{
    if (c->req->form == HTTP1_FORM_AUTHORITY)
        px_connect_request(c);
    else
        px_forward_request(c);
}

/* Terminate the client's TLS: a leaf for the CONNECT host (not the
 * client's SNI), the handshake started. False when the connection was
 * killed (logged). */
static bool
px_serve_tls(struct px_conn *c)
{
    struct tls_server_opts so = { 0 };
    struct err e;

    c->leaf = ca_leaf_get(c->srv->ca, c->host, &e);
    if (!c->leaf) {
        px_log_decision(c, "error", "tls", NULL, NULL, e.msg);
        px_conn_kill(c);
        return false;
    }
    so.chain = ca_leaf_chain(c->leaf);
    so.key = ca_leaf_key(c->leaf);
    so.expect_sni = c->host;
    c->state = PX_HANDSHAKE;
    c->terminated = true;
    c->cli = tls_wrap_server(c->cli, &so, &c->cli_tls, &e);
    if (!c->cli) {
        px_log_decision(c, "error", "tls", NULL, NULL, e.msg);
        px_conn_kill(c);
        return false;
    }
    bufferevent_setcb(c->cli, px_cli_read, px_cli_write, px_cli_event, c);
    return true;
}

/* TLS auto-detection on the first bytes of a tunnel. */
void
px_sniff(struct px_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->cli);
    size_t n = evbuffer_get_length(in);
    const unsigned char *p;
    struct err e;

    if (n == 0)
        return;
    p = evbuffer_pullup(in, (ev_ssize_t)(n < 24 ? n : 24));
    if (c->inf) {
        enum tls_sniff k = tls_sniff(p, n < 24 ? n : 24);

        if (k == TLS_SNIFF_NEED_MORE)
            return;
        if (k != TLS_SNIFF_TLS) {
            /* inference.local is HTTPS only. */
            px_log_decision(c, "deny", "tls", NULL, NULL, "inference.local needs TLS");
            px_conn_kill(c);
            return;
        }
        if (!px_serve_tls(c))
            return;
        bufferevent_setwatermark(c->cli, EV_WRITE, PX_HIGH / 2, 0);
        bufferevent_setwatermark(c->cli, EV_READ, 0, PX_HIGH);
        px_timer(c, c->srv->o.tls_timeout_s);
        return;
    }
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
    if (!px_upstream_ctx(c->srv, &e)) {
        px_log_decision(c, "error", "tls", NULL, NULL, e.msg);
        px_conn_kill(c);
        return;
    }
    bufferevent_disable(c->up, EV_READ);
    if (!px_serve_tls(c))
        return;
    c->up = tls_wrap_client(c->up, px_upstream_ctx(c->srv, &e), c->host, &c->up_tls, &e);
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

void
px_handshake_step(struct px_conn *c)
{
    if (c->state != PX_HANDSHAKE || !tls_conn_established(c->cli_tls))
        return;
    if (c->inf) {
        c->state = PX_INFER;
        px_touch(c);
        px_timer(c, c->srv->o.idle_timeout_s);
        px_infer_input(c);
        return;
    }
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
