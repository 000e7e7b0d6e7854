/*
 * gw_inference.c: the inference route of a workspace (doc/providers.md):
 * which provider and model `https://inference.local` inside its sandboxes
 * reaches.
 *
 * Stored as one object per workspace (type "inference_route", name
 * "inference.local"), payload {"provider", "model", "api"?, "base_url"?,
 * "timeout_seconds", "verified_at_ms"}: "api" and "base_url" only when
 * given explicitly, so that a provider's base URL config reaches the
 * route without a new `inference set`.
 *
 * Verification (`inference set` without no_verify): the gateway asks the
 * backend once with the provider's key before storing the route (openai:
 * GET {base_url}/models; anthropic: POST {base_url}/messages with
 * max_tokens 1). The request is blocking code, so it runs in a forked
 * child that only does that, writes one result line to a pipe and exits;
 * the loop waits for the line (bounded by a timer) and answers then. The
 * child re-seeds every random generator it uses before any TLS (a forked
 * DRBG would repeat the parent's outputs).
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>
/* mbedTLS headers test macros they never define. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wundef"
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>
#include <psa/crypto.h>
#pragma GCC diagnostic pop

#include "api.h"
#include "buf.h"
#include "gw.h"
#include "gw_provider.h"
#include "h2.h"
#include "log.h"
#include "loop.h"
#include "store.h"
#include "xfuncs.h"

#define RT_TIMEOUT_DEFAULT 60
#define PROBE_TIMEOUT_MS 10000
#define PROBE_RESULT_MAX 1024

/* What a route resolves to (strings owned). */
struct route {
    char *provider, *model, *api, *base_url, *api_key, *key_name;
    long timeout_s;
    bool explicit_api, explicit_url;
};

static void
route_fini(struct route *r)
{
    if (r->api_key)
        explicit_bzero(r->api_key, strlen(r->api_key));
    free(r->provider);
    free(r->model);
    free(r->api);
    free(r->base_url);
    free(r->api_key);
    free(r->key_name);
    memset(r, 0, sizeof(*r));
}

