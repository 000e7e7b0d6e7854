/*
 * gw_settings.c: registered settings, global and per sandbox (doc/api.md §6).
 *
 * Global settings are one object (type "gateway_settings", name "global",
 * workspace ""), payload {"revision": N, "settings": {key: value}}. A
 * sandbox's own settings live in its payload under "settings" (the same
 * row, so its ETag guards them). Effective value: the global one wins over
 * the sandbox's, as in the reference. Only registered keys with the right
 * type are accepted.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "gw.h"
#include "h2.h"
#include "log.h"
#include "store.h"
#include "xfuncs.h"

#define GS_TYPE "gateway_settings"

struct setting_def {
    const char *key;
    const char *const *choices; /* NULL: a boolean */
};

static const char *const approval_modes[] = { "manual", "auto", NULL };
static const char *const failure_modes[] = { "fail_closed", "retain_last_valid", NULL };

static const struct setting_def settings_reg[] = {
    { "agent_policy_proposals_enabled", NULL },
    { "ocsf_json_enabled", NULL },
    { "policy_validation_failure_mode", failure_modes },
    { "proposal_approval_mode", approval_modes },
    { "providers_v2_enabled", NULL },
};
#define NSETTINGS (sizeof(settings_reg) / sizeof(settings_reg[0]))

static const struct setting_def *
setting_find(const char *key)
{
    for (size_t i = 0; i < NSETTINGS; i++)
        if (strcmp(settings_reg[i].key, key) == 0)
            return &settings_reg[i];
    return NULL;
}

/* Check KEY and VALUE; 0 or -EINVAL / -ENOENT with E. */
static int
setting_check(const char *key, const cJSON *value, struct err *e)
{
    const struct setting_def *d = setting_find(key);
    struct buf known = BUF_INIT;
    int rc;

    if (!d) {
        for (size_t i = 0; i < NSETTINGS; i++)
            buf_printf(&known, "%s%s", i ? ", " : "", settings_reg[i].key);
        rc = err_set(e, EINVAL, "setting %.80s: unknown%s (known: %s)", key,
                     strcmp(key, "policy") == 0 ? " (policy is reserved: use .../policy)" : "",
                     buf_cstr(&known));
        buf_fini(&known);
        return rc;
    }
    if (!value)
        return 0;
    if (!d->choices) {
        if (!cJSON_IsBool(value))
            return err_set(e, EINVAL, "setting %s: value must be true or false", key);
        return 0;
    }
    if (cJSON_IsString(value))
        for (size_t i = 0; d->choices[i]; i++)
            if (strcmp(d->choices[i], value->valuestring) == 0)
                return 0;
    for (size_t i = 0; d->choices[i]; i++)
        buf_printf(&known, "%s%s", i ? ", " : "", d->choices[i]);
    rc = err_set(e, EINVAL, "setting %s: value must be one of %s", key, buf_cstr(&known));
    buf_fini(&known);
    return rc;
}

/* The global settings object, created on first use. */
int
gw_settings_global(struct gw *gw, struct store_obj **out, struct err *e)
{
    struct store_obj o = { 0 };
    char id[37];
    int rc = store_get_by_name(gw->store, GS_TYPE, "", "global", out, e);

    if (rc != -ENOENT)
        return rc;
    store_new_id(id);
    o.id = id;
    o.type = (char *)GS_TYPE;
    o.name = (char *)"global";
    o.workspace = (char *)"";
    o.payload = (char *)"{\"revision\":0,\"settings\":{}}";
    if ((rc = store_create(gw->store, &o, e)) < 0 && rc != -EEXIST)
        return rc;
    return store_get_by_name(gw->store, GS_TYPE, "", "global", out, e);
}

/* Read "value" from a PUT body. */
static int
put_value(struct h2_req *req, cJSON **body, const cJSON **value, struct err *e)
{
    static const char *const keys[] = { "value", NULL };
    int rc;

    if ((rc = api_parse_object(req->body.data, req->body.len, body, e)) < 0 ||
        (rc = api_check_keys(*body, keys, "", e)) < 0)
        return rc;
    *value = cJSON_GetObjectItemCaseSensitive(*body, "value");
    if (!*value || cJSON_IsNull(*value))
        return err_set(e, EINVAL, "value: required");
    return 0;
}

