/*
 * gw_provider.c: providers (named credential sets), their attachment to
 * sandboxes, and GET /v1/supervisor/credentials, the one place a secret
 * leaves the gateway (doc/providers.md, "Gateway and CLI").
 *
 * Stored shape (type "provider"): the row's labels column holds
 * metadata.labels; the payload is {"type", "config": {K: V},
 * "credential_keys": [K...], "sealed": "v1...."} where "sealed" is the
 * credentials map {K: VALUE} as JSON, sealed under STATE_DIR/provider.key
 * with the object id as AAD. No answer, log line or error message ever
 * carries a value: only key names.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "api.h"
#include "buf.h"
#include "gw.h"
#include "gw_provider.h"
#include "h2.h"
#include "log.h"
#include "seal.h"
#include "store.h"
#include "xfuncs.h"

#define PS_TYPE "provider_state"
#define PROV_NAME_MAX 63
#define PROV_MAX_CREDS 32
#define PROV_MAX_CONFIG 64
#define PROV_MAX_PER_SANDBOX 32
#define PROV_VALUE_MAX 16384
#define PROV_KEY_MAX 128
#define PROV_MAX_ENDPOINTS 16
#define PLACEHOLDER "openshell:resolve:env:"
/* The proxy's document limits (doc/providers.md): 1 MiB, 256 keys. */
#define PROV_DOC_BUDGET (960 * 1024)
#define PROV_DOC_MAX_KEYS 256
#define PROV_ENTRY_FRAME 512

/* The reference's legacy registry (openshell-cli.md §6.2, §7), the types
 * this gateway knows. */
static const struct gw_ptype ptypes[] = {
    { "generic", { NULL }, { NULL }, { NULL }, NULL, NULL, NULL },
    { "openai",
      { "codex", NULL },
      { "OPENAI_API_KEY", NULL },
      { "api.openai.com:443", NULL },
      "OPENAI_BASE_URL",
      "https://api.openai.com/v1",
      "openai" },
    { "anthropic",
      { "claude", "claude-code", "claude_code", NULL },
      { "ANTHROPIC_API_KEY", "CLAUDE_API_KEY", NULL },
      { "api.anthropic.com:443", NULL },
      "ANTHROPIC_BASE_URL",
      "https://api.anthropic.com/v1",
      "anthropic" },
    { "github",
      { "gh", NULL },
      { "GITHUB_TOKEN", "GH_TOKEN", NULL },
      { "api.github.com:443", "github.com:443", NULL },
      NULL,
      NULL,
      NULL },
    { "gitlab",
      { "glab", NULL },
      { "GITLAB_TOKEN", "GLAB_TOKEN", "CI_JOB_TOKEN", NULL },
      { "gitlab.com:443", NULL },
      NULL,
      NULL,
      NULL },
    { "nvidia",
      { NULL },
      { "NVIDIA_API_KEY", NULL },
      { "integrate.api.nvidia.com:443", NULL },
      "NVIDIA_BASE_URL",
      "https://integrate.api.nvidia.com/v1",
      "openai" },
    { "deepinfra",
      { NULL },
      { "DEEPINFRA_API_KEY", NULL },
      { "api.deepinfra.com:443", NULL },
      "DEEPINFRA_BASE_URL",
      "https://api.deepinfra.com/v1/openai",
      "openai" },
};
#define NPTYPES (sizeof(ptypes) / sizeof(ptypes[0]))

const struct gw_ptype *
gw_ptype_find(const char *name)
{
    for (size_t i = 0; i < NPTYPES; i++) {
        if (strcmp(ptypes[i].name, name) == 0)
            return &ptypes[i];
        for (size_t k = 0; ptypes[i].aliases[k]; k++)
            if (strcmp(ptypes[i].aliases[k], name) == 0)
                return &ptypes[i];
    }
    return NULL;
}

/* ------------------------------------------------------------------ the key */

static struct seal *prov_seal;
static char *prov_key_path;

/* How many providers exist (every workspace): sealed records a new key
 * could not open. */
static int
count_providers(struct gw *gw, size_t *n, struct err *e)
{
    struct store_query q = { .type = GW_PROVIDER_TYPE, .limit = 1 };
    struct store_list l;
    int rc = store_list(gw->store, &q, &l, e);

    if (rc == 0) {
        *n = l.total;
        store_list_fini(&l);
    }
    return rc;
}

/* The key, loaded (or made, when nothing is sealed yet) on first use. */
static int
get_seal(struct gw *gw, struct seal **out, struct err *e)
{
    struct stat st;
    size_t n = 0;
    int rc;

    if (!prov_seal) {
        /* A key that vanished while sealed records exist is never
         * replaced by a new one: they would all be lost. */
        if (lstat(prov_key_path, &st) < 0 && errno == ENOENT &&
            (rc = count_providers(gw, &n, e)) == 0 && n > 0)
            return err_set(e, EPROTO,
                           "provider key %s is missing but %zu provider(s) are sealed with it; "
                           "restore it from a backup",
                           prov_key_path, n);
        if ((rc = seal_open(prov_key_path, &prov_seal, e)) < 0)
            return rc;
    }
    *out = prov_seal;
    return 0;
}

/* Wipe every string of J, recursively (values before they are freed). */
static void
wipe_json(cJSON *j)
{
    for (; j; j = j->next) {
        if (cJSON_IsString(j) && j->valuestring)
            explicit_bzero(j->valuestring, strlen(j->valuestring));
        if (j->child)
            wipe_json(j->child);
    }
}

static void
secrets_delete(cJSON *j)
{
    if (!j)
        return;
    if (j->child)
        wipe_json(j->child);
    if (cJSON_IsString(j) && j->valuestring)
        explicit_bzero(j->valuestring, strlen(j->valuestring));
    cJSON_Delete(j);
}

void
gw_secrets_free(cJSON *secrets)
{
    secrets_delete(secrets);
}

static void
buf_wipe_fini(struct buf *b)
{
    if (b->data)
        explicit_bzero(b->data, b->cap);
    buf_fini(b);
}

/* Seal the map CREDS for object ID into *OUT (heap text). */
static int
seal_creds(struct gw *gw, const char *id, const cJSON *creds, char **out, struct err *e)
{
    struct seal *s;
    struct buf b = BUF_INIT;
    char *text;
    int rc;

    if ((rc = get_seal(gw, &s, e)) < 0)
        return rc;
    text = cJSON_PrintUnformatted(creds);
    if (!text)
        return err_set(e, ENOMEM, "sealing credentials: out of memory");
    rc = seal_encrypt(s, id, text, strlen(text), &b, e);
    explicit_bzero(text, strlen(text));
    free(text);
    if (rc < 0) {
        buf_fini(&b);
        return rc;
    }
    *out = buf_steal(&b);
    return 0;
}

int
gw_provider_secrets(struct gw *gw, const struct store_obj *p, cJSON **out, struct err *e)
{
    struct seal *s;
    struct buf b = BUF_INIT;
    cJSON *payload = cJSON_Parse(p->payload), *m;
    const cJSON *sealed = cJSON_GetObjectItemCaseSensitive(payload, "sealed");
    int rc;

    *out = NULL;
    if (!cJSON_IsString(sealed)) {
        cJSON_Delete(payload);
        return err_set(e, EBADMSG, "provider %s: stored record has no sealed credentials", p->name);
    }
    if ((rc = get_seal(gw, &s, e)) < 0 ||
        (rc = seal_decrypt(s, p->id, sealed->valuestring, &b, e)) < 0) {
        cJSON_Delete(payload);
        buf_wipe_fini(&b);
        if (rc == -EBADMSG)
            return err_set(e, EBADMSG,
                           "provider %s: its sealed credentials do not open with %s (the key "
                           "file was replaced or the record altered)",
                           p->name, prov_key_path);
        return rc;
    }
    cJSON_Delete(payload);
    m = cJSON_ParseWithLength(b.data, b.len);
    buf_wipe_fini(&b);
    if (!cJSON_IsObject(m)) {
        secrets_delete(m);
        return err_set(e, EBADMSG, "provider %s: sealed credentials are not a JSON object",
                       p->name);
    }
    *out = m;
    return 0;
}

