/*
 * gw_session.c: supervisor sessions and relays (doc/api.md §7).
 *
 * Session: one long-lived POST /v1/supervisor/session per sandbox; both
 * bodies stay open and carry ndjson lines. A new session for a sandbox
 * replaces the old one (the old stream is reset). Each sandbox that ever
 * connected has a `struct gw_session` in the registry on struct gw (its
 * connection state, shown as status.supervisor); the stream itself is a
 * `struct sess_link` that dies with the stream (on_close). One timer pings
 * every session and cuts off the ones silent for three ping periods.
 *
 * Relay: a client request (exec, files) makes a `struct gw_relay` with a
 * random id, sends {"type":"relay",...} on the sandbox's session and waits
 * (10 s) for the supervisor's POST /v1/supervisor/relay/{id}. Then the two
 * streams are spliced: frames (include/h2.h) are parsed in both directions
 * so that only the right types cross, and HTTP/2 flow control carries the
 * back-pressure: a destination answering -EAGAIN pauses the source's input
 * until its on_drain. Either side closing ends the other. The relay is freed
 * once both streams are gone.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "buf.h"
#include "gw.h"
#include "h2.h"
#include "log.h"
#include "loop.h"
#include "store.h"
#include "xfuncs.h"

#define SESS_PING_MS 20000
#define SESS_DEAD_PINGS 3 /* 60 s of silence with the default ping */
#define SESS_LINE_MAX (1024 * 1024)
#define RELAY_CLAIM_MS 10000
#define RELAY_MAX_PER_SANDBOX 32
#define RELAY_MAX 256
#define EXEC_OUT_CAP (4 * 1024 * 1024)
#define EXEC_BODY_MAX (8 * 1024 * 1024)
#define FRAMES_CTYPE "application/x-openshell-frames"
#define H2_CANCEL 0x8
#define H2_INTERNAL 0x2

struct sess_link;

struct gw_session {
    struct gw *gw;
    char id[37];
    struct sess_link *link; /* the connected stream, or NULL */
    long pid;
    char version[64];
    long long policy_version;
    int64_t since_ms; /* connected since, or disconnected since */
    struct gw_session *prev, *next;
};

struct sess_link {
    struct gw *gw;
    struct h2_stream *st;
    struct gw_session *s; /* NULL once replaced or cut off */
    uint64_t last_rx_ms;  /* loop time of the last line */
    struct buf in;        /* a partial line */
};

enum relay_kind { RK_FRAMES, RK_JSON, RK_UNTAR, RK_TAR };

struct gw_relay {
    struct gw *gw;
    enum relay_kind kind;
    char id[33];
    char sandbox_id[37];
    struct h2_stream *cst; /* the client's stream; NULL once closed */
    struct h2_stream *sst; /* the supervisor's relay stream */
    struct loop_timer *timer;
    cJSON *init;
    struct buf cin;  /* client bytes not parsed yet */
    struct buf sin;  /* supervisor bytes not parsed yet */
    struct buf pend; /* frames for the supervisor before it claimed */
    struct buf out, err;
    long timeout_s;
    bool listed, offered, claimed, done, started, truncated, stdin_eof;
    struct gw_relay *prev, *next;
};

static uint64_t ping_ms = SESS_PING_MS;

static void relay_fail(struct gw_relay *r, int status, const char *code, const char *msg);

/* ------------------------------------------------------------------ sessions */

static struct gw_session *
session_find(struct gw *gw, const char *id)
{
    for (struct gw_session *s = gw->sessions; s; s = s->next)
        if (strcmp(s->id, id) == 0)
            return s;
    return NULL;
}

/* The sandbox's watchers see the new supervisor state. */
static void
session_changed(struct gw *gw, const char *id)
{
    struct store_obj *o = NULL;
    struct err e;

    if (store_get(gw->store, "sandbox", id, &o, &e) == 0)
        gw_watch_notify(gw, id, o);
    store_obj_free(o);
}

cJSON *
gw_session_status(struct gw *gw, const char *id)
{
    struct gw_session *s = session_find(gw, id);
    cJSON *j = cJSON_CreateObject();

    cJSON_AddBoolToObject(j, "connected", s && s->link);
    if (s) {
        cJSON_AddNumberToObject(j, "since_ms", (double)s->since_ms);
        if (s->pid)
            cJSON_AddNumberToObject(j, "pid", (double)s->pid);
        if (s->version[0])
            cJSON_AddStringToObject(j, "version", s->version);
        cJSON_AddNumberToObject(j, "policy_version", (double)s->policy_version);
    }
    return j;
}

bool
gw_session_connected(struct gw *gw, const char *id)
{
    struct gw_session *s = session_find(gw, id);

    return s && s->link;
}

/* Detach LINK from its session (marking it disconnected). */
static void
link_detach(struct sess_link *l, const char *why)
{
    struct gw_session *s = l->s;

    if (!s)
        return;
    l->s = NULL;
    s->link = NULL;
    s->since_ms = store_now_ms();
    log_kv(LOG_LVL_INFO, "supervisor disconnected", "sandbox_id", s->id, "reason", why, NULL);
    /* Relays offered on this session will not be claimed: fail them now
     * rather than at the 10 s deadline. */
    for (struct gw_relay *r = l->gw->relays, *next; r; r = next) {
        next = r->next;
        if (r->offered && !r->claimed && strcmp(r->sandbox_id, s->id) == 0)
            relay_fail(r, 503, "unavailable", "the sandbox's supervisor disconnected");
    }
    session_changed(l->gw, s->id);
}

