/*
 * gw_policy_ops.c: PATCH .../policy, incremental operations on the policy
 * in force (doc/api.md §5.7).
 *
 * The base is the sandbox's latest revision, else its spec.policy, else the
 * built-in default policy, as JSON (YAML revisions are converted). The
 * operations of one request are applied in order to a copy, all or nothing;
 * the result is validated by the policy engine like a PUT and stored as ONE
 * new revision (format json) in the same transaction as the sandbox's CAS
 * update. Without If-Match a lost race is retried (up to 5 times) on the
 * fresh state; with it, a stale version is 409. While a global policy is
 * active, sandbox updates are 412 (the global one would hide them).
 *
 * Merge rules (after the reference's merge layer, simplified; doc/api.md):
 *  - add_rule NAME: a new block, or merged into the block NAME: endpoints
 *    with the same host (case-insensitive), path and an overlapping port are
 *    merged (ports unioned, rules/deny_rules/allowed_ips unioned, booleans
 *    OR-ed, unset fields adopted, conflicting ones kept with a warning), other
 *    endpoints appended; binaries appended without duplicates. A merge that
 *    would pair a new binary with an undeclared endpoint of the block (or a
 *    new endpoint with an undeclared binary) is refused, as the reference
 *    does: every binary of a block reaches every endpoint of it.
 *  - remove_endpoint HOST PORT [NAME]: that port leaves every matching
 *    endpoint (of NAME only, if given); an endpoint left without ports goes,
 *    and so does a block left without endpoints.
 *  - add_allow_rules / add_deny_rules HOST PORT: on the one endpoint that
 *    serves HOST:PORT (400 when none or several); an access preset is
 *    expanded into explicit rules before allow rules are added.
 *  - remove_rule NAME, remove_binary NAME PATH.
 * As in the reference, merges refuse endpoints that only reach always-blocked
 * addresses (localhost, metadata.google.internal, loopback, link-local and
 * unspecified literals or allowed_ips); a full PUT leaves that to the proxy.
 * Removing something absent is not an error: the answer carries a warning.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <yaml.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include "api.h"
#include "buf.h"
#include "gw.h"
#include "gw_policy.h"
#include "h2.h"
#include "log.h"
#include "policy.h"
#include "store.h"
#include "xfuncs.h"

#define OPS_MAX 100                  /* operations in one request */
#define POLICY_TEXT_MAX (256 * 1024) /* as PUT: the reference's cap */
#define RETRIES 5                    /* optimistic retries without If-Match */

/* ------------------------------------------------------------ the base */

/* The latest revision of OWNER as JSON: 0 and *OUT; 1 when it has none. */
static int
latest_revision_json(struct gw *gw, const struct store_obj *owner, cJSON **out, int64_t *ver,
                     struct err *e)
{
    struct store_obj *rev;
    const cJSON *fmt, *text;
    cJSON *p;
    int rc;

    if ((rc = gw_policy_latest(gw, owner->id, &rev, e)) != 0)
        return rc;
    *ver = rev->version;
    p = cJSON_Parse(rev->payload);
    store_obj_free(rev);
    fmt = p ? cJSON_GetObjectItemCaseSensitive(p, "format") : NULL;
    text = p ? cJSON_GetObjectItemCaseSensitive(p, "policy") : NULL;
    if (!cJSON_IsString(text)) {
        cJSON_Delete(p);
        return err_set(e, EIO, "revision %lld: stored payload has no policy", (long long)*ver);
    }
    if (cJSON_IsString(fmt) && !strcmp(fmt->valuestring, "json"))
        *out = cJSON_Parse(text->valuestring);
    else
        *out = policy_yaml_to_json(text->valuestring, strlen(text->valuestring), e);
    cJSON_Delete(p);
    if (!*out || !cJSON_IsObject(*out)) {
        cJSON_Delete(*out);
        *out = NULL;
        if (!e || !e->code)
            return err_set(e, EIO, "revision %lld: stored policy is not a JSON object",
                           (long long)*ver);
        return err_wrap(e, "revision %lld", (long long)*ver);
    }
    return 0;
}

/* The policy in force for sandbox SB: latest revision, spec.policy, or the
 * default. *SOURCE says which. */
static int
sandbox_base(struct gw *gw, const struct store_obj *sb, cJSON **out, const char **source,
             struct err *e)
{
    int64_t ver = 0;
    cJSON *payload;
    const cJSON *spec, *p;
    int rc;

    if ((rc = latest_revision_json(gw, sb, out, &ver, e)) <= 0) {
        *source = "sandbox";
        return rc;
    }
    payload = cJSON_Parse(sb->payload);
    spec = payload ? cJSON_GetObjectItemCaseSensitive(payload, "spec") : NULL;
    p = spec ? cJSON_GetObjectItemCaseSensitive(spec, "policy") : NULL;
    if (cJSON_IsObject(p)) {
        *out = cJSON_Duplicate(p, true);
        *source = "spec";
        cJSON_Delete(payload);
        return 0;
    }
    cJSON_Delete(payload);
    *source = "default";
    *out = policy_yaml_to_json(policy_default_yaml(), strlen(policy_default_yaml()), e);
    return *out ? 0 : err_wrap(e, "default policy");
}

/* ------------------------------------------------------------ helpers */

/* "operations[I]" (+ ".FIELD") for messages. */
struct where {
    char s[160];
};

static const char *
at(struct where *w, size_t i, const char *field)
{
    snprintf(w->s, sizeof(w->s), "operations[%zu]%s%s", i, field ? "." : "", field ? field : "");
    return w->s;
}

