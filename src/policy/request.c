/*
 * request.c: one decision request from JSON, in the shape of reference §8
 * (what `openshell policy check` reads, one object per line).
 *
 * Strict: unknown keys, wrong types, NUL characters and out-of-range numbers
 * are errors, so a typo in a test vector cannot silently change its meaning.
 * The parsed strings live in an arena owned by the request.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "policy_int.h"
#include "xfuncs.h"

#define REQ_MAX_BYTES (1024 * 1024)
#define REQ_MAX_LIST 4096

static int
req_str(struct pol_arena *a, const cJSON *v, const char *key, const char **out, struct err *e)
{
    if (cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v) || !v->valuestring)
        return err_set(e, EINVAL, "'%s' must be a string", key);
    *out = policy_arena_strdup(a, v->valuestring);
    return 0;
}

static int
req_list(struct pol_arena *a, const cJSON *v, const char *key, const char *const **out, size_t *n,
         struct err *e)
{
    const char **arr;
    int count;

    if (cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsArray(v))
        return err_set(e, EINVAL, "'%s' must be a list of strings", key);
    count = cJSON_GetArraySize(v);
    if (count > REQ_MAX_LIST)
        return err_set(e, EINVAL, "'%s' has more than %d items", key, REQ_MAX_LIST);
    arr = policy_arena_alloc(a, (size_t)(count ? count : 1) * sizeof(*arr));
    *n = 0;
    for (const cJSON *it = v->child; it; it = it->next) {
        if (!cJSON_IsString(it) || !it->valuestring)
            return err_set(e, EINVAL, "'%s' must be a list of strings", key);
        arr[(*n)++] = policy_arena_strdup(a, it->valuestring);
    }
    *out = arr;
    return 0;
}

static int
req_query(struct pol_arena *a, const cJSON *v, struct policy_request *r, struct err *e)
{
    struct policy_query_param *params;
    int count;

    if (cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsObject(v))
        return err_set(e, EINVAL, "'query' must be an object of key -> list of values");
    count = cJSON_GetArraySize(v);
    if (count > REQ_MAX_LIST)
        return err_set(e, EINVAL, "'query' has more than %d keys", REQ_MAX_LIST);
    params = policy_arena_alloc(a, (size_t)(count ? count : 1) * sizeof(*params));
    for (const cJSON *it = v->child; it; it = it->next) {
        struct policy_query_param *q = &params[r->nquery++];

        q->key = policy_arena_strdup(a, it->string ? it->string : "");
        if (cJSON_IsString(it)) {
            const char **one = policy_arena_alloc(a, sizeof(*one));
            one[0] = policy_arena_strdup(a, it->valuestring);
            q->values = one;
            q->nvalues = 1;
        } else if (req_list(a, it, "query values", &q->values, &q->nvalues, e) < 0) {
            return -EINVAL;
        } else if (cJSON_IsNull(it)) {
            return err_set(e, EINVAL, "'query' values must be strings or lists of strings");
        }
    }
    r->query = params;
    return 0;
}

static int
req_env(const cJSON *v, struct policy_request *r, struct err *e)
{
    if (cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsObject(v))
        return err_set(e, EINVAL, "'env' must be an object");
    for (const cJSON *it = v->child; it; it = it->next) {
        if (strcmp(it->string, "binary_identity") != 0)
            return err_set(e, EINVAL, "unknown key 'env.%s' (expected binary_identity)",
                           it->string);
        if (!cJSON_IsString(it))
            return err_set(e, EINVAL, "'env.binary_identity' must be a string");
        r->binary_identity_relaxed = policy_binary_identity_relaxed(it->valuestring);
    }
    return 0;
}

bool
policy_binary_identity_relaxed(const char *value)
{
    static const char *const relaxed[] = { "relaxed", "disabled", "endpoint-only", "false", "0" };

    if (!value)
        return false;
    for (size_t i = 0; i < sizeof(relaxed) / sizeof(*relaxed); i++)
        if (!strcmp(value, relaxed[i]))
            return true;
    return false;
}

int
policy_json_request_parse(struct policy_json_request *r, const char *text, size_t len,
                          struct err *e)
{
    struct pol_arena *a = xcalloc(1, sizeof(*a));
    struct policy_request *q = &r->req;
    cJSON *root;
    int rc = 0;

    memset(r, 0, sizeof(*r));
    policy_arena_init(a);
    r->priv = a;
    if (len > REQ_MAX_BYTES)
        return err_set(e, EINVAL, "request larger than 1 MiB");
    /* cJSON would silently cut a string at an escaped NUL. */
    for (size_t i = 0; i + 5 < len; i++)
        if (text[i] == '\\' && text[i + 1] == 'u' && text[i + 2] == '0' && text[i + 3] == '0' &&
            text[i + 4] == '0' && text[i + 5] == '0')
            return err_set(e, EINVAL, "NUL character (\\u0000) in a request string");
    if (memchr(text, '\0', len))
        return err_set(e, EINVAL, "NUL byte in request");
    root = cJSON_ParseWithLength(text, len);
    if (!root)
        return err_set(e, EINVAL, "invalid JSON");
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(e, EINVAL, "a request must be a JSON object");
    }
    for (const cJSON *it = root->child; it && rc == 0; it = it->next) {
        const char *k = it->string ? it->string : "";

        for (const cJSON *dup = root->child; dup != it; dup = dup->next)
            if (!strcmp(dup->string, k)) {
                rc = err_set(e, EINVAL, "duplicate key '%s'", k);
                break;
            }
        if (rc)
            break;
        if (!strcmp(k, "transport")) {
            const char *t = NULL;
            if ((rc = req_str(a, it, k, &t, e)) < 0 || !t)
                continue;
            if (!strcmp(t, "connect"))
                q->transport = POLICY_TRANSPORT_CONNECT;
            else if (!strcmp(t, "forward"))
                q->transport = POLICY_TRANSPORT_FORWARD;
            else if (!strcmp(t, "transparent"))
                q->transport = POLICY_TRANSPORT_TRANSPARENT;
            else if (!strcmp(t, "l7"))
                q->transport = POLICY_TRANSPORT_L7;
            else
                rc = err_set(e, EINVAL,
                             "unknown transport '%s' (expected connect, forward, transparent or "
                             "l7)",
                             t);
        } else if (!strcmp(k, "binary")) {
            rc = req_str(a, it, k, &q->binary, e);
        } else if (!strcmp(k, "ancestors")) {
            rc = req_list(a, it, k, &q->ancestors, &q->nancestors, e);
        } else if (!strcmp(k, "cmdline_paths")) {
            rc = req_list(a, it, k, &q->cmdline_paths, &q->ncmdline_paths, e);
        } else if (!strcmp(k, "host")) {
            rc = req_str(a, it, k, &q->host, e);
        } else if (!strcmp(k, "port")) {
            if (cJSON_IsNull(it))
                continue;
            if (!cJSON_IsNumber(it) || it->valuedouble != floor(it->valuedouble) ||
                it->valuedouble < 0 || it->valuedouble > 65535)
                rc = err_set(e, EINVAL, "'port' must be an integer in 0..65535");
            else
                q->port = (unsigned)it->valuedouble;
        } else if (!strcmp(k, "method")) {
            rc = req_str(a, it, k, &q->method, e);
        } else if (!strcmp(k, "path")) {
            rc = req_str(a, it, k, &q->path, e);
        } else if (!strcmp(k, "raw_target")) {
            rc = req_str(a, it, k, &q->raw_target, e);
        } else if (!strcmp(k, "query")) {
            rc = req_query(a, it, q, e);
        } else if (!strcmp(k, "resolved_ips")) {
            rc = req_list(a, it, k, &q->resolved_ips, &q->nresolved_ips, e);
        } else if (!strcmp(k, "websocket_upgrade")) {
            if (cJSON_IsBool(it))
                q->websocket_upgrade = cJSON_IsTrue(it);
            else if (!cJSON_IsNull(it))
                rc = err_set(e, EINVAL, "'websocket_upgrade' must be true or false");
        } else if (!strcmp(k, "env")) {
            rc = req_env(it, q, e);
        } else if (!strcmp(k, "graphql_operations") || !strcmp(k, "graphql_error") ||
                   !strcmp(k, "jsonrpc")) {
            /* Parser output for protocols this build refuses at load time. */
        } else {
            rc = err_set(e, EINVAL,
                         "unknown key '%s' (expected transport, binary, ancestors, cmdline_paths, "
                         "host, port, method, path, query, resolved_ips, raw_target, "
                         "websocket_upgrade, env)",
                         k);
        }
    }
    cJSON_Delete(root);
    return rc < 0 ? rc : 0;
}

void
policy_json_request_fini(struct policy_json_request *r)
{
    if (!r || !r->priv)
        return;
    policy_arena_fini(r->priv);
    free(r->priv);
    r->priv = NULL;
}