static const char *
jstr(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Resolve R (provider, model and explicit api/base_url set) in WS: the
 * provider exists, its type can serve the api, the URL and key. WITH_KEY
 * also fetches the key. 0, -ENOENT (provider), -EINVAL. */
static int
route_resolve(struct gw *gw, const char *ws, struct route *r, bool with_key, struct err *e)
{
    struct store_obj *p = NULL;
    cJSON *pl = NULL, *secrets = NULL;
    const struct gw_ptype *t;
    const cJSON *config, *c;
    const char *url = NULL;
    char host[256];
    const char *path;
    bool tls;
    int port, rc;

    if ((rc = store_get_by_name(gw->store, GW_PROVIDER_TYPE, ws, r->provider, &p, e)) < 0) {
        if (rc == -ENOENT)
            err_set(e, ENOENT, "provider '%.80s' not found in workspace '%.80s'", r->provider, ws);
        return rc;
    }
    pl = cJSON_Parse(p->payload);
    t = jstr(pl, "type") ? gw_ptype_find(jstr(pl, "type")) : NULL;
    config = cJSON_GetObjectItemCaseSensitive(pl, "config");
    if (!t) {
        rc = err_set(e, EIO, "provider %s: stored type unknown", r->provider);
        goto out;
    }
    if (!r->explicit_api) {
        free(r->api);
        r->api = xstrdup(t->api ? t->api : "openai");
    }
    if (!t->api && strcmp(t->name, "generic") != 0) {
        rc = err_set(e, EINVAL,
                     "provider '%s' is of type %s, which serves no inference api (use an openai, "
                     "anthropic, nvidia, deepinfra or generic provider)",
                     r->provider, t->name);
        goto out;
    }
    if (strcmp(r->api, "openai") != 0 && strcmp(r->api, "anthropic") != 0) {
        rc = err_set(e, EINVAL, "api \"%.40s\": expected openai or anthropic", r->api);
        goto out;
    }
    if (!r->explicit_url) {
        if (t->base_url_key && (c = cJSON_GetObjectItemCaseSensitive(config, t->base_url_key)) &&
            cJSON_IsString(c))
            url = c->valuestring;
        else
            url = t->base_url;
        if (!url) {
            rc = err_set(e, EINVAL,
                         "base_url: required for a %s provider (it has no default backend)",
                         t->name);
            goto out;
        }
        free(r->base_url);
        r->base_url = xstrdup(url);
    }
    if ((rc = gw_url_parse(r->base_url, &tls, host, sizeof(host), &port, &path, e)) < 0) {
        err_wrap(e, "base_url");
        goto out;
    }
    /* Trailing slashes would double in {base_url}/models. */
    for (size_t n = strlen(r->base_url); n > 0 && r->base_url[n - 1] == '/'; n--)
        r->base_url[n - 1] = '\0';
    if (with_key) {
        const cJSON *k = NULL;

        if ((rc = gw_provider_secrets(gw, p, &secrets, e)) < 0)
            goto out;
        for (size_t i = 0; t->keys[i] && !k; i++)
            k = cJSON_GetObjectItemCaseSensitive(secrets, t->keys[i]);
        if (!k)
            k = secrets->child;
        if (!cJSON_IsString(k)) {
            rc = err_set(e, EINVAL, "provider '%s' has no credential to use as the api key",
                         r->provider);
            goto out;
        }
        r->api_key = xstrdup(k->valuestring);
        r->key_name = xstrdup(k->string);
    }
    rc = 0;
out:
    gw_secrets_free(secrets);
    cJSON_Delete(pl);
    store_obj_free(p);
    return rc;
}

/* Fill R from a stored route payload. */
static void
route_from_stored(struct route *r, const cJSON *pl)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(pl, "timeout_seconds");

    memset(r, 0, sizeof(*r));
    r->provider = xstrdup(jstr(pl, "provider") ? jstr(pl, "provider") : "");
    r->model = xstrdup(jstr(pl, "model") ? jstr(pl, "model") : "");
    if (jstr(pl, "api")) {
        r->api = xstrdup(jstr(pl, "api"));
        r->explicit_api = true;
    }
    if (jstr(pl, "base_url")) {
        r->base_url = xstrdup(jstr(pl, "base_url"));
        r->explicit_url = true;
    }
    r->timeout_s = cJSON_IsNumber(t) ? (long)t->valuedouble : RT_TIMEOUT_DEFAULT;
}

int
gw_inference_doc(struct gw *gw, const char *ws, cJSON **out, struct err *e)
{
    struct store_obj *o = NULL;
    struct route r;
    cJSON *pl, *j;
    int rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &o, e);

    *out = NULL;
    if (rc == -ENOENT) {
        *out = cJSON_CreateNull();
        return 0;
    }
    if (rc < 0)
        return rc;
    pl = cJSON_Parse(o->payload);
    route_from_stored(&r, pl);
    cJSON_Delete(pl);
    rc = route_resolve(gw, ws, &r, true, e);
    store_obj_free(o);
    if (rc == -ENOENT || rc == -EINVAL) {
        /* A route whose provider went away or no longer fits: no route
         * (the proxy answers "not configured"), never a guess. */
        route_fini(&r);
        *out = cJSON_CreateNull();
        return 0;
    }
    if (rc < 0) {
        route_fini(&r);
        return rc;
    }
    j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "provider", r.provider);
    cJSON_AddStringToObject(j, "api", r.api);
    cJSON_AddStringToObject(j, "base_url", r.base_url);
    cJSON_AddStringToObject(j, "model", r.model);
    cJSON_AddStringToObject(j, "api_key", r.api_key);
    cJSON_AddStringToObject(j, "auth", strcmp(r.api, "anthropic") == 0 ? "x-api-key" : "bearer");
    cJSON_AddNumberToObject(j, "timeout_seconds", (double)r.timeout_s);
    route_fini(&r);
    *out = j;
    return 0;
}