static void add_warning(cJSON *warnings, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void
add_warning(cJSON *warnings, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;

    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    cJSON_AddItemToArray(warnings, cJSON_CreateString(buf_cstr(&b)));
    buf_fini(&b);
}

/* A port number member KEY of OBJ in 1..65535: 0 and *PORT, or -EINVAL. */
static int
get_port(const cJSON *obj, const char *key, const char *where, bool required, int *port,
         struct err *e)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (!c || cJSON_IsNull(c)) {
        if (required)
            return err_set(e, EINVAL, "%s.%s: required", where, key);
        return 1;
    }
    if (!cJSON_IsNumber(c) || c->valuedouble != (double)(int)c->valuedouble || c->valueint < 1 ||
        c->valueint > 65535)
        return err_set(e, EINVAL, "%s.%s: expected a port number in 1..65535", where, key);
    *port = c->valueint;
    return 0;
}

static const char *
jstr(const cJSON *obj, const char *key)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(c) ? c->valuestring : NULL;
}

/* The ports of endpoint EP (port or ports) in a new array of *N (EXTRA more
 * slots free at the end); the caller frees it. Never truncated: a stored
 * policy may list many ports. */
static int *
ep_ports(const cJSON *ep, size_t *n, size_t extra)
{
    const cJSON *port = cJSON_GetObjectItemCaseSensitive(ep, "port");
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(ep, "ports"), *it;
    size_t cap = 1 + (size_t)cJSON_GetArraySize(list) + extra;
    int *v = xcalloc(cap, sizeof(*v));

    *n = 0;
    if (cJSON_IsNumber(port))
        v[(*n)++] = port->valueint;
    cJSON_ArrayForEach(it, list)
    {
        if (cJSON_IsNumber(it))
            v[(*n)++] = it->valueint;
    }
    return v;
}

/* The first port of EP (0 when none). */
static int
ep_first_port(const cJSON *ep)
{
    size_t n;
    int *v = ep_ports(ep, &n, 0), p = n ? v[0] : 0;

    free(v);
    return p;
}

static bool
ep_has_port(const cJSON *ep, int port)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(ep, "port"), *it;

    if (cJSON_IsNumber(c) && c->valueint == port)
        return true;
    cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(ep, "ports"))
    {
        if (cJSON_IsNumber(it) && it->valueint == port)
            return true;
    }
    return false;
}

static bool
ep_serves(const cJSON *ep, const char *host, int port)
{
    const char *h = jstr(ep, "host");

    return h && strcasecmp(h, host) == 0 && ep_has_port(ep, port);
}

/* Set EP's ports to PORTS[N] (as "port" when one, else "ports"). */
static void
ep_set_ports(cJSON *ep, const int *ports, size_t n)
{
    cJSON_DeleteItemFromObjectCaseSensitive(ep, "port");
    cJSON_DeleteItemFromObjectCaseSensitive(ep, "ports");
    if (n == 1) {
        cJSON_AddNumberToObject(ep, "port", ports[0]);
    } else {
        cJSON *a = cJSON_AddArrayToObject(ep, "ports");

        for (size_t i = 0; i < n; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber(ports[i]));
    }
}

static int
cmp_int(const void *a, const void *b)
{
    return *(const int *)a - *(const int *)b;
}

/* Append ITEM (copied) to array KEY of OBJ (created) unless an equal item
 * is there. Returns true when added. */
static bool
append_unique(cJSON *obj, const char *key, const cJSON *item)
{
    cJSON *a = cJSON_GetObjectItemCaseSensitive(obj, key), *it;

    if (!cJSON_IsArray(a)) {
        cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
        a = cJSON_AddArrayToObject(obj, key);
    }
    cJSON_ArrayForEach(it, a)
    {
        if (cJSON_Compare(it, item, true))
            return false;
    }
    cJSON_AddItemToArray(a, cJSON_Duplicate(item, true));
    return true;
}

/* A REST access preset as explicit allow rules (the methods doc/policy.md
 * gives each preset). 0, or -EINVAL for a preset that cannot be expanded. */