static void
session_write(struct sess_link *l, const char *line, size_t n)
{
    /* -EAGAIN only means queued: a supervisor that does not read its
     * session stops answering pings and is cut off. */
    h2_stream_write(l->st, line, n);
}

void
gw_supervisor_notify(struct gw *gw, const char *sandbox_id, const char *reason)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "{\"type\":\"config\",\"reason\":");
    buf_put_json_str(&b, reason, strlen(reason));
    buf_puts(&b, "}\n");
    for (struct gw_session *s = gw->sessions; s; s = s->next)
        if (s->link && (!sandbox_id || strcmp(s->id, sandbox_id) == 0))
            session_write(s->link, b.data, b.len);
    buf_fini(&b);
}

void
gw_session_forget(struct gw *gw, const char *id)
{
    struct gw_session *s = session_find(gw, id);

    if (!s)
        return;
    if (s->link) {
        s->link->s = NULL;
        h2_stream_reset(s->link->st, H2_CANCEL);
    }
    if (s->prev)
        s->prev->next = s->next;
    else
        gw->sessions = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s);
}

/* The sandbox's main process ended: record it in the sandbox's status. */
static void
record_exit(struct gw *gw, const char *id, int code)
{
    struct store_obj *o = NULL;
    struct err e;

    if (store_get(gw->store, "sandbox", id, &o, &e) == 0 &&
        gw_sandbox_set_phase(gw, o, "exited", &code, &e) < 0)
        log_warnx("sandbox %s: recording the exit: %s", id, e.msg);
    store_obj_free(o);
}

static void
link_line(struct sess_link *l, const char *p, size_t n)
{
    struct gw_session *s = l->s;
    struct gw *gw = l->gw;
    cJSON *j = cJSON_ParseWithLength(p, n);
    const cJSON *t = j ? cJSON_GetObjectItemCaseSensitive(j, "type") : NULL;
    const char *type = cJSON_IsString(t) ? t->valuestring : "";
    struct err e;

    if (!s || !cJSON_IsObject(j)) {
        if (s)
            log_kv(LOG_LVL_WARN, "supervisor session: not a JSON object line", "sandbox_id", s->id,
                   NULL);
        goto out;
    }
    if (strcmp(type, "hello") == 0) {
        const cJSON *pid = cJSON_GetObjectItemCaseSensitive(j, "supervisor_pid");
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(j, "policy_version");

        s->pid = cJSON_IsNumber(pid) ? (long)pid->valuedouble : 0;
        snprintf(s->version, sizeof(s->version), "%s", cJSON_IsString(v) ? v->valuestring : "");
        s->policy_version = cJSON_IsNumber(pv) ? (long long)pv->valuedouble : 0;
        log_kv(LOG_LVL_INFO, "supervisor hello", "sandbox_id", s->id, "version", s->version, NULL);
        session_changed(gw, s->id);
    } else if (strcmp(type, "policy_status") == 0) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "version");
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(j, "status");
        const cJSON *le = cJSON_GetObjectItemCaseSensitive(j, "load_error");
        const cJSON *src = cJSON_GetObjectItemCaseSensitive(j, "source");
        const char *source = cJSON_IsString(src) ? src->valuestring : "sandbox";
        long long ver = cJSON_IsNumber(v) ? (long long)v->valuedouble : -1;

        if (!cJSON_IsString(st) || ver < 0) {
            log_kv(LOG_LVL_WARN, "supervisor session: bad policy_status line", "sandbox_id", s->id,
                   NULL);
            goto out;
        }
        if (strcmp(st->valuestring, "loaded") == 0)
            s->policy_version = ver;
        /* Revisions live in the store; "spec" and "default" have none. */
        if (ver >= 1 && (strcmp(source, "sandbox") == 0 || strcmp(source, "global") == 0) &&
            gw_policy_status_apply(gw, s->id, ver, st->valuestring,
                                   cJSON_IsString(le) ? le->valuestring : NULL, source, &e) < 0)
            log_kv(LOG_LVL_WARN, "supervisor policy status refused", "sandbox_id", s->id, "error",
                   e.msg, NULL);
        session_changed(gw, s->id);
    } else if (strcmp(type, "log") == 0) {
        gw_log_append(gw, s->id, cJSON_GetObjectItemCaseSensitive(j, "lines"));
    } else if (strcmp(type, "exit") == 0) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "exit_code");

        if (cJSON_IsNumber(c))
            record_exit(gw, s->id, (int)c->valuedouble);
    } else if (strcmp(type, "pong") != 0) {
        log_debug("supervisor session %s: line type \"%.40s\" ignored", s->id, type);
    }
out:
    cJSON_Delete(j);
}