/* The API view of stored route O in WS (no key). */
static cJSON *
route_json(struct gw *gw, const struct store_obj *o)
{
    cJSON *pl = cJSON_Parse(o->payload), *j = cJSON_CreateObject();
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(pl, "verified_at_ms");
    struct route r;
    struct err e;

    route_from_stored(&r, pl);
    cJSON_AddStringToObject(j, "name", GW_ROUTE_NAME);
    cJSON_AddStringToObject(j, "workspace", o->workspace);
    cJSON_AddStringToObject(j, "provider", r.provider);
    cJSON_AddStringToObject(j, "model", r.model);
    if (route_resolve(gw, o->workspace, &r, false, &e) == 0) {
        cJSON_AddStringToObject(j, "api", r.api);
        cJSON_AddStringToObject(j, "base_url", r.base_url);
    } else {
        cJSON_AddNullToObject(j, "api");
        cJSON_AddNullToObject(j, "base_url");
        cJSON_AddStringToObject(j, "error", e.msg);
    }
    cJSON_AddNumberToObject(j, "timeout_seconds", (double)r.timeout_s);
    cJSON_AddNumberToObject(j, "resource_version", (double)o->resource_version);
    cJSON_AddNumberToObject(j, "updated_at_ms", (double)o->updated_at_ms);
    if (cJSON_IsNumber(v) && v->valuedouble > 0)
        cJSON_AddNumberToObject(j, "verified_at_ms", v->valuedouble);
    else
        cJSON_AddNullToObject(j, "verified_at_ms");
    route_fini(&r);
    cJSON_Delete(pl);
    return j;
}

/* ------------------------------------------------------------------ the probe (child) */