/* ------------------------------------------------------------------ revision */

static int
state_get(struct gw *gw, struct store_obj **out, struct err *e)
{
    struct store_obj o = { 0 };
    char id[37];
    int rc = store_get_by_name(gw->store, PS_TYPE, "", "credentials", out, e);

    if (rc != -ENOENT)
        return rc;
    store_new_id(id);
    o.id = id;
    o.type = (char *)PS_TYPE;
    o.name = (char *)"credentials";
    o.workspace = (char *)"";
    o.payload = (char *)"{\"revision\":1}";
    if ((rc = store_create(gw->store, &o, e)) < 0 && rc != -EEXIST)
        return rc;
    return store_get_by_name(gw->store, PS_TYPE, "", "credentials", out, e);
}

static int64_t
state_revision(const struct store_obj *o)
{
    cJSON *p = cJSON_Parse(o->payload);
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(p, "revision");
    int64_t v = cJSON_IsNumber(r) ? (int64_t)r->valuedouble : 1;

    cJSON_Delete(p);
    return v;
}

int
gw_cred_revision(struct gw *gw, int64_t *out, struct err *e)
{
    struct store_obj *o = NULL;
    int rc = state_get(gw, &o, e);

    if (rc == 0)
        *out = state_revision(o);
    store_obj_free(o);
    return rc;
}

/* Bumped BEFORE the write it announces: a crash in between leaves a
 * revision that grew without a change (harmless), never a change under an
 * old revision. */
int
gw_cred_revision_bump(struct gw *gw, struct err *e)
{
    struct store_obj *o = NULL;
    int rc = state_get(gw, &o, e);

    if (rc == 0) {
        int64_t next = state_revision(o) + 1;

        free(o->payload);
        o->payload = xasprintf("{\"revision\":%lld}", (long long)next);
        rc = store_update(gw->store, o, 0, e);
    }
    store_obj_free(o);
    return rc;
}

/* ------------------------------------------------------------------ validation */