static void
link_on_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct sess_link *l = arg;
    size_t start = 0;

    l->last_rx_ms = loop_now_ms(l->gw->loop);
    buf_append(&l->in, p, n);
    for (size_t i = 0; i < l->in.len; i++) {
        if (l->in.data[i] != '\n')
            continue;
        if (i > start)
            link_line(l, l->in.data + start, i - start);
        start = i + 1;
    }
    buf_consume(&l->in, start);
    if (l->in.len > SESS_LINE_MAX) {
        if (l->s)
            log_kv(LOG_LVL_WARN, "supervisor session: line over 1 MiB, session reset", "sandbox_id",
                   l->s->id, NULL);
        link_detach(l, "line too long");
        h2_stream_reset(st, H2_INTERNAL);
    }
}

static void
link_on_end(struct h2_stream *st, void *arg)
{
    struct sess_link *l = arg;

    link_detach(l, "supervisor ended the session");
    h2_stream_end(st);
}

static void
link_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct sess_link *l = arg;

    (void)st;
    link_detach(l, code ? "stream reset" : "stream closed");
    buf_fini(&l->in);
    free(l);
}

static const struct h2_stream_cbs link_cbs = {
    .on_data = link_on_data,
    .on_end = link_on_end,
    .on_close = link_on_close,
};

/* POST /v1/supervisor/session */
static void
h_session(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    struct gw_session *s;
    struct sess_link *l;

    (void)req;
    if (gw_sandbox_principal(gw, st, &sb) < 0)
        return;
    if (!(s = session_find(gw, sb->id))) {
        s = xcalloc(1, sizeof(*s));
        s->gw = gw;
        snprintf(s->id, sizeof(s->id), "%s", sb->id);
        s->next = gw->sessions;
        if (gw->sessions)
            gw->sessions->prev = s;
        gw->sessions = s;
    }
    if (s->link) {
        /* One session per sandbox: the newer wins. */
        s->link->s = NULL;
        h2_stream_reset(s->link->st, H2_CANCEL);
        log_kv(LOG_LVL_INFO, "supervisor session replaced", "sandbox", sb->name, NULL);
    }
    l = xcalloc(1, sizeof(*l));
    l->gw = gw;
    l->st = st;
    l->s = s;
    l->last_rx_ms = loop_now_ms(gw->loop);
    s->link = l;
    s->since_ms = store_now_ms();
    s->pid = 0;
    h2_stream_set_cbs(st, &link_cbs, l);
    h2_stream_start(st, 200, "application/x-ndjson", NULL, 0);
    log_kv(LOG_LVL_INFO, "supervisor connected", "sandbox", sb->name, "workspace", sb->workspace,
           NULL);
    session_changed(gw, sb->id);
    store_obj_free(sb);
}

/* Every ping period: a ping on each session; silence for SESS_DEAD_PINGS
 * periods is a dead link. */
static void
ping_tick(void *arg)
{
    static const char ping[] = "{\"type\":\"ping\"}\n";
    struct gw *gw = arg;
    uint64_t now = loop_now_ms(gw->loop);

    for (struct gw_session *s = gw->sessions; s; s = s->next) {
        struct sess_link *l = s->link;

        if (!l)
            continue;
        if (now - l->last_rx_ms >= SESS_DEAD_PINGS * ping_ms) {
            link_detach(l, "silent for three ping periods");
            h2_stream_reset(l->st, H2_CANCEL);
            continue;
        }
        session_write(l, ping, sizeof(ping) - 1);
    }
}

/* ------------------------------------------------------------------ relays */

static size_t
relay_count(struct gw *gw, const char *sandbox_id)
{
    size_t n = 0;

    for (struct gw_relay *r = gw->relays; r; r = r->next)
        if (!sandbox_id || strcmp(r->sandbox_id, sandbox_id) == 0)
            n++;
    return n;
}

static void
relay_unlist(struct gw_relay *r)
{
    struct gw *gw = r->gw;

    if (!r->listed)
        return;
    r->listed = false;
    if (r->prev)
        r->prev->next = r->next;
    else
        gw->relays = r->next;
    if (r->next)
        r->next->prev = r->prev;
}

static void
relay_maybe_free(struct gw_relay *r)
{
    if (r->cst || r->sst)
        return;
    relay_unlist(r);
    loop_timer_free(r->timer);
    cJSON_Delete(r->init);
    buf_fini(&r->cin);
    buf_fini(&r->sin);
    buf_fini(&r->pend);
    buf_fini(&r->out);
    buf_fini(&r->err);
    free(r);
}

/* A frame for the supervisor: written when it has claimed the relay,
 * else kept for then. */
static void
relay_to_sup(struct gw_relay *r, uint8_t type, const void *p, size_t n)
{
    struct buf b = BUF_INIT;

    if (!r->sst) {
        h2_frame_put(&r->pend, type, p, n);
        return;
    }
    h2_frame_put(&b, type, p, n);
    if (h2_stream_write(r->sst, b.data, b.len) == -EAGAIN && r->cst)
        h2_stream_pause_input(r->cst, true);
    buf_fini(&b);
}

