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
 *
 * This file: the server, listeners, connection lifetime, timers, DNS and
 * dialing, the bufferevent callbacks. px_http.c: requests, decisions,
 * answers, the HTTP relay. px_relay.c: raw relays. px_int.h: shared state.
 */
#include "px_int.h"

static const char *px_state_name(enum px_state s);
static void px_port_str(char out[8], unsigned port);
static void px_conn_free(struct px_conn *c);
static void px_wake_cb(evutil_socket_t fd, short what, void *arg);
static void px_timer_cb(evutil_socket_t fd, short what, void *arg);
static void px_dns_cb(int result, struct evutil_addrinfo *res, void *arg);
static void px_handle_dns(struct px_conn *c);
static void px_dial_next(struct px_conn *c);
static void px_upstream_connected(struct px_conn *c);
static void px_process_input(struct px_conn *c);
static void px_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg);
static void px_backoff_cb(evutil_socket_t fd, short what, void *arg);
static void px_ident_cb(evutil_socket_t fd, short what, void *arg);
static void px_accept_error(struct evconnlistener *lev, void *arg);
static int px_add_listener(struct px_server *s, struct evconnlistener *lev, struct err *e);
static int px_parse_listen(const char *addr, struct sockaddr_storage *ss, int *sl);
static int px_parse_map(struct px_server *s, const char *spec, struct err *e);

uint64_t
px_now(struct px_conn *c)
{
    return loop_now_ms(c->srv->loop);
}

void
px_touch(struct px_conn *c)
{
    c->last_active_ms = px_now(c);
}

/* Arm the phase timer: SECS from now. */
void
px_timer(struct px_conn *c, unsigned secs)
{
    struct timeval tv = { .tv_sec = secs, .tv_usec = 0 };

    evtimer_add(c->timer, &tv);
}

void
px_wake(struct px_conn *c)
{
    event_active(c->wake, 0, 0);
}

static const char *
px_state_name(enum px_state s)
{
    static const char *const names[] = { "head",      "resolve",  "connecting", "sniff",
                                         "handshake", "request",  "relay",      "closing",
                                         "identity",  "inference" };

    return names[s];
}

static void
px_port_str(char out[8], unsigned port)
{
    buf_fmt_fixed(out, 8, "%u", port);
}

/* One decision record. Never a body, a query string or a header value. */
void
px_log_decision(struct px_conn *c, const char *action, const char *stage, const char *method,
                const char *path, const char *reason)
{
    char port[8], id[24], pid[16] = "";
    struct buf anc = BUF_INIT;

    px_port_str(port, c->port);
    buf_fmt_fixed(id, sizeof(id), "%llu", (unsigned long long)c->id);
    if (strcmp(action, "deny") != 0 && c->policy_name[0])
        buf_copy_fixed(c->acct_policy, sizeof(c->acct_policy), c->policy_name);
    if (c->have_caller) {
        buf_fmt_fixed(pid, sizeof(pid), "%d", (int)c->caller.pid);
        for (size_t i = 0; i < c->caller.nancestors; i++)
            buf_printf(&anc, "%s%s", i ? "," : "", c->caller.ancestors[i]);
    }
    log_kv(strcmp(action, "deny") == 0 ? LOG_LVL_WARN : LOG_LVL_INFO, "decision", "sandbox",
           c->srv->o.sandbox, "conn", id, "action", action, "stage", stage, "peer", c->peer, "pid",
           pid[0] ? pid : NULL, "binary",
           c->have_caller           ? c->caller.binary
           : c->srv->o.identity_off ? "-"
                                    : NULL,
           "ancestors", anc.len ? buf_cstr(&anc) : NULL, "host", c->host[0] ? c->host : NULL,
           "port", c->port ? port : NULL, "method", method, "path", path, "policy",
           c->policy_name[0] ? c->policy_name : NULL, "reason", reason && *reason ? reason : NULL,
           NULL);
    buf_fini(&anc);
}