static bool
name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > PROV_NAME_MAX || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static bool
env_key_ok(const char *k)
{
    if (!((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') || k[0] == '_'))
        return false;
    for (const char *p = k + 1; *p; p++)
        if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            return false;
    return strlen(k) <= PROV_KEY_MAX;
}

/* "v<digits>_..." and "s<64 hex>_..." are the proxy's placeholder
 * namespaces (revisioned, stable handle). */
static bool
key_reserved(const char *k)
{
    size_t i = 1;

    if (strncmp(k, "OPENSHELL_", 10) == 0)
        return true;
    if (k[0] == 's') {
        /* s<64 hex>_: the proxy's stable-handle form. */
        for (i = 1; i <= 64 && isxdigit((unsigned char)k[i]); i++)
            ;
        return i == 65 && k[i] == '_';
    }
    if (k[0] != 'v' || !(k[1] >= '0' && k[1] <= '9'))
        return false;
    while (k[i] >= '0' && k[i] <= '9')
        i++;
    return k[i] == '_';
}

static int
check_cred(const char *k, const cJSON *v, bool allow_null, struct err *e)
{
    if (!env_key_ok(k))
        return err_set(e, EINVAL,
                       "spec.credentials.%.80s: not a valid variable name "
                       "([A-Za-z_][A-Za-z0-9_]*, at most %d bytes)",
                       k, PROV_KEY_MAX);
    if (key_reserved(k))
        return err_set(e, EINVAL,
                       "spec.credentials.%.80s: reserved name (OPENSHELL_*, v<digits>_* and "
                       "s<64 hex>_* are the sandbox's own)",
                       k);
    if (allow_null && cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsString(v))
        return err_set(e, EINVAL, "spec.credentials.%.80s: expected a string%s", k,
                       allow_null ? " or null" : "");
    if (!*v->valuestring)
        return err_set(e, EINVAL, "spec.credentials.%.80s: empty value", k);
    if (strlen(v->valuestring) > PROV_VALUE_MAX)
        return err_set(e, EINVAL, "spec.credentials.%.80s: value longer than %d bytes", k,
                       PROV_VALUE_MAX);
    /* A value with CR, LF, NUL or another control byte could split a
     * header where the proxy injects it: never accepted. */
    for (const unsigned char *p = (const unsigned char *)v->valuestring; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            return err_set(e, EINVAL,
                           "spec.credentials.%.80s: value contains a control character (CR, LF, "
                           "tab...): it could never be injected safely",
                           k);
    return 0;
}

/* "host[:port]" into HOST/PORT (443 by default). Hosts: letters, digits,
 * '-', '.', optionally "*." first. */
static int
parse_endpoint(const char *s, size_t n, char *host, size_t hsize, int *port, struct err *e)
{
    const char *colon = memchr(s, ':', n);
    size_t hl = colon ? (size_t)(colon - s) : n;
    size_t start = 0;

    *port = 443;
    if (hl == 0 || hl >= hsize)
        return err_set(e, EINVAL, "endpoint \"%.*s\": expected HOST[:PORT]", (int)(n > 80 ? 80 : n),
                       s);
    if (hl > 2 && s[0] == '*' && s[1] == '.')
        start = 2;
    for (size_t i = start; i < hl; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '.'))
            return err_set(e, EINVAL, "endpoint \"%.*s\": bad host character '%c'",
                           (int)(n > 80 ? 80 : n), s, s[i]);
    if (colon) {
        char pbuf[8];
        size_t pl = n - hl - 1;
        char *end;
        long v;

        if (pl == 0 || pl >= sizeof(pbuf))
            return err_set(e, EINVAL, "endpoint \"%.*s\": bad port", (int)(n > 80 ? 80 : n), s);
        memcpy(pbuf, colon + 1, pl);
        pbuf[pl] = '\0';
        v = strtol(pbuf, &end, 10);
        if (*end || v < 1 || v > 65535)
            return err_set(e, EINVAL, "endpoint \"%.*s\": port must be 1-65535",
                           (int)(n > 80 ? 80 : n), s);
        *port = (int)v;
    }
    memcpy(host, s, hl);
    host[hl] = '\0';
    for (char *p = host; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    return 0;
}

static void
add_endpoint(cJSON *arr, const char *host, int port)
{
    cJSON *it;

    cJSON_ArrayForEach(it, arr)
    {
        const cJSON *h = cJSON_GetObjectItemCaseSensitive(it, "host");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(it, "port");
        if (cJSON_IsString(h) && strcmp(h->valuestring, host) == 0 && cJSON_IsNumber(p) &&
            p->valueint == port)
            return;
    }
    it = cJSON_CreateObject();
    cJSON_AddStringToObject(it, "host", host);
    cJSON_AddNumberToObject(it, "port", port);
    cJSON_AddItemToArray(arr, it);
}

/* "endpoints" config: "host[:port],host[:port]..." appended to ARR. */
static int
parse_endpoint_list(const char *list, cJSON *arr, struct err *e)
{
    const char *p = list;
    size_t count = 0;
    int rc;

    while (*p) {
        size_t n = strcspn(p, ",");
        char host[256];
        int port;

        while (n && p[0] == ' ')
            p++, n--;
        if (n && (rc = parse_endpoint(p, n, host, sizeof(host), &port, e)) < 0)
            return err_wrap(e, "config.endpoints");
        if (n) {
            if (++count > PROV_MAX_ENDPOINTS)
                return err_set(e, EINVAL, "config.endpoints: more than %d endpoints",
                               PROV_MAX_ENDPOINTS);
            if (arr)
                add_endpoint(arr, host, port);
        }
        p += n + (p[n] == ',');
    }
    if (count == 0)
        return err_set(e, EINVAL, "config.endpoints: no endpoint given (HOST[:PORT],...)");
    return 0;
}

int
gw_url_parse(const char *url, bool *tls, char *host, size_t hsize, int *port, const char **path,
             struct err *e)
{
    const char *p, *end;
    size_t hl;

    if (strncmp(url, "https://", 8) == 0) {
        *tls = true;
        p = url + 8;
        *port = 443;
    } else if (strncmp(url, "http://", 7) == 0) {
        *tls = false;
        p = url + 7;
        *port = 80;
    } else {
        return err_set(e, EINVAL, "URL \"%.120s\": expected http:// or https://", url);
    }
    for (const unsigned char *c = (const unsigned char *)url; *c; c++)
        if (*c <= 0x20 || *c == 0x7f || *c == '#' || *c == '?' || *c == '@' || *c == '\\')
            return err_set(e, EINVAL,
                           "URL \"%.120s\": no spaces, control bytes, user info, query or "
                           "fragment allowed",
                           url);
    end = p + strcspn(p, "/");
    *path = end;
    if (strlen(end) >= 500)
        return err_set(e, EINVAL, "URL \"%.120s\": path longer than 499 bytes", url);
    {
        const char *colon = memchr(p, ':', (size_t)(end - p));
        hl = (size_t)((colon ? colon : end) - p);
        if (colon) {
            char *pe;
            long v = strtol(colon + 1, &pe, 10);
            if (pe != end || v < 1 || v > 65535)
                return err_set(e, EINVAL, "URL \"%.120s\": bad port", url);
            *port = (int)v;
        }
    }
    if (hl == 0 || hl >= hsize)
        return err_set(e, EINVAL, "URL \"%.120s\": bad host", url);
    for (size_t i = 0; i < hl; i++)
        if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') ||
              (p[i] >= '0' && p[i] <= '9') || p[i] == '-' || p[i] == '.'))
            return err_set(e, EINVAL, "URL \"%.120s\": bad host", url);
    memcpy(host, p, hl);
    host[hl] = '\0';
    for (char *c = host; *c; c++)
        if (*c >= 'A' && *c <= 'Z')
            *c = (char)(*c - 'A' + 'a');
    return 0;
}

/* Check the config map of type T (after a merge). */
static int
check_config(const struct gw_ptype *t, const cJSON *config, struct err *e)
{
    size_t n = 0;
    const cJSON *c;
    int rc;

    cJSON_ArrayForEach(c, config)
    {
        n++;
        if (!env_key_ok(c->string))
            return err_set(e, EINVAL, "spec.config.%.80s: not a valid key ([A-Za-z_][A-Za-z0-9_]*)",
                           c->string);
        if (!cJSON_IsString(c))
            return err_set(e, EINVAL, "spec.config.%.80s: expected a string", c->string);
        if (strlen(c->valuestring) > 4096)
            return err_set(e, EINVAL, "spec.config.%.80s: longer than 4096 bytes", c->string);
        if (strcmp(c->string, "endpoints") == 0 &&
            (rc = parse_endpoint_list(c->valuestring, NULL, e)) < 0)
            return rc;
        if (t->base_url_key && strcmp(c->string, t->base_url_key) == 0) {
            char host[256];
            const char *path;
            bool tls;
            int port;

            if ((rc = gw_url_parse(c->valuestring, &tls, host, sizeof(host), &port, &path, e)) < 0)
                return err_wrap(e, "spec.config.%s", c->string);
        }
    }
    if (n > PROV_MAX_CONFIG)
        return err_set(e, EINVAL, "spec.config: more than %d entries", PROV_MAX_CONFIG);
    if (!t->endpoints[0] && !cJSON_GetObjectItemCaseSensitive(config, "endpoints"))
        return err_set(e, EINVAL,
                       "spec.config.endpoints: required for a %s provider: where its credentials "
                       "may be sent (\"HOST[:PORT],...\", e.g. --config "
                       "endpoints=api.example.com)",
                       t->name);
    return 0;
}

/* Where the credentials of a provider of type T with CONFIG may be
 * injected: the type's endpoints, the host of its base URL override, and
 * config "endpoints". */
static cJSON *
endpoints_of(const struct gw_ptype *t, const cJSON *config)
{
    cJSON *arr = cJSON_CreateArray();
    const cJSON *c;
    char host[256];
    int port;

    for (size_t i = 0; t && t->endpoints[i]; i++)
        if (parse_endpoint(t->endpoints[i], strlen(t->endpoints[i]), host, sizeof(host), &port,
                           NULL) == 0)
            add_endpoint(arr, host, port);
    if (t && t->base_url_key &&
        cJSON_IsString(c = cJSON_GetObjectItemCaseSensitive(config, t->base_url_key))) {
        const char *path;
        bool tls;

        if (gw_url_parse(c->valuestring, &tls, host, sizeof(host), &port, &path, NULL) == 0)
            add_endpoint(arr, host, port);
    }
    if (cJSON_IsString(c = cJSON_GetObjectItemCaseSensitive(config, "endpoints")))
        parse_endpoint_list(c->valuestring, arr, NULL);
    return arr;
}

/* ------------------------------------------------------------------ rendering */

static cJSON *
parse_stored(const char *text)
{
    cJSON *j = text ? cJSON_Parse(text) : NULL;

    return j ? j : cJSON_CreateObject();
}

static const struct gw_ptype *
stored_type(const cJSON *payload)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(payload, "type");

    return cJSON_IsString(t) ? gw_ptype_find(t->valuestring) : NULL;
}

/* The API object of provider row O: never a value. */
static cJSON *
provider_json(const struct store_obj *o)
{
    cJSON *j = cJSON_CreateObject(), *md = cJSON_AddObjectToObject(j, "metadata");
    cJSON *payload = parse_stored(o->payload), *spec, *item;
    const struct gw_ptype *t = stored_type(payload);
    const cJSON *config = cJSON_GetObjectItemCaseSensitive(payload, "config");

    cJSON_AddStringToObject(md, "id", o->id);
    cJSON_AddStringToObject(md, "name", o->name ? o->name : "");
    cJSON_AddStringToObject(md, "workspace", o->workspace);
    cJSON_AddItemToObject(md, "labels", parse_stored(o->labels));
    cJSON_AddNumberToObject(md, "created_at_ms", (double)o->created_at_ms);
    cJSON_AddNumberToObject(md, "updated_at_ms", (double)o->updated_at_ms);
    cJSON_AddNumberToObject(md, "resource_version", (double)o->resource_version);
    spec = cJSON_AddObjectToObject(j, "spec");
    cJSON_AddStringToObject(spec, "type", t ? t->name : "unknown");
    item = cJSON_DetachItemFromObjectCaseSensitive(payload, "credential_keys");
    cJSON_AddItemToObject(spec, "credential_keys", item ? item : cJSON_CreateArray());
    cJSON_AddItemToObject(spec, "config",
                          config ? cJSON_Duplicate(config, true) : cJSON_CreateObject());
    cJSON_AddItemToObject(spec, "endpoints", endpoints_of(t, config));
    cJSON_Delete(payload);
    return j;
}

static int
respond_provider(struct h2_stream *st, int status, const struct store_obj *o)
{
    cJSON *j = provider_json(o);
    int rc = api_respond_json(st, status, j, o->resource_version);

    cJSON_Delete(j);
    return rc;
}

/* ------------------------------------------------------------------ lookups */

static int
provider_get(struct gw *gw, const char *ws, const char *name, struct store_obj **out, struct err *e)
{
    int rc = store_get_by_name(gw->store, GW_PROVIDER_TYPE, ws, name, out, e);

    if (rc == -ENOENT)
        err_set(e, ENOENT, "provider '%.80s' not found in workspace '%.80s'", name, ws);
    return rc;
}

/* The credential keys of stored provider O (a detached array). */
static cJSON *
keys_of(const struct store_obj *o)
{
    cJSON *p = parse_stored(o->payload);
    cJSON *k = cJSON_DetachItemFromObjectCaseSensitive(p, "credential_keys");

    cJSON_Delete(p);
    return k ? k : cJSON_CreateArray();
}

/* What provider O (payload PAYLOAD) adds to a credentials document, an
 * upper bound: its sealed values (base64 is 4/3 of them) and, per key, the
 * entry's frame, its placeholder and its endpoint bindings. */
static size_t
doc_share(const char *payload, size_t *nkeys)
{
    cJSON *p = parse_stored(payload), *eps;
    const cJSON *sealed = cJSON_GetObjectItemCaseSensitive(p, "sealed");
    size_t n = (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(p, "credential_keys"));
    size_t share;

    eps = endpoints_of(stored_type(p), cJSON_GetObjectItemCaseSensitive(p, "config"));
    share = (cJSON_IsString(sealed) ? strlen(sealed->valuestring) * 3 / 4 : 0) +
            n * (PROV_ENTRY_FRAME + 300 * (size_t)cJSON_GetArraySize(eps)) + 4096;
    *nkeys += n;
    cJSON_Delete(eps);
    cJSON_Delete(p);
    return share;
}

/* The spec.providers of parsed sandbox payload P (NULL: none). */
static const cJSON *
sb_providers(const cJSON *p)
{
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(p, "spec"),
                                            "providers");
}

