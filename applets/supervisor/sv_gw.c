/*
 * sv_gw.c: the outer supervisor's side of the gateway (doc/sandbox.md,
 * "Gateway session"; the wire contract is doc/api.md).
 *
 * Before the sandbox exists (sv_gw_start, blocking): GET
 * /v1/supervisor/config with retries for up to 30 s, the policy written to
 * a 0600 file in a private 0700 directory (the proxy watches it; the sandbox
 * cannot see it), GET /v1/supervisor/credentials.
 *
 * Once PID 1 runs (sv_gw_run, one libevent loop): the session (hello,
 * policy_status, logs, exit, pong out; config, relay, ping in), config
 * refetches (pushed, and every 30 s), policy hot reload (validated here,
 * rewritten atomically, the proxy reloads through inotify), the log pipes of
 * PID 1 (its and the proxy's messages, the agent's output), reconnects with
 * backoff and jitter, and the exec relays (sv_relay.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "h2.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "sb_proc.h"
#include "sv_gw.h"
#include "version.h"
#include "xfuncs.h"

#define SV_CONFIG_RETRY_MS 30000
#define SV_CONFIG_PERIOD_MS 30000
#define SV_SILENCE_MS 60000
#define SV_BACKOFF_MIN_MS 200
#define SV_BACKOFF_MAX_MS 10000
#define SV_LOG_MAX_BYTES (1024 * 1024)
#define SV_LOG_BATCH_BYTES (64 * 1024)
#define SV_SESSION_OUT_HIGH (256 * 1024)
#define SV_DOC_MAX (4 * 1024 * 1024)
#define SV_LINE_MAX (64 * 1024)

static uint64_t
sv_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t
sv_wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------ logs */

/* Queue one record {"ts_ms","level","source","message","fields"}; FIELDS
 * (may be NULL) is taken over. Oldest records go first past the bound. */
static void
sv_log_queue(struct sv_gw *g, const char *level, const char *source, const char *msg, size_t msglen,
             cJSON *fields)
{
    struct buf b = BUF_INIT;
    struct sv_log *l;

    buf_printf(&b, "{\"ts_ms\":%llu,\"level\":\"%s\",\"source\":\"%s\",\"message\":",
               (unsigned long long)sv_wall_ms(), level, source);
    buf_put_json_str(&b, msg, msglen);
    buf_puts(&b, ",\"fields\":");
    if (fields) {
        char *t = cJSON_PrintUnformatted(fields);

        buf_puts(&b, t ? t : "{}");
        free(t);
        cJSON_Delete(fields);
    } else {
        buf_puts(&b, "{}");
    }
    buf_putc(&b, '}');
    l = xmalloc(sizeof(*l) + b.len + 1);
    l->next = NULL;
    l->len = b.len;
    memcpy(l->text, b.data, b.len + 1);
    buf_fini(&b);
    if (g->ltail)
        g->ltail->next = l;
    else
        g->lhead = l;
    g->ltail = l;
    g->lbytes += l->len;
    g->lcount++;
    while (g->lbytes > SV_LOG_MAX_BYTES && g->lhead) {
        struct sv_log *o = g->lhead;

        g->lhead = o->next;
        if (!g->lhead)
            g->ltail = NULL;
        g->lbytes -= o->len;
        g->lcount--;
        g->ldropped++;
        free(o);
    }
    if (g->t_flush && !loop_timer_pending(g->t_flush))
        loop_timer_start(g->t_flush, 50, false);
}

void
sv_gw_note(struct sv_gw *g, enum log_level lvl, const char *fmt, ...)
{
    static const char *const names[] = { "debug", "info", "warn", "error" };
    char msg[2048];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    switch (lvl) {
    case LOG_LVL_DEBUG: log_debug("%s", msg); break;
    case LOG_LVL_INFO: log_info("%s", msg); break;
    case LOG_LVL_WARN: log_warnx("%s", msg); break;
    default: log_error("%s", msg); break;
    }
    if (g && log_enabled(lvl))
        sv_log_queue(g, names[lvl], "supervisor", msg, strlen(msg), NULL);
}

/* One line from PID 1's stderr: our own JSON log lines (PID 1, the proxy)
 * keep their level and fields; anything else is the agent's. */
static void
sv_log_line(struct sv_gw *g, const char *line, size_t n, bool from_stdout)
{
    cJSON *j = NULL, *f, *it, *next;
    const cJSON *applet, *level, *msg;

    if (n == 0)
        return;
    if (!from_stdout && line[0] == '{')
        j = cJSON_ParseWithLength(line, n);
    applet = j ? cJSON_GetObjectItemCaseSensitive(j, "applet") : NULL;
    level = j ? cJSON_GetObjectItemCaseSensitive(j, "level") : NULL;
    msg = j ? cJSON_GetObjectItemCaseSensitive(j, "msg") : NULL;
    if (!cJSON_IsString(applet) || !cJSON_IsString(level) || !cJSON_IsString(msg)) {
        cJSON_Delete(j);
        sv_log_queue(g, "info", "agent", line, n, NULL);
        return;
    }
    f = cJSON_CreateObject();
    for (it = j->child; it; it = next) {
        next = it->next;
        if (strcmp(it->string, "ts") == 0 || strcmp(it->string, "level") == 0 ||
            strcmp(it->string, "applet") == 0 || strcmp(it->string, "msg") == 0)
            continue;
        cJSON_AddItemToObject(f, it->string, cJSON_DetachItemViaPointer(j, it));
    }
    {
        const char *lv = level->valuestring;

        if (strcmp(lv, "debug") != 0 && strcmp(lv, "info") != 0 && strcmp(lv, "warn") != 0 &&
            strcmp(lv, "error") != 0)
            lv = "info";
        sv_log_queue(g, lv,
                     strcmp(applet->valuestring, "openshell-proxy") == 0 ? "proxy" : "supervisor",
                     msg->valuestring, strlen(msg->valuestring), f);
    }
    cJSON_Delete(j);
}