static int
probe_send(void *ctx, const unsigned char *p, size_t n)
{
    ssize_t w = send(*(int *)ctx, p, n, MSG_NOSIGNAL);

    if (w < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? MBEDTLS_ERR_SSL_TIMEOUT
                                                       : MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    return (int)w;
}

static int
probe_recv(void *ctx, unsigned char *p, size_t n)
{
    ssize_t r = recv(*(int *)ctx, p, n, 0);

    if (r < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? MBEDTLS_ERR_SSL_TIMEOUT
                                                       : MBEDTLS_ERR_SSL_INTERNAL_ERROR;
    return (int)r;
}

/* Connect to HOST:PORT within the probe's time. -1 with MSG. */
static int
probe_connect(const char *host, int port, char *msg, size_t msize)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM }, *res = NULL, *ai;
    struct timeval tv = { PROBE_TIMEOUT_MS / 1000, 0 };
    char ps[8];
    int fd = -1, rc, err = 0;

    snprintf(ps, sizeof(ps), "%d", port);
    if ((rc = getaddrinfo(host, ps, &hints, &res)) != 0) {
        snprintf(msg, msize, "cannot resolve %s: %s", host, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        struct pollfd pfd;
        socklen_t sl = sizeof(err);

        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            err = errno;
        } else {
            pfd.fd = fd;
            pfd.events = POLLOUT;
            if (poll(&pfd, 1, PROBE_TIMEOUT_MS) != 1)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) < 0)
                err = errno;
        }
        if (err == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        snprintf(msg, msize, "cannot connect to %s:%d: %s", host, port,
                 strerror(err ? err : EHOSTUNREACH));
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/* The whole probe: one request, the status line of the answer. Writes
 * "status N" or "error MESSAGE" into OUT. Runs in the child only. */
static void
probe_run(const struct route *r, struct buf *out)
{
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca;
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
    struct buf req = BUF_INIT, body = BUF_INIT;
    char host[256], msg[600], resp[PROBE_RESULT_MAX];
    const char *path;
    bool tls, anth = strcmp(r->api, "anthropic") == 0;
    size_t got = 0;
    int port, fd, rc;

    mbedtls_ssl_init(&ssl);
    mbedtls_ssl_config_init(&conf);
    mbedtls_x509_crt_init(&ca);
    mbedtls_entropy_init(&ent);
    mbedtls_ctr_drbg_init(&drbg);
    if (gw_url_parse(r->base_url, &tls, host, sizeof(host), &port, &path, NULL) < 0) {
        buf_printf(out, "error bad base_url");
        return;
    }
    if ((fd = probe_connect(host, port, msg, sizeof(msg))) < 0) {
        buf_printf(out, "error %s", msg);
        return;
    }
    if (anth) {
        buf_puts(&body, "{\"model\":");
        buf_put_json_str(&body, r->model, strlen(r->model));
        buf_puts(&body,
                 ",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":\"ping\"}]}");
        buf_printf(&req,
                   "POST %s/messages HTTP/1.1\r\nHost: %s\r\nx-api-key: %s\r\n"
                   "anthropic-version: 2023-06-01\r\nContent-Type: application/json\r\n"
                   "Content-Length: %zu\r\n",
                   path, host, r->api_key, body.len);
    } else {
        buf_printf(&req, "GET %s/models HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n", path,
                   host, r->api_key);
    }
    buf_puts(&req, "Accept: application/json\r\nUser-Agent: openshell-gateway\r\n"
                   "Connection: close\r\n\r\n");
    buf_append(&req, body.data ? body.data : "", body.len);
    if (tls) {
        const char *cafile = getenv("SSL_CERT_FILE");

        /* Fresh generators: the forked copies would repeat the parent's. */
        mbedtls_psa_crypto_free();
        if (psa_crypto_init() != PSA_SUCCESS ||
            mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &ent, (const unsigned char *)"probe",
                                  5) != 0) {
            buf_printf(out, "error TLS setup failed (random generator)");
            goto done;
        }
        if (!cafile || !*cafile)
            cafile = "/etc/ssl/certs/ca-certificates.crt";
        if ((rc = mbedtls_x509_crt_parse_file(&ca, cafile)) < 0) {
            buf_printf(out, "error cannot load CA bundle %s (set SSL_CERT_FILE)", cafile);
            goto done;
        }
        if (mbedtls_ssl_config_defaults(&conf, MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                        MBEDTLS_SSL_PRESET_DEFAULT) != 0) {
            buf_printf(out, "error TLS setup failed");
            goto done;
        }
        mbedtls_ssl_conf_authmode(&conf, MBEDTLS_SSL_VERIFY_REQUIRED);
        mbedtls_ssl_conf_ca_chain(&conf, &ca, NULL);
        mbedtls_ssl_conf_rng(&conf, mbedtls_ctr_drbg_random, &drbg);
        if (mbedtls_ssl_setup(&ssl, &conf) != 0 || mbedtls_ssl_set_hostname(&ssl, host) != 0) {
            buf_printf(out, "error TLS setup failed");
            goto done;
        }
        mbedtls_ssl_set_bio(&ssl, &fd, probe_send, probe_recv, NULL);
        while ((rc = mbedtls_ssl_handshake(&ssl)) != 0) {
            if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
                continue;
            if (mbedtls_ssl_get_verify_result(&ssl) != 0)
                buf_printf(out, "error TLS: the certificate of %s does not verify", host);
            else
                buf_printf(out, "error TLS handshake with %s:%d failed (-0x%04x)", host, port,
                           (unsigned)-rc);
            goto done;
        }
        for (size_t off = 0; off < req.len;) {
            rc = mbedtls_ssl_write(&ssl, (const unsigned char *)req.data + off, req.len - off);
            if (rc == MBEDTLS_ERR_SSL_WANT_WRITE)
                continue;
            if (rc <= 0) {
                buf_printf(out, "error sending the request failed");
                goto done;
            }
            off += (size_t)rc;
        }
        while (got < sizeof(resp) - 1 && !memchr(resp, '\n', got)) {
            rc = mbedtls_ssl_read(&ssl, (unsigned char *)resp + got, sizeof(resp) - 1 - got);
            if (rc == MBEDTLS_ERR_SSL_WANT_READ)
                continue;
            if (rc <= 0)
                break;
            got += (size_t)rc;
        }
    } else {
        if (write_full(fd, req.data, req.len) < 0) {
            buf_printf(out, "error sending the request failed: %s", strerror(errno));
            goto done;
        }
        while (got < sizeof(resp) - 1 && !memchr(resp, '\n', got)) {
            ssize_t n = read(fd, resp + got, sizeof(resp) - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
        }
    }
    resp[got] = '\0';
    {
        int status = 0;
        if (got == 0)
            buf_printf(out, "error %s:%d closed the connection or did not answer within %ds", host,
                       port, PROBE_TIMEOUT_MS / 1000);
        else if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || status < 100 || status > 999)
            buf_printf(out, "error %s:%d did not answer HTTP", host, port);
        else
            buf_printf(out, "status %d", status);
    }
done:
    if (req.data)
        explicit_bzero(req.data, req.cap);
    buf_fini(&req);
    buf_fini(&body);
    mbedtls_ssl_free(&ssl);
    mbedtls_ssl_config_free(&conf);
    mbedtls_x509_crt_free(&ca);
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&ent);
    close(fd);
}

