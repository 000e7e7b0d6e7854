/*
 * gw_policy.c: per-sandbox policy revisions (doc/api.md §5.7).
 *
 * PUT .../policy validates the policy with the policy engine (the same
 * strict loader the supervisor uses), then writes, in ONE store transaction,
 * the sandbox's CAS update (status.policy: latest version and hash) and a
 * new revision row (status "pending"; older pending revisions become
 * "superseded"). A revision becomes "loaded" or "failed" when a supervisor
 * reports it. PATCH (incremental operations) lives in gw_policy_ops.c and
 * writes through gw_policy_write() here.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <mbedtls/sha256.h>

#include "api.h"
#include "buf.h"
#include "gw.h"
#include "gw_policy.h"
#include "h2.h"
#include "log.h"
#include "policy.h"
#include "store.h"
#include "xfuncs.h"

#define SB_TYPE "sandbox"
#define REV_TYPE "sandbox_policy"
/* The reference caps a serialized policy at 256 KiB. */
#define POLICY_MAX (256 * 1024)

/* "yaml", "json" or NULL for the request's content type. */
static const char *
policy_format(struct h2_stream *st)
{
    const char *ct = h2_stream_header(st, "content-type");
    static const struct {
        const char *type, *fmt;
    } known[] = {
        { "application/yaml", "yaml" },
        { "application/x-yaml", "yaml" },
        { "text/yaml", "yaml" },
        { "application/json", "json" },
    };

    if (!ct)
        return NULL;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        size_t n = strlen(known[i].type);
        if (strncasecmp(ct, known[i].type, n) == 0 && (ct[n] == '\0' || ct[n] == ';'))
            return known[i].fmt;
    }
    return NULL;
}

static void
sha256_hex(const void *p, size_t n, char out[72])
{
    unsigned char d[32];

    mbedtls_sha256(p, n, d, 0);
    memcpy(out, "sha256:", 7);
    for (int i = 0; i < 32; i++)
        snprintf(out + 7 + 2 * i, 3, "%02x", d[i]);
}

/* Validate TEXT with the policy engine; on failure E holds up to five of
 * its diagnostics. */
int
gw_policy_check_text(const char *text, size_t len, struct err *e)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct buf msg = BUF_INIT;
    int rc;

    policy_diags_init(&d);
    rc = policy_load_mem("policy", text, len, &p, &d, e);
    if (rc == -EINVAL && d.errors) {
        size_t shown = 0;

        buf_puts(&msg, "invalid policy: ");
        for (size_t i = 0; i < d.n && shown < 5; i++) {
            if (d.v[i].level != POLICY_DIAG_ERROR)
                continue;
            buf_printf(&msg, "%s%s", shown ? "; " : "", d.v[i].text);
            shown++;
        }
        if (d.errors > shown)
            buf_printf(&msg, "; and %zu more", d.errors - shown);
        err_set(e, EINVAL, "%s", buf_cstr(&msg));
    } else if (rc < 0) {
        err_wrap(e, "invalid policy");
    }
    policy_unref(p);
    policy_diags_fini(&d);
    buf_fini(&msg);
    return rc < 0 ? -EINVAL : 0;
}

bool
gw_policy_is_global(const struct h2_req *req)
{
    return strncmp(req->path, "/v1/gateway/", 12) == 0;
}

/* The owner of the revisions: the sandbox of the path, or for
 * /v1/gateway/policy the gateway's global settings object. */