/* The ERROR frame {"error":{"code","message"}} on a frames stream. */
static void
put_error_frame(struct buf *b, const char *code, const char *msg)
{
    struct buf j = BUF_INIT;

    buf_puts(&j, "{\"error\":{\"code\":");
    buf_put_json_str(&j, code, strlen(code));
    buf_puts(&j, ",\"message\":");
    buf_put_json_str(&j, msg, strlen(msg));
    buf_puts(&j, "}}");
    h2_frame_put(b, H2_FRAME_ERROR, j.data, j.len);
    buf_fini(&j);
}

/* End the relay with an error toward the client (STATUS before the
 * response started; an ERROR frame or a reset after) and cancel the
 * supervisor's side. */
static void
relay_fail(struct gw_relay *r, int status, const char *code, const char *msg)
{
    if (r->done)
        return;
    r->done = true;
    relay_unlist(r);
    if (r->cst) {
        if (r->kind == RK_FRAMES) {
            struct buf b = BUF_INIT;

            put_error_frame(&b, code, msg);
            h2_stream_write(r->cst, b.data, b.len);
            h2_stream_end(r->cst);
            buf_fini(&b);
        } else if (r->started) {
            h2_stream_reset(r->cst, H2_INTERNAL);
        } else {
            h2_stream_error(r->cst, status, code, "%s", msg);
        }
    }
    if (r->sst)
        h2_stream_reset(r->sst, H2_CANCEL);
}

static void
json_respond_exit(struct gw_relay *r, long code)
{
    struct buf b = BUF_INIT;

    buf_printf(&b, "{\"exit_code\":%ld,\"stdout\":", code);
    buf_put_json_str(&b, r->out.data ? r->out.data : "", r->out.len);
    buf_puts(&b, ",\"stderr\":");
    buf_put_json_str(&b, r->err.data ? r->err.data : "", r->err.len);
    buf_printf(&b, ",\"truncated\":%s}\n", r->truncated ? "true" : "false");
    h2_stream_respond(r->cst, 200, "application/json", NULL, 0, b.data, b.len);
    buf_fini(&b);
}

static void
collect(struct gw_relay *r, struct buf *to, const uint8_t *p, size_t n)
{
    size_t room = to->len < EXEC_OUT_CAP ? EXEC_OUT_CAP - to->len : 0;

    if (n > room) {
        r->truncated = true;
        n = room;
    }
    buf_append(to, p, n);
}

/* The supervisor's status for an ERROR frame's code. */
static int
status_for_code(const char *code)
{
    static const struct {
        const char *code;
        int status;
    } map[] = {
        { "invalid_argument", 400 },   { "not_found", 404 },           { "permission_denied", 403 },
        { "already_exists", 409 },     { "failed_precondition", 412 }, { "payload_too_large", 413 },
        { "resource_exhausted", 429 }, { "unavailable", 503 },
    };

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(map[i].code, code) == 0)
            return map[i].status;
    return 500;
}

/* One frame from the supervisor. */
static void
sup_frame(struct gw_relay *r, const struct h2_frame *f)
{
    struct buf b = BUF_INIT;
    long code = 0;

    if (f->type == H2_FRAME_INIT || f->type == H2_FRAME_STDIN || f->type == H2_FRAME_RESIZE) {
        relay_fail(r, 502, "internal", "supervisor sent a client-only frame on the relay");
        return;
    }
    if (f->type == H2_FRAME_EXIT) {
        cJSON *j = cJSON_ParseWithLength((const char *)f->payload, f->len);
        const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "exit_code") : NULL;

        code = cJSON_IsNumber(c) ? (long)c->valuedouble : -1;
        cJSON_Delete(j);
    }
    switch (r->kind) {
    case RK_FRAMES:
        if (!r->cst)
            break;
        h2_frame_put(&b, f->type, f->payload, f->len);
        if (h2_stream_write(r->cst, b.data, b.len) == -EAGAIN && r->sst)
            h2_stream_pause_input(r->sst, true);
        if (f->type == H2_FRAME_EXIT || f->type == H2_FRAME_ERROR) {
            r->done = true;
            h2_stream_end(r->cst);
        }
        break;
    case RK_JSON:
        if (f->type == H2_FRAME_STDOUT)
            collect(r, &r->out, f->payload, f->len);
        else if (f->type == H2_FRAME_STDERR)
            collect(r, &r->err, f->payload, f->len);
        else if (f->type == H2_FRAME_EXIT && r->cst) {
            r->done = true;
            json_respond_exit(r, code);
        }
        break;
    case RK_TAR:
        if (f->type == H2_FRAME_STDOUT && r->cst) {
            if (!r->started) {
                r->started = true;
                h2_stream_start(r->cst, 200, "application/x-tar", NULL, 0);
            }
            if (h2_stream_write(r->cst, f->payload, f->len) == -EAGAIN && r->sst)
                h2_stream_pause_input(r->sst, true);
        } else if (f->type == H2_FRAME_EXIT && r->cst) {
            if (code != 0) {
                relay_fail(r, 500, "internal", "tar in the sandbox failed");
                break;
            }
            r->done = true;
            if (!r->started)
                h2_stream_start(r->cst, 200, "application/x-tar", NULL, 0);
            r->started = true;
            h2_stream_end(r->cst);
        }
        break;
    case RK_UNTAR:
        if (f->type == H2_FRAME_EXIT && r->cst) {
            r->done = true;
            if (code == 0)
                h2_stream_respond(r->cst, 200, "application/json", NULL, 0, "{\"ok\":true}\n", 12);
            else
                h2_stream_error(r->cst, 500, "internal", "extracting in the sandbox: exit code %ld",
                                code);
        }
        break;
    }
    if (f->type == H2_FRAME_ERROR && r->kind != RK_FRAMES && !r->done) {
        cJSON *j = cJSON_ParseWithLength((const char *)f->payload, f->len);
        const cJSON *er = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
        const cJSON *c = er ? cJSON_GetObjectItemCaseSensitive(er, "code") : NULL;
        const cJSON *m = er ? cJSON_GetObjectItemCaseSensitive(er, "message") : NULL;
        const char *cs = cJSON_IsString(c) ? c->valuestring : "internal";

        r->done = true;
        if (r->cst && r->started)
            h2_stream_reset(r->cst, H2_INTERNAL);
        else if (r->cst)
            h2_stream_error(r->cst, status_for_code(cs), cs, "%s",
                            cJSON_IsString(m) ? m->valuestring : "error in the sandbox");
        cJSON_Delete(j);
    }
    if (r->done && r->sst) {
        loop_timer_stop(r->timer);
        h2_stream_end(r->sst);
    }
    buf_fini(&b);
}