static int
expand_access(cJSON *ep, const char *what, struct err *e)
{
    static const char *const ro[] = { "GET", "HEAD", "OPTIONS", NULL };
    static const char *const rw[] = { "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH", NULL };
    static const char *const full[] = { "*", NULL };
    const char *access = jstr(ep, "access"), *proto = jstr(ep, "protocol");
    const char *const *methods;
    cJSON *rules;

    if (!access)
        return 0;
    if (!proto || strcmp(proto, "rest") != 0)
        return err_set(e, EINVAL,
                       "%s: the endpoint's access preset '%s' cannot take explicit rules "
                       "(only rest endpoints can)",
                       what, access);
    if (!strcmp(access, "read-only"))
        methods = ro;
    else if (!strcmp(access, "read-write"))
        methods = rw;
    else if (!strcmp(access, "full"))
        methods = full;
    else
        return err_set(e, EINVAL, "%s: unknown access preset '%s'", what, access);
    rules = cJSON_GetObjectItemCaseSensitive(ep, "rules");
    if (!cJSON_IsArray(rules)) {
        cJSON_DeleteItemFromObjectCaseSensitive(ep, "rules");
        rules = cJSON_AddArrayToObject(ep, "rules");
    }
    for (; *methods; methods++) {
        cJSON *r = cJSON_CreateObject(), *allow = cJSON_AddObjectToObject(r, "allow");

        cJSON_AddStringToObject(allow, "method", *methods);
        cJSON_AddStringToObject(allow, "path", "**");
        cJSON_AddItemToArray(rules, r);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(ep, "access");
    return 0;
}

/* Merge incoming endpoint IN into the existing EP (same host and path,
 * overlapping ports). */
static int
merge_endpoint(cJSON *ep, const cJSON *in, const char *what, cJSON *warnings, struct err *e)
{
    size_t n, nin;
    int *ports = ep_ports(
        ep, &n, (size_t)cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(in, "ports")) + 1);
    int *inp;
    const cJSON *c;
    int rc;

    /* Rules and addresses are per endpoint, not per port: changing them on
     * a multi-port endpoint must name every port it serves. */
    if (n > 1 && (cJSON_GetObjectItemCaseSensitive(in, "rules") ||
                  cJSON_GetObjectItemCaseSensitive(in, "deny_rules") ||
                  cJSON_GetObjectItemCaseSensitive(in, "allowed_ips") ||
                  cJSON_GetObjectItemCaseSensitive(in, "access"))) {
        for (size_t k = 0; k < n; k++)
            if (!ep_has_port(in, ports[k])) {
                rc = err_set(e, EINVAL,
                             "%s: the endpoint also serves port %d; changing its rules, "
                             "access or allowed_ips must name every port it serves",
                             what, ports[k]);
                free(ports);
                return rc;
            }
    }
    /* Ports: the union, sorted. */
    inp = ep_ports(in, &nin, 0);
    memcpy(ports + n, inp, nin * sizeof(*inp));
    n += nin;
    free(inp);
    qsort(ports, n, sizeof(ports[0]), cmp_int);
    {
        size_t k = 0;

        for (size_t i = 0; i < n; i++)
            if (k == 0 || ports[k - 1] != ports[i])
                ports[k++] = ports[i];
        n = k;
    }
    ep_set_ports(ep, ports, n);
    free(ports);
    cJSON_ArrayForEach(c, in)
    {
        const char *k = c->string;
        cJSON *cur = cJSON_GetObjectItemCaseSensitive(ep, k);

        if (!strcmp(k, "host") || !strcmp(k, "port") || !strcmp(k, "ports"))
            continue;
        if (!strcmp(k, "rules")) {
            const cJSON *r;

            if (jstr(ep, "access") && (rc = expand_access(ep, what, e)) < 0)
                return rc;
            cJSON_ArrayForEach(r, c) append_unique(ep, "rules", r);
            continue;
        }
        if (!strcmp(k, "access") && cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(ep, "rules"))) {
            add_warning(warnings, "%s: the endpoint has explicit rules; access '%s' ignored", what,
                        cJSON_IsString(c) ? c->valuestring : "?");
            continue;
        }
        if (cJSON_IsArray(c)) { /* deny_rules, allowed_ips, ...: the union */
            const cJSON *r;

            cJSON_ArrayForEach(r, c) append_unique(ep, k, r);
            continue;
        }
        if (cJSON_IsBool(c)) { /* flags only ever get added by a merge */
            if (cJSON_IsTrue(c) && !cJSON_IsTrue(cur)) {
                cJSON_DeleteItemFromObjectCaseSensitive(ep, k);
                cJSON_AddTrueToObject(ep, k);
            }
            continue;
        }
        if (!cur || cJSON_IsNull(cur) || (cJSON_IsString(cur) && !*cur->valuestring)) {
            cJSON_DeleteItemFromObjectCaseSensitive(ep, k);
            cJSON_AddItemToObject(ep, k, cJSON_Duplicate(c, true));
        } else if (!cJSON_Compare(cur, c, true)) {
            char *was = api_json_print(cur), *asked = api_json_print(c);

            add_warning(warnings, "%s: %s stays %s (the operation asked for %s)", what, k, was,
                        asked);
            free(was);
            free(asked);
        }
    }
    return 0;
}

/* network_policies of POLICY (created when absent). */
static cJSON *
blocks_of(cJSON *policy)
{
    cJSON *np = cJSON_GetObjectItemCaseSensitive(policy, "network_policies");

    if (!cJSON_IsObject(np)) {
        cJSON_DeleteItemFromObjectCaseSensitive(policy, "network_policies");
        np = cJSON_AddObjectToObject(policy, "network_policies");
    }
    return np;
}

/* ------------------------------------------------------------ always-blocked */

/* The address bytes of TEXT ("IP" or "IP/LEN") as 16 bytes (IPv4 as
 * IPv4-mapped IPv6) and the prefix length in that space. -1 when it is
 * neither. */
static int
parse_net(const char *text, unsigned char a[16], int *len)
{
    char host[64];
    const char *slash = strchr(text, '/');
    size_t hl = slash ? (size_t)(slash - text) : strlen(text);
    unsigned char v4[4];
    bool is4;
    int max;

    if (hl == 0 || hl >= sizeof(host))
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(a, 0, 16);
    if (inet_pton(AF_INET, host, v4) == 1) {
        a[10] = a[11] = 0xff;
        memcpy(a + 12, v4, 4);
        is4 = true;
    } else if (inet_pton(AF_INET6, host, a) == 1) {
        is4 = false;
    } else {
        return -1;
    }
    max = is4 ? 32 : 128;
    *len = max;
    if (slash) {
        char *end;
        long l = strtol(slash + 1, &end, 10);

        if (!slash[1] || *end || l < 0 || l > max)
            return -1;
        *len = (int)l;
    }
    if (is4)
        *len += 96;
    return 0;
}

/* Whether the first N bits of A and B agree. */
static bool
prefix_eq(const unsigned char *a, const unsigned char *b, int n)
{
    int i;

    for (i = 0; i + 8 <= n; i += 8)
        if (a[i / 8] != b[i / 8])
            return false;
    if (i < n) {
        unsigned char m = (unsigned char)(0xff << (8 - (n - i)));

        if ((a[i / 8] & m) != (b[i / 8] & m))
            return false;
    }
    return true;
}

/* Whether TEXT (an IP or CIDR) overlaps an always-blocked range: loopback,
 * link-local, unspecified (IPv4, IPv6 and IPv4-mapped forms). Sets *BAD when
 * TEXT parses as neither. */