/* Does the list of names A hold NAME? */
static bool
names_hold(const cJSON *a, const char *name)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, a)
    {
        if (cJSON_IsString(it) && strcmp(it->valuestring, name) == 0)
            return true;
    }
    return false;
}

/* check_attach, with OVER_PAYLOAD standing in for provider OVER_NAME's
 * stored one (a PATCH about to be written). */
static int
check_set(struct gw *gw, const char *ws, const cJSON *providers, const char *over_name,
          const char *over_payload, struct err *e)
{
    cJSON *seen = cJSON_CreateObject(); /* key -> provider */
    const cJSON *it;
    size_t n = 0, bytes = 0, nkeys = 0;
    int rc = 0;

    cJSON_ArrayForEach(it, providers)
    {
        struct store_obj *o = NULL;
        cJSON *keys;
        const cJSON *k;
        const cJSON *prev;

        if (!cJSON_IsString(it)) {
            rc = err_set(e, EINVAL, "spec.providers[%zu]: expected a provider name", n);
            break;
        }
        for (const cJSON *d = providers->child; d != it; d = d->next)
            if (cJSON_IsString(d) && strcmp(d->valuestring, it->valuestring) == 0) {
                rc = err_set(e, EINVAL, "spec.providers: '%.80s' named twice", it->valuestring);
                goto out;
            }
        if (++n > PROV_MAX_PER_SANDBOX) {
            rc = err_set(e, EINVAL, "spec.providers: more than %d providers", PROV_MAX_PER_SANDBOX);
            break;
        }
        if ((rc = provider_get(gw, ws, it->valuestring, &o, e)) < 0) {
            if (rc == -ENOENT)
                rc = err_set(e, EINVAL,
                             "spec.providers: provider '%.80s' not found in workspace '%.80s' "
                             "(create it first: openshell provider create --name %.80s ...)",
                             it->valuestring, ws, it->valuestring);
            break;
        }
        if (over_name && strcmp(over_name, o->name) == 0) {
            free(o->payload);
            o->payload = xstrdup(over_payload);
        }
        bytes += doc_share(o->payload, &nkeys);
        keys = keys_of(o);
        store_obj_free(o);
        cJSON_ArrayForEach(k, keys)
        {
            if (!cJSON_IsString(k))
                continue;
            if ((prev = cJSON_GetObjectItemCaseSensitive(seen, k->valuestring))) {
                rc = err_set(e, EINVAL,
                             "spec.providers: providers '%.80s' and '%.80s' both set credential "
                             "%.80s",
                             prev->valuestring, it->valuestring, k->valuestring);
                break;
            }
            cJSON_AddStringToObject(seen, k->valuestring, it->valuestring);
        }
        cJSON_Delete(keys);
        if (rc < 0)
            break;
    }
    /* The proxy takes documents of at most 1 MiB and 256 keys (the rest of
     * the document, the inference route, fits in the margin): a sandbox
     * whose document would not load is refused here, never created. */
    if (rc == 0 && nkeys > PROV_DOC_MAX_KEYS)
        rc = err_set(e, EINVAL, "spec.providers: %zu credentials together, at most %d per sandbox",
                     nkeys, PROV_DOC_MAX_KEYS);
    if (rc == 0 && bytes > PROV_DOC_BUDGET)
        rc = err_set(e, EINVAL,
                     "spec.providers: the credentials document of these providers would be about "
                     "%zu KiB, over the %d KiB a sandbox takes",
                     bytes / 1024, PROV_DOC_BUDGET / 1024);
out:
    cJSON_Delete(seen);
    return rc;
}

int
gw_provider_check_attach(struct gw *gw, const char *ws, const cJSON *providers, struct err *e)
{
    return check_set(gw, ws, providers, NULL, NULL, e);
}

/* Would the PATCH of provider NAME to PAYLOAD break the document of a
 * sandbox using it? 0 or -EINVAL naming the sandbox. */
static int
check_users(struct gw *gw, const char *ws, const char *name, const char *payload, struct err *e)
{
    size_t off = 0, n;
    int rc = 0;

    do {
        struct store_query q = {
            .type = "sandbox", .workspace = ws, .limit = STORE_LIST_MAX, .offset = off
        };
        struct store_list l;

        if ((rc = store_list(gw->store, &q, &l, e)) < 0)
            return rc;
        for (size_t i = 0; i < l.n && rc == 0; i++) {
            cJSON *p = parse_stored(l.items[i]->payload);
            const cJSON *a = sb_providers(p);

            if (names_hold(a, name) && (rc = check_set(gw, ws, a, name, payload, e)) < 0)
                err_wrap(e, "sandbox %s", l.items[i]->name);
            cJSON_Delete(p);
        }
        n = l.n;
        off += n;
        store_list_fini(&l);
    } while (rc == 0 && n == STORE_LIST_MAX);
    return rc;
}

/* The sandboxes of WS that NAME is attached to, as "a, b" in OUT (empty:
 * none). */