static void
sup_on_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct gw_relay *r = arg;
    struct h2_frame f;
    size_t used, off = 0;
    struct err e;
    int rc;

    (void)st;
    if (r->done)
        return;
    buf_append(&r->sin, p, n);
    while (!r->done && (rc = h2_frame_parse((const uint8_t *)r->sin.data + off, r->sin.len - off,
                                            &f, &used, &e)) == 1) {
        sup_frame(r, &f);
        off += used;
    }
    buf_consume(&r->sin, off);
    if (!r->done && rc < 0) {
        log_kv(LOG_LVL_WARN, "relay: bad frame from the supervisor", "relay", r->id, "error", e.msg,
               NULL);
        relay_fail(r, 502, "internal", "the supervisor sent a malformed frame");
    }
}

static void
sup_on_end(struct h2_stream *st, void *arg)
{
    struct gw_relay *r = arg;

    (void)st;
    if (!r->done)
        relay_fail(r, 503, "unavailable", "the supervisor ended the relay without an exit status");
}

static void
sup_on_drain(struct h2_stream *st, void *arg)
{
    struct gw_relay *r = arg;

    (void)st;
    if (r->cst)
        h2_stream_pause_input(r->cst, false);
}

static void
sup_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct gw_relay *r = arg;

    (void)st;
    (void)code;
    r->sst = NULL;
    if (!r->done)
        relay_fail(r, 503, "unavailable", "the supervisor's relay stream closed");
    relay_maybe_free(r);
}

static const struct h2_stream_cbs sup_cbs = {
    .on_data = sup_on_data,
    .on_end = sup_on_end,
    .on_drain = sup_on_drain,
    .on_close = sup_on_close,
};

/* Timer: the claim deadline, then (JSON exec) the command's timeout. */
static void
relay_timer(void *arg)
{
    struct gw_relay *r = arg;

    if (r->done)
        return;
    if (!r->claimed) {
        log_kv(LOG_LVL_WARN, "relay not claimed in 10 s", "relay", r->id, "sandbox_id",
               r->sandbox_id, NULL);
        relay_fail(r, 503, "unavailable", "the supervisor did not open the relay within 10 s");
        return;
    }
    /* timeout_seconds: exit 124, as coreutils timeout; cancelling the relay
     * stream makes the supervisor kill the command. */
    r->done = true;
    if (r->cst)
        json_respond_exit(r, 124);
    if (r->sst)
        h2_stream_reset(r->sst, H2_CANCEL);
}

/* Send the relay line on the sandbox's session. */
static int
relay_offer(struct gw_relay *r)
{
    struct gw_session *s = session_find(r->gw, r->sandbox_id);
    struct buf b = BUF_INIT;
    char *init;

    if (!s || !s->link) {
        relay_fail(r, 503, "unavailable", "the sandbox's supervisor is not connected");
        return -EBUSY;
    }
    init = api_json_print(r->init);
    buf_puts(&b, "{\"type\":\"relay\",\"relay_id\":\"");
    buf_puts(&b, r->id);
    buf_puts(&b, "\",\"init\":");
    buf_puts(&b, init);
    buf_puts(&b, "}\n");
    session_write(s->link, b.data, b.len);
    r->offered = true;
    loop_timer_start(r->timer, RELAY_CLAIM_MS, false);
    free(init);
    buf_fini(&b);
    return 0;
}