static bool
always_blocked(const char *text, bool *bad)
{
    static const struct {
        const char *net;
    } blocked[] = { { "127.0.0.0/8" }, { "169.254.0.0/16" }, { "0.0.0.0/32" },
                    { "::1/128" },     { "fe80::/10" },      { "::/128" } };
    unsigned char a[16], b[16];
    int len, blen;

    *bad = parse_net(text, a, &len) < 0;
    if (*bad)
        return false;
    for (size_t i = 0; i < sizeof(blocked) / sizeof(blocked[0]); i++) {
        if (parse_net(blocked[i].net, b, &blen) < 0)
            BUG();
        /* Two prefixes overlap when they agree on the shorter one. */
        if (prefix_eq(a, b, len < blen ? len : blen))
            return true;
    }
    return false;
}

/* The reference refuses, in merges only, endpoints that can only reach
 * always-blocked addresses: localhost, the cloud metadata name, blocked
 * literals, and allowed_ips overlapping blocked ranges. */
static int
check_reachable(const cJSON *ep, const char *where, struct err *e)
{
    const char *host = jstr(ep, "host");
    const cJSON *ips = cJSON_GetObjectItemCaseSensitive(ep, "allowed_ips"), *it;
    bool bad;
    size_t k = 0;

    if (host && (!strcasecmp(host, "localhost") || !strcasecmp(host, "metadata.google.internal")))
        return err_set(e, EINVAL, "%s.host: %s is always blocked", where, host);
    if (host && *host && always_blocked(host, &bad))
        return err_set(e, EINVAL, "%s.host: %s is an always-blocked address", where, host);
    cJSON_ArrayForEach(it, ips)
    {
        if (!cJSON_IsString(it))
            return err_set(e, EINVAL, "%s.allowed_ips[%zu]: expected a string", where, k);
        if (always_blocked(it->valuestring, &bad))
            return err_set(e, EINVAL,
                           "%s.allowed_ips[%zu]: %s overlaps loopback, link-local or "
                           "unspecified addresses",
                           where, k, it->valuestring);
        if (bad)
            return err_set(e, EINVAL, "%s.allowed_ips[%zu]: %s is not an IP or CIDR", where, k,
                           it->valuestring);
        k++;
    }
    return 0;
}

/* ------------------------------------------------------------ operations */

static int
check_keys(const cJSON *op, const char *const *keys, size_t i, struct err *e)
{
    struct where w;

    return api_check_keys(op, keys, at(&w, i, NULL), e);
}

/* The generated rule name: allow_<host, '.' and '-' as '_', other
 * non-alphanumerics dropped, lower case>_<port>. */
static char *
rule_name_for(const char *host, int port)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "allow_");
    for (const char *p = host; *p; p++) {
        unsigned char c = (unsigned char)*p;

        if (isalnum(c))
            buf_putc(&b, (char)tolower(c));
        else if (c == '.' || c == '-')
            buf_putc(&b, '_');
    }
    buf_printf(&b, "_%d", port);
    return buf_steal(&b);
}

/* Check an endpoint object of an operation: a string host, a port or
 * ports. */
static int
check_endpoint(const cJSON *ep, const char *where, struct err *e)
{
    const cJSON *ports;
    int port;
    int rc;

    if (!cJSON_IsObject(ep))
        return err_set(e, EINVAL, "%s: expected an object", where);
    if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(ep, "host")))
        return err_set(e, EINVAL, "%s.host: required (a string)", where);
    if ((rc = get_port(ep, "port", where, false, &port, e)) < 0)
        return rc;
    ports = cJSON_GetObjectItemCaseSensitive(ep, "ports");
    if (rc == 1) {
        const cJSON *it;

        if (!cJSON_IsArray(ports) || !cJSON_GetArraySize(ports))
            return err_set(e, EINVAL, "%s.port: required (or ports)", where);
        cJSON_ArrayForEach(it, ports)
        {
            if (!cJSON_IsNumber(it) || it->valuedouble != (double)(int)it->valuedouble ||
                it->valueint < 1 || it->valueint > 65535)
                return err_set(e, EINVAL, "%s.ports: expected port numbers in 1..65535", where);
        }
    } else if (ports && !cJSON_IsNull(ports)) {
        return err_set(e, EINVAL, "%s: port and ports exclude each other", where);
    }
    return 0;
}

/* Whether the endpoints EPS (an operation's) declare HOST:PORT. */
static bool
declares_endpoint(const cJSON *eps, const char *host, int port)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, eps)
    {
        if (ep_serves(it, host, port))
            return true;
    }
    return false;
}

static bool
declares_binary(const cJSON *bins, const char *path)
{
    const cJSON *it;

    cJSON_ArrayForEach(it, bins)
    {
        const char *p = jstr(it, "path");

        if (p && !strcmp(p, path))
            return true;
    }
    return false;
}

/* The reference's merge checks: adding a binary to block CUR must declare
 * every host:port CUR has; adding a host:port must declare every binary CUR
 * has. -EINVAL naming the pair that would be granted silently. */