/* Copy the path part of TARGET (no query) for logs, every credential
 * placeholder replaced by [CREDENTIAL]. */
void
px_log_path(char *out, size_t size, const char *target)
{
    size_t n = strcspn(target, "?");
    char *tmp = xmalloc(n + 1);

    memcpy(tmp, target, n);
    tmp[n] = '\0';
    px_cred_redact(tmp, out, size);
    free(tmp);
}

void
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
    px_creds_unref(c->creds);
    c->creds = NULL;
    c->injected = 0;
    memset(&c->scan, 0, sizeof(c->scan));
    c->hold = false;
    if (c->hold_body.data)
        explicit_bzero(c->hold_body.data, c->hold_body.len);
    buf_fini(&c->hold_body);
    buf_fini(&c->hold_target);
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
    /* The accounting half of the decision records: a connection on which
     * anything was allowed ends with its bytes and duration, joined to its
     * "decision" lines by sandbox and conn. Others only at debug level. */
    log_kv(c->acct_policy[0] ? LOG_LVL_INFO : LOG_LVL_DEBUG, "close", "sandbox", c->srv->o.sandbox,
           "conn", id, "binary", c->have_caller ? c->caller.binary : NULL, "host",
           c->host[0] ? c->host : NULL, "policy", c->acct_policy[0] ? c->acct_policy : NULL,
           "bytes_up", up, "bytes_down", down, "duration_ms", ms, "requests", nreq, NULL);
    if (c->dns_req)
        evdns_getaddrinfo_cancel(c->dns_req);
    px_splice_free(c);
    if (c->cli)
        bufferevent_free(c->cli);
    if (c->up)
        bufferevent_free(c->up);
    ca_leaf_put(c->leaf);
    px_infer_free(c);
    px_exchange_reset(c);
    buf_fini(&c->pending);
    policy_unref(c->pol);
    px_ident_caller_fini(&c->caller);
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
void
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

/* Close after what is queued for the client has been written: checked on
 * each write callback and every 20 ms (TLS records drain below the
 * filter, out of its sight), for at most 5 s. */
void
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
void
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
    case PX_INFER: px_infer_timer(c); return;
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
void
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
        /* Listen to the upstream too: a server that speaks first (SMTP,
         * SSH, databases) would otherwise wait forever for a client that
         * waits for it. */
        if (!c->l7)
            bufferevent_enable(c->up, EV_READ);
        px_process_input(c);
        return;
    }
    /* Forward: the rewritten request was prepared before the dial. Values
     * resolved under a credentials revision replaced meanwhile (rotated or
     * revoked) are not sent (reference 8.3). */
    if (c->injected && c->creds != c->srv->creds) {
        explicit_bzero(c->pending.data, c->pending.len);
        buf_reset(&c->pending);
        px_log_decision(c, "deny", "credentials", c->method, c->path,
                        "credentials changed before the request was sent");
        px_reply_json(c, 500, "Internal Server Error", "credential_injection_failed",
                      "credentials changed before the request was sent", NULL);
        return;
    }
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