static int
attached_to(struct gw *gw, const char *ws, const char *name, struct buf *out, struct err *e)
{
    size_t off = 0;
    int rc;

    for (;;) {
        struct store_query q = {
            .type = "sandbox", .workspace = ws, .limit = STORE_LIST_MAX, .offset = off
        };
        struct store_list l;

        if ((rc = store_list(gw->store, &q, &l, e)) < 0)
            return rc;
        for (size_t i = 0; i < l.n; i++) {
            cJSON *p = parse_stored(l.items[i]->payload);

            if (names_hold(sb_providers(p), name))
                buf_printf(out, "%s%s", out->len ? ", " : "", l.items[i]->name);
            cJSON_Delete(p);
        }
        off += l.n;
        rc = l.n == STORE_LIST_MAX;
        store_list_fini(&l);
        if (!rc)
            return 0;
    }
}

void
gw_provider_notify(struct gw *gw, const char *ws, const char *provider)
{
    size_t off = 0, n;
    struct err e;

    do {
        struct store_query q = {
            .type = "sandbox", .workspace = ws, .limit = STORE_LIST_MAX, .offset = off
        };
        struct store_list l;

        if (store_list(gw->store, &q, &l, &e) < 0) {
            /* Cannot tell who: everyone refetches (never a stale key). */
            gw_supervisor_notify(gw, NULL, "credentials");
            return;
        }
        for (size_t i = 0; i < l.n; i++) {
            cJSON *p = provider ? parse_stored(l.items[i]->payload) : NULL;

            if (!provider || names_hold(sb_providers(p), provider))
                gw_supervisor_notify(gw, l.items[i]->id, "credentials");
            cJSON_Delete(p);
        }
        n = l.n;
        off += n;
        store_list_fini(&l);
    } while (n == STORE_LIST_MAX);
}

/* ------------------------------------------------------------------ handlers */

/* Merge the credentials/config of SPEC into CREDS/CONFIG (null removes). */
static int
merge_map(cJSON *dst, const cJSON *src, bool creds, struct err *e)
{
    const cJSON *c;
    int rc;

    cJSON_ArrayForEach(c, src)
    {
        if (creds && (rc = check_cred(c->string, c, true, e)) < 0)
            return rc;
        if (!creds && !cJSON_IsString(c) && !cJSON_IsNull(c))
            return err_set(e, EINVAL, "spec.config.%.80s: expected a string or null", c->string);
        cJSON_DeleteItemFromObjectCaseSensitive(dst, c->string);
        if (!cJSON_IsNull(c))
            cJSON_AddItemToObject(dst, c->string, cJSON_CreateString(c->valuestring));
    }
    return 0;
}

/* Build the stored payload for ID from T, CONFIG and CREDS. */
static int
make_payload(struct gw *gw, const char *id, const struct gw_ptype *t, const cJSON *config,
             const cJSON *creds, char **out, struct err *e)
{
    cJSON *p = cJSON_CreateObject(), *keys;
    const cJSON *c;
    char *sealed = NULL;
    size_t n = 0;
    int rc;

    cJSON_ArrayForEach(c, creds) n++;
    if (n == 0) {
        cJSON_Delete(p);
        return err_set(e, EINVAL,
                       "spec.credentials: at least one credential is required (KEY: VALUE)");
    }
    if (n > PROV_MAX_CREDS) {
        cJSON_Delete(p);
        return err_set(e, EINVAL, "spec.credentials: more than %d entries", PROV_MAX_CREDS);
    }
    if ((rc = check_config(t, config, e)) < 0 || (rc = seal_creds(gw, id, creds, &sealed, e)) < 0) {
        cJSON_Delete(p);
        return rc;
    }
    cJSON_AddStringToObject(p, "type", t->name);
    cJSON_AddItemToObject(p, "config", cJSON_Duplicate(config, true));
    keys = cJSON_AddArrayToObject(p, "credential_keys");
    cJSON_ArrayForEach(c, creds) cJSON_AddItemToArray(keys, cJSON_CreateString(c->string));
    cJSON_AddStringToObject(p, "sealed", sealed);
    free(sealed);
    *out = api_json_print(p);
    cJSON_Delete(p);
    return 0;
}

static void
h_create(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "name", "labels", "spec", NULL };
    static const char *const skeys[] = { "type", "credentials", "config", NULL };
    struct gw *gw = arg;
    struct store_obj o = { 0 };
    cJSON *body = NULL, *creds = NULL, *config = NULL;
    const cJSON *labels = NULL, *spec = NULL, *cm = NULL, *cfg = NULL, *c;
    const char *name = NULL, *type = NULL;
    const struct gw_ptype *t = NULL;
    char id[37];
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    /* cJSON would cut a string at an escaped NUL: a value silently cut
     * short is another secret. */
    if (buf_json_has_nul_escape(req->body.data, req->body.len)) {
        rc = err_set(&e, EINVAL, "a \\u0000 escape: no string may contain NUL");
        goto fail;
    }
    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0 ||
        (rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_string(body, "name", "", true, &name, &e)) < 0 ||
        (rc = api_get_object(body, "labels", "", &labels, &e)) < 0 ||
        (rc == 0 && (rc = gw_labels_check(labels, &e)) < 0) ||
        (rc = api_get_object(body, "spec", "", &spec, &e)) < 0)
        goto fail;
    if (!name_ok(name)) {
        rc = err_set(&e, EINVAL,
                     "name \"%.80s\": expected 1-%d of [a-z0-9-], starting and ending with a "
                     "letter or digit",
                     name, PROV_NAME_MAX);
        goto fail;
    }
    if (!spec) {
        rc = err_set(&e, EINVAL, "spec: required ({\"type\", \"credentials\", \"config\"?})");
        goto fail;
    }
    if ((rc = api_check_keys(spec, skeys, "spec", &e)) < 0 ||
        (rc = api_get_string(spec, "type", "spec", true, &type, &e)) < 0 ||
        (rc = api_get_object(spec, "credentials", "spec", &cm, &e)) < 0 ||
        (rc = api_get_object(spec, "config", "spec", &cfg, &e)) < 0)
        goto fail;
    if (!(t = gw_ptype_find(type))) {
        struct buf known = BUF_INIT;
        for (size_t i = 0; i < NPTYPES; i++)
            buf_printf(&known, "%s%s", i ? ", " : "", ptypes[i].name);
        rc = err_set(&e, EINVAL, "spec.type \"%.60s\": unsupported provider type (known: %s)", type,
                     buf_cstr(&known));
        buf_fini(&known);
        goto fail;
    }
    creds = cJSON_CreateObject();
    config = cJSON_CreateObject();
    cJSON_ArrayForEach(c, cm)
    {
        if ((rc = check_cred(c->string, c, false, &e)) < 0)
            goto fail;
        cJSON_AddItemToObject(creds, c->string, cJSON_CreateString(c->valuestring));
    }
    if (cfg && (rc = merge_map(config, cfg, false, &e)) < 0)
        goto fail;
    store_new_id(id);
    if ((rc = make_payload(gw, id, t, config, creds, &o.payload, &e)) < 0)
        goto fail;
    o.id = id;
    o.type = (char *)GW_PROVIDER_TYPE;
    o.name = (char *)name;
    o.workspace = (char *)req->params[0];
    o.labels = labels ? api_json_print(labels) : NULL;
    if ((rc = store_create(gw->store, &o, &e)) == -EEXIST)
        err_set(&e, EEXIST, "provider '%.80s' already exists in workspace '%.80s'", name,
                req->params[0]);
    if (rc == 0) {
        char nkeys[16];
        snprintf(nkeys, sizeof(nkeys), "%d", cJSON_GetArraySize(creds));
        log_kv(LOG_LVL_INFO, "provider created", "name", name, "workspace", o.workspace, "type",
               t->name, "credentials", nkeys, NULL);
        respond_provider(st, 201, &o);
    }
    free(o.payload);
    free(o.labels);
    if (rc < 0)
        goto fail;
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    secrets_delete(creds);
    cJSON_Delete(config);
    if (body)
        secrets_delete(body);
    /* The request buffer held the values too. */
    if (req->body.data)
        explicit_bzero(req->body.data, req->body.len);
}