/* Send queued records while the session has room. */
static void
sv_log_flush(struct sv_gw *g)
{
    while (g->lhead && g->sess && g->sess_ok &&
           h2_stream_out_pending(g->sess) < SV_SESSION_OUT_HIGH) {
        struct buf b = BUF_INIT;
        bool first = true;

        if (g->ldropped) {
            char m[128];
            unsigned long d = g->ldropped;

            g->ldropped = 0;
            buf_fmt_fixed(m, sizeof(m),
                          "%lu log records dropped while the gateway was away (buffer full)", d);
            /* Goes to the end of the queue: fine, the count is what matters. */
            sv_log_queue(g, "warn", "supervisor", m, strlen(m), NULL);
        }
        buf_puts(&b, "{\"type\":\"log\",\"lines\":[");
        while (g->lhead && b.len < SV_LOG_BATCH_BYTES) {
            struct sv_log *l = g->lhead;

            if (!first)
                buf_putc(&b, ',');
            first = false;
            buf_append(&b, l->text, l->len);
            g->lhead = l->next;
            if (!g->lhead)
                g->ltail = NULL;
            g->lbytes -= l->len;
            g->lcount--;
            free(l);
        }
        buf_puts(&b, "]}\n");
        h2_stream_write(g->sess, b.data, b.len);
        buf_fini(&b);
    }
}

static void
sv_on_flush(void *arg)
{
    sv_log_flush(arg);
}

/* Read what a log pipe holds; complete lines are echoed to ECHO_FD and
 * queued. At EOF (or error) the event is removed and the fd closed. */
