/*
 * gw_supervisor.c: sandbox tokens and the first supervisor endpoints
 * (doc/api.md §7).
 *
 * A sandbox token is "osb_" + 43 base64url characters (256 random bits).
 * Only its SHA-256 is stored, as a child object of the sandbox (type
 * "sandbox_token", name = the hex digest, scope = the sandbox id), so it
 * goes with the sandbox and a lookup is one indexed read. A token reaches
 * only /v1/supervisor/... and only its own sandbox; user endpoints never
 * accept it, and supervisor endpoints accept nothing else.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include <cjson/cJSON.h>
#include <mbedtls/sha256.h>

#include "api.h"
#include "gw.h"
#include "gw_policy.h"
#include "h2.h"
#include "log.h"
#include "store.h"
#include "xfuncs.h"

#define TOKEN_TYPE "sandbox_token"
#define TOKEN_PREFIX "osb_"
#define TOKEN_LEN (4 + 43)

static void
token_hash(const char *token, char out[65])
{
    unsigned char d[32];

    mbedtls_sha256((const unsigned char *)token, strlen(token), d, 0);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static void
token_new(char out[TOKEN_LEN + 1])
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[33];
    size_t o = 4;

    xgetrandom(r, sizeof(r));
    memcpy(out, TOKEN_PREFIX, 4);
    /* 33 bytes -> 44 characters; keep 43 (258 bits, 256 of them random). */
    for (size_t i = 0; i < 33; i += 3) {
        unsigned v = (unsigned)r[i] << 16 | (unsigned)r[i + 1] << 8 | r[i + 2];
        char c[4] = { b64[v >> 18 & 63], b64[v >> 12 & 63], b64[v >> 6 & 63], b64[v & 63] };

        for (int k = 0; k < 4 && o < TOKEN_LEN; k++)
            out[o++] = c[k];
    }
    out[TOKEN_LEN] = '\0';
}

/* Remove every token of sandbox ID. */
static int
tokens_revoke(struct gw *gw, const char *id, size_t *n, struct err *e)
{
    struct store_query q = { .type = TOKEN_TYPE, .scope = id, .limit = STORE_LIST_MAX };
    struct store_list l;
    int rc;

    *n = 0;
    if ((rc = store_list(gw->store, &q, &l, e)) < 0)
        return rc;
    for (size_t i = 0; i < l.n && rc == 0; i++)
        if ((rc = store_delete(gw->store, TOKEN_TYPE, l.items[i]->id, 0, e)) == 0)
            (*n)++;
    store_list_fini(&l);
    return rc;
}

int
gw_token_mint(struct gw *gw, const char *sandbox_id, char *out, size_t size, struct err *e)
{
    struct store_obj t = { 0 };
    char hash[65], id[37];
    size_t revoked;
    int rc;

    if (size < TOKEN_LEN + 1)
        BUG();
    if ((rc = tokens_revoke(gw, sandbox_id, &revoked, e)) < 0)
        return rc;
    token_new(out);
    token_hash(out, hash);
    store_new_id(id);
    t.id = id;
    t.type = (char *)TOKEN_TYPE;
    t.name = hash;
    t.workspace = (char *)"";
    t.scope = (char *)sandbox_id;
    t.payload = (char *)"{}";
    return store_create(gw->store, &t, e);
}

/* POST .../sandboxes/{name}/token: mint a token (revoking older ones).
 * DELETE .../token: revoke. */
static void
h_token(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    char token[TOKEN_LEN + 1];
    bool del = strcmp(req->method, "DELETE") == 0;
    size_t revoked = 0;
    struct err e;
    cJSON *j;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0 ||
        (rc = store_get_by_name(gw->store, "sandbox", req->params[0], req->params[1], &sb, &e)) <
            0 ||
        (rc = tokens_revoke(gw, sb->id, &revoked, &e)) < 0)
        goto fail;
    if (del) {
        log_kv(LOG_LVL_INFO, "sandbox token revoked", "sandbox", sb->name, NULL);
        j = cJSON_CreateObject();
        cJSON_AddBoolToObject(j, "revoked", revoked > 0);
        api_respond_json(st, 200, j, 0);
        cJSON_Delete(j);
        goto out;
    }
    if ((rc = gw_token_mint(gw, sb->id, token, sizeof(token), &e)) < 0)
        goto fail;
    log_kv(LOG_LVL_INFO, "sandbox token minted", "sandbox", sb->name, NULL);
    j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "token", token);
    cJSON_AddStringToObject(j, "sandbox_id", sb->id);
    api_respond_json(st, 201, j, 0);
    cJSON_Delete(j);
    explicit_bzero(token, sizeof(token));
    goto out;