/* ------------------------------------------------------------------ the probe (loop side) */

struct probe {
    struct gw *gw;
    struct h2_stream *st; /* NULL once the client went away */
    struct event *ev;
    struct loop_timer *timer;
    pid_t pid;
    int fd;
    struct buf out;
    char *ws;
    cJSON *payload; /* to store when verified */
    struct route r; /* with the key */
};

static void probe_finish(struct probe *p, bool timed_out);

static void
probe_stream_closed(struct h2_stream *st, uint32_t code, void *arg)
{
    struct probe *p = arg;

    (void)st;
    (void)code;
    p->st = NULL;
}

static const struct h2_stream_cbs probe_cbs = { .on_close = probe_stream_closed };

static void
probe_readable(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    char tmp[256];
    ssize_t n;

    (void)what;
    n = read(fd, tmp, sizeof(tmp));
    if (n > 0 && p->out.len < PROBE_RESULT_MAX) {
        buf_append(&p->out, tmp, (size_t)n);
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    probe_finish(p, false);
}

static void
probe_timeout(void *arg)
{
    probe_finish(arg, true);
}

/* Store P's route (create or replace), bump the revision, tell sessions. */
static int
route_store(struct gw *gw, const char *ws, cJSON *payload, struct store_obj **out, struct err *e)
{
    struct store_obj *o = NULL, n = { 0 };
    char id[37];
    int rc;

    if ((rc = gw_cred_revision_bump(gw, e)) < 0)
        return rc;
    rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &o, e);
    if (rc == 0) {
        free(o->payload);
        o->payload = api_json_print(payload);
        rc = store_update(gw->store, o, 0, e);
    } else if (rc == -ENOENT) {
        store_new_id(id);
        n.id = id;
        n.type = (char *)GW_ROUTE_TYPE;
        n.name = (char *)GW_ROUTE_NAME;
        n.workspace = (char *)ws;
        n.payload = api_json_print(payload);
        rc = store_create(gw->store, &n, e);
        free(n.payload);
        if (rc == 0)
            rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &o, e);
    }
    if (rc < 0) {
        store_obj_free(o);
        return rc;
    }
    *out = o;
    gw_provider_notify(gw, ws, NULL);
    return 0;
}

static void
respond_route(struct gw *gw, struct h2_stream *st, const struct store_obj *o, bool verified,
              const struct route *r)
{
    cJSON *j = route_json(gw, o), *eps, *ep;

    cJSON_AddBoolToObject(j, "verified", verified);
    eps = cJSON_AddArrayToObject(j, "validated_endpoints");
    if (verified) {
        char *url = xasprintf("%s/%s", r->base_url,
                              strcmp(r->api, "anthropic") == 0 ? "messages" : "models");
        ep = cJSON_CreateObject();
        cJSON_AddStringToObject(ep, "url", url);
        cJSON_AddStringToObject(ep, "api", r->api);
        cJSON_AddItemToArray(eps, ep);
        free(url);
    }
    api_respond_json(st, 200, j, o->resource_version);
    cJSON_Delete(j);
}