static int
check_no_widening(const cJSON *cur, const cJSON *eps, const cJSON *bins, const char *name,
                  const char *where, struct err *e)
{
    const cJSON *cbins = cJSON_GetObjectItemCaseSensitive(cur, "binaries");
    const cJSON *ceps = cJSON_GetObjectItemCaseSensitive(cur, "endpoints");
    const cJSON *b, *ep;

    cJSON_ArrayForEach(b, bins)
    {
        const char *path = jstr(b, "path");

        if (declares_binary(cbins, path))
            continue;
        cJSON_ArrayForEach(ep, ceps)
        {
            size_t n;
            int *ports = ep_ports(ep, &n, 0), rc = 0;
            const char *host = jstr(ep, "host");

            for (size_t k = 0; host && k < n && !rc; k++)
                if (!declares_endpoint(eps, host, ports[k]))
                    rc = err_set(e, EINVAL,
                                 "%s: adding binary %s to rule %s would also grant it %s:%d; "
                                 "declare every endpoint of the rule, or use another rule name",
                                 where, path, name, host, ports[k]);
            free(ports);
            if (rc)
                return rc;
        }
    }
    cJSON_ArrayForEach(ep, eps)
    {
        size_t n;
        int *ports = ep_ports(ep, &n, 0), rc = 0;
        const char *host = jstr(ep, "host");

        for (size_t k = 0; k < n && !rc; k++) {
            if (declares_endpoint(ceps, host, ports[k]))
                continue;
            cJSON_ArrayForEach(b, cbins)
            {
                const char *path = jstr(b, "path");

                if (path && !declares_binary(bins, path)) {
                    rc = err_set(e, EINVAL,
                                 "%s: adding %s:%d to rule %s would also grant it to %s; "
                                 "declare every binary of the rule, or use another rule name",
                                 where, host, ports[k], name, path);
                    break;
                }
            }
        }
        free(ports);
        if (rc)
            return rc;
    }
    return 0;
}

static int
op_add_rule(cJSON *policy, const cJSON *op, size_t i, cJSON *warnings, struct err *e)
{
    static const char *const keys[] = { "op", "name", "rule", NULL };
    static const char *const rkeys[] = { "endpoints", "binaries", "name", NULL };
    struct where w;
    const char *name = NULL;
    const cJSON *rule = NULL, *eps = NULL, *bins = NULL, *it;
    cJSON *blocks, *cur;
    char *gen = NULL;
    size_t k = 0;
    int rc;

    if ((rc = check_keys(op, keys, i, e)) < 0 ||
        (rc = api_get_string(op, "name", at(&w, i, NULL), false, &name, e)) < 0)
        return rc;
    if ((rc = api_get_object(op, "rule", at(&w, i, NULL), &rule, e)) != 0)
        return rc < 0 ? rc : err_set(e, EINVAL, "%s: required", at(&w, i, "rule"));
    if ((rc = api_check_keys(rule, rkeys, at(&w, i, "rule"), e)) < 0)
        return rc;
    if ((rc = api_get_array(rule, "endpoints", at(&w, i, "rule"), &eps, e)) != 0 ||
        !cJSON_GetArraySize(eps))
        return rc < 0 ? rc
                      : err_set(e, EINVAL, "%s: required (at least one endpoint)",
                                at(&w, i, "rule.endpoints"));
    cJSON_ArrayForEach(it, eps)
    {
        char f[64];

        snprintf(f, sizeof(f), "rule.endpoints[%zu]", k++);
        if ((rc = check_endpoint(it, at(&w, i, f), e)) < 0 ||
            (rc = check_reachable(it, at(&w, i, f), e)) < 0)
            return rc;
    }
    if ((rc = api_get_array(rule, "binaries", at(&w, i, "rule"), &bins, e)) < 0)
        return rc;
    k = 0;
    cJSON_ArrayForEach(it, bins)
    {
        char f[64];

        snprintf(f, sizeof(f), "rule.binaries[%zu]", k++);
        if (!cJSON_IsObject(it) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it, "path")))
            return err_set(e, EINVAL, "%s: expected {\"path\": \"...\"}", at(&w, i, f));
    }
    if (!name || !*name)
        name = gen = rule_name_for(jstr(eps->child, "host"), ep_first_port(eps->child));
    if (!strncmp(name, "_provider_", 10)) {
        free(gen);
        return err_set(e, EINVAL, "%s: names starting with _provider_ are reserved",
                       at(&w, i, "name"));
    }
    blocks = blocks_of(policy);
    cur = cJSON_GetObjectItemCaseSensitive(blocks, name);
    if (!cJSON_IsObject(cur)) {
        cJSON *nb = cJSON_Duplicate(rule, true);

        if (!cJSON_GetObjectItemCaseSensitive(nb, "binaries"))
            cJSON_AddArrayToObject(nb, "binaries");
        cJSON_DeleteItemFromObjectCaseSensitive(blocks, name);
        cJSON_AddItemToObject(blocks, name, nb);
        free(gen);
        return 0;
    }
    /* Merge into the block of that name, without widening it behind the
     * caller's back: every program of a block reaches every endpoint of it,
     * so a new binary must come with all the block's endpoints declared,
     * and a new endpoint (or port) with all its binaries. */
    if ((rc = check_no_widening(cur, eps, bins, name, at(&w, i, NULL), e)) < 0) {
        free(gen);
        return rc;
    }
    cJSON_ArrayForEach(it, eps)
    {
        cJSON *ceps = cJSON_GetObjectItemCaseSensitive(cur, "endpoints"), *ce;
        const char *path = jstr(it, "path");
        size_t np;
        int *ports = ep_ports(it, &np, 0);
        bool merged = false;
        char what[200];

        snprintf(what, sizeof(what), "%s: rule %s: endpoint %s:%d", at(&w, i, NULL), name,
                 jstr(it, "host"), np ? ports[0] : 0);
        cJSON_ArrayForEach(ce, ceps)
        {
            const char *cpath = jstr(ce, "path"), *chost = jstr(ce, "host");
            bool overlap = false;

            if (!chost || strcasecmp(chost, jstr(it, "host")) ||
                strcmp(cpath ? cpath : "", path ? path : ""))
                continue;
            for (size_t p = 0; p < np && !overlap; p++)
                overlap = ep_has_port(ce, ports[p]);
            if (!overlap)
                continue;
            if ((rc = merge_endpoint(ce, it, what, warnings, e)) < 0) {
                free(ports);
                free(gen);
                return rc;
            }
            merged = true;
            break;
        }
        free(ports);
        if (!merged)
            append_unique(cur, "endpoints", it);
    }
    cJSON_ArrayForEach(it, bins) append_unique(cur, "binaries", it);
    free(gen);
    return 0;
}