/* POST /v1/supervisor/relay/{id} */
static void
h_relay(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    struct gw_relay *r;

    if (gw_sandbox_principal(gw, st, &sb) < 0)
        return;
    for (r = gw->relays; r; r = r->next)
        if (strcmp(r->id, req->params[0]) == 0)
            break;
    /* Another sandbox's relay is as unknown as an expired one. */
    if (!r || r->claimed || !r->offered || r->done || strcmp(r->sandbox_id, sb->id) != 0) {
        h2_stream_error(st, 404, "not_found", "relay %.40s: unknown or expired", req->params[0]);
        store_obj_free(sb);
        return;
    }
    store_obj_free(sb);
    r->claimed = true;
    r->sst = st;
    loop_timer_stop(r->timer);
    if (r->kind == RK_JSON && r->timeout_s > 0)
        loop_timer_start(r->timer, (uint64_t)r->timeout_s * 1000, false);
    h2_stream_set_cbs(st, &sup_cbs, r);
    h2_stream_start(st, 200, FRAMES_CTYPE, NULL, 0);
    if (r->pend.len && h2_stream_write(st, r->pend.data, r->pend.len) == -EAGAIN) {
        buf_fini(&r->pend);
        return; /* the client's input stays paused until on_drain */
    }
    buf_fini(&r->pend);
    if (r->cst)
        h2_stream_pause_input(r->cst, false);
}

/* ------------------------------------------------------------------ client side */

static void
random_hex(char *out, size_t bytes)
{
    unsigned char r[32];

    xgetrandom(r, bytes);
    for (size_t i = 0; i < bytes; i++)
        snprintf(out + 2 * i, 3, "%02x", r[i]);
}

static int
check_init(const cJSON *init, struct err *e)
{
    static const char *const keys[] = { "op",   "command", "tty",         "cols",
                                        "rows", "workdir", "environment", NULL };
    const cJSON *cmd, *c, *env;
    const char *op = NULL, *s;
    size_t n = 0;
    int rc;

    if ((rc = api_check_keys(init, keys, "init", e)) < 0 ||
        (rc = api_get_string(init, "op", "init", false, &op, e)) < 0 ||
        (rc = api_get_string(init, "workdir", "init", false, &s, e)) < 0)
        return rc;
    if (op && strcmp(op, "exec") != 0)
        return err_set(e, EINVAL, "init.op \"%.20s\": only exec is allowed here", op);
    if ((rc = api_get_array(init, "command", "init", &cmd, e)) < 0)
        return rc;
    if (rc == 1 || !cmd)
        return err_set(e, EINVAL, "command: required, a non-empty array of strings");
    cJSON_ArrayForEach(c, cmd)
    {
        if (!cJSON_IsString(c) || !*c->valuestring)
            return err_set(e, EINVAL, "command[%zu]: expected a non-empty string", n);
        n++;
    }
    if (n == 0 || n > 4096)
        return err_set(e, EINVAL, "command: expected 1 to 4096 arguments");
    if ((rc = api_get_object(init, "environment", "init", &env, e)) < 0 ||
        (rc == 0 && (rc = api_check_string_map(env, "environment", e)) < 0))
        return rc;
    for (const char *k2[] = { "cols", "rows", NULL }, **k = k2; *k; k++) {
        c = cJSON_GetObjectItemCaseSensitive(init, *k);
        if (c && !(cJSON_IsNumber(c) && c->valuedouble >= 0 && c->valuedouble <= 65535))
            return err_set(e, EINVAL, "%s: expected 0-65535", *k);
    }
    return 0;
}

static void
client_on_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct gw_relay *r = arg;
    struct h2_frame f;
    size_t used, off = 0;
    struct err e;
    int rc = 0;

    if (r->done)
        return;
    if (r->kind == RK_UNTAR) {
        while (n) {
            size_t k = n > 65536 ? 65536 : n;

            relay_to_sup(r, H2_FRAME_STDIN, p, k);
            p += k;
            n -= k;
        }
        if (!r->sst)
            h2_stream_pause_input(st, true);
        return;
    }
    if (r->kind == RK_JSON) {
        if (r->cin.len + n > EXEC_BODY_MAX) {
            relay_fail(r, 413, "payload_too_large", "exec request body over 8 MiB");
            return;
        }
        buf_append(&r->cin, p, n);
        return;
    }
    buf_append(&r->cin, p, n);
    while (!r->done && (rc = h2_frame_parse((const uint8_t *)r->cin.data + off, r->cin.len - off,
                                            &f, &used, &e)) == 1) {
        off += used;
        if (!r->init) {
            cJSON *j = NULL;

            if (f.type != H2_FRAME_INIT) {
                relay_fail(r, 400, "invalid_argument", "the first frame must be INIT");
                break;
            }
            if ((rc = api_parse_object((const char *)f.payload, f.len, &j, &e)) < 0 ||
                (rc = check_init(j, &e)) < 0) {
                cJSON_Delete(j);
                relay_fail(r, 400, "invalid_argument", e.msg);
                break;
            }
            if (!cJSON_GetObjectItemCaseSensitive(j, "op"))
                cJSON_AddStringToObject(j, "op", "exec");
            r->init = j;
            if (relay_offer(r) < 0)
                break;
            continue;
        }
        if (f.type != H2_FRAME_STDIN && f.type != H2_FRAME_RESIZE && f.type != H2_FRAME_EOF) {
            relay_fail(r, 400, "invalid_argument",
                       "a client may send only STDIN, RESIZE and EOF frames after INIT");
            break;
        }
        if (f.type == H2_FRAME_EOF)
            r->stdin_eof = true;
        relay_to_sup(r, f.type, f.payload, f.len);
    }
    buf_consume(&r->cin, off);
    if (!r->done && rc < 0) {
        struct buf msg = BUF_INIT;

        buf_printf(&msg, "bad frame: %s", e.msg);
        relay_fail(r, 400, "invalid_argument", buf_cstr(&msg));
        buf_fini(&msg);
    }
    if (!r->done && r->init && !r->sst)
        h2_stream_pause_input(st, true);
}