static void
list_common(struct gw *gw, struct h2_stream *st, struct h2_req *req, const char *ws)
{
    struct store_query q = { .type = GW_PROVIDER_TYPE, .workspace = ws };
    struct buf v = BUF_INIT;
    struct store_list l;
    struct err e;
    cJSON *j, *items;
    int rc;

    if ((rc = h2_req_query(req, "label_selector", &v)) < 0) {
        rc = err_set(&e, EINVAL, "query label_selector: bad percent-encoding");
        goto fail;
    }
    if (rc == 1)
        q.label_selector = buf_cstr(&v);
    {
        struct buf n = BUF_INIT;
        static const char *const nums[] = { "limit", "offset" };
        for (int i = 0; i < 2; i++) {
            buf_reset(&n);
            if (h2_req_query(req, nums[i], &n) == 1) {
                char *end;
                unsigned long x = strtoul(buf_cstr(&n), &end, 10);
                if (!n.len || *end || buf_cstr(&n)[0] == '-' || (i == 0 && x > STORE_LIST_MAX)) {
                    rc = err_set(&e, EINVAL, "query %s=%.40s: expected an integer%s", nums[i],
                                 buf_cstr(&n), i == 0 ? " 0-1000" : "");
                    buf_fini(&n);
                    goto fail;
                }
                if (i == 0)
                    q.limit = x;
                else
                    q.offset = x;
            }
        }
        buf_fini(&n);
    }
    if ((rc = store_list(gw->store, &q, &l, &e)) < 0)
        goto fail;
    j = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(j, "items");
    for (size_t i = 0; i < l.n; i++)
        cJSON_AddItemToArray(items, provider_json(l.items[i]));
    cJSON_AddNumberToObject(j, "total", (double)l.total);
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
    store_list_fini(&l);
    buf_fini(&v);
    return;
fail:
    buf_fini(&v);
    api_respond_err(st, rc, &e);
}

static void
h_list(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    list_common(gw, st, req, req->params[0]);
}

static void
h_list_all(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;

    if (!gw_authorized(gw, st))
        return;
    list_common(gw, st, req, NULL);
}

static struct store_obj *
lookup(struct gw *gw, struct h2_stream *st, struct h2_req *req)
{
    struct store_obj *o = NULL;
    struct err e;
    int rc;

    if ((rc = gw_workspace_check(gw, req->params[0], &e)) < 0 ||
        (rc = provider_get(gw, req->params[0], req->params[1], &o, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return NULL;
    }
    return o;
}

static void
h_get(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o;

    if (!gw_authorized(gw, st) || !(o = lookup(gw, st, req)))
        return;
    respond_provider(st, 200, o);
    store_obj_free(o);
}

/* The inference route of WS names PROVIDER? */
static bool
route_uses(struct gw *gw, const char *ws, const char *provider)
{
    struct store_obj *r = NULL;
    struct err e;
    bool uses = false;

    if (store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &r, &e) == 0) {
        cJSON *p = parse_stored(r->payload);
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(p, "provider");
        uses = cJSON_IsString(n) && strcmp(n->valuestring, provider) == 0;
        cJSON_Delete(p);
    }
    store_obj_free(r);
    return uses;
}

/* PATCH: {"labels"?, "spec": {"type"? (unchanged), "credentials"?: {K:
 * V|null}, "config"?: {K: V|null}}}: merged; null removes a key. */
static void
h_patch(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "labels", "spec", NULL };
    static const char *const skeys[] = { "type", "credentials", "config", NULL };
    struct gw *gw = arg;
    struct store_obj *o = NULL;
    cJSON *body = NULL, *payload = NULL, *creds = NULL, *config = NULL;
    const cJSON *labels = NULL, *spec = NULL, *cm = NULL, *cfg = NULL;
    const char *type = NULL;
    const struct gw_ptype *t;
    uint64_t expect;
    char *np = NULL;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    if (!(o = lookup(gw, st, req)))
        return;
    if (buf_json_has_nul_escape(req->body.data, req->body.len)) {
        rc = err_set(&e, EINVAL, "a \\u0000 escape: no string may contain NUL");
        goto fail;
    }
    if ((rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_object(body, "labels", "", &labels, &e)) < 0 ||
        (rc == 0 && (rc = gw_labels_check(labels, &e)) < 0) ||
        (rc = api_get_object(body, "spec", "", &spec, &e)) < 0)
        goto fail;
    payload = parse_stored(o->payload);
    t = stored_type(payload);
    if (!t) {
        rc = err_set(&e, EIO, "provider %s: stored type unknown to this gateway", o->name);
        goto fail;
    }
    if (spec && ((rc = api_check_keys(spec, skeys, "spec", &e)) < 0 ||
                 (rc = api_get_string(spec, "type", "spec", false, &type, &e)) < 0 ||
                 (rc = api_get_object(spec, "credentials", "spec", &cm, &e)) < 0 ||
                 (rc = api_get_object(spec, "config", "spec", &cfg, &e)) < 0))
        goto fail;
    if (type && gw_ptype_find(type) != t) {
        rc = err_set(&e, EINVAL, "spec.type: a provider's type cannot change (it is %s)", t->name);
        goto fail;
    }
    config = cJSON_Duplicate(cJSON_GetObjectItemCaseSensitive(payload, "config"), true);
    if (!cJSON_IsObject(config)) {
        cJSON_Delete(config);
        config = cJSON_CreateObject();
    }
    if (cfg && (rc = merge_map(config, cfg, false, &e)) < 0)
        goto fail;
    if (cm || cfg) {
        if ((rc = gw_provider_secrets(gw, o, &creds, &e)) < 0)
            goto fail;
        if (cm && (rc = merge_map(creds, cm, true, &e)) < 0)
            goto fail;
        /* The bump comes first: see gw_cred_revision_bump. */
        if ((rc = make_payload(gw, o->id, t, config, creds, &np, &e)) < 0 ||
            (rc = check_users(gw, o->workspace, o->name, np, &e)) < 0 ||
            (rc = gw_cred_revision_bump(gw, &e)) < 0)
            goto fail;
        free(o->payload);
        o->payload = np;
        np = NULL;
    }
    if (labels) {
        free(o->labels);
        o->labels = api_json_print(labels);
    }
    if ((rc = store_update(gw->store, o, expect, &e)) < 0) {
        if (rc == -ESTALE)
            err_set(&e, ESTALE, "provider %s: resource_version is %llu, not %llu", o->name,
                    (unsigned long long)o->resource_version, (unsigned long long)expect);
        goto fail;
    }
    log_kv(LOG_LVL_INFO, "provider updated", "name", o->name, "workspace", o->workspace,
           "credentials_changed", cm ? "true" : "false", NULL);
    respond_provider(st, 200, o);
    /* The sandboxes using it refetch their document: rotation without
     * restart. A config change can move the workspace's route too. */
    if (cm || cfg)
        gw_provider_notify(gw, o->workspace,
                           route_uses(gw, o->workspace, o->name) ? NULL : o->name);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    free(np);
    secrets_delete(creds);
    cJSON_Delete(config);
    cJSON_Delete(payload);
    if (body)
        secrets_delete(body);
    if (req->body.data)
        explicit_bzero(req->body.data, req->body.len);
    store_obj_free(o);
}