static int
op_remove_endpoint(cJSON *policy, const cJSON *op, size_t i, cJSON *warnings, struct err *e)
{
    static const char *const keys[] = { "op", "host", "port", "name", NULL };
    struct where w;
    const char *host = NULL, *name = NULL;
    cJSON *blocks = blocks_of(policy), *b, *next;
    size_t removed = 0;
    int port = 0, rc;

    if ((rc = check_keys(op, keys, i, e)) < 0 ||
        (rc = api_get_string(op, "host", at(&w, i, NULL), true, &host, e)) < 0 ||
        (rc = get_port(op, "port", at(&w, i, NULL), true, &port, e)) < 0 ||
        (rc = api_get_string(op, "name", at(&w, i, NULL), false, &name, e)) < 0)
        return rc;
    if (name && !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(blocks, name))) {
        add_warning(warnings, "%s: no rule %s; nothing removed", at(&w, i, NULL), name);
        return 0;
    }
    for (b = blocks->child; b; b = next) {
        cJSON *eps = cJSON_GetObjectItemCaseSensitive(b, "endpoints"), *ep, *enext;

        next = b->next;
        if (name && strcmp(b->string, name) != 0)
            continue;
        for (ep = eps ? eps->child : NULL; ep; ep = enext) {
            size_t n, k = 0;
            int *ports;

            enext = ep->next;
            if (!ep_serves(ep, host, port))
                continue;
            removed++;
            ports = ep_ports(ep, &n, 0);
            for (size_t j = 0; j < n; j++)
                if (ports[j] != port)
                    ports[k++] = ports[j];
            if (k == 0)
                cJSON_Delete(cJSON_DetachItemViaPointer(eps, ep));
            else
                ep_set_ports(ep, ports, k);
            free(ports);
        }
        if (eps && !cJSON_GetArraySize(eps)) {
            add_warning(warnings, "%s: rule %s has no endpoint left and was removed",
                        at(&w, i, NULL), b->string);
            cJSON_Delete(cJSON_DetachItemViaPointer(blocks, b));
        }
    }
    if (!removed)
        add_warning(warnings, "%s: no endpoint %s:%d%s%s; nothing removed", at(&w, i, NULL), host,
                    port, name ? " in rule " : "", name ? name : "");
    return 0;
}

static int
op_remove_rule(cJSON *policy, const cJSON *op, size_t i, cJSON *warnings, struct err *e)
{
    static const char *const keys[] = { "op", "name", NULL };
    struct where w;
    const char *name = NULL;
    cJSON *blocks = blocks_of(policy);
    int rc;

    if ((rc = check_keys(op, keys, i, e)) < 0 ||
        (rc = api_get_string(op, "name", at(&w, i, NULL), true, &name, e)) < 0)
        return rc;
    if (!cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(blocks, name)))
        add_warning(warnings, "%s: no rule %s; nothing removed", at(&w, i, NULL), name);
    cJSON_DeleteItemFromObjectCaseSensitive(blocks, name);
    return 0;
}

static int
op_remove_binary(cJSON *policy, const cJSON *op, size_t i, cJSON *warnings, struct err *e)
{
    static const char *const keys[] = { "op", "name", "path", NULL };
    struct where w;
    const char *name = NULL, *path = NULL;
    cJSON *blocks = blocks_of(policy), *b, *bins, *it;
    int rc;

    if ((rc = check_keys(op, keys, i, e)) < 0 ||
        (rc = api_get_string(op, "name", at(&w, i, NULL), true, &name, e)) < 0 ||
        (rc = api_get_string(op, "path", at(&w, i, NULL), true, &path, e)) < 0)
        return rc;
    b = cJSON_GetObjectItemCaseSensitive(blocks, name);
    if (!cJSON_IsObject(b)) {
        add_warning(warnings, "%s: no rule %s; nothing removed", at(&w, i, NULL), name);
        return 0;
    }
    bins = cJSON_GetObjectItemCaseSensitive(b, "binaries");
    cJSON_ArrayForEach(it, bins)
    {
        const char *p = jstr(it, "path");

        if (p && !strcmp(p, path)) {
            cJSON_Delete(cJSON_DetachItemViaPointer(bins, it));
            if (!cJSON_GetArraySize(bins))
                add_warning(warnings, "%s: rule %s has no binary left: it admits no program",
                            at(&w, i, NULL), name);
            return 0;
        }
    }
    add_warning(warnings, "%s: rule %s has no binary %s; nothing removed", at(&w, i, NULL), name,
                path);
    return 0;
}

/* Check and normalise one L7 rule {method, path, query?} (method upper
 * case; path "/...", "**" or "**\/..."). */