/* The JSON exec body: command, stdin, environment, workdir, timeout_seconds. */
static int
json_exec_start(struct gw_relay *r, struct err *e)
{
    static const char *const keys[] = { "command", "stdin",           "environment",
                                        "workdir", "timeout_seconds", NULL };
    cJSON *body = NULL, *init;
    const cJSON *t, *it;
    const char *in = NULL;
    int rc;

    if ((rc = api_parse_object(r->cin.data, r->cin.len, &body, e)) < 0 ||
        (rc = api_check_keys(body, keys, "", e)) < 0 ||
        (rc = api_get_string(body, "stdin", "", false, &in, e)) < 0)
        goto out;
    t = cJSON_GetObjectItemCaseSensitive(body, "timeout_seconds");
    if (t && !(cJSON_IsNumber(t) && t->valuedouble >= 0 && t->valuedouble <= 86400)) {
        rc = err_set(e, EINVAL, "timeout_seconds: expected 0-86400");
        goto out;
    }
    r->timeout_s = t ? (long)t->valuedouble : 0;
    init = cJSON_CreateObject();
    cJSON_AddStringToObject(init, "op", "exec");
    cJSON_AddBoolToObject(init, "tty", false);
    cJSON_ArrayForEach(it, body)
    {
        if (strcmp(it->string, "command") == 0 || strcmp(it->string, "environment") == 0 ||
            strcmp(it->string, "workdir") == 0)
            cJSON_AddItemToObject(init, it->string, cJSON_Duplicate(it, true));
    }
    r->init = init;
    if ((rc = check_init(init, e)) < 0)
        goto out;
    for (size_t off = 0, n = in ? strlen(in) : 0; off < n;) {
        size_t k = n - off > 65536 ? 65536 : n - off;

        relay_to_sup(r, H2_FRAME_STDIN, in + off, k);
        off += k;
    }
    relay_to_sup(r, H2_FRAME_EOF, "\x02", 1);
    buf_fini(&r->cin);
out:
    cJSON_Delete(body);
    return rc;
}

static void
client_on_end(struct h2_stream *st, void *arg)
{
    struct gw_relay *r = arg;
    struct err e;

    (void)st;
    if (r->done)
        return;
    switch (r->kind) {
    case RK_JSON:
        if (json_exec_start(r, &e) < 0)
            relay_fail(r, 400, "invalid_argument", e.msg);
        else
            relay_offer(r);
        break;
    case RK_UNTAR: relay_to_sup(r, H2_FRAME_EOF, "\x02", 1); break;
    case RK_FRAMES:
        if (!r->init)
            relay_fail(r, 400, "invalid_argument", "request ended before an INIT frame");
        else if (!r->stdin_eof) {
            r->stdin_eof = true;
            relay_to_sup(r, H2_FRAME_EOF, "\x02", 1);
        }
        break;
    case RK_TAR: break;
    }
}

static void
client_on_drain(struct h2_stream *st, void *arg)
{
    struct gw_relay *r = arg;

    (void)st;
    if (r->sst)
        h2_stream_pause_input(r->sst, false);
}

static void
client_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct gw_relay *r = arg;

    (void)st;
    (void)code;
    r->cst = NULL;
    /* The client went away: cancel the supervisor's side (it stops the
     * command); a pending relay can no longer be claimed. */
    relay_unlist(r);
    if (r->sst && !r->done) {
        r->done = true;
        h2_stream_reset(r->sst, H2_CANCEL);
    }
    r->done = true;
    relay_maybe_free(r);
}

static const struct h2_stream_cbs client_cbs = {
    .on_data = client_on_data,
    .on_end = client_on_end,
    .on_drain = client_on_drain,
    .on_close = client_on_close,
};

static bool
ctype_is(struct h2_stream *st, const char *want)
{
    const char *ct = h2_stream_header(st, "content-type");
    size_t n = strlen(want);

    return ct && strncasecmp(ct, want, n) == 0 && (!ct[n] || ct[n] == ';');
}

/* Look up the sandbox, check its session and the relay limits, and make
 * a relay bound to ST. NULL after an error answer. */