static void
probe_finish(struct probe *p, bool timed_out)
{
    struct store_obj *o = NULL;
    const char *res = buf_cstr(&p->out);
    int status = 0, rc;
    struct err e;
    char *why = NULL;

    event_free(p->ev);
    close(p->fd);
    loop_timer_free(p->timer);
    if (timed_out)
        kill(p->pid, SIGKILL);
    while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
        ;
    if (timed_out)
        why = xasprintf("no answer within %d s", PROBE_TIMEOUT_MS / 1000 + 5);
    else if (sscanf(res, "status %d", &status) == 1 && status >= 200 && status < 300)
        why = NULL;
    else if (status == 401 || status == 403)
        why = xasprintf("the backend refused the credential (HTTP %d)", status);
    else if (status)
        why = xasprintf("the backend answered HTTP %d", status);
    else if (strncmp(res, "error ", 6) == 0)
        why = xasprintf("%s", res + 6);
    else
        why = xasprintf("the probe failed without a result");
    if (!p->st) {
        /* The client went away: nothing is stored it did not see. */
    } else if (why) {
        log_kv(LOG_LVL_INFO, "inference route refused", "workspace", p->ws, "provider",
               p->r.provider, "reason", why, NULL);
        h2_stream_error(p->st, 412, "failed_precondition",
                        "failed to verify inference endpoint for provider '%s' and model '%s' at "
                        "'%s': %s. Next steps: check the backend and the provider's credential "
                        "(openshell provider update %s --credential KEY), or retry with "
                        "'--no-verify'",
                        p->r.provider, p->r.model, p->r.base_url, why, p->r.provider);
    } else {
        cJSON_DeleteItemFromObjectCaseSensitive(p->payload, "verified_at_ms");
        cJSON_AddNumberToObject(p->payload, "verified_at_ms", (double)store_now_ms());
        if ((rc = route_store(p->gw, p->ws, p->payload, &o, &e)) < 0) {
            api_respond_err(p->st, rc, &e);
        } else {
            log_kv(LOG_LVL_INFO, "inference route set", "workspace", p->ws, "provider",
                   p->r.provider, "model", p->r.model, "verified", "true", NULL);
            respond_route(p->gw, p->st, o, true, &p->r);
        }
        store_obj_free(o);
    }
    if (p->st)
        h2_stream_set_cbs(p->st, NULL, NULL);
    free(why);
    buf_fini(&p->out);
    route_fini(&p->r);
    cJSON_Delete(p->payload);
    free(p->ws);
    free(p);
}

/* Start verifying R (resolved with its key; taken over) for PAYLOAD
 * (taken over) in WS; the answer comes from probe_finish. */
static int
probe_start(struct gw *gw, struct h2_stream *st, const char *ws, struct route *r, cJSON *payload,
            struct err *e)
{
    struct probe *p;
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0)
        return err_errno(e, "inference probe: pipe");
    pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return err_errno(e, "inference probe: fork");
    }
    if (pid == 0) {
        /* Child: one blocking request, one line, _exit. It never returns
         * to the loop it inherited. */
        struct buf out = BUF_INIT;
        int wfd = fds[1];

        /* Nothing of the gateway's stays open here (its lock, listeners,
         * connections: a restarted gateway must not find them held), and
         * its signal handlers (which write to the loop's wake-up pipe) go:
         * our pipe moves to fd 3, everything above is closed. */
        if (wfd != 3) {
            if (dup2(wfd, 3) < 0)
                _exit(1);
            wfd = 3;
        }
        if (syscall(SYS_close_range, 4U, ~0U, 0U) < 0)
            for (int fd = 4; fd < 65536; fd++)
                close(fd);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_IGN);
        alarm(PROBE_TIMEOUT_MS / 1000 + 4);
        probe_run(r, &out);
        write_full(wfd, out.data ? out.data : "", out.len);
        _exit(0);
    }
    close(fds[1]);
    fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK);
    p = xcalloc(1, sizeof(*p));
    p->gw = gw;
    p->st = st;
    p->pid = pid;
    p->fd = fds[0];
    p->ws = xstrdup(ws);
    p->payload = payload;
    p->r = *r;
    memset(r, 0, sizeof(*r));
    p->ev = event_new(loop_base(gw->loop), fds[0], EV_READ | EV_PERSIST, probe_readable, p);
    event_add(p->ev, NULL);
    p->timer = loop_timer_new(gw->loop, probe_timeout, p);
    loop_timer_start(p->timer, PROBE_TIMEOUT_MS + 5000, false);
    h2_stream_set_cbs(st, &probe_cbs, p);
    return 0;
}