static void
sv_pipe_read(struct sv_gw *g, int *fd, struct event **ev, struct buf *acc, int echo_fd,
             bool is_stdout)
{
    char chunk[16384];
    ssize_t n;

    for (;;) {
        n = read(*fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        (void)!write_full(echo_fd, chunk, (size_t)n);
        buf_append(acc, chunk, (size_t)n);
        for (;;) {
            char *nl = memchr(acc->data, '\n', acc->len);

            if (!nl) {
                if (acc->len > SV_LINE_MAX) {
                    sv_log_line(g, acc->data, acc->len, is_stdout);
                    buf_reset(acc);
                }
                break;
            }
            sv_log_line(g, acc->data, (size_t)(nl - acc->data), is_stdout);
            buf_consume(acc, (size_t)(nl - acc->data) + 1);
        }
        if ((size_t)n < sizeof(chunk))
            return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
    if (acc->len)
        sv_log_line(g, acc->data, acc->len, is_stdout);
    buf_reset(acc);
    if (*ev)
        event_free(*ev);
    *ev = NULL;
    close(*fd);
    *fd = -1;
}

static void
sv_on_err_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct sv_gw *g = arg;

    (void)fd;
    (void)what;
    sv_pipe_read(g, &g->err_fd, &g->ev_err, &g->err_in, STDERR_FILENO, false);
}

static void
sv_on_out_pipe(evutil_socket_t fd, short what, void *arg)
{
    struct sv_gw *g = arg;

    (void)fd;
    (void)what;
    sv_pipe_read(g, &g->out_fd, &g->ev_out, &g->out_in, STDOUT_FILENO, true);
}

/* ------------------------------------------------------------------ policy */

/* The current status line for the gateway (resent on every connect). */
static void
sv_policy_status(struct sv_gw *g, long version, const char *source, bool loaded, const char *err)
{
    buf_reset(&g->status_line);
    buf_printf(&g->status_line, "{\"type\":\"policy_status\",\"version\":%ld,\"status\":\"%s\"",
               version, loaded ? "loaded" : "failed");
    if (err) {
        buf_puts(&g->status_line, ",\"load_error\":");
        buf_put_json_str(&g->status_line, err, strlen(err));
    }
    buf_puts(&g->status_line, ",\"source\":");
    buf_put_json_str(&g->status_line, source, strlen(source));
    buf_puts(&g->status_line, "}\n");
    if (g->sess && g->sess_ok)
        h2_stream_write(g->sess, g->status_line.data, g->status_line.len);
}

/* Replace the policy file atomically (the proxy sees one rename). */
static int
sv_policy_write(struct sv_gw *g, const char *text, size_t len, struct err *e)
{
    char tmp[PATH_MAX];
    int fd, rc;

    if (buf_fmt_fixed(tmp, sizeof(tmp), "%s/.policy.tmp", g->dir) < 0)
        return err_set(e, ENAMETOOLONG, "policy directory name too long");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return err_errno(e, "create %s", tmp);
    rc = write_full(fd, text, len);
    if (rc == 0 && fsync(fd) < 0)
        rc = -errno;
    close(fd);
    if (rc == 0 && rename(tmp, g->file) < 0)
        rc = -errno;
    if (rc < 0) {
        unlink(tmp);
        return err_set(e, -rc, "write %s: %s", g->file, strerror(-rc));
    }
    return 0;
}

/* sv_policy_write TEXT, logging a failure; 0 or -errno. */
static int
sv_policy_put(struct sv_gw *g, const char *text)
{
    struct err e;
    int rc;

    err_clear(&e);
    if ((rc = sv_policy_write(g, text, strlen(text), &e)) < 0)
        sv_gw_note(g, LOG_LVL_ERROR, "policy: %s", e.msg);
    return rc;
}

static bool
sv_strv_eq(const char *const *a, size_t na, const char *const *b, size_t nb)
{
    if (na != nb)
        return false;
    for (size_t i = 0; i < na; i++)
        if (strcmp(a[i], b[i]) != 0)
            return false;
    return true;
}

static bool
sv_str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* filesystem_policy, landlock and process are fixed when the sandbox is
 * built (the Landlock ruleset, the identity): a revision that states them
 * differently cannot be applied to the running sandbox. A revision without
 * them keeps the running ones. NULL when NEW is applicable, else the first
 * field that differs. */
static const char *
sv_static_diff(const struct policy *old, const struct policy *new)
{
    const char *const *a, *const *b;
    size_t na, nb;

    if (policy_fs_present(new)) {
        a = policy_fs_read_only(old, &na);
        b = policy_fs_read_only(new, &nb);
        if (!sv_strv_eq(a, na, b, nb))
            return "filesystem_policy.read_only";
        a = policy_fs_read_write(old, &na);
        b = policy_fs_read_write(new, &nb);
        if (!sv_strv_eq(a, na, b, nb))
            return "filesystem_policy.read_write";
        if (policy_fs_include_workdir(old) != policy_fs_include_workdir(new))
            return "filesystem_policy.include_workdir";
    }
    /* best_effort is also what an absent section means. */
    if (policy_landlock_compat(new) == POLICY_LANDLOCK_HARD_REQUIREMENT &&
        policy_landlock_compat(old) != POLICY_LANDLOCK_HARD_REQUIREMENT)
        return "landlock.compatibility";
    if (policy_run_as_user(new) && !sv_str_eq(policy_run_as_user(old), policy_run_as_user(new)))
        return "process.run_as_user";
    if (policy_run_as_group(new) && !sv_str_eq(policy_run_as_group(old), policy_run_as_group(new)))
        return "process.run_as_group";
    return NULL;
}

/* A config document from the gateway: apply its policy when it is a new
 * one. START: before the sandbox (then an invalid policy is fatal: there is
 * no last good one). Returns 0, or -errno with E set for START. */
static int
sv_apply_config(struct sv_gw *g, const char *body, size_t len, bool start, struct err *e)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *pol = j ? cJSON_GetObjectItemCaseSensitive(j, "policy") : NULL;
    const cJSON *ver = pol ? cJSON_GetObjectItemCaseSensitive(pol, "version") : NULL;
    const cJSON *src = pol ? cJSON_GetObjectItemCaseSensitive(pol, "source") : NULL;
    const cJSON *txt = pol ? cJSON_GetObjectItemCaseSensitive(pol, "policy") : NULL;
    const cJSON *hash = pol ? cJSON_GetObjectItemCaseSensitive(pol, "policy_hash") : NULL;
    const cJSON *set = j ? cJSON_GetObjectItemCaseSensitive(j, "settings") : NULL;
    const cJSON *mode =
        set ? cJSON_GetObjectItemCaseSensitive(set, "policy_validation_failure_mode") : NULL;
    const char *source = cJSON_IsString(src) ? src->valuestring : "default";
    const char *text;
    struct policy *p = NULL;
    struct policy_diags d;
    struct err pe;
    long version;
    bool was_closed;
    int rc = 0;

    if (!cJSON_IsObject(pol) || !cJSON_IsNumber(ver)) {
        cJSON_Delete(j);
        if (start)
            return err_set(e, EPROTO, "the gateway's config has no policy");
        sv_gw_note(g, LOG_LVL_WARN, "config from the gateway without a policy: ignored");
        return 0;
    }
    if (mode && cJSON_IsObject(mode))
        mode = cJSON_GetObjectItemCaseSensitive(mode, "value");
    was_closed = g->fail_closed;
    g->fail_closed = cJSON_IsString(mode) && strcmp(mode->valuestring, "fail_closed") == 0;
    version = (long)ver->valuedouble;
    text = cJSON_IsString(txt) && txt->valuestring[0] ? txt->valuestring : policy_default_yaml();
    if (!start && g->have_policy && version == g->pol_version &&
        strcmp(source, g->pol_source) == 0 &&
        (!cJSON_IsString(hash) || strcmp(hash->valuestring, g->pol_hash) == 0)) {
        /* The same policy; the failure mode may have changed under a
         * failed one: deny all now, or bring the last good one back. */
        if (g->last_failed && was_closed != g->fail_closed && g->good_text) {
            if (sv_policy_put(g, g->fail_closed ? policy_default_yaml() : g->good_text) == 0)
                sv_gw_note(g, LOG_LVL_WARN, "policy_validation_failure_mode is now %s: %s",
                           g->fail_closed ? "fail_closed" : "retain_last_valid",
                           g->fail_closed ? "all egress denied"
                                          : "the last good policy is back in force");
        }
        cJSON_Delete(j);
        return 0;
    }
    g->last_failed = true; /* until it is written below */
    buf_copy_fixed(g->pol_source, sizeof(g->pol_source), source);
    buf_copy_fixed(g->pol_hash, sizeof(g->pol_hash), cJSON_IsString(hash) ? hash->valuestring : "");
    g->pol_version = version;
    g->have_policy = true;

    err_clear(&pe);
    policy_diags_init(&d);
    rc = policy_load_mem("policy", text, strlen(text), &p, &d, &pe);
    if (rc < 0) {
        struct buf why = BUF_INIT;

        buf_puts(&why, pe.msg);
        for (size_t i = 0; i < d.n && i < 5; i++)
            buf_printf(&why, "; %s", d.v[i].text);
        sv_policy_status(g, version, source, false, buf_cstr(&why));
        if (start) {
            err_set(e, EINVAL, "the gateway's policy (version %ld, %s) is invalid: %s", version,
                    source, buf_cstr(&why));
        } else if (g->fail_closed) {
            /* A valid policy with no network_policies: every connection is
             * denied until a good revision arrives. */
            sv_policy_put(g, policy_default_yaml());
            sv_gw_note(g, LOG_LVL_WARN,
                       "policy version %ld (%s) is invalid, fail_closed: all egress denied: %s",
                       version, source, buf_cstr(&why));
        } else {
            sv_gw_note(g, LOG_LVL_WARN,
                       "policy version %ld (%s) is invalid; the last good one stays in force: %s",
                       version, source, buf_cstr(&why));
        }
        buf_fini(&why);
        policy_diags_fini(&d);
        cJSON_Delete(j);
        return start ? -EINVAL : 0;
    }
    policy_diags_fini(&d);
    if (start) {
        g->start_policy = p;
    } else {
        const char *diff = sv_static_diff(g->start_policy, p);

        policy_unref(p);
        if (diff) {
            char why[256];

            buf_fmt_fixed(why, sizeof(why),
                          "%s differs from the running sandbox's: filesystem_policy, landlock "
                          "and process are fixed at creation (only network_policies reload)",
                          diff);
            sv_policy_status(g, version, source, false, why);
            if (g->fail_closed)
                sv_policy_put(g, policy_default_yaml());
            sv_gw_note(g, LOG_LVL_WARN, "policy version %ld (%s) not applied; %s: %s", version,
                       source,
                       g->fail_closed ? "fail_closed: all egress denied"
                                      : "the last good one stays in force",
                       why);
            cJSON_Delete(j);
            return 0;
        }
    }
    err_clear(&pe);
    if (sv_policy_write(g, text, strlen(text), &pe) < 0) {
        sv_policy_status(g, version, source, false, pe.msg);
        cJSON_Delete(j);
        if (start)
            return err_set(e, EIO, "%s", pe.msg);
        sv_gw_note(g, LOG_LVL_ERROR, "policy version %ld: %s", version, pe.msg);
        return 0;
    }
    sv_policy_status(g, version, source, true, NULL);
    g->good_version = version;
    g->last_failed = false;
    free(g->good_text);
    g->good_text = xstrdup(text);
    if (!start)
        sv_gw_note(g, LOG_LVL_INFO, "policy version %ld (%s) loaded", version, source);
    cJSON_Delete(j);
    return 0;
}

