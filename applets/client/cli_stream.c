/*
 * cli_stream.c: streamed requests for the CLI (logs, exec, file transfer)
 * and the small helpers the gateway-facing commands share (applets/client/
 * cli.h).
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "h2.h"
#include "loop.h"
#include "xfuncs.h"

#define CLI_ERR_BODY_MAX (64 * 1024)

uint64_t
cli_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void
cli_sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

const cJSON *
cli_jget(const cJSON *o, const char *path)
{
    char key[64];

    while (o && *path) {
        size_t n = strcspn(path, ".");
        if (n >= sizeof(key))
            return NULL;
        memcpy(key, path, n);
        key[n] = '\0';
        o = cJSON_GetObjectItemCaseSensitive(o, key);
        path += n + (path[n] == '.');
    }
    return o;
}

const char *
cli_jstr(const cJSON *o, const char *path)
{
    const cJSON *v = cli_jget(o, path);

    return cJSON_IsString(v) ? v->valuestring : "";
}

cJSON *
cli_kv_into(cJSON *o, const char *const *kv, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(kv[i], '=');
        char *k = xstrndup(kv[i], (size_t)(eq - kv[i]));
        cJSON_DeleteItemFromObjectCaseSensitive(o, k); /* the last one wins */
        cJSON_AddStringToObject(o, k, eq + 1);
        free(k);
    }
    return o;
}

char *
cli_sb_path(const struct cli_ctx *c, const char *name, const char *suffix)
{
    struct buf b = BUF_INIT;
    char *p;

    cli_pct_encode(name, &b);
    p = cli_ws_path(c, "/sandboxes/%s%s", buf_cstr(&b), suffix);
    buf_fini(&b);
    return p;
}

int
cli_sandbox_name(struct cli_ctx *c, int npos, char **pos, char *out, size_t size)
{
    if (npos > 1)
        return cli_fail(c, CLI_EXIT_USAGE, NULL, "unexpected argument '%s'", pos[1]);
    if (npos == 1)
        return buf_copy_fixed(out, size, pos[0]) < 0
                   ? cli_fail(c, CLI_EXIT_USAGE, NULL, "sandbox name too long")
                   : 0;
    if (c->adhoc || !c->cfg ||
        cli_last_sandbox_get(c->cfg, c->gw.name, c->workspace, out, size) < 0)
        return cli_fail(c, CLI_EXIT_USAGE,
                        "name one, or connect first: openshell sandbox connect NAME",
                        "no sandbox named and no last used sandbox");
    fprintf(stderr, "\u2192 Using sandbox '%s' (last used)\n", out);
    return 0;
}

/* ------------------------------------------------------------------ signals */

volatile bool cli_interrupted;

static void
on_signal(int sig, void *arg)
{
    struct cli_ctx *c = arg;

    (void)sig;
    cli_interrupted = true;
    loop_stop(c->loop);
}

void
cli_catch_signals(struct cli_ctx *c, bool sigint)
{
    static bool hooked_int, hooked_other;

    if (sigint && !hooked_int) {
        hooked_int = true;
        loop_on_signal(c->loop, SIGINT, on_signal, c);
    }
    if (!hooked_other) {
        hooked_other = true;
        loop_on_signal(c->loop, SIGTERM, on_signal, c);
        loop_on_signal(c->loop, SIGHUP, on_signal, c);
    }
}

/* ------------------------------------------------------------------ streams */

static void
st_response(struct h2_stream *st, int status, void *arg)
{
    struct cli_stream *s = arg;

    (void)st;
    s->status = status;
    if (s->on_response)
        s->on_response(s);
    if (s->stop_on_response)
        loop_stop(s->c->loop);
}

static void
st_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct cli_stream *s = arg;

    (void)st;
    if (s->status >= 200 && s->status < 300) {
        if (s->on_data)
            s->on_data(s, p, n);
    } else if (s->err_body.len + n <= CLI_ERR_BODY_MAX) {
        buf_append(&s->err_body, p, n);
    }
}

static void
st_end(struct h2_stream *st, void *arg)
{
    struct cli_stream *s = arg;

    (void)st;
    s->ended = true;
}

static void
st_drain(struct h2_stream *st, void *arg)
{
    struct cli_stream *s = arg;

    (void)st;
    if (s->on_drain)
        s->on_drain(s);
}

static void
st_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct cli_stream *s = arg;

    (void)st;
    s->st = NULL;
    s->closed = true;
    s->reset = code;
    loop_stop(s->c->loop);
}

int
cli_stream_open(struct cli_stream *s, struct cli_ctx *c, const char *method, const char *path,
                const char *ctype, const void *body, size_t len, bool open_body)
{
    static const struct h2_stream_cbs cbs = {
        .on_response = st_response,
        .on_data = st_data,
        .on_end = st_end,
        .on_drain = st_drain,
        .on_close = st_close,
    };
    struct h2_header hdr = { "content-type", ctype ? ctype : "application/json" };
    struct err e;

    s->c = c;
    s->status = 0;
    s->ended = s->closed = false;
    s->reset = 0;
    buf_init(&s->err_body);
    s->st = h2_client_request(c->conn, method, path, &hdr, ctype || body ? 1 : 0, body, len,
                              open_body, &cbs, s, &e);
    if (!s->st)
        return cli_fail(c, CLI_EXIT_UNREACHABLE, "check the gateway with: openshell status",
                        "gateway '%s': %s %s: %s", c->gw.name, method, path, e.msg);
    return 0;
}

void
cli_stream_run(struct cli_stream *s)
{
    if (!s->closed && loop_run(s->c->loop) < 0)
        s->closed = true;
}

int
cli_stream_fail(struct cli_stream *s, const char *hint)
{
    cJSON *j;
    int rc;

    /* Collect the rest of the error body. */
    while (!s->closed && !s->ended)
        if (loop_run(s->c->loop) < 0)
            break;
    if (s->status == 0)
        return cli_fail(s->c, CLI_EXIT_UNREACHABLE, "check the gateway with: openshell status",
                        "gateway '%s': the stream ended before an answer", s->c->gw.name);
    j = cJSON_ParseWithLength(s->err_body.data ? s->err_body.data : "", s->err_body.len);
    if (s->status == 404 && (!j || !strcmp(cli_jstr(j, "error.message"), "no such endpoint")))
        rc = cli_fail(s->c, CLI_EXIT_FAIL, "this gateway may be older than this CLI",
                      "gateway '%s' does not serve this yet (no such endpoint)", s->c->gw.name);
    else
        rc = cli_api_fail(s->c, s->status, j, hint);
    cJSON_Delete(j);
    return rc;
}

void
cli_stream_fini(struct cli_stream *s)
{
    if (s->st) {
        h2_stream_set_cbs(s->st, NULL, NULL);
        h2_stream_reset(s->st, 0x8);
        s->st = NULL;
    }
    buf_fini(&s->err_body);
}