/* ------------------------------------------------------------------ handlers */

static const char *
ws_of(struct h2_req *req)
{
    return req->nparams ? req->params[0] : "default";
}

/* PUT (full) or PATCH (merge) of the route. */
static void
h_set(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "provider",        "model",     "api", "base_url",
                                        "timeout_seconds", "no_verify", NULL };
    struct gw *gw = arg;
    bool patch = strcmp(req->method, "PATCH") == 0, no_verify = false;
    const char *ws = ws_of(req), *s;
    struct store_obj *old = NULL;
    cJSON *body = NULL, *payload = NULL;
    const cJSON *t;
    struct route r = { 0 };
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    if (buf_json_has_nul_escape(req->body.data, req->body.len)) {
        rc = err_set(&e, EINVAL, "a \\u0000 escape: no string may contain NUL");
        goto fail;
    }
    if ((rc = gw_workspace_check(gw, ws, &e)) < 0 ||
        (rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_bool(body, "no_verify", "", &no_verify, &e)) < 0)
        goto fail;
    if (patch) {
        if ((rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &old, &e)) < 0) {
            if (rc == -ENOENT)
                err_set(&e, ENOENT,
                        "inference route 'inference.local' is not configured in workspace '%s'; "
                        "run 'openshell inference set --provider <name> --model <id>'",
                        ws);
            goto fail;
        }
        payload = cJSON_Parse(old->payload);
        if (!payload)
            payload = cJSON_CreateObject();
    } else {
        payload = cJSON_CreateObject();
    }
    for (size_t i = 0; i < 4; i++) {
        if ((rc = api_get_string(body, keys[i], "", !patch && i < 2, &s, &e)) < 0)
            goto fail;
        if (rc == 1)
            continue;
        /* The model goes into every routed body: the proxy takes 512. */
        if (!*s || strlen(s) > (i == 1 ? 512u : 1024u)) {
            rc = err_set(&e, EINVAL, "%s: expected 1-%d characters", keys[i], i == 1 ? 512 : 1024);
            goto fail;
        }
        for (const unsigned char *c = (const unsigned char *)s; *c; c++)
            if (*c < 0x20 || *c == 0x7f) {
                rc = err_set(&e, EINVAL, "%s: control characters are not allowed", keys[i]);
                goto fail;
            }
        cJSON_DeleteItemFromObjectCaseSensitive(payload, keys[i]);
        cJSON_AddStringToObject(payload, keys[i], s);
    }
    if (patch && cJSON_GetArraySize(body) == (cJSON_HasObjectItem(body, "no_verify") ? 1 : 0)) {
        rc = err_set(&e, EINVAL,
                     "nothing to update: give provider, model, api, base_url or "
                     "timeout_seconds");
        goto fail;
    }
    /* A new provider brings its own api and URL unless given again. */
    if (patch && cJSON_HasObjectItem(body, "provider")) {
        if (!cJSON_HasObjectItem(body, "api"))
            cJSON_DeleteItemFromObjectCaseSensitive(payload, "api");
        if (!cJSON_HasObjectItem(body, "base_url"))
            cJSON_DeleteItemFromObjectCaseSensitive(payload, "base_url");
    }
    t = cJSON_GetObjectItemCaseSensitive(body, "timeout_seconds");
    if (t && !cJSON_IsNull(t)) {
        if (!cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 3600 ||
            t->valuedouble != (double)(long)t->valuedouble) {
            rc = err_set(&e, EINVAL, "timeout_seconds: expected an integer 0-3600 (0: 60)");
            goto fail;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(payload, "timeout_seconds");
        cJSON_AddNumberToObject(payload, "timeout_seconds",
                                t->valuedouble == 0 ? RT_TIMEOUT_DEFAULT : t->valuedouble);
    }
    if (!cJSON_HasObjectItem(payload, "timeout_seconds"))
        cJSON_AddNumberToObject(payload, "timeout_seconds", RT_TIMEOUT_DEFAULT);
    route_from_stored(&r, payload);
    if ((rc = route_resolve(gw, ws, &r, !no_verify, &e)) < 0)
        goto fail;
    if (!no_verify) {
        if ((rc = probe_start(gw, st, ws, &r, payload, &e)) < 0)
            goto fail;
        payload = NULL; /* the probe's now */
        goto out;
    }
    cJSON_DeleteItemFromObjectCaseSensitive(payload, "verified_at_ms");
    cJSON_AddNumberToObject(payload, "verified_at_ms", 0);
    {
        struct store_obj *o = NULL;
        if ((rc = route_store(gw, ws, payload, &o, &e)) < 0)
            goto fail;
        log_kv(LOG_LVL_INFO, "inference route set", "workspace", ws, "provider", r.provider,
               "model", r.model, "verified", "false", NULL);
        respond_route(gw, st, o, false, &r);
        store_obj_free(o);
    }
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    route_fini(&r);
    cJSON_Delete(payload);
    cJSON_Delete(body);
    store_obj_free(old);
}