static void
h_delete(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *o;
    struct buf users = BUF_INIT;
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    if (!(o = lookup(gw, st, req)))
        return;
    if ((rc = attached_to(gw, o->workspace, o->name, &users, &e)) < 0)
        goto fail;
    if (users.len) {
        rc = err_set(&e, EPROTO,
                     "provider %s is attached to sandbox %s; detach it first (openshell sandbox "
                     "provider detach %s %s) or delete the sandbox",
                     o->name, buf_cstr(&users),
                     strchr(buf_cstr(&users), ',') ? "SANDBOX" : buf_cstr(&users), o->name);
        goto fail;
    }
    if (route_uses(gw, o->workspace, o->name)) {
        rc = err_set(&e, EPROTO,
                     "provider %s is the inference route's provider in workspace %s; point the "
                     "route elsewhere first (openshell inference set) or delete it",
                     o->name, o->workspace);
        goto fail;
    }
    if ((rc = store_delete(gw->store, GW_PROVIDER_TYPE, o->id, expect, &e)) < 0) {
        if (rc == -ESTALE)
            err_set(&e, ESTALE, "provider %s: resource_version is %llu, not %llu", o->name,
                    (unsigned long long)o->resource_version, (unsigned long long)expect);
        goto fail;
    }
    log_kv(LOG_LVL_INFO, "provider deleted", "name", o->name, "workspace", o->workspace, NULL);
    h2_stream_respond(st, 200, "application/json", NULL, 0, "{\"deleted\":true}\n", 17);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    buf_fini(&users);
    store_obj_free(o);
}

/* GET /v1/provider-types: what --type accepts (the CLI's --from-existing
 * reads the env names from here). */
static void
h_types(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    cJSON *j, *items;

    (void)req;
    if (!gw_authorized(gw, st))
        return;
    j = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(j, "items");
    for (size_t i = 0; i < NPTYPES; i++) {
        const struct gw_ptype *t = &ptypes[i];
        cJSON *o = cJSON_CreateObject(), *a;

        cJSON_AddStringToObject(o, "type", t->name);
        a = cJSON_AddArrayToObject(o, "aliases");
        for (size_t k = 0; t->aliases[k]; k++)
            cJSON_AddItemToArray(a, cJSON_CreateString(t->aliases[k]));
        a = cJSON_AddArrayToObject(o, "credential_keys");
        for (size_t k = 0; t->keys[k]; k++)
            cJSON_AddItemToArray(a, cJSON_CreateString(t->keys[k]));
        cJSON_AddItemToObject(o, "endpoints", endpoints_of(t, NULL));
        if (t->api) {
            cJSON_AddStringToObject(o, "api", t->api);
            cJSON_AddStringToObject(o, "base_url", t->base_url);
            cJSON_AddStringToObject(o, "base_url_key", t->base_url_key);
        }
        cJSON_AddItemToArray(items, o);
    }
    cJSON_AddNumberToObject(j, "total", (double)NPTYPES);
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
}

/* ------------------------------------------------------------------ attach */

/* GET .../sandboxes/{name}/providers: the attached providers. */
static void
h_sb_list(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb;
    cJSON *p, *j, *items;
    const cJSON *it;

    if (!gw_authorized(gw, st) || !(sb = gw_sandbox_lookup(gw, st, req)))
        return;
    p = parse_stored(sb->payload);
    j = cJSON_CreateObject();
    items = cJSON_AddArrayToObject(j, "items");
    cJSON_ArrayForEach(it, sb_providers(p))
    {
        struct store_obj *o = NULL;
        struct err e;

        if (!cJSON_IsString(it))
            continue;
        if (provider_get(gw, sb->workspace, it->valuestring, &o, &e) == 0) {
            cJSON_AddItemToArray(items, provider_json(o));
        } else {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(cJSON_AddObjectToObject(m, "metadata"), "name",
                                    it->valuestring);
            cJSON_AddStringToObject(m, "error", "missing");
            cJSON_AddItemToArray(items, m);
        }
        store_obj_free(o);
    }
    cJSON_AddNumberToObject(j, "total", cJSON_GetArraySize(items));
    api_respond_json(st, 200, j, sb->resource_version);
    cJSON_Delete(j);
    cJSON_Delete(p);
    store_obj_free(sb);
}

/* PUT (attach) / DELETE (detach) .../sandboxes/{name}/providers/{p}: a CAS
 * update of the sandbox's spec.providers (If-Match: the sandbox's ETag). */
static void
h_sb_attach(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    bool attach = strcmp(req->method, "PUT") == 0, changed = false;
    struct store_obj *sb = NULL;
    cJSON *p = NULL, *spec, *list, *j;
    const char *pname = req->params[2];
    uint64_t expect;
    struct err e;
    int rc;

    if (!gw_authorized(gw, st))
        return;
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0) {
        api_respond_err(st, rc, &e);
        return;
    }
    if (!(sb = gw_sandbox_lookup(gw, st, req)))
        return;
    p = parse_stored(sb->payload);
    spec = cJSON_GetObjectItemCaseSensitive(p, "spec");
    if (!cJSON_IsObject(spec))
        spec = cJSON_AddObjectToObject(p, "spec");
    list = cJSON_GetObjectItemCaseSensitive(spec, "providers");
    if (!cJSON_IsArray(list)) {
        cJSON_DeleteItemFromObjectCaseSensitive(spec, "providers");
        list = cJSON_AddArrayToObject(spec, "providers");
    }
    {
        int idx = 0, found = -1;
        const cJSON *it;
        cJSON_ArrayForEach(it, list)
        {
            if (cJSON_IsString(it) && strcmp(it->valuestring, pname) == 0)
                found = idx;
            idx++;
        }
        if (attach && found < 0) {
            cJSON_AddItemToArray(list, cJSON_CreateString(pname));
            if ((rc = gw_provider_check_attach(gw, sb->workspace, list, &e)) < 0) {
                if (strstr(e.msg, "not found"))
                    rc = err_set(&e, ENOENT, "provider '%.80s' not found in workspace '%.80s'",
                                 pname, sb->workspace);
                goto fail;
            }
            changed = true;
        } else if (!attach && found >= 0) {
            cJSON_DeleteItemFromArray(list, found);
            changed = true;
        }
    }
    if (changed) {
        if ((rc = gw_cred_revision_bump(gw, &e)) < 0)
            goto fail;
        free(sb->payload);
        sb->payload = api_json_print(p);
        if ((rc = store_update(gw->store, sb, expect, &e)) < 0) {
            if (rc == -ESTALE)
                err_set(&e, ESTALE,
                        "sandbox %s was modified by another operation (resource_version %llu, "
                        "not %llu); retry",
                        sb->name, (unsigned long long)sb->resource_version,
                        (unsigned long long)expect);
            goto fail;
        }
        log_kv(LOG_LVL_INFO, attach ? "provider attached" : "provider detached", "sandbox",
               sb->name, "provider", pname, "workspace", sb->workspace, NULL);
    }
    j = cJSON_CreateObject();
    cJSON_AddBoolToObject(j, attach ? "attached" : "detached", changed);
    cJSON_AddStringToObject(j, "sandbox", sb->name);
    cJSON_AddStringToObject(j, "provider", pname);
    api_respond_json(st, 200, j, sb->resource_version);
    cJSON_Delete(j);
    if (changed) {
        gw_watch_notify(gw, sb->id, sb);
        gw_supervisor_notify(gw, sb->id, "credentials");
    }
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    cJSON_Delete(p);
    store_obj_free(sb);
}