/* ------------------------------------------------------------------ credentials */

/* Keep a credentials document: its "environment" for the agent and exec
 * children, the whole of it for the proxy. */
static int
sv_apply_credentials(struct sv_gw *g, const char *body, size_t len, struct err *e)
{
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *env = j ? cJSON_GetObjectItemCaseSensitive(j, "environment") : NULL;
    const cJSON *it;
    size_t n = 0;

    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return err_set(e, EPROTO, "credentials: not a JSON object");
    }
    sb_env_free(g->cred_env);
    g->cred_env = NULL;
    if (cJSON_IsObject(env)) {
        g->cred_env = xcalloc((size_t)cJSON_GetArraySize(env) + 1, sizeof(char *));
        cJSON_ArrayForEach(it, env)
        {
            if (!cJSON_IsString(it) || !it->string[0] || strchr(it->string, '='))
                continue;
            g->cred_env[n++] = xasprintf("%s=%s", it->string, it->valuestring);
        }
    }
    free(g->cred_doc);
    g->cred_doc = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return 0;
}

/* Hand the credentials document to the proxy (through PID 1). */
static void
sv_send_credentials(struct sv_gw *g)
{
    struct buf b = BUF_INIT;

    if (!g->cred_doc || g->ctl < 0)
        return;
    buf_puts(&b, "{\"op\":\"credentials\",\"doc\":");
    buf_puts(&b, g->cred_doc);
    buf_putc(&b, '}');
    if (b.len > SV_CTL_MAX || sv_ctl_send(g->ctl, buf_cstr(&b), NULL, 0) < 0)
        sv_gw_note(g, LOG_LVL_WARN, "cannot pass the credentials to the proxy");
    explicit_bzero(b.data, b.len);
    buf_fini(&b);
}

/* ------------------------------------------------------------------ requests */

struct sv_req {
    struct sv_gw *g;
    int status;
    bool credentials; /* else config */
    struct buf body;
};

static void
sv_req_response(struct h2_stream *st, int status, void *arg)
{
    struct sv_req *r = arg;

    (void)st;
    r->status = status;
}

static void
sv_req_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct sv_req *r = arg;

    if (r->body.len + n > SV_DOC_MAX) {
        h2_stream_reset(st, 0x8);
        r->status = -1;
        return;
    }
    buf_append(&r->body, p, n);
}

static void sv_fetch(struct sv_gw *g, bool credentials);

static void
sv_req_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct sv_req *r = arg;
    struct sv_gw *g = r->g;
    struct err e;

    (void)st;
    err_clear(&e);
    if (r->credentials) {
        g->cred_inflight = false;
        if (code == 0 && r->status == 200) {
            if (sv_apply_credentials(g, r->body.data, r->body.len, &e) < 0)
                sv_gw_note(g, LOG_LVL_WARN, "%s", e.msg);
            else
                sv_send_credentials(g);
        } else if (code == 0 && r->status != 404) {
            sv_gw_note(g, LOG_LVL_WARN, "GET /v1/supervisor/credentials: status %d", r->status);
        }
    } else {
        g->config_inflight = false;
        if (code == 0 && r->status == 200)
            sv_apply_config(g, r->body.data, r->body.len, false, &e);
        else if (code == 0)
            sv_gw_note(g, LOG_LVL_WARN, "GET /v1/supervisor/config: status %d", r->status);
        if (g->config_again) {
            g->config_again = false;
            sv_fetch(g, false);
        }
    }
    explicit_bzero(r->body.data, r->body.len);
    buf_fini(&r->body);
    free(r);
}

/* GET the config or the credentials on the live connection (skipped when
 * there is none: every reconnect fetches both). */
