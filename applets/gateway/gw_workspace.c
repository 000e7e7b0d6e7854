/*
 * gw_workspace.c: workspaces (doc/api.md §4). A workspace is an object of
 * type "workspace" (workspace "", name = the workspace). "default" exists
 * from the first start and cannot be deleted; a workspace that still holds
 * sandboxes cannot be deleted either (412).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "gw.h"
#include "gw_provider.h"
#include "h2.h"
#include "log.h"
#include "store.h"
#include "xfuncs.h"

#define WS_TYPE "workspace"
#define WS_NAME_MAX 19

static bool
ws_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > WS_NAME_MAX || s[0] == '-' || s[n - 1] == '-' || strstr(s, "--"))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

int
gw_workspace_check(struct gw *gw, const char *ws, struct err *e)
{
    struct store_obj *o = NULL;
    int rc = store_get_by_name(gw->store, WS_TYPE, "", ws, &o, e);

    store_obj_free(o);
    if (rc == -ENOENT)
        return err_set(e, ENOENT, "workspace %.80s not found", ws);
    return rc;
}

static int
ws_create(struct gw *gw, const char *name, const char *labels, struct store_obj *out, struct err *e)
{
    char id[37];

    store_new_id(id);
    memset(out, 0, sizeof(*out));
    out->id = xstrdup(id);
    out->type = xstrdup(WS_TYPE);
    out->name = xstrdup(name);
    out->workspace = xstrdup("");
    out->payload = xstrdup("{\"status\":{\"phase\":\"active\"}}");
    out->labels = xstrdup(labels ? labels : "{}");
    return store_create(gw->store, out, e);
}

int
gw_workspace_ensure_default(struct gw *gw, struct err *e)
{
    struct store_obj o;
    int rc = gw_workspace_check(gw, "default", e);

    if (rc != -ENOENT)
        return rc;
    rc = ws_create(gw, "default", NULL, &o, e);
    free(o.id);
    free(o.type);
    free(o.name);
    free(o.workspace);
    free(o.payload);
    free(o.labels);
    return rc;
}

static cJSON *
ws_json(const struct store_obj *o)
{
    cJSON *j = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(j, "metadata");
    cJSON *p = cJSON_Parse(o->payload), *l = cJSON_Parse(o->labels);
    cJSON *st = p ? cJSON_DetachItemFromObjectCaseSensitive(p, "status") : NULL;

    cJSON_AddStringToObject(md, "id", o->id);
    cJSON_AddStringToObject(md, "name", o->name ? o->name : "");
    cJSON_AddItemToObject(md, "labels", l ? l : cJSON_CreateObject());
    cJSON_AddNumberToObject(md, "created_at_ms", (double)o->created_at_ms);
    cJSON_AddNumberToObject(md, "resource_version", (double)o->resource_version);
    cJSON_AddItemToObject(j, "status", st ? st : cJSON_CreateObject());
    cJSON_Delete(p);
    return j;
}

static void
h_create(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "name", "labels", NULL };
    struct gw *gw = arg;
    struct store_obj o = { 0 };
    const cJSON *labels = NULL;
    const char *name = NULL;
    char *ltext = NULL;
    cJSON *body = NULL, *j;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    if ((rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_string(body, "name", "", true, &name, &e)) < 0 ||
        (rc = api_get_object(body, "labels", "", &labels, &e)) < 0 ||
        (rc == 0 && (rc = gw_labels_check(labels, &e)) < 0))
        goto fail;
    if (!ws_name_ok(name)) {
        rc = err_set(&e, EINVAL,
                     "name \"%.80s\": expected 1-%d of [a-z0-9-], starting and ending with a "
                     "letter or digit, without \"--\"",
                     name, WS_NAME_MAX);
        goto fail;
    }
    if (labels)
        ltext = api_json_print(labels);
    if ((rc = ws_create(gw, name, ltext, &o, &e)) < 0) {
        if (rc == -EEXIST)
            err_set(&e, EEXIST, "workspace %s already exists", name);
        goto fail;
    }
    log_kv(LOG_LVL_INFO, "workspace created", "name", name, NULL);
    j = ws_json(&o);
    api_respond_json(st, 201, j, o.resource_version);
    cJSON_Delete(j);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    free(o.id);
    free(o.type);
    free(o.name);
    free(o.workspace);
    free(o.payload);
    free(o.labels);
    free(ltext);
    cJSON_Delete(body);
}

static void
h_list(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_query q = { .type = WS_TYPE, .limit = STORE_LIST_MAX };
    struct store_list l;
    struct err e;
    cJSON *j, *items;
    int rc;

    (void)req;
    if (!gw_authorized(gw, st))
        return;
    if ((rc = store_list(gw->store, &q, &l, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    j = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(j, "items");
    for (size_t i = 0; i < l.n; i++)
        cJSON_AddItemToArray(items, ws_json(l.items[i]));
    cJSON_AddNumberToObject(j, "total", (double)l.total);
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
    store_list_fini(&l);
}

static void
h_get(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    struct err e;
    cJSON *j;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = store_get_by_name(gw->store, WS_TYPE, "", req->params[0], &o, &e)) < 0) {
        if (rc == -ENOENT)
            err_set(&e, ENOENT, "workspace %.80s not found", req->params[0]);
        api_respond_err(st, rc, &e);
        return;
    }
    j = ws_json(o);
    api_respond_json(st, 200, j, o->resource_version);
    cJSON_Delete(j);
    store_obj_free(o);
}

static void
h_delete(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    struct store_query q = { .type = "sandbox", .limit = 1 };
    struct store_list l;
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0)
        goto fail;
    if ((rc = store_get_by_name(gw->store, WS_TYPE, "", req->params[0], &o, &e)) < 0) {
        if (rc == -ENOENT)
            err_set(&e, ENOENT, "workspace %.80s not found", req->params[0]);
        goto fail;
    }
    if (strcmp(o->name, "default") == 0) {
        rc = err_set(&e, EPROTO, "the default workspace cannot be deleted");
        goto fail;
    }
    /* The gateway runs handlers one at a time: nothing can be created in
     * the workspace between this check and the delete. */
    q.workspace = o->name;
    if ((rc = store_list(gw->store, &q, &l, &e)) < 0)
        goto fail;
    if (l.total) {
        rc = err_set(&e, EPROTO, "workspace %s still holds %zu sandbox(es): delete them first",
                     o->name, l.total);
        store_list_fini(&l);
        goto fail;
    }
    store_list_fini(&l);
    if ((rc = gw_provider_workspace_release(gw, o->name, &e)) < 0)
        goto fail;
    if ((rc = store_delete(gw->store, WS_TYPE, o->id, expect, &e)) < 0)
        goto fail;
    log_kv(LOG_LVL_INFO, "workspace deleted", "name", o->name, NULL);
    h2_stream_respond(st, 200, "application/json", NULL, 0, "{\"deleted\":true}\n", 17);
    store_obj_free(o);
    return;
fail:
    store_obj_free(o);
    api_respond_err(st, rc, &e);
}

void
gw_workspace_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;

    h2_router_add(r, "POST", "/v1/workspaces", 0, h_create, gw);
    h2_router_add(r, "GET", "/v1/workspaces", 0, h_list, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}", 0, h_get, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}", 0, h_delete, gw);
}