fail:
    if (rc == -ENOENT && !sb)
        err_set(&e, ENOENT, "sandbox %.80s not found in workspace %.80s", req->params[1],
                req->params[0]);
    api_respond_err(st, rc, &e);
out:
    store_obj_free(sb);
}

int
gw_sandbox_principal(struct gw *gw, struct h2_stream *st, struct store_obj **out)
{
    const char *auth = h2_stream_header(st, "authorization");
    struct store_obj *t = NULL;
    char hash[65];
    struct err e;
    int rc;

    *out = NULL;
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0 || strlen(auth + 7) != TOKEN_LEN ||
        strncmp(auth + 7, TOKEN_PREFIX, 4) != 0) {
        h2_stream_error(st, 401, "unauthenticated",
                        "supervisor endpoints need Authorization: Bearer <sandbox token>");
        return -EPERM;
    }
    token_hash(auth + 7, hash);
    rc = store_get_by_name(gw->store, TOKEN_TYPE, "", hash, &t, &e);
    if (rc == 0)
        rc = store_get(gw->store, "sandbox", t->scope, out, &e);
    store_obj_free(t);
    if (rc == -ENOENT) {
        h2_stream_error(st, 401, "unauthenticated", "unknown or revoked sandbox token");
        return -EPERM;
    }
    if (rc < 0) {
        api_respond_err(st, rc, &e);
        return rc;
    }
    return 0;
}

/* The revision in force for SB: its latest loaded, else its latest. */
static cJSON *
policy_view(struct gw *gw, const struct store_obj *owner, const char *source, struct err *e,
            int *rc)
{
    struct store_obj *latest = NULL;
    cJSON *j = NULL;

    /* The last revision, also past one list page (gw_policy.c). */
    if ((*rc = gw_policy_latest(gw, owner->id, &latest, e)) != 0) {
        if (*rc == 1)
            *rc = 0;
        return NULL;
    }
    {
        const struct store_obj *r = latest;
        cJSON *p = cJSON_Parse(r->payload);
        const cJSON *c;

        j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "source", source);
        cJSON_AddNumberToObject(j, "version", (double)r->version);
        cJSON_AddStringToObject(j, "status", r->status ? r->status : "");
        c = p ? cJSON_GetObjectItemCaseSensitive(p, "hash") : NULL;
        cJSON_AddStringToObject(j, "policy_hash", cJSON_IsString(c) ? c->valuestring : "");
        c = p ? cJSON_GetObjectItemCaseSensitive(p, "format") : NULL;
        cJSON_AddStringToObject(j, "format", cJSON_IsString(c) ? c->valuestring : "yaml");
        c = p ? cJSON_GetObjectItemCaseSensitive(p, "policy") : NULL;
        cJSON_AddStringToObject(j, "policy", cJSON_IsString(c) ? c->valuestring : "");
        cJSON_Delete(p);
    }
    store_obj_free(latest);
    return j;
}