static void
sv_fetch(struct sv_gw *g, bool credentials)
{
    static const struct h2_stream_cbs cbs = {
        .on_response = sv_req_response,
        .on_data = sv_req_data,
        .on_close = sv_req_close,
    };
    struct h2_header h[] = { { "authorization", g->auth } };
    struct sv_req *r;
    struct err e;

    if (!g->conn)
        return;
    if (!credentials && g->config_inflight) {
        g->config_again = true;
        return;
    }
    if (credentials && g->cred_inflight)
        return;
    r = xcalloc(1, sizeof(*r));
    r->g = g;
    r->credentials = credentials;
    err_clear(&e);
    if (!h2_client_request(g->conn, "GET",
                           credentials ? "/v1/supervisor/credentials" : "/v1/supervisor/config", h,
                           1, NULL, 0, false, &cbs, r, &e)) {
        sv_gw_note(g, LOG_LVL_WARN, "fetching %s: %s", credentials ? "credentials" : "config",
                   e.msg);
        free(r);
        return;
    }
    if (credentials)
        g->cred_inflight = true;
    else
        g->config_inflight = true;
}

static void
sv_on_config_timer(void *arg)
{
    sv_fetch(arg, false);
}

/* ------------------------------------------------------------------ session */

static void sv_schedule_reconnect(struct sv_gw *g);

static void
sv_session_line(struct sv_gw *g, const char *line, size_t n)
{
    cJSON *j = cJSON_ParseWithLength(line, n);
    const cJSON *type = j ? cJSON_GetObjectItemCaseSensitive(j, "type") : NULL;

    if (!cJSON_IsString(type)) {
        sv_gw_note(g, LOG_LVL_WARN, "session: malformed line from the gateway");
        cJSON_Delete(j);
        return;
    }
    if (strcmp(type->valuestring, "ping") == 0) {
        h2_stream_write(g->sess, "{\"type\":\"pong\"}\n", 16);
    } else if (strcmp(type->valuestring, "config") == 0) {
        const cJSON *reason = cJSON_GetObjectItemCaseSensitive(j, "reason");

        if (cJSON_IsString(reason) && strcmp(reason->valuestring, "credentials") == 0)
            sv_fetch(g, true);
        else
            sv_fetch(g, false);
    } else if (strcmp(type->valuestring, "relay") == 0) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "relay_id");
        const cJSON *init = cJSON_GetObjectItemCaseSensitive(j, "init");

        if (!cJSON_IsString(id) || !cJSON_IsObject(init))
            sv_gw_note(g, LOG_LVL_WARN, "session: relay without relay_id or init");
        else
            sv_relay_open(g, id->valuestring, init);
    } else {
        log_debug("session: unknown message type '%.32s' ignored", type->valuestring);
    }
    cJSON_Delete(j);
}

/* The exit line ({"type":"exit"}) on the session stream ST. */
static void
sv_write_exit(struct sv_gw *g, struct h2_stream *st)
{
    char line[64];

    buf_fmt_fixed(line, sizeof(line), "{\"type\":\"exit\",\"exit_code\":%d}\n", g->exit_code);
    h2_stream_write(st, line, strlen(line));
}

static void
sv_sess_response(struct h2_stream *st, int status, void *arg)
{
    struct sv_gw *g = arg;

    g->last_rx = sv_now_ms();
    if (status != 200) {
        g->sess_status = status;
        h2_stream_reset(st, 0x8);
        return;
    }
    if (!g->sess_ok && g->was_connected)
        sv_gw_note(g, LOG_LVL_INFO, "session with the gateway re-established");
    g->sess_ok = true;
    g->was_connected = true;
    g->backoff = 0;
    /* What may have changed while we were away. */
    if (g->status_line.len)
        h2_stream_write(st, g->status_line.data, g->status_line.len);
    if (g->exited)
        sv_write_exit(g, st);
    sv_fetch(g, false);
    sv_fetch(g, true);
    sv_log_flush(g);
}

static void
sv_sess_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct sv_gw *g = arg;

    (void)st;
    g->last_rx = sv_now_ms();
    buf_append(&g->sess_in, p, n);
    for (;;) {
        char *nl = memchr(g->sess_in.data, '\n', g->sess_in.len);
        size_t k;

        if (!nl) {
            if (g->sess_in.len > SV_LINE_MAX) {
                sv_gw_note(g, LOG_LVL_WARN, "session: line over %d bytes from the gateway",
                           SV_LINE_MAX);
                buf_reset(&g->sess_in);
            }
            return;
        }
        k = (size_t)(nl - g->sess_in.data);
        if (k)
            sv_session_line(g, g->sess_in.data, k);
        if (!g->sess)
            return;
        buf_consume(&g->sess_in, k + 1);
    }
}

static void
sv_sess_drain(struct h2_stream *st, void *arg)
{
    (void)st;
    sv_log_flush(arg);
}

static void
sv_sess_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct sv_gw *g = arg;

    (void)st;
    if (g->stopping)
        ;
    else if (g->sess_ok)
        sv_gw_note(g, LOG_LVL_WARN, "session with the gateway ended (%s)",
                   code ? "reset" : "closed by the gateway");
    else if (g->sess_status == 401 || g->sess_status == 404)
        sv_gw_note(g, LOG_LVL_ERROR,
                   "the gateway refused the session (status %d): token revoked or sandbox gone?",
                   g->sess_status);
    g->sess = NULL;
    g->sess_ok = false;
    g->sess_status = 0;
    buf_reset(&g->sess_in);
    /* One connection per session: drop it (relays and requests go too). */
    if (g->conn)
        h2_conn_free(g->conn);
}

static void
sv_conn_closed(struct h2_conn *c, void *arg)
{
    struct sv_gw *g = arg;

    (void)c;
    g->conn = NULL;
    g->sess = NULL;
    g->sess_ok = false;
    g->config_inflight = g->cred_inflight = false;
    if (!g->stopping)
        sv_schedule_reconnect(g);
}