static struct gw_relay *
relay_new(struct gw *gw, struct h2_stream *st, struct h2_req *req, enum relay_kind kind)
{
    struct store_obj *sb = NULL;
    struct gw_relay *r;

    if (!(sb = gw_sandbox_lookup(gw, st, req)))
        return NULL;
    if (!gw_session_connected(gw, sb->id)) {
        h2_stream_error(st, 503, "unavailable", "sandbox %s has no connected supervisor", sb->name);
        store_obj_free(sb);
        return NULL;
    }
    if (relay_count(gw, sb->id) >= RELAY_MAX_PER_SANDBOX || relay_count(gw, NULL) >= RELAY_MAX) {
        h2_stream_error(st, 429, "resource_exhausted",
                        "sandbox %s: too many open relays (at most %d per sandbox, %d in all)",
                        sb->name, RELAY_MAX_PER_SANDBOX, RELAY_MAX);
        store_obj_free(sb);
        return NULL;
    }
    r = xcalloc(1, sizeof(*r));
    r->gw = gw;
    r->kind = kind;
    r->cst = st;
    random_hex(r->id, 16);
    snprintf(r->sandbox_id, sizeof(r->sandbox_id), "%s", sb->id);
    r->timer = loop_timer_new(gw->loop, relay_timer, r);
    r->listed = true;
    r->next = gw->relays;
    if (gw->relays)
        gw->relays->prev = r;
    gw->relays = r;
    h2_stream_set_cbs(st, &client_cbs, r);
    store_obj_free(sb);
    return r;
}

/* POST .../sandboxes/{name}/exec: frames or JSON. */
static void
h_exec(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct gw_relay *r;
    bool frames = ctype_is(st, FRAMES_CTYPE);

    if (!gw_authorized(gw, st))
        return;
    if (!frames && !ctype_is(st, "application/json")) {
        h2_stream_error(st, 415, "unsupported_media_type",
                        "exec takes application/json or " FRAMES_CTYPE);
        return;
    }
    if (!(r = relay_new(gw, st, req, frames ? RK_FRAMES : RK_JSON)))
        return;
    /* Frames: 200 at once (errors become ERROR frames), so a client may
     * wait for the headers before sending INIT. */
    if (frames)
        h2_stream_start(st, 200, FRAMES_CTYPE, NULL, 0);
}

/* PUT/GET .../sandboxes/{name}/files?path=P */
static void
h_files(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    bool put = strcmp(req->method, "PUT") == 0;
    struct buf path = BUF_INIT;
    struct gw_relay *r;

    if (!gw_authorized(gw, st))
        return;
    if (h2_req_query(req, "path", &path) != 1 || path.len == 0 || buf_cstr(&path)[0] != '/') {
        h2_stream_error(st, 400, "invalid_argument",
                        "query path: required, an absolute path inside the sandbox");
        goto out;
    }
    if (put && !ctype_is(st, "application/x-tar")) {
        h2_stream_error(st, 415, "unsupported_media_type", "files upload takes application/x-tar");
        goto out;
    }
    if (!(r = relay_new(gw, st, req, put ? RK_UNTAR : RK_TAR)))
        goto out;
    r->init = cJSON_CreateObject();
    cJSON_AddStringToObject(r->init, "op", put ? "untar" : "tar");
    cJSON_AddStringToObject(r->init, "path", buf_cstr(&path));
    if (relay_offer(r) == 0 && put)
        h2_stream_pause_input(st, true);
out:
    buf_fini(&path);
}

void
gw_session_counts(struct gw *gw, size_t *sessions, size_t *relays)
{
    *sessions = 0;
    for (struct gw_session *s = gw->sessions; s; s = s->next)
        if (s->link)
            (*sessions)++;
    *relays = relay_count(gw, NULL);
}

void
gw_session_end_all(struct gw *gw)
{
    for (struct gw_relay *r = gw->relays; r; r = r->next) {
        if (r->cst)
            h2_stream_reset(r->cst, H2_CANCEL);
        if (r->sst)
            h2_stream_reset(r->sst, H2_CANCEL);
    }
    for (struct gw_session *s = gw->sessions; s; s = s->next)
        if (s->link)
            h2_stream_reset(s->link->st, H2_CANCEL);
}

void
gw_session_fini(struct gw *gw)
{
    while (gw->sessions) {
        struct gw_session *s = gw->sessions;

        gw->sessions = s->next;
        if (s->link)
            s->link->s = NULL;
        free(s);
    }
    loop_timer_free(gw->ping_timer);
    gw->ping_timer = NULL;
}

void
gw_session_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;
    const char *env = getenv("OPENSHELL_GATEWAY_PING_MS");

    /* Tests shorten the ping period (the dead-link limit follows). */
    if (env && atol(env) >= 50)
        ping_ms = (uint64_t)atol(env);
    h2_router_add(r, "POST", "/v1/supervisor/session", H2_ROUTE_STREAMING, h_session, gw);
    h2_router_add(r, "POST", "/v1/supervisor/relay/{}", H2_ROUTE_STREAMING, h_relay, gw);
    h2_router_add(r, "POST", "/v1/workspaces/{}/sandboxes/{}/exec", H2_ROUTE_STREAMING, h_exec, gw);
    h2_router_add(r, "PUT", "/v1/workspaces/{}/sandboxes/{}/files", H2_ROUTE_STREAMING, h_files,
                  gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/files", H2_ROUTE_STREAMING, h_files,
                  gw);
    gw->ping_timer = loop_timer_new(gw->loop, ping_tick, gw);
    loop_timer_start(gw->ping_timer, ping_ms, true);
}