/* Whatever the state, make progress on buffered input. */
static void
px_process_input(struct px_conn *c)
{
    if (c->dead || !c->cli)
        return;
    switch (c->state) {
    case PX_HEAD: px_read_head(c); break;
    case PX_SNIFF: px_sniff(c); break;
    case PX_INFER: px_infer_input(c); break;
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

void
px_cli_read(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    px_process_input(c);
}

void
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
    if (c->inf) {
        if (c->up && c->state == PX_INFER) {
            px_resume(c->up, c->up_tls != NULL);
            px_infer_up_read(c);
        }
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

void
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

void
px_up_read(struct bufferevent *bev, void *arg)
{
    struct px_conn *c = arg;

    (void)bev;
    if (c->dead)
        return;
    if (c->inf) {
        px_infer_up_read(c);
        return;
    }
    if (c->state == PX_RAW)
        px_copy(c, c->up, c->cli, &c->bytes_down);
    else if (c->state == PX_REQ && c->have_req)
        px_pump_response(c);
    else if (c->state == PX_SNIFF && !c->l7 &&
             evbuffer_get_length(bufferevent_get_input(c->cli)) == 0)
        px_start_raw(c); /* the server spoke first: not HTTP, not TLS */
}

void
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
    if (c->inf)
        return;
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

void
px_up_event(struct bufferevent *bev, short what, void *arg)
{
    struct px_conn *c = arg;
    const char *why = "";

    (void)bev;
    if (c->dead)
        return;
    if (c->inf) {
        px_infer_up_event(c, what);
        return;
    }
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

static void
px_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    struct px_listener *l = arg;
    struct px_server *s = l->srv;
    struct px_conn *c;
    char host[INET6_ADDRSTRLEN] = "?";

    (void)lev;
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
    if ((size_t)salen <= sizeof(c->peer_sa))
        memcpy(&c->peer_sa, sa, (size_t)salen);
    {
        socklen_t ll = sizeof(c->local_sa);

        if (getsockname(fd, (struct sockaddr *)&c->local_sa, &ll) < 0)
            c->local_sa.ss_family = AF_UNSPEC;
    }
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
    if (!s->o.infer_idle_s)
        s->o.infer_idle_s = 120;
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
    /* The trust store is parsed when the first upstream TLS session needs
     * it (a few milliseconds for the system's): a sandbox whose agent
     * never speaks TLS does not pay for it, and its start is not slowed. A
     * missing file is still an error now. */
    if (o->upstream_ca && access(o->upstream_ca, R_OK) < 0) {
        err_errno(e, "upstream TLS: trust bundle %s", o->upstream_ca);
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
    if (o->ident && !o->identity_off) {
        s->ident_ev =
            event_new(s->base, px_ident_notify_fd(o->ident), EV_READ | EV_PERSIST, px_ident_cb, s);
        event_add(s->ident_ev, NULL);
    }
    evdns_base_set_option(s->dns, "timeout:", "3");
    evdns_base_set_option(s->dns, "attempts:", "2");
    return s;
}

/* A binary's hash finished: connections waiting for it are decided now. */
static void
px_ident_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_server *s = arg;

    (void)fd;
    (void)what;
    if (!px_ident_poll(s->o.ident))
        return;
    for (struct px_conn *c = s->conns; c; c = c->next) {
        if (c->dead || c->state != PX_IDENT)
            continue;
        evtimer_del(c->timer);
        c->state = PX_HEAD;
        px_dispatch_request(c);
    }
}

struct tls_client_ctx *
px_upstream_ctx(struct px_server *s, struct err *e)
{
    if (!s->upstream) {
        s->upstream = tls_client_ctx_new(s->o.upstream_ca, NULL, TLS_VERSION_ANY, e);
        if (!s->upstream)
            err_wrap(e, "upstream TLS");
    }
    return s->upstream;
}

void
px_server_set_credentials(struct px_server *s, struct px_creds *c)
{
    px_creds_ref(c);
    px_creds_unref(s->creds);
    s->creds = c;
}

void
px_server_set_policy(struct px_server *s, struct policy *p)
{
    struct policy *old = s->policy;

    s->policy = policy_ref(p);
    /* Connections decided under the old generation end (reference 7.10). */
    for (struct px_conn *c = s->conns; c; c = c->next)
        if (c->pol && c->pol != p && c->state != PX_IDENT)
            px_conn_kill(c); /* (one waiting for its identity is decided later, anew) */
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
    if (s->ident_ev)
        event_free(s->ident_ev);
    if (s->dns)
        evdns_base_free(s->dns, 1);
    tls_client_ctx_free(s->upstream);
    policy_unref(s->policy);
    px_creds_unref(s->creds);
    free(s->map);
    free(s);
}