/* ------------------------------------------------------------------ the document */

/* GET /v1/supervisor/credentials (sandbox token): the document of
 * doc/providers.md for the bearer's sandbox; the only answer that carries
 * secrets. */
static void
h_credentials(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct store_obj *sb = NULL;
    cJSON *p = NULL, *doc = NULL, *env, *creds, *inf = NULL, *plain = NULL;
    const cJSON *it;
    int64_t rev = 0;
    struct err e;
    int rc;

    (void)req;
    if (gw_sandbox_principal(gw, st, &sb) < 0)
        return;
    if ((rc = gw_cred_revision(gw, &rev, &e)) < 0)
        goto fail;
    p = parse_stored(sb->payload);
    plain = cJSON_CreateObject();
    doc = cJSON_CreateObject();
    cJSON_AddNumberToObject(doc, "revision", (double)rev);
    env = cJSON_AddObjectToObject(doc, "environment");
    creds = cJSON_AddArrayToObject(doc, "credentials");
    cJSON_ArrayForEach(it, sb_providers(p))
    {
        struct store_obj *o = NULL;
        cJSON *secrets = NULL, *pl, *eps;
        const cJSON *kv;

        if (!cJSON_IsString(it))
            continue;
        /* A provider cannot be deleted while attached; one missing anyway
         * contributes nothing (fail closed: no key, no injection). */
        if ((rc = provider_get(gw, sb->workspace, it->valuestring, &o, &e)) == -ENOENT)
            continue;
        if (rc < 0 || (rc = gw_provider_secrets(gw, o, &secrets, &e)) < 0) {
            store_obj_free(o);
            goto fail;
        }
        pl = parse_stored(o->payload);
        eps = endpoints_of(stored_type(pl), cJSON_GetObjectItemCaseSensitive(pl, "config"));
        cJSON_ArrayForEach(kv, secrets)
        {
            cJSON *c = cJSON_CreateObject();
            char *ph = xasprintf(PLACEHOLDER "%s", kv->string);

            cJSON_AddStringToObject(env, kv->string, ph);
            free(ph);
            cJSON_AddStringToObject(c, "provider", o->name);
            cJSON_AddStringToObject(c, "key", kv->string);
            cJSON_AddStringToObject(c, "value", kv->valuestring);
            cJSON_AddItemToObject(c, "endpoints", cJSON_Duplicate(eps, true));
            cJSON_AddItemToArray(creds, c);
        }
        /* Config is not secret (OPENAI_BASE_URL...): its plain value,
         * unless a credential has that name. */
        cJSON_ArrayForEach(kv, cJSON_GetObjectItemCaseSensitive(pl, "config"))
        {
            if (cJSON_IsString(kv) && strcmp(kv->string, "endpoints") != 0 &&
                !cJSON_HasObjectItem(plain, kv->string))
                cJSON_AddStringToObject(plain, kv->string, kv->valuestring);
        }
        cJSON_Delete(eps);
        cJSON_Delete(pl);
        secrets_delete(secrets);
        store_obj_free(o);
    }
    cJSON_ArrayForEach(it, plain)
    {
        if (!cJSON_HasObjectItem(env, it->string))
            cJSON_AddStringToObject(env, it->string, it->valuestring);
    }
    if ((rc = gw_inference_doc(gw, sb->workspace, &inf, &e)) < 0)
        goto fail;
    cJSON_AddItemToObject(doc, "inference", inf);
    {
        char *text = api_json_print(doc);
        size_t n = strlen(text);
        static const struct h2_header nocache[] = { { "cache-control", "no-store" } };

        h2_stream_respond(st, 200, "application/json", nocache, 1, text, n);
        explicit_bzero(text, n);
        free(text);
    }
    goto out;
fail:
    /* Logged here: a key file or record the gateway cannot open needs the
     * operator. Messages carry names, never values. */
    log_kv(LOG_LVL_WARN, "credentials document refused", "sandbox", sb->name, "error",
           err_str(&e, rc), NULL);
    api_respond_err(st, rc, &e);
out:
    secrets_delete(doc);
    cJSON_Delete(plain);
    cJSON_Delete(p);
    store_obj_free(sb);
}

int
gw_provider_workspace_release(struct gw *gw, const char *ws, struct err *e)
{
    struct store_query q = { .type = GW_PROVIDER_TYPE, .workspace = ws, .limit = 1 };
    struct store_obj *r = NULL;
    struct store_list l;
    int rc;

    if ((rc = store_list(gw->store, &q, &l, e)) < 0)
        return rc;
    if (l.total) {
        rc = err_set(e, EPROTO, "workspace %s still holds %zu provider(s): delete them first", ws,
                     l.total);
        store_list_fini(&l);
        return rc;
    }
    store_list_fini(&l);
    /* The route goes with its workspace (the reference's cascade). */
    if ((rc = store_get_by_name(gw->store, GW_ROUTE_TYPE, ws, GW_ROUTE_NAME, &r, e)) == -ENOENT)
        return 0;
    if (rc == 0 && (rc = gw_cred_revision_bump(gw, e)) == 0)
        rc = store_delete(gw->store, GW_ROUTE_TYPE, r->id, 0, e);
    store_obj_free(r);
    return rc;
}

void
gw_provider_routes(struct gw *gw)
{
    struct h2_router *r = gw->router;
    struct stat st;

    prov_key_path = xasprintf("%s/%s", gw->state_dir, SEAL_KEY_NAME);
    /* A key file that exists but is refused stops the start: serving with
     * it would fail every provider call, replacing it would lose them. */
    {
        struct err e;
        size_t n = 0;

        if (lstat(prov_key_path, &st) == 0) {
            if (seal_open(prov_key_path, &prov_seal, &e) < 0)
                fatalx("%s", e.msg);
        } else if (errno == ENOENT && count_providers(gw, &n, &e) == 0 && n > 0) {
            fatalx("provider key %s is missing but %zu provider(s) are sealed with it; restore "
                   "it from a backup (refusing to start)",
                   prov_key_path, n);
        }
    }
    h2_router_add(r, "GET", "/v1/provider-types", 0, h_types, gw);
    h2_router_add(r, "POST", "/v1/workspaces/{}/providers", 0, h_create, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/providers", 0, h_list, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/providers/{}", 0, h_get, gw);
    h2_router_add(r, "PATCH", "/v1/workspaces/{}/providers/{}", 0, h_patch, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}/providers/{}", 0, h_delete, gw);
    h2_router_add(r, "GET", "/v1/providers", 0, h_list_all, gw);
    h2_router_add(r, "GET", "/v1/workspaces/{}/sandboxes/{}/providers", 0, h_sb_list, gw);
    h2_router_add(r, "PUT", "/v1/workspaces/{}/sandboxes/{}/providers/{}", 0, h_sb_attach, gw);
    h2_router_add(r, "DELETE", "/v1/workspaces/{}/sandboxes/{}/providers/{}", 0, h_sb_attach, gw);
    h2_router_add(r, "GET", "/v1/supervisor/credentials", 0, h_credentials, gw);
}