/* Apply KEY=VALUE (or delete when VALUE is NULL) to PAYLOAD's "settings"
 * map, bumping its "revision". Returns the new revision. */
static long long
apply(cJSON *payload, const char *key, const cJSON *value)
{
    cJSON *set = cJSON_GetObjectItemCaseSensitive(payload, "settings");
    cJSON *rev = cJSON_GetObjectItemCaseSensitive(payload, "settings_revision");
    long long r = cJSON_IsNumber(rev) ? (long long)rev->valuedouble + 1 : 1;

    if (!cJSON_IsObject(set)) {
        cJSON_DeleteItemFromObjectCaseSensitive(payload, "settings");
        set = cJSON_AddObjectToObject(payload, "settings");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(set, key);
    if (value)
        cJSON_AddItemToObject(set, key, cJSON_Duplicate(value, true));
    cJSON_DeleteItemFromObjectCaseSensitive(payload, "settings_revision");
    cJSON_AddNumberToObject(payload, "settings_revision", (double)r);
    return r;
}

/* PUT (VALUE set) or DELETE (VALUE NULL) of KEY on object O, CAS EXPECT. */
static void
write_setting(struct gw *gw, struct h2_stream *st, struct store_obj *o, const char *key,
              const cJSON *value, uint64_t expect, bool notify)
{
    cJSON *payload = cJSON_Parse(o->payload), *resp;
    struct err e;
    long long r;
    int rc;

    if (!payload) {
        h2_stream_error(st, 500, "internal", "stored settings are not JSON");
        return;
    }
    r = apply(payload, key, value);
    free(o->payload);
    o->payload = api_json_print(payload);
    cJSON_Delete(payload);
    if ((rc = store_update(gw->store, o, expect, &e)) < 0) {
        if (rc == -ESTALE)
            err_set(&e, ESTALE, "%s: resource_version is %llu, not %llu", o->name ? o->name : o->id,
                    (unsigned long long)o->resource_version, (unsigned long long)expect);
        api_respond_err(st, rc, &e);
        return;
    }
    log_kv(LOG_LVL_INFO, value ? "setting updated" : "setting deleted", "key", key, "scope",
           strcmp(o->type, GS_TYPE) == 0 ? "global" : o->name, NULL);
    resp = cJSON_CreateObject();
    cJSON_AddNumberToObject(resp, "revision", (double)r);
    api_respond_json(st, 200, resp, o->resource_version);
    cJSON_Delete(resp);
    if (notify)
        gw_watch_notify(gw, o->id, o);
    gw_supervisor_notify(gw, strcmp(o->type, GS_TYPE) == 0 ? NULL : o->id, "settings");
}

static void
h_global_get(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    cJSON *p, *j, *set, *rev;
    struct err e;
    int rc;

    (void)req;
    if (!gw_authorized(gw, st))
        return;
    if ((rc = gw_settings_global(gw, &o, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    p = cJSON_Parse(o->payload);
    j = cJSON_CreateObject();
    set = p ? cJSON_DetachItemFromObjectCaseSensitive(p, "settings") : NULL;
    rev = p ? cJSON_GetObjectItemCaseSensitive(p, "settings_revision") : NULL;
    cJSON_AddItemToObject(j, "settings", set ? set : cJSON_CreateObject());
    cJSON_AddNumberToObject(j, "revision", cJSON_IsNumber(rev) ? rev->valuedouble : 0);
    api_respond_json(st, 200, j, o->resource_version);
    cJSON_Delete(j);
    cJSON_Delete(p);
    store_obj_free(o);
}

static void
h_global_put(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    cJSON *body = NULL;
    const cJSON *value = NULL;
    bool del = strcmp(req->method, "DELETE") == 0;
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || (!del && gw_require_json(st) < 0))
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0 ||
        (!del && (rc = put_value(req, &body, &value, &e)) < 0) ||
        (rc = setting_check(req->params[0], value, &e)) < 0 ||
        (rc = gw_settings_global(gw, &o, &e)) < 0) {
        api_respond_err(st, rc, &e);
    } else {
        write_setting(gw, st, o, req->params[0], value, expect, false);
    }
    cJSON_Delete(body);
    store_obj_free(o);
}

cJSON *
gw_settings_effective(struct gw *gw, const struct store_obj *sb, struct err *e, int *rc)
{
    struct store_obj *g = NULL;
    cJSON *sp, *gp, *j, *out, *ss, *gs, *rev;

    if ((*rc = gw_settings_global(gw, &g, e)) < 0)
        return NULL;
    sp = cJSON_Parse(sb->payload);
    gp = cJSON_Parse(g->payload);
    ss = sp ? cJSON_GetObjectItemCaseSensitive(sp, "settings") : NULL;
    gs = gp ? cJSON_GetObjectItemCaseSensitive(gp, "settings") : NULL;
    j = cJSON_CreateObject();
    out = cJSON_AddObjectToObject(j, "settings");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const char *k = settings_reg[i].key;
        const cJSON *gv = cJSON_GetObjectItemCaseSensitive(gs, k);
        const cJSON *sv = cJSON_GetObjectItemCaseSensitive(ss, k);
        cJSON *item;

        if (!gv && !sv)
            continue;
        item = cJSON_AddObjectToObject(out, k);
        cJSON_AddItemToObject(item, "value", cJSON_Duplicate(gv ? gv : sv, true));
        cJSON_AddStringToObject(item, "scope", gv ? "global" : "sandbox");
    }
    rev = sp ? cJSON_GetObjectItemCaseSensitive(sp, "settings_revision") : NULL;
    cJSON_AddNumberToObject(j, "revision", cJSON_IsNumber(rev) ? rev->valuedouble : 0);
    rev = gp ? cJSON_GetObjectItemCaseSensitive(gp, "settings_revision") : NULL;
    cJSON_AddNumberToObject(j, "global_revision", cJSON_IsNumber(rev) ? rev->valuedouble : 0);
    cJSON_Delete(sp);
    cJSON_Delete(gp);
    store_obj_free(g);
    return j;
}

/* Effective settings of a sandbox: {key: {"value", "scope"}}. */
static void
h_sandbox_get(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb;
    struct err e;
    cJSON *j;
    int rc;

    if (!gw_authorized(gw, st) || !(sb = gw_sandbox_lookup(gw, st, req)))
        return;
    if (!(j = gw_settings_effective(gw, sb, &e, &rc)))
        api_respond_err(st, rc, &e);
    else
        api_respond_json(st, 200, j, sb->resource_version);
    cJSON_Delete(j);
    store_obj_free(sb);
}

static void
h_sandbox_put(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    cJSON *body = NULL;
    const cJSON *value = NULL;
    bool del = strcmp(req->method, "DELETE") == 0;
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || (!del && gw_require_json(st) < 0))
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0 ||
        (!del && (rc = put_value(req, &body, &value, &e)) < 0) ||
        (rc = setting_check(req->params[2], value, &e)) < 0) {
        api_respond_err(st, rc, &e);
    } else if ((sb = gw_sandbox_lookup(gw, st, req))) {
        write_setting(gw, st, sb, req->params[2], value, expect, true);
    }
    cJSON_Delete(body);
    store_obj_free(sb);
}

void
gw_settings_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;

    h2_router_add(r, "GET", "/v1/gateway/settings", 0, h_global_get, gw);
    h2_router_add(r, "PUT", "/v1/gateway/settings/{}", 0, h_global_put, gw);
    h2_router_add(r, "DELETE", "/v1/gateway/settings/{}", 0, h_global_put, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/settings", 0, h_sandbox_get, gw);
    h2_router_add(r, "PUT", "/v1/workspaces/{}/sandboxes/{}/settings/{}", 0, h_sandbox_put, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}/sandboxes/{}/settings/{}", 0, h_sandbox_put, gw);
}