/* Connect and open the session; on failure try again later. */
static void
sv_connect(void *arg)
{
    static const struct h2_stream_cbs cbs = {
        .on_response = sv_sess_response,
        .on_data = sv_sess_data,
        .on_drain = sv_sess_drain,
        .on_close = sv_sess_close,
    };
    struct sv_gw *g = arg;
    struct h2_header h[] = { { "authorization", g->auth },
                             { "content-type", "application/x-ndjson" } };
    struct buf hello = BUF_INIT;
    struct err e;

    if (g->conn || g->stopping || g->orphaned)
        return;
    /* The sandbox's state went with its token file (the gateway deleted
     * the sandbox while we were cut off, or its state directory was
     * removed): nobody can reach this sandbox any more, so it stops rather
     * than run unmanaged forever. */
    if (g->token_file && access(g->token_file, F_OK) < 0 && errno == ENOENT) {
        g->orphaned = true;
        log_error("token file %s is gone: the gateway no longer knows sandbox %s; stopping it",
                  g->token_file, g->sandbox_id ? g->sandbox_id : "?");
        kill(g->pid1, SIGTERM);
        return;
    }
    err_clear(&e);
    if (h2_client_connect_unix(loop_base(g->loop), g->sock, NULL, &g->conn, &e) < 0) {
        if (g->was_connected || !g->reported_down)
            log_debug("gateway: %s", e.msg);
        g->conn = NULL;
        sv_schedule_reconnect(g);
        return;
    }
    h2_conn_set_close_cb(g->conn, sv_conn_closed, g);
    buf_printf(&hello,
               "{\"type\":\"hello\",\"supervisor_pid\":%d,\"version\":\"%s\","
               "\"policy_version\":%ld}\n",
               (int)getpid(), OPENSHELL_VERSION, g->good_version);
    g->last_rx = sv_now_ms();
    g->sess = h2_client_request(g->conn, "POST", "/v1/supervisor/session", h, 2, hello.data,
                                hello.len, true, &cbs, g, &e);
    buf_fini(&hello);
    if (!g->sess) {
        sv_gw_note(g, LOG_LVL_WARN, "gateway session: %s", e.msg);
        h2_conn_free(g->conn);
    }
}

/* Exponential backoff 0.2 s .. 10 s with +-25 % jitter. */
static void
sv_schedule_reconnect(struct sv_gw *g)
{
    uint64_t ms;

    if (g->stopping || loop_timer_pending(g->t_reconnect))
        return;
    g->backoff = g->backoff ? g->backoff * 2 : SV_BACKOFF_MIN_MS;
    if (g->backoff > SV_BACKOFF_MAX_MS)
        g->backoff = SV_BACKOFF_MAX_MS;
    ms = g->backoff * 3 / 4 + (uint64_t)(random() % (g->backoff / 2 + 1));
    if (!g->reported_down && g->was_connected) {
        g->reported_down = true;
        sv_gw_note(g, LOG_LVL_WARN,
                   "gateway unreachable: reconnecting; the last good policy stays in force");
    }
    loop_timer_start(g->t_reconnect, ms, false);
}

/* Every 5 s: a session silent for 60 s (the gateway pings every 20 s) is
 * dead; so is one that never answered. */
static void
sv_on_watchdog(void *arg)
{
    struct sv_gw *g = arg;
    uint64_t now = sv_now_ms();

    if (g->sess_ok)
        g->reported_down = false;
    if (g->conn && now - g->last_rx > (g->sess_ok ? SV_SILENCE_MS : 10000)) {
        sv_gw_note(g, LOG_LVL_WARN, "gateway silent for %llu ms: reconnecting",
                   (unsigned long long)(now - g->last_rx));
        h2_conn_free(g->conn);
    }
}

/* ------------------------------------------------------------------ PID 1 */

static void
sv_on_ctl(evutil_socket_t fd, short what, void *arg)
{
    struct sv_gw *g = arg;
    static char msg[SV_CTL_MAX + 1];
    int fds[SV_CTL_MAX_FDS], nfds, n;

    (void)fd;
    (void)what;
    while ((n = sv_ctl_recv(g->ctl, msg, sizeof(msg), fds, &nfds)) > 0 || n == -EMSGSIZE)
        if (n > 0)
            sv_relay_ctl(g, msg, fds, nfds);
    if (n == 0 || (n < 0 && n != -EAGAIN)) {
        event_free(g->ev_ctl);
        g->ev_ctl = NULL;
    }
}

static void sv_finish(struct sv_gw *g);

static void
sv_on_signal(evutil_socket_t fd, short what, void *arg)
{
    struct sv_gw *g = arg;
    struct signalfd_siginfo si;

    (void)what;
    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        int sig = (int)si.ssi_signo, st;

        if (sig != SIGCHLD) {
            /* PID 1 passes it on to the agent's process group. */
            kill(g->pid1, sig);
            continue;
        }
        if (!g->exited && waitpid(g->pid1, &st, WNOHANG) == g->pid1) {
            g->exited = true;
            g->exit_code = sv_status_code(st);
            sv_finish(g);
        }
    }
}

static void
sv_on_stop_timer(void *arg)
{
    struct sv_gw *g = arg;

    loop_stop(g->loop);
}

static void
sv_on_stop_poll(void *arg)
{
    struct sv_gw *g = arg;

    if (g->lhead && g->sess_ok)
        sv_log_flush(g);
    if (!g->lhead && (!g->sess || h2_stream_out_pending(g->sess) == 0) && !g->ev_err &&
        !g->ev_out) {
        g->stopping = true;
        if (g->sess && g->sess_ok) {
            /* Give the gateway the tail of the stream, then go. */
            h2_stream_end(g->sess);
        }
        loop_timer_start(g->t_stop, 100, false);
        return;
    }
    loop_timer_start(g->t_poll, 20, false);
}

/* PID 1 ended: the last logs, the exit line, a graceful end (at most 3 s
 * while the gateway is reachable, 1 s while it is not). */