struct store_obj *
gw_policy_owner(struct gw *gw, struct h2_stream *st, struct h2_req *req)
{
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    if (!gw_policy_is_global(req))
        return gw_sandbox_lookup(gw, st, req);
    if ((rc = gw_settings_global(gw, &o, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return NULL;
    }
    return o;
}

/* "sandbox NAME" or "the gateway" for messages. */
static void
owner_what(const struct store_obj *o, char *out, size_t n)
{
    if (strcmp(o->type, SB_TYPE) == 0)
        snprintf(out, n, "sandbox %s", o->name);
    else
        snprintf(out, n, "the gateway (global policy)");
}

/*
 * Store TEXT[LEN] (format FMT, already validated) as the next revision of
 * OWNER in one transaction with OWNER's CAS update (EXPECT: its
 * resource_version, 0 for any). Fills HASH and *VERSION; OWNER's
 * resource_version is the new one on return. -ESTALE on a CAS conflict
 * (E names the current version), else as store_put_revision.
 */
int
gw_policy_write(struct gw *gw, struct store_obj *sb, uint64_t expect, const char *fmt,
                const char *text, size_t len, int64_t *version, char hash[72], struct err *e)
{
    struct store_list revs = { 0 };
    struct store_query q = { .type = REV_TYPE, .limit = 1 };
    cJSON *payload = NULL, *status, *pol, *rev = NULL;
    char *rev_text = NULL, *copy;
    int rc;

    sha256_hex(text, len, hash);
    /* The next number: revisions are only ever added (deleted with their
     * sandbox), so it is the count plus one; the store numbers the row in
     * the transaction and the sandbox's CAS keeps racing writers apart. */
    q.scope = sb->id;
    if ((rc = store_list(gw->store, &q, &revs, e)) < 0)
        return rc;
    payload = cJSON_Parse(sb->payload);
    if (!payload) {
        rc = err_set(e, EIO, "%s: stored payload is not JSON", sb->name ? sb->name : sb->id);
        goto out;
    }
    status = cJSON_GetObjectItemCaseSensitive(payload, "status");
    if (!cJSON_IsObject(status))
        status = cJSON_AddObjectToObject(payload, "status");
    cJSON_DeleteItemFromObjectCaseSensitive(status, "policy");
    pol = cJSON_AddObjectToObject(status, "policy");
    cJSON_AddNumberToObject(pol, "latest_version", (double)(revs.total + 1));
    cJSON_AddStringToObject(pol, "latest_hash", hash);
    free(sb->payload);
    sb->payload = api_json_print(payload);
    rev = cJSON_CreateObject();
    cJSON_AddStringToObject(rev, "format", fmt);
    cJSON_AddStringToObject(rev, "hash", hash);
    copy = xstrndup(text, len);
    cJSON_AddItemToObject(rev, "policy", cJSON_CreateString(copy));
    free(copy);
    cJSON_AddNullToObject(rev, "load_error");
    rev_text = api_json_print(rev);
    if ((rc = store_put_revision(gw->store, sb, expect, REV_TYPE, rev_text, version, e)) < 0) {
        if (rc == -ESTALE) {
            char what[128];

            owner_what(sb, what, sizeof(what));
            err_set(e, ESTALE, "%s: resource_version is %llu, not %llu", what,
                    (unsigned long long)sb->resource_version, (unsigned long long)expect);
        }
        goto out;
    }
    if (*version != (int64_t)revs.total + 1)
        log_warnx("%s: revision %lld written, %zu expected", sb->name ? sb->name : sb->id,
                  (long long)*version, revs.total + 1);
    log_kv(LOG_LVL_INFO, "policy revision", "owner", sb->name ? sb->name : "global", "workspace",
           sb->workspace, "hash", hash, NULL);
out:
    cJSON_Delete(payload);
    cJSON_Delete(rev);
    free(rev_text);
    store_list_fini(&revs);
    return rc;
}

/* Tell watchers and the supervisor(s) that OWNER has a new revision. */
void
gw_policy_written(struct gw *gw, const struct store_obj *sb)
{
    bool sandbox = strcmp(sb->type, SB_TYPE) == 0;

    if (sandbox)
        gw_watch_notify(gw, sb->id, sb);
    gw_supervisor_notify(gw, sandbox ? sb->id : NULL, "policy");
}

static void
h_put_policy(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    cJSON *resp = NULL, *body = NULL;
    const char *fmt = policy_format(st);
    char hash[72];
    uint64_t expect;
    int64_t version = 0;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if (!fmt) {
        h2_stream_error(st, 415, "unsupported_media_type",
                        "policy must be application/yaml or application/json");
        return;
    }
    if (req->body.len > POLICY_MAX) {
        h2_stream_error(st, 413, "payload_too_large", "policy over %d bytes", POLICY_MAX);
        return;
    }
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0)
        goto fail;
    if (strcmp(fmt, "json") == 0 &&
        (rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0)
        goto fail;
    if (req->body.len == 0) {
        rc = err_set(&e, EINVAL, "empty policy");
        goto fail;
    }
    if ((rc = gw_policy_check_text(req->body.data, req->body.len, &e)) < 0)
        goto fail;
    if (!(sb = gw_policy_owner(gw, st, req)))
        goto out;
    if ((rc = gw_policy_write(gw, sb, expect, fmt, req->body.data, req->body.len, &version, hash,
                              &e)) < 0)
        goto fail;
    resp = cJSON_CreateObject();
    cJSON_AddNumberToObject(resp, "version", (double)version);
    cJSON_AddStringToObject(resp, "policy_hash", hash);
    cJSON_AddStringToObject(resp, "status", "pending");
    api_respond_json(st, 200, resp, sb->resource_version);
    gw_policy_written(gw, sb);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    cJSON_Delete(body);
    cJSON_Delete(resp);
    store_obj_free(sb);
}

/* The API view of a revision row; with the policy text when FULL. */
static cJSON *
revision_json(const struct store_obj *o, bool full)
{
    cJSON *j = cJSON_CreateObject(), *p = cJSON_Parse(o->payload);
    const cJSON *c;

    cJSON_AddNumberToObject(j, "version", (double)o->version);
    cJSON_AddStringToObject(j, "status", o->status ? o->status : "");
    c = p ? cJSON_GetObjectItemCaseSensitive(p, "hash") : NULL;
    cJSON_AddStringToObject(j, "policy_hash", cJSON_IsString(c) ? c->valuestring : "");
    c = p ? cJSON_GetObjectItemCaseSensitive(p, "load_error") : NULL;
    if (cJSON_IsString(c))
        cJSON_AddStringToObject(j, "load_error", c->valuestring);
    else
        cJSON_AddNullToObject(j, "load_error");
    cJSON_AddNumberToObject(j, "created_at_ms", (double)o->created_at_ms);
    cJSON_AddNumberToObject(j, "updated_at_ms", (double)o->updated_at_ms);
    if (full && p) {
        c = cJSON_GetObjectItemCaseSensitive(p, "format");
        cJSON_AddStringToObject(j, "format", cJSON_IsString(c) ? c->valuestring : "yaml");
        c = cJSON_GetObjectItemCaseSensitive(p, "policy");
        cJSON_AddStringToObject(j, "policy", cJSON_IsString(c) ? c->valuestring : "");
    }
    cJSON_Delete(p);
    return j;
}

/* The newest LIMIT revisions of SCOPE into L (oldest first; L->total counts
 * them all). Revisions are listed in version order, so this is the last
 * page: never the first STORE_LIST_MAX of a long history. */
int
gw_policy_revisions_newest(struct gw *gw, const char *scope, size_t limit, struct store_list *l,
                           struct err *e)
{
    struct store_query q = { .type = REV_TYPE, .scope = scope, .limit = 1 };
    int rc;

    if ((rc = store_list(gw->store, &q, l, e)) < 0)
        return rc;
    if (l->total <= 1 && limit >= 1)
        return 0;
    q.limit = limit;
    q.offset = l->total > limit ? l->total - limit : 0;
    store_list_fini(l);
    return store_list(gw->store, &q, l, e);
}

/* The latest revision of SCOPE into *OUT (the caller's): 0, 1 when there is
 * none, or -errno. */
int
gw_policy_latest(struct gw *gw, const char *scope, struct store_obj **out, struct err *e)
{
    struct store_list l;
    int rc;

    *out = NULL;
    if ((rc = gw_policy_revisions_newest(gw, scope, 1, &l, e)) < 0)
        return rc;
    if (l.n)
        *out = steal_ptr(&l.items[l.n - 1]);
    store_list_fini(&l);
    return *out ? 0 : 1;
}

/* Revision WANT of SCOPE into *OUT: 0, 1 when there is none, -errno. Versions
 * are dense (1..N), so it is normally at offset WANT-1; a gap falls back to a
 * scan. */
static int
revision_at(struct gw *gw, const char *scope, long long want, struct store_obj **out, struct err *e)
{
    struct store_query q = { .type = REV_TYPE, .scope = scope, .limit = 1 };
    struct store_list l;
    int rc;

    *out = NULL;
    q.offset = (size_t)(want - 1);
    if ((rc = store_list(gw->store, &q, &l, e)) < 0)
        return rc;
    if (l.n && l.items[0]->version == want)
        *out = steal_ptr(&l.items[0]);
    store_list_fini(&l);
    for (q.offset = 0, q.limit = STORE_LIST_MAX; !*out;) {
        if ((rc = store_list(gw->store, &q, &l, e)) < 0)
            return rc;
        for (size_t i = 0; i < l.n && !*out; i++)
            if (l.items[i]->version == want)
                *out = steal_ptr(&l.items[i]);
        q.offset += l.n;
        if (l.n == 0 || q.offset >= l.total) {
            store_list_fini(&l);
            break;
        }
        store_list_fini(&l);
    }
    return *out ? 0 : 1;
}

static void
h_list_revisions(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb;
    struct store_list l;
    struct err e;
    cJSON *j, *items;
    int rc;

    if (!gw_authorized(gw, st) || !(sb = gw_policy_owner(gw, st, req)))
        return;
    if ((rc = gw_policy_revisions_newest(gw, sb->id, STORE_LIST_MAX, &l, &e)) < 0) {
        api_respond_err(st, rc, &e);
        store_obj_free(sb);
        return;
    }
    j = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(j, "items");
    /* Newest first, as `openshell policy list` shows them. */
    for (size_t i = l.n; i-- > 0;)
        cJSON_AddItemToArray(items, revision_json(l.items[i], false));
    cJSON_AddNumberToObject(j, "total", (double)l.total);
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
    store_list_fini(&l);
    store_obj_free(sb);
}

/* GET .../policy/revisions/{v} and GET .../policy (the latest). */
static void
get_revision(struct gw *gw, struct h2_stream *st, struct h2_req *req, const char *vtext)
{
    char what[128];
    struct store_obj *sb, *rev = NULL;
    struct err e;
    long long want = 0;
    cJSON *j;
    int rc;

    if (vtext) {
        char *end;

        errno = 0;
        want = strtoll(vtext, &end, 10);
        if (*end || want < 1 || errno) {
            h2_stream_error(st, 400, "invalid_argument",
                            "revision %.20s: expected a positive integer", vtext);
            return;
        }
    }
    if (!(sb = gw_policy_owner(gw, st, req)))
        return;
    rc = want ? revision_at(gw, sb->id, want, &rev, &e) : gw_policy_latest(gw, sb->id, &rev, &e);
    if (rc < 0) {
        api_respond_err(st, rc, &e);
        goto out;
    }
    if (rev) {
        j = revision_json(rev, true);
        api_respond_json(st, 200, j, 0);
        cJSON_Delete(j);
        goto out;
    }
    owner_what(sb, what, sizeof(what));
    if (want)
        h2_stream_error(st, 404, "not_found", "%s has no policy revision %lld", what, want);
    else if (strcmp(sb->type, SB_TYPE) == 0)
        h2_stream_error(st, 404, "not_found",
                        "%s has no policy revision yet (it runs spec.policy, or the default "
                        "policy)",
                        what);
    else
        h2_stream_error(st, 404, "not_found", "%s has no policy revision yet", what);
out:
    store_obj_free(rev);
    store_obj_free(sb);
}

static void
h_get_revision(struct h2_stream *st, struct h2_req *req, void *arg)
{
    if (gw_authorized(arg, st))
        get_revision(arg, st, req, req->params[gw_policy_is_global(req) ? 0 : 2]);
}

static void
h_get_policy(struct h2_stream *st, struct h2_req *req, void *arg)
{
    if (gw_authorized(arg, st))
        get_revision(arg, st, req, NULL);
}

int
gw_policy_check_json(const cJSON *policy, struct err *e)
{
    char *text = api_json_print(policy);
    int rc = gw_policy_check_text(text, strlen(text), e);

    free(text);
    return rc < 0 ? err_wrap(e, "spec.policy") : 0;
}

void
gw_policy_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;

    h2_router_add(r, "PUT", "/v1/workspaces/{}/sandboxes/{}/policy", 0, h_put_policy, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/policy", 0, h_get_policy, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/policy/revisions", 0, h_list_revisions,
                  gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/policy/revisions/{}", 0, h_get_revision,
                  gw);
    /* The global policy: its revisions hang off the global settings object. */
    h2_router_add(r, "PUT", "/v1/gateway/policy", 0, h_put_policy, gw);
    h2_router_add(r, "GET", "/v1/gateway/policy", 0, h_get_policy, gw);
    h2_router_add(r, "GET", "/v1/gateway/policy/revisions", 0, h_list_revisions, gw);
    h2_router_add(r, "GET", "/v1/gateway/policy/revisions/{}", 0, h_get_revision, gw);
    /* PATCH: incremental operations (gw_policy_ops.c). */
    gw_policy_ops_routes(gw);
}