static int
check_l7(cJSON *r, const char *where, struct err *e)
{
    static const char *const keys[] = { "method", "path", "query", NULL };
    const char *method = NULL, *path = NULL;
    int rc;

    if (!cJSON_IsObject(r))
        return err_set(e, EINVAL, "%s: expected an object", where);
    if ((rc = api_check_keys(r, keys, where, e)) < 0 ||
        (rc = api_get_string(r, "method", where, true, &method, e)) < 0 ||
        (rc = api_get_string(r, "path", where, true, &path, e)) < 0)
        return rc;
    if (!*method)
        return err_set(e, EINVAL, "%s.method: empty", where);
    if (path[0] != '/' && strcmp(path, "**") != 0 && strncmp(path, "**/", 3) != 0)
        return err_set(e, EINVAL, "%s.path: must start with '/', be '**' or start with '**/'",
                       where);
    for (char *p = cJSON_GetObjectItemCaseSensitive(r, "method")->valuestring; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    return 0;
}

/* The one endpoint serving HOST:PORT in POLICY, or NULL with E. */
static cJSON *
the_endpoint(cJSON *policy, const char *host, int port, const char *where, struct err *e)
{
    cJSON *found = NULL, *b, *ep;
    size_t n = 0;

    cJSON_ArrayForEach(b, blocks_of(policy))
    {
        cJSON_ArrayForEach(ep, cJSON_GetObjectItemCaseSensitive(b, "endpoints"))
        {
            if (ep_serves(ep, host, port)) {
                found = ep;
                n++;
            }
        }
    }
    if (n == 0)
        err_set(e, EINVAL, "%s: no endpoint %s:%d in the policy (add it with add_rule first)",
                where, host, port);
    else if (n > 1)
        err_set(e, EINVAL, "%s: %s:%d is served by %zu endpoints; the operation is ambiguous",
                where, host, port, n);
    return n == 1 ? found : NULL;
}

static int
op_add_l7(cJSON *policy, cJSON *op, size_t i, bool allow, struct err *e)
{
    static const char *const akeys[] = { "op", "host", "port", "rules", NULL };
    static const char *const dkeys[] = { "op", "host", "port", "deny_rules", NULL };
    const char *list = allow ? "rules" : "deny_rules";
    struct where w;
    const char *host = NULL, *proto;
    const cJSON *arr = NULL;
    cJSON *ep, *it;
    size_t k = 0;
    int port = 0, rc;

    if ((rc = check_keys(op, allow ? akeys : dkeys, i, e)) < 0 ||
        (rc = api_get_string(op, "host", at(&w, i, NULL), true, &host, e)) < 0 ||
        (rc = get_port(op, "port", at(&w, i, NULL), true, &port, e)) < 0)
        return rc;
    if ((rc = api_get_array(op, list, at(&w, i, NULL), &arr, e)) != 0 || !cJSON_GetArraySize(arr))
        return rc < 0 ? rc : err_set(e, EINVAL, "%s: required (at least one)", at(&w, i, list));
    cJSON_ArrayForEach(it, (cJSON *)arr)
    {
        char f[64];
        cJSON *r = it;

        snprintf(f, sizeof(f), "%s[%zu]", list, k++);
        if (allow) {
            static const char *const wkeys[] = { "allow", NULL };

            if (!cJSON_IsObject(it) || (rc = api_check_keys(it, wkeys, at(&w, i, f), e)) < 0 ||
                !cJSON_IsObject(r = cJSON_GetObjectItemCaseSensitive(it, "allow")))
                return rc < 0 ? rc
                              : err_set(e, EINVAL, "%s: expected {\"allow\": {method, path}}",
                                        at(&w, i, f));
            snprintf(f, sizeof(f), "%s[%zu].allow", list, k - 1);
        }
        if ((rc = check_l7(r, at(&w, i, f), e)) < 0)
            return rc;
    }
    if (!(ep = the_endpoint(policy, host, port, at(&w, i, NULL), e)))
        return -EINVAL;
    {
        size_t n;

        free(ep_ports(ep, &n, 0));
        if (n > 1)
            return err_set(e, EINVAL,
                           "%s: endpoint %s:%d serves several ports and its rules apply to all "
                           "of them; split it first (remove_endpoint, add_rule)",
                           at(&w, i, NULL), host, port);
    }
    proto = jstr(ep, "protocol");
    if (!proto || (strcmp(proto, "rest") && strcmp(proto, "websocket")))
        return err_set(e, EINVAL,
                       "%s: endpoint %s:%d is not inspected (protocol %s); rules need protocol "
                       "rest or websocket",
                       at(&w, i, NULL), host, port, proto ? proto : "none");
    if (allow) {
        if ((rc = expand_access(ep, at(&w, i, NULL), e)) < 0)
            return rc;
    } else if (!jstr(ep, "access") &&
               !cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(ep, "rules"))) {
        return err_set(e, EINVAL,
                       "%s: endpoint %s:%d allows nothing yet; deny rules need an access preset "
                       "or allow rules to refine",
                       at(&w, i, NULL), host, port);
    }
    cJSON_ArrayForEach(it, (cJSON *)arr) append_unique(ep, list, it);
    return 0;
}

/* Apply OPS to POLICY in order. 0, or -EINVAL with E naming the operation. */
static int
apply_ops(cJSON *policy, const cJSON *ops, cJSON *warnings, struct err *e)
{
    size_t i = 0;
    cJSON *op;
    int rc = 0;

    cJSON_ArrayForEach(op, (cJSON *)ops)
    {
        struct where w;
        const char *name = NULL;

        if (!cJSON_IsObject(op))
            return err_set(e, EINVAL, "%s: expected an object", at(&w, i, NULL));
        if ((rc = api_get_string(op, "op", at(&w, i, NULL), true, &name, e)) < 0)
            return rc;
        if (!strcmp(name, "add_rule"))
            rc = op_add_rule(policy, op, i, warnings, e);
        else if (!strcmp(name, "remove_endpoint"))
            rc = op_remove_endpoint(policy, op, i, warnings, e);
        else if (!strcmp(name, "remove_rule"))
            rc = op_remove_rule(policy, op, i, warnings, e);
        else if (!strcmp(name, "add_allow_rules"))
            rc = op_add_l7(policy, op, i, true, e);
        else if (!strcmp(name, "add_deny_rules"))
            rc = op_add_l7(policy, op, i, false, e);
        else if (!strcmp(name, "remove_binary"))
            rc = op_remove_binary(policy, op, i, warnings, e);
        else
            rc = err_set(e, EINVAL,
                         "%s.op: unknown operation '%.60s' (known: add_rule, remove_endpoint, "
                         "remove_rule, add_allow_rules, add_deny_rules, remove_binary)",
                         at(&w, i, NULL), name);
        if (rc < 0)
            return rc;
        i++;
    }
    return 0;
}

/* ------------------------------------------------------------ the handler */