static void
h_get(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    const char *ws = ws_of(req);
    struct store_obj *o = NULL;
    struct err e;
    cJSON *j;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = gw_workspace_check(gw, ws, &e)) < 0 ||
        (rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &o, &e)) < 0) {
        if (rc == -ENOENT && !o)
            err_set(&e, ENOENT,
                    "inference route 'inference.local' is not configured in workspace '%s'; run "
                    "'openshell inference set --provider <name> --model <id>'",
                    ws);
        api_respond_err(st, rc, &e);
        return;
    }
    j = route_json(gw, o);
    api_respond_json(st, 200, j, o->resource_version);
    cJSON_Delete(j);
    store_obj_free(o);
}

static void
h_delete(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    const char *ws = ws_of(req);
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = gw_workspace_check(gw, ws, &e)) < 0 ||
        (rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &o, &e)) < 0 ||
        (rc = gw_cred_revision_bump(gw, &e)) < 0 ||
        (rc = store_delete(gw->store, GW_ROUTE_TYPE, o->id, 0, &e)) < 0) {
        if (rc == -ENOENT)
            err_set(&e, ENOENT,
                    "inference route 'inference.local' is not configured in "
                    "workspace '%s'",
                    ws);
        api_respond_err(st, rc, &e);
    } else {
        log_kv(LOG_LVL_INFO, "inference route deleted", "workspace", ws, NULL);
        h2_stream_respond(st, 200, "application/json", NULL, 0, "{\"deleted\":true}\n", 17);
        gw_provider_notify(gw, ws, NULL);
    }
    store_obj_free(o);
}

void
gw_inference_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;

    h2_router_add(r, "GET", "/v1/workspaces/{}/inference", 0, h_get, gw);
    h2_router_add(r, "PUT", "/v1/workspaces/{}/inference", 0, h_set, gw);
    h2_router_add(r, "PATCH", "/v1/workspaces/{}/inference", 0, h_set, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}/inference", 0, h_delete, gw);
    /* The gateway-wide spelling: the default workspace's route. */
    h2_router_add(r, "GET", "/v1/gateway/inference", 0, h_get, gw);
    h2_router_add(r, "PUT", "/v1/gateway/inference", 0, h_set, gw);
    h2_router_add(r, "PATCH", "/v1/gateway/inference", 0, h_set, gw);
    h2_router_add(r, "DELETE", "/v1/gateway/inference", 0, h_delete, gw);
}