/* GET /v1/supervisor/config: the sandbox's effective policy and settings. */
static void
h_config(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL, *g = NULL;
    cJSON *j = NULL, *pol = NULL, *sp = NULL;
    struct err e;
    int rc = 0;

    (void)req;
    if (gw_sandbox_principal(gw, st, &sb) < 0)
        return;
    if ((rc = gw_settings_global(gw, &g, &e)) < 0)
        goto fail;
    /* The global policy overrides the sandbox's in full (reference §3.9). */
    pol = policy_view(gw, g, "global", &e, &rc);
    if (!pol && rc == 0)
        pol = policy_view(gw, sb, "sandbox", &e, &rc);
    if (rc < 0)
        goto fail;
    j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "sandbox_id", sb->id);
    cJSON_AddStringToObject(j, "sandbox_name", sb->name);
    cJSON_AddStringToObject(j, "workspace", sb->workspace);
    if (!pol) {
        const cJSON *spec, *p;

        sp = cJSON_Parse(sb->payload);
        spec = sp ? cJSON_GetObjectItemCaseSensitive(sp, "spec") : NULL;
        p = spec ? cJSON_GetObjectItemCaseSensitive(spec, "policy") : NULL;
        pol = cJSON_CreateObject();
        if (cJSON_IsObject(p)) {
            char *text = api_json_print(p);

            cJSON_AddStringToObject(pol, "source", "spec");
            cJSON_AddStringToObject(pol, "format", "json");
            cJSON_AddStringToObject(pol, "policy", text);
            free(text);
        } else {
            cJSON_AddStringToObject(pol, "source", "default");
        }
        cJSON_AddNumberToObject(pol, "version", 0);
    }
    cJSON_AddItemToObject(j, "policy", pol);
    pol = NULL;
    {
        cJSON *set = gw_settings_effective(gw, sb, &e, &rc);

        if (!set)
            goto fail;
        cJSON_AddItemToObject(j, "settings",
                              cJSON_DetachItemFromObjectCaseSensitive(set, "settings"));
        cJSON_AddItemToObject(j, "settings_revision",
                              cJSON_DetachItemFromObjectCaseSensitive(set, "revision"));
        cJSON_AddItemToObject(j, "global_settings_revision",
                              cJSON_DetachItemFromObjectCaseSensitive(set, "global_revision"));
        cJSON_Delete(set);
    }
    cJSON_AddNumberToObject(j, "resource_version", (double)sb->resource_version);
    api_respond_json(st, 200, j, sb->resource_version);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    cJSON_Delete(j);
    cJSON_Delete(pol);
    cJSON_Delete(sp);
    store_obj_free(sb);
    store_obj_free(g);
}

int
gw_policy_status_apply(struct gw *gw, const char *sandbox_id, long long version, const char *status,
                       const char *load_error, const char *source, struct err *e)
{
    struct store_obj *g = NULL;
    int rc;

    if (version < 1)
        return err_set(e, EINVAL, "version: expected a revision number");
    if (strcmp(status, "loaded") != 0 && strcmp(status, "failed") != 0)
        return err_set(e, EINVAL, "status: expected loaded or failed");
    if (strcmp(source, "sandbox") != 0 && strcmp(source, "global") != 0)
        return err_set(e, EINVAL, "source: expected sandbox or global");
    if (strcmp(source, "global") == 0 && (rc = gw_settings_global(gw, &g, e)) < 0)
        return rc;
    /* The sandbox id comes from the token, never from the request. */
    rc = store_set_revision_status(gw->store, "sandbox_policy", g ? g->id : sandbox_id,
                                   (int64_t)version, status, load_error, e);
    store_obj_free(g);
    if (rc == 0)
        log_kv(LOG_LVL_INFO, "policy status", "sandbox_id", sandbox_id, "source", source, "status",
               status, "load_error", load_error, NULL);
    return rc;
}

/* POST /v1/supervisor/policy-status {"version", "status": "loaded"|"failed",
 * "source"?: "sandbox"|"global"}. */
static void
h_policy_status(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "version", "status", "load_error", "source", NULL };
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    const char *status = NULL, *source = "sandbox", *lerr = NULL;
    const cJSON *ver;
    cJSON *body = NULL;
    struct err e;
    int rc;

    if (gw_sandbox_principal(gw, st, &sb) < 0)
        return;
    if (gw_require_json(st) < 0)
        goto out;
    if ((rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_string(body, "status", "", true, &status, &e)) < 0 ||
        (rc = api_get_string(body, "source", "", false, &source, &e)) < 0 ||
        (rc = api_get_string(body, "load_error", "", false, &lerr, &e)) < 0)
        goto fail;
    ver = cJSON_GetObjectItemCaseSensitive(body, "version");
    if (!cJSON_IsNumber(ver) || ver->valuedouble < 1 || ver->valuedouble != (double)ver->valueint) {
        rc = err_set(&e, EINVAL, "version: expected a revision number");
        goto fail;
    }
    if ((rc = gw_policy_status_apply(gw, sb->id, ver->valueint, status, lerr, source, &e)) < 0)
        goto fail;
    h2_stream_respond(st, 200, "application/json", NULL, 0, "{\"ok\":true}\n", 12);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    cJSON_Delete(body);
    store_obj_free(sb);
}

void
gw_supervisor_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;

    h2_router_add(r, "POST", "/v1/workspaces/{}/sandboxes/{}/token", 0, h_token, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}/sandboxes/{}/token", 0, h_token, gw);
    h2_router_add(r, "GET", "/v1/supervisor/config", 0, h_config, gw);
    h2_router_add(r, "POST", "/v1/supervisor/policy-status", 0, h_policy_status, gw);
}