static void
sv_finish(struct sv_gw *g)
{
    sv_gw_note(g, LOG_LVL_INFO, "sandbox %s: main process ended with status %d", g->sandbox_id,
               g->exit_code);
    if (g->sess && g->sess_ok)
        sv_write_exit(g, g->sess);
    sv_relay_shutdown(g);
    loop_timer_start(g->t_stop, g->sess_ok ? 3000 : 1000, false);
    loop_timer_start(g->t_poll, 20, false);
}

/* ------------------------------------------------------------------ start */

/* One blocking GET on a fresh connection: 0 with *STATUS and OUT, or
 * -errno (connection-level failure) with E. */
static int
sv_get_once(struct sv_gw *g, const char *path, int *status, struct buf *out, struct err *e)
{
    struct h2_header h[] = { { "authorization", g->auth } };
    struct h2_conn *c = NULL;
    int rc;

    buf_reset(out);
    rc = h2_client_connect_unix(loop_base(g->loop), g->sock, NULL, &c, e);
    if (rc < 0)
        return rc;
    rc = h2_client_call(c, "GET", path, h, 1, NULL, 0, status, out, SV_DOC_MAX, e);
    h2_conn_free(c);
    return rc;
}

/* GET PATH, retrying connection failures and 5xx for up to 30 s with
 * backoff. 0 (STATUS set) or exits with a clear message. */
static void
sv_get_start(struct sv_gw *g, const char *path, int *status, struct buf *out)
{
    uint64_t deadline = sv_now_ms() + SV_CONFIG_RETRY_MS;
    unsigned delay = SV_BACKOFF_MIN_MS;
    struct err e;

    for (;;) {
        int rc;

        err_clear(&e);
        rc = sv_get_once(g, path, status, out, &e);
        if (rc == 0 && *status < 500)
            return;
        if (sv_now_ms() + delay > deadline) {
            if (rc < 0)
                log_error("gateway %s: GET %s: %s (gave up after %d s)", g->sock, path, e.msg,
                          SV_CONFIG_RETRY_MS / 1000);
            else
                log_error("gateway %s: GET %s: status %d (gave up after %d s)", g->sock, path,
                          *status, SV_CONFIG_RETRY_MS / 1000);
            exit(SB_EXIT_SETUP);
        }
        log_debug("gateway: GET %s: %s; retrying in %u ms", path, rc < 0 ? e.msg : "server error",
                  delay);
        usleep(delay * 1000);
        delay = delay * 2 > 5000 ? 5000 : delay * 2;
    }
}

struct sv_gw *
sv_gw_start(struct sb_opts *o, const char *token)
{
    struct sv_gw *g = xcalloc(1, sizeof(*g));
    struct buf body = BUF_INIT;
    struct err e;
    int status;

    /* (Children reset their signal dispositions: PID 1 installs its own,
     * the agent, exec'd processes and the proxy start from the defaults.) */
    signal(SIGPIPE, SIG_IGN);
    g->ctl = g->err_fd = g->out_fd = -1;
    g->sandbox_id = o->sandbox_id;
    g->token_file = o->token_file;
    buf_copy_fixed(g->sock, sizeof(g->sock), o->gateway + 5);
    if (buf_fmt_fixed(g->auth, sizeof(g->auth), "Bearer %s", token) < 0)
        fatalx("token too long");
    g->loop = loop_new();
    srandom((unsigned)(getpid() ^ sv_now_ms()));

    /* The private directory the proxy watches: next to the token (the
     * gateway's per-sandbox state, 0700), never visible in the sandbox,
     * whose view has its own /tmp and reaches the rest only read-only
     * through Landlock's list. */
    {
        AUTOFREE char *dir = xstrdup(o->token_file);
        char *slash = strrchr(dir, '/');
        const char *base = slash ? (slash == dir ? "/" : (*slash = '\0', dir)) : ".";

        if (buf_fmt_fixed(g->dir, sizeof(g->dir), "%s/policy.XXXXXX", base) < 0 ||
            !mkdtemp(g->dir)) {
            log_error("cannot create the policy directory next to %s: %s", o->token_file,
                      strerror(errno ? errno : ENAMETOOLONG));
            exit(SB_EXIT_SETUP);
        }
        if (buf_fmt_fixed(g->file, sizeof(g->file), "%s/policy.yaml", g->dir) < 0)
            fatalx("policy path too long");
    }

    sv_get_start(g, "/v1/supervisor/config", &status, &body);
    if (status == 401 || status == 404) {
        log_error("gateway %s: GET /v1/supervisor/config: %s (sandbox %s)", g->sock,
                  status == 401 ? "401: the token was refused (revoked, or not this sandbox's)"
                                : "404: the sandbox is unknown to the gateway",
                  g->sandbox_id);
        sv_gw_cleanup(g);
        exit(SB_EXIT_SETUP);
    }
    if (status != 200) {
        log_error("gateway %s: GET /v1/supervisor/config: status %d: %.200s", g->sock, status,
                  buf_cstr(&body));
        sv_gw_cleanup(g);
        exit(SB_EXIT_SETUP);
    }
    err_clear(&e);
    if (sv_apply_config(g, body.data, body.len, true, &e) < 0) {
        log_error("%s", e.msg);
        /* Tell the gateway why before giving up. */
        {
            struct h2_header h[] = { { "authorization", g->auth },
                                     { "content-type", "application/json" } };
            struct h2_conn *c = NULL;
            struct buf b = BUF_INIT, resp = BUF_INIT;
            int st;

            buf_printf(&b,
                       "{\"version\":%ld,\"status\":\"failed\",\"load_error\":", g->pol_version);
            buf_put_json_str(&b, e.msg, strlen(e.msg));
            buf_puts(&b, "}");
            if (strcmp(g->pol_source, "sandbox") == 0 || strcmp(g->pol_source, "global") == 0) {
                if (h2_client_connect_unix(loop_base(g->loop), g->sock, NULL, &c, NULL) == 0) {
                    h2_client_call(c, "POST", "/v1/supervisor/policy-status", h, 2, b.data, b.len,
                                   &st, &resp, 4096, NULL);
                    h2_conn_free(c);
                }
            }
            buf_fini(&b);
            buf_fini(&resp);
        }
        sv_gw_cleanup(g);
        exit(SB_EXIT_SETUP);
    }
    o->policy = g->file;

    /* Credentials: 404 = the gateway has none to give. */
    sv_get_start(g, "/v1/supervisor/credentials", &status, &body);
    if (status == 200) {
        err_clear(&e);
        if (sv_apply_credentials(g, body.data, body.len, &e) < 0)
            log_warnx("%s: the sandbox starts without credentials", e.msg);
    } else if (status != 404) {
        log_warnx("GET /v1/supervisor/credentials: status %d: the sandbox starts without "
                  "credentials",
                  status);
    }
    explicit_bzero(body.data, body.len);
    buf_fini(&body);
    /* The agent's environment gets the credentials' placeholders. */
    for (size_t i = 0; g->cred_env && g->cred_env[i]; i++) {
        o->env = xrealloc(o->env, (o->nenv + 1) * sizeof(*o->env));
        o->env[o->nenv++] = g->cred_env[i];
    }
    return g;
}