/* 0 when OWNER (the global settings object) has a policy revision. */
static int
global_active(struct gw *gw, bool *active, struct err *e)
{
    struct store_obj *g = NULL;
    struct store_query q = { .type = "sandbox_policy", .limit = 1 };
    struct store_list l;
    int rc;

    if ((rc = gw_settings_global(gw, &g, e)) < 0)
        return rc;
    q.scope = g->id;
    rc = store_list(gw->store, &q, &l, e);
    store_obj_free(g);
    if (rc < 0)
        return rc;
    *active = l.total > 0;
    store_list_fini(&l);
    return 0;
}

static void
h_patch_policy(struct h2_stream *st, struct h2_req *req, void *arg)
{
    static const char *const keys[] = { "operations", "dry_run", NULL };
    struct gw *gw = arg;
    bool global = gw_policy_is_global(req), dry_run = false;
    struct store_obj *owner = NULL;
    cJSON *body = NULL, *policy = NULL, *warnings = NULL, *resp = NULL;
    const cJSON *ops = NULL;
    char *text = NULL, hash[72];
    const char *source = "sandbox";
    uint64_t expect;
    int64_t version = 0;
    struct err e;
    int rc, attempt;

    if (!gw_authorized(gw, st) || gw_require_json(st) < 0)
        return;
    err_clear(&e);
    if ((rc = api_parse_if_match(h2_stream_header(st, "if-match"), &expect, &e)) < 0 ||
        (rc = api_parse_object(req->body.data, req->body.len, &body, &e)) < 0 ||
        (rc = api_check_keys(body, keys, "", &e)) < 0 ||
        (rc = api_get_bool(body, "dry_run", "", &dry_run, &e)) < 0)
        goto fail;
    if ((rc = api_get_array(body, "operations", "", &ops, &e)) != 0 || !cJSON_GetArraySize(ops)) {
        rc = rc < 0 ? rc : err_set(&e, EINVAL, "operations: required (at least one operation)");
        goto fail;
    }
    if (cJSON_GetArraySize(ops) > OPS_MAX) {
        rc = err_set(&e, EINVAL, "operations: at most %d in one request", OPS_MAX);
        goto fail;
    }
    for (attempt = 0; attempt < RETRIES; attempt++) {
        store_obj_free(owner);
        cJSON_Delete(policy);
        cJSON_Delete(warnings);
        free(text);
        owner = NULL;
        policy = NULL;
        text = NULL;
        warnings = cJSON_CreateArray();
        if (!(owner = gw_policy_owner(gw, st, req)))
            goto out; /* answered */
        if (global) {
            int64_t ver;

            if ((rc = latest_revision_json(gw, owner, &policy, &ver, &e)) < 0)
                goto fail;
            if (rc == 1) {
                rc = err_set(&e, ENOENT,
                             "the gateway has no global policy to update (set one with PUT "
                             "/v1/gateway/policy)");
                goto fail;
            }
            source = "global";
        } else {
            bool active = false;

            if ((rc = global_active(gw, &active, &e)) < 0)
                goto fail;
            if (active) {
                rc = err_set(&e, EPROTO,
                             "a global policy is active and overrides sandbox %s's policy; "
                             "update the global policy instead",
                             owner->name);
                goto fail;
            }
            if ((rc = sandbox_base(gw, owner, &policy, &source, &e)) < 0)
                goto fail;
        }
        if ((rc = apply_ops(policy, ops, warnings, &e)) < 0)
            goto fail;
        text = api_json_print(policy);
        if (strlen(text) > POLICY_TEXT_MAX) {
            rc = err_set(&e, EFBIG, "the merged policy is over %d bytes", POLICY_TEXT_MAX);
            goto fail;
        }
        if ((rc = gw_policy_check_text(text, strlen(text), &e)) < 0) {
            err_wrap(&e, "the operations give an invalid policy");
            goto fail;
        }
        if (dry_run) {
            resp = cJSON_CreateObject();
            cJSON_AddItemToObject(resp, "policy", policy);
            policy = NULL;
            cJSON_AddStringToObject(resp, "base", source);
            cJSON_AddItemToObject(resp, "warnings", warnings);
            warnings = NULL;
            api_respond_json(st, 200, resp, owner->resource_version);
            goto out;
        }
        rc = gw_policy_write(gw, owner, expect ? expect : owner->resource_version, "json", text,
                             strlen(text), &version, hash, &e);
        /* A writer slipped in between our read and our write: start over
         * on the fresh state, unless the caller pinned a version. */
        if (rc == -ESTALE && !expect)
            continue;
        if (rc < 0)
            goto fail;
        break;
    }
    if (attempt == RETRIES) {
        rc = err_set(&e, ESTALE, "policy changed concurrently %d times; try again", RETRIES);
        goto fail;
    }
    resp = cJSON_CreateObject();
    cJSON_AddNumberToObject(resp, "version", (double)version);
    cJSON_AddStringToObject(resp, "policy_hash", hash);
    cJSON_AddStringToObject(resp, "status", "pending");
    cJSON_AddStringToObject(resp, "base", source);
    cJSON_AddItemToObject(resp, "warnings", warnings);
    warnings = NULL;
    api_respond_json(st, 200, resp, owner->resource_version);
    gw_policy_written(gw, owner);
    goto out;
fail:
    api_respond_err(st, rc, &e);
out:
    cJSON_Delete(body);
    cJSON_Delete(policy);
    cJSON_Delete(warnings);
    cJSON_Delete(resp);
    free(text);
    store_obj_free(owner);
}

void
gw_policy_ops_routes(struct gw *gw)
{
    h2_router_add(gw->router, "PATCH", "/v1/workspaces/{}/sandboxes/{}/policy", 0, h_patch_policy,
                  gw);
    h2_router_add(gw->router, "PATCH", "/v1/gateway/policy", 0, h_patch_policy, gw);
}