char *const *
sv_gw_cred_env(const struct sv_gw *g)
{
    return g->cred_env;
}

void
sv_gw_cleanup(struct sv_gw *g)
{
    char tmp[PATH_MAX];

    if (!g || !g->dir[0])
        return;
    unlink(g->file);
    if (buf_fmt_fixed(tmp, sizeof(tmp), "%s/.policy.tmp", g->dir) == 0)
        unlink(tmp);
    rmdir(g->dir);
    g->dir[0] = '\0';
}

/* ------------------------------------------------------------------ run */

int
sv_gw_run(struct sv_gw *g, pid_t pid1, int ctl, int err_fd, int out_fd, const sigset_t *sigs)
{
    struct event_base *base = loop_base(g->loop);
    struct event *ev_sig;
    int sfd, code;

    /* A gateway that goes away mid-write, or a closed stdout, is an error
     * to handle, never a reason to die (and take the sandbox along). */
    signal(SIGPIPE, SIG_IGN);
    g->pid1 = pid1;
    g->ctl = ctl;
    g->err_fd = err_fd;
    g->out_fd = out_fd;
    g->t_flush = loop_timer_new(g->loop, sv_on_flush, g);
    g->t_reconnect = loop_timer_new(g->loop, sv_connect, g);
    g->t_watch = loop_timer_new(g->loop, sv_on_watchdog, g);
    g->t_config = loop_timer_new(g->loop, sv_on_config_timer, g);
    g->t_stop = loop_timer_new(g->loop, sv_on_stop_timer, g);
    g->t_poll = loop_timer_new(g->loop, sv_on_stop_poll, g);
    sfd = signalfd(-1, sigs, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        fatal("signalfd");
    ev_sig = event_new(base, sfd, EV_READ | EV_PERSIST, sv_on_signal, g);
    event_add(ev_sig, NULL);
    evutil_make_socket_nonblocking(ctl);
    g->ev_ctl = event_new(base, ctl, EV_READ | EV_PERSIST, sv_on_ctl, g);
    event_add(g->ev_ctl, NULL);
    if (err_fd >= 0) {
        evutil_make_socket_nonblocking(err_fd);
        g->ev_err = event_new(base, err_fd, EV_READ | EV_PERSIST, sv_on_err_pipe, g);
        event_add(g->ev_err, NULL);
    }
    if (out_fd >= 0) {
        evutil_make_socket_nonblocking(out_fd);
        g->ev_out = event_new(base, out_fd, EV_READ | EV_PERSIST, sv_on_out_pipe, g);
        event_add(g->ev_out, NULL);
    }
    /* The proxy gets the credentials fetched at start now, not only once
     * the session is up. */
    sv_send_credentials(g);
    loop_timer_start(g->t_watch, 5000, true);
    loop_timer_start(g->t_config, SV_CONFIG_PERIOD_MS, true);
    sv_connect(g);
    /* A child that ended before the loop started. */
    kill(getpid(), SIGCHLD);

    loop_run(g->loop);

    g->stopping = true;
    code = g->exited ? g->exit_code : SB_EXIT_SETUP;
    sv_relay_shutdown(g);
    if (g->conn)
        h2_conn_free(g->conn);
    event_free(ev_sig);
    close(sfd);
    if (g->ev_ctl)
        event_free(g->ev_ctl);
    if (g->ev_err)
        event_free(g->ev_err);
    if (g->ev_out)
        event_free(g->ev_out);
    if (g->err_fd >= 0) {
        /* Whatever is left goes to our stderr at least. */
        sv_pipe_read(g, &g->err_fd, &g->ev_err, &g->err_in, STDERR_FILENO, false);
    }
    loop_timer_free(g->t_flush);
    g->t_flush = NULL;
    loop_timer_free(g->t_reconnect);
    loop_timer_free(g->t_watch);
    loop_timer_free(g->t_config);
    loop_timer_free(g->t_stop);
    loop_timer_free(g->t_poll);
    while (g->lhead) {
        struct sv_log *l = g->lhead;
        g->lhead = l->next;
        free(l);
    }
    sv_gw_cleanup(g);
    buf_fini(&g->status_line);
    buf_fini(&g->sess_in);
    buf_fini(&g->err_in);
    buf_fini(&g->out_in);
    sb_env_free(g->cred_env);
    policy_unref(g->start_policy);
    free(g->good_text);
    if (g->cred_doc)
        explicit_bzero(g->cred_doc, strlen(g->cred_doc));
    free(g->cred_doc);
    explicit_bzero(g->auth, sizeof(g->auth));
    loop_free(g->loop);
    free(g);
    return code;
}
