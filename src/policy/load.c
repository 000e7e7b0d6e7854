/*
 * load.c: policy schema validation and compilation.
 *
 * The YAML tree from yaml.c is walked once against the schema of the
 * reference (doc/policy.md). Every error is recorded (with its position and
 * field path) and the walk goes on, so one run reports all of them. When no
 * error was found the compiled model (policy_int.h) is complete: blocks
 * sorted by key, endpoints numbered in (block, position) order, access
 * presets expanded into rules, globs compiled, the exact-host index built.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "policy_int.h"
#include "xfuncs.h"

#define LD_FIELD_MAX 1024
#define LD_MAX_FS_PATHS 256
#define LD_MAX_PATH 4096

struct ld {
    struct policy *p;
    struct pol_arena *a;
    const char *file;
    struct policy_diags *d;
    unsigned flags;
    char field[LD_FIELD_MAX];
    size_t flen;
    size_t errors;       /* errors seen here (d may be NULL) */
    const char *symroot; /* resolve binary symlinks under this root, or NULL */
    bool mcp_allow_all;  /* the endpoint being walked has mcp.allow_all_known_mcp_methods */
};

/* ------------------------------------------------------------------ field paths */

static size_t
ld_push_key(struct ld *l, const char *key)
{
    size_t old = l->flen;
    int n = snprintf(l->field + l->flen, LD_FIELD_MAX - l->flen, "%s%s", l->flen ? "." : "", key);

    if (n > 0)
        l->flen = l->flen + (size_t)n < LD_FIELD_MAX ? l->flen + (size_t)n : LD_FIELD_MAX - 1;
    return old;
}

static size_t
ld_push_idx(struct ld *l, size_t i)
{
    size_t old = l->flen;
    int n = snprintf(l->field + l->flen, LD_FIELD_MAX - l->flen, "[%zu]", i);

    if (n > 0)
        l->flen = l->flen + (size_t)n < LD_FIELD_MAX ? l->flen + (size_t)n : LD_FIELD_MAX - 1;
    return old;
}

static void
ld_pop(struct ld *l, size_t old)
{
    l->flen = old;
    l->field[old] = '\0';
}

static void __attribute__((format(printf, 3, 4)))
ld_err(struct ld *l, const struct py_node *n, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    l->errors++;
    policy_diag_add(l->d, l->file, POLICY_DIAG_ERROR, n ? n->line : 0, n ? n->col : 0, l->field,
                    "%s", msg);
}

static void __attribute__((format(printf, 3, 4)))
ld_warn(struct ld *l, const struct py_node *n, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    policy_diag_add(l->d, l->file, POLICY_DIAG_WARNING, n ? n->line : 0, n ? n->col : 0, l->field,
                    "%s", msg);
}

/* ------------------------------------------------------------------ scalar types */

static const char *
ld_kind(const struct py_node *n)
{
    if (n->kind == PY_MAP)
        return "a mapping";
    if (n->kind == PY_SEQ)
        return "a list";
    return "a scalar";
}

static bool
ld_is_null(const struct py_node *n)
{
    return !n || (n->kind == PY_SCALAR && n->plain &&
                  (n->len == 0 || strcmp(n->s, "~") == 0 || strcmp(n->s, "null") == 0 ||
                   strcmp(n->s, "Null") == 0 || strcmp(n->s, "NULL") == 0));
}

/* A string value: returns it, or NULL (null value, or an error recorded). */
static const char *
ld_str(struct ld *l, const struct py_node *n)
{
    if (ld_is_null(n))
        return NULL;
    if (n->kind != PY_SCALAR) {
        ld_err(l, n, "expected a string, got %s", ld_kind(n));
        return NULL;
    }
    return n->s;
}

/* A boolean: true/false only (YAML 1.2 core schema). Returns 0/1, or -1. */
static int
ld_bool(struct ld *l, const struct py_node *n)
{
    if (n->kind == PY_SCALAR && n->plain) {
        if (!strcmp(n->s, "true") || !strcmp(n->s, "True") || !strcmp(n->s, "TRUE"))
            return 1;
        if (!strcmp(n->s, "false") || !strcmp(n->s, "False") || !strcmp(n->s, "FALSE"))
            return 0;
    }
    ld_err(l, n, "expected true or false, got '%s'", n->kind == PY_SCALAR ? n->s : ld_kind(n));
    return -1;
}

/* A decimal integer in [MIN, MAX]. Returns 0 and *OUT, or -1 (recorded). */
static int
ld_uint(struct ld *l, const struct py_node *n, unsigned long long min, unsigned long long max,
        const char *what, unsigned long long *out)
{
    unsigned long long v = 0;
    const char *s;

    if (n->kind != PY_SCALAR || !n->plain || n->len == 0 || n->len > 20) {
        ld_err(l, n, "expected %s (an integer in %llu..%llu), got %s%s%s", what, min, max,
               n->kind == PY_SCALAR ? "'" : "", n->kind == PY_SCALAR ? n->s : ld_kind(n),
               n->kind == PY_SCALAR ? "'" : "");
        return -1;
    }
    s = n->s;
    if (*s == '+')
        s++;
    if (!*s)
        goto bad;
    for (; *s; s++) {
        if (*s < '0' || *s > '9')
            goto bad;
        if (v > (~0ULL - 9) / 10)
            goto range;
        v = v * 10 + (unsigned long long)(*s - '0');
    }
    if (v < min || v > max)
        goto range;
    *out = v;
    return 0;
bad:
    ld_err(l, n, "expected %s (an integer in %llu..%llu), got '%s'", what, min, max, n->s);
    return -1;
range:
    if (max == 65535 && v > 65535)
        /* The reference's parser words an oversized port this way. */
        ld_err(l, n, "invalid value: integer `%s`, expected u16 (%s must be in %llu..%llu)", n->s,
               what, min, max);
    else
        ld_err(l, n, "%s %s is out of range (expected %llu..%llu)", what, n->s, min, max);
    return -1;
}

/* Check N is a mapping; records an error otherwise. */
static bool
ld_map(struct ld *l, const struct py_node *n, const char *what)
{
    if (n->kind == PY_MAP)
        return true;
    ld_err(l, n, "expected %s (a mapping), got %s", what, ld_kind(n));
    return false;
}

static bool
ld_seq(struct ld *l, const struct py_node *n, const char *what)
{
    if (n->kind == PY_SEQ)
        return true;
    ld_err(l, n, "expected %s (a list), got %s", what, ld_kind(n));
    return false;
}

static void
ld_unknown(struct ld *l, const struct py_node *key, const char *expected)
{
    /* Worded like the reference's parser ("unknown field `x`, expected one
     * of `a`, `b`"), which users may already grep for. */
    size_t o = ld_push_key(l, key->s), n = 0;
    const char *s = expected;
    char list[1024];

    while (*s && n + 4 < sizeof(list)) {
        const char *e = strstr(s, ", ");
        size_t len = e ? (size_t)(e - s) : strlen(s);
        int w = snprintf(list + n, sizeof(list) - n, "%s`%.*s`", n ? ", " : "", (int)len, s);
        if (w < 0 || (size_t)w >= sizeof(list) - n)
            break;
        n += (size_t)w;
        s += len + (e ? 2 : 0);
    }
    list[n] = '\0';
    ld_err(l, key, "unknown field `%s`, expected one of %s", key->s, list);
    ld_pop(l, o);
}

/* ------------------------------------------------------------------ paths */

/* Why PATH is not an absolute canonical path, or NULL. */
static const char *
ld_path_problem(const char *path)
{
    size_t n = strlen(path);

    if (n == 0)
        return "path must not be empty";
    if (path[0] != '/')
        return "path must be absolute (start with '/')";
    if (n > LD_MAX_PATH)
        return "path exceeds maximum length (> 4096)";
    for (const char *s = path; *s; s++) {
        if (s[0] != '/')
            continue;
        if (s[1] == '.' && s[2] == '.' && (s[3] == '/' || !s[3]))
            return "path contains '..' traversal component";
        if (s[1] == '.' && (s[2] == '/' || !s[2]))
            return "path is not canonical (contains a '.' component)";
        if (s[1] == '/')
            return "path is not canonical (repeated '/')";
        if (!s[1] && s != path)
            return "path is not canonical (trailing '/')";
    }
    return NULL;
}

static const char **
ld_fs_list(struct ld *l, const struct py_node *n, bool rw, size_t *count, size_t *total)
{
    const char **v;

    *count = 0;
    if (ld_is_null(n))
        return NULL;
    if (!ld_seq(l, n, rw ? "read_write paths" : "read_only paths"))
        return NULL;
    v = policy_arena_alloc(l->a, (n->n ? n->n : 1) * sizeof(*v));
    for (size_t i = 0; i < n->n; i++) {
        size_t o = ld_push_idx(l, i);
        const char *s = ld_str(l, n->items[i]);
        const char *why;

        if (!s) {
            if (ld_is_null(n->items[i]))
                ld_err(l, n->items[i], "expected a path, got null");
        } else if ((why = ld_path_problem(s))) {
            ld_err(l, n->items[i], "%s: %.80s", why, s);
        } else if (rw && strcmp(s, "/") == 0) {
            ld_err(l, n->items[i], "read-write path is overly broad: %s", s);
        } else {
            v[(*count)++] = s;
        }
        ld_pop(l, o);
    }
    *total += n->n;
    return v;
}

static void
ld_filesystem(struct ld *l, const struct py_node *n)
{
    static const char keys[] = "include_workdir, read_only, read_write";
    const struct py_node *ro = NULL, *rw = NULL;
    size_t total = 0;

    l->p->fs_present = true;
    l->p->include_workdir = false;
    if (ld_is_null(n))
        return;
    if (!ld_map(l, n, "filesystem_policy"))
        return;
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        const struct py_node *v = n->vals[i];
        size_t o = ld_push_key(l, k);

        if (!strcmp(k, "include_workdir")) {
            int b = ld_bool(l, v);
            if (b >= 0)
                l->p->include_workdir = b;
        } else if (!strcmp(k, "read_only")) {
            ro = v;
            l->p->ro = ld_fs_list(l, v, false, &l->p->nro, &total);
        } else if (!strcmp(k, "read_write")) {
            rw = v;
            l->p->rw = ld_fs_list(l, v, true, &l->p->nrw, &total);
        } else {
            ld_pop(l, o);
            ld_unknown(l, n->items[i], keys);
            continue;
        }
        ld_pop(l, o);
    }
    if (total > LD_MAX_FS_PATHS)
        ld_err(l, rw ? rw : ro, "too many filesystem paths (%zu > %d)", total, LD_MAX_FS_PATHS);
}

static void
ld_landlock(struct ld *l, const struct py_node *n)
{
    if (ld_is_null(n) || !ld_map(l, n, "landlock"))
        return;
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        size_t o = ld_push_key(l, k);

        if (!strcmp(k, "compatibility")) {
            const char *s = ld_str(l, n->vals[i]);

            if (!s)
                ;
            else if (!strcmp(s, "best_effort"))
                l->p->landlock = POLICY_LANDLOCK_BEST_EFFORT;
            else if (!strcmp(s, "hard_requirement"))
                l->p->landlock = POLICY_LANDLOCK_HARD_REQUIREMENT;
            else
                ld_err(l, n->vals[i],
                       "unknown compatibility '%s' (expected best_effort or hard_requirement)", s);
        } else {
            ld_pop(l, o);
            ld_unknown(l, n->items[i], "compatibility");
            continue;
        }
        ld_pop(l, o);
    }
}

/* run_as_user / run_as_group: "sandbox" or a decimal id in [1, 4294967294]. */
static const char *
ld_identity(struct ld *l, const struct py_node *v, const char *what)
{
    const char *s = ld_is_null(v) ? NULL : (v->kind == PY_SCALAR ? v->s : NULL);
    unsigned long long id = 0;
    bool ok = true;

    if (!ld_is_null(v) && v->kind != PY_SCALAR) {
        ld_err(l, v, "expected a string, got %s", ld_kind(v));
        return NULL;
    }
    if (!s || !*s)
        return NULL;
    if (strcmp(s, "sandbox") != 0) {
        size_t n = strlen(s);
        if (n == 0 || n > 10)
            ok = false;
        for (size_t i = 0; ok && i < n; i++) {
            if (s[i] < '0' || s[i] > '9')
                ok = false;
            else
                id = id * 10 + (unsigned long long)(s[i] - '0');
        }
        if (ok && (id < 1 || id > 4294967294ULL || s[0] == '0'))
            ok = false;
    }
    if (!ok) {
        ld_err(l, v, "%s must be 'sandbox' or a numeric UID/GID in range [1, 4294967294], got '%s'",
               what, s);
        return NULL;
    }
    return s;
}

static void
ld_process(struct ld *l, const struct py_node *n)
{
    if (ld_is_null(n) || !ld_map(l, n, "process"))
        return;
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        size_t o = ld_push_key(l, k);

        if (!strcmp(k, "run_as_user"))
            l->p->run_as_user = ld_identity(l, n->vals[i], "run_as_user");
        else if (!strcmp(k, "run_as_group"))
            l->p->run_as_group = ld_identity(l, n->vals[i], "run_as_group");
        else {
            ld_pop(l, o);
            ld_unknown(l, n->items[i], "run_as_user, run_as_group");
            continue;
        }
        ld_pop(l, o);
    }
}

/* ------------------------------------------------------------------ hosts */

/* Why HOST (already lower-cased) is not an acceptable endpoint host, or NULL. */
static const char *
ld_host_problem(const char *host, bool tcp)
{
    size_t n = strlen(host), labels = 1;
    const char *dot;

    if (n > 253)
        return "host longer than 253 characters";
    if (strchr(host, ':')) {
        struct policy_addr a;

        if (policy_addr_parse(host, &a) < 0 || host[0] == '[')
            return "invalid IPv6 address (write it without brackets)";
        return tcp ? "must use a DNS hostname, not an IP literal" : NULL;
    }
    for (const char *s = host; *s; s++) {
        char c = *s;
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
              c == '_' || c == '*'))
            return "invalid character in host (expected a DNS name, an IP address or a "
                   "'*.'-wildcard)";
        if (c == '.')
            labels++;
    }
    if (host[0] == '.' || host[n - 1] == '.' || strstr(host, ".."))
        return "host has an empty label (leading, trailing or repeated '.')";
    for (const char *s = host; *s;) {
        const char *e = strchr(s, '.');
        size_t ll = e ? (size_t)(e - s) : strlen(s);
        if (ll > 63)
            return "host label longer than 63 characters";
        s += ll + (e ? 1 : 0);
        if (!e)
            break;
    }
    if (tcp && policy_is_ip_literal(host))
        return "must use a DNS hostname, not an IP literal";
    if (!strchr(host, '*'))
        return NULL;
    if (!strcmp(host, "*") || !strcmp(host, "**"))
        return "wildcard host matches every host";
    dot = strchr(host, '.');
    if (dot && strchr(dot, '*'))
        return "'*' is only allowed in the first label (e.g. *.example.com)";
    if (strstr(host, "**") && (dot ? (size_t)(dot - host) : n) != 2)
        return "'**' must be a whole label (e.g. **.example.com)";
    if (labels <= 2)
        return "wildcard host is too broad (a wildcard needs at least two fixed labels, e.g. "
               "*.example.com)";
    return NULL;
}

/* ------------------------------------------------------------------ L7 rules */

struct ld_ep {
    const struct py_node *node;
    const char *host;
    const struct py_node *host_n;
    unsigned long long port;
    const struct py_node *port_n, *ports_n;
    const char *path;
    const struct py_node *path_n;
    const char *protocol, *tls, *enforcement, *access;
    const struct py_node *protocol_n, *tls_n, *enforcement_n, *access_n;
    const struct py_node *rules, *deny_rules, *allowed_ips;
    int allow_encoded_slash, ws_rewrite, body_rewrite, uninspected;
    const struct py_node *ws_rewrite_n, *body_rewrite_n;
    const struct py_node *signing, *binding, *gql_n, *jsonrpc_n, *mcp_n;
};

static bool
ld_token(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') ||
              strchr("!#$%&'+-.^_`|~", *s)))
            return false;
    return true;
}

static struct pg_glob *
ld_glob(struct ld *l, const struct py_node *n, const char *pat, char sep, enum pg_mode mode)
{
    const char *why;
    struct pg_glob *g = policy_glob_compile(l->a, pat, sep, mode, &why);

    if (!g)
        ld_err(l, n, "invalid pattern '%s': %s", pat, why);
    return g;
}

/* A query matcher value: glob string, {any: [globs]} or {glob: "..."}. */
static bool
ld_qmatch(struct ld *l, const struct py_node *key, const struct py_node *v, struct pol_qmatch *q)
{
    size_t o = ld_push_key(l, key->s);
    bool ok = false;

    q->key = key->s;
    if (v->kind == PY_SCALAR && !ld_is_null(v)) {
        q->globs = policy_arena_alloc(l->a, sizeof(*q->globs));
        if ((q->globs[0] = ld_glob(l, v, v->s, '.', PG_PATH)))
            q->nglobs = 1, ok = true;
    } else if (v->kind == PY_MAP) {
        const struct py_node *any = NULL, *glob = NULL;

        for (size_t i = 0; i < v->n; i++) {
            if (!strcmp(v->items[i]->s, "any"))
                any = v->vals[i];
            else if (!strcmp(v->items[i]->s, "glob"))
                glob = v->vals[i];
            else
                ld_err(l, v->items[i],
                       "unknown matcher key '%s': only `glob` or `any` are supported",
                       v->items[i]->s);
        }
        if (any && glob) {
            ld_err(l, v, "`glob` and `any` cannot be used together");
        } else if (glob) {
            if (glob->kind != PY_SCALAR || ld_is_null(glob)) {
                ld_err(l, glob, "`glob` must be a string");
            } else {
                q->globs = policy_arena_alloc(l->a, sizeof(*q->globs));
                if ((q->globs[0] = ld_glob(l, glob, glob->s, '.', PG_PATH)))
                    q->nglobs = 1, ok = true;
            }
        } else if (any) {
            if (any->kind != PY_SEQ || any->n == 0) {
                ld_err(l, any, "`any` must be a non-empty list of glob strings");
            } else {
                ok = true;
                q->globs = policy_arena_alloc(l->a, any->n * sizeof(*q->globs));
                for (size_t i = 0; i < any->n; i++) {
                    const struct py_node *it = any->items[i];
                    if (it->kind != PY_SCALAR || ld_is_null(it)) {
                        ld_err(l, it, "`any` items must be glob strings");
                        ok = false;
                    } else if ((q->globs[q->nglobs] = ld_glob(l, it, it->s, '.', PG_PATH))) {
                        q->nglobs++;
                    } else {
                        ok = false;
                    }
                }
            }
        } else {
            ld_err(l, v, "empty matcher: use a glob string or {any: [...]}");
        }
    } else {
        ld_err(l, v, "expected a glob string or {any: [...]}, got %s",
               ld_is_null(v) ? "null" : ld_kind(v));
    }
    ld_pop(l, o);
    return ok;
}

static const char *const ld_std_methods[] = { "GET",    "HEAD",    "POST",  "PUT",    "PATCH",
                                              "DELETE", "OPTIONS", "TRACE", "CONNECT" };

/* Rules of the protocols this build refuses (graphql, json-rpc, mcp) are
 * still validated as the reference validates them, so a policy written for
 * a later build gets every error now, not one at a time. */
static void
ld_rule_other(struct ld *l, const struct py_node *n, const char *proto)
{
    bool gql = !strcmp(proto, "graphql"), jrpc = !strcmp(proto, "json-rpc");
    const struct py_node *method = NULL, *optype = NULL, *opname = NULL, *fields = NULL,
                         *tool = NULL, *params = NULL, *pname = NULL;

    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        const struct py_node *v = n->vals[i];
        bool ok = true;

        if (!strcmp(k, "method"))
            method = v, ok = !gql;
        else if (!strcmp(k, "operation_type"))
            optype = v, ok = gql;
        else if (!strcmp(k, "operation_name"))
            opname = v, ok = gql;
        else if (!strcmp(k, "fields"))
            fields = v, ok = gql;
        else if (!strcmp(k, "tool"))
            tool = v, ok = !gql && !jrpc;
        else if (!strcmp(k, "params"))
            params = v, ok = !gql && !jrpc;
        else
            ok = false; /* path, query, command */
        if (!ok) {
            size_t o = ld_push_key(l, k);
            ld_err(l, n->items[i], "'%s' is not valid for protocol %s", k, proto);
            ld_pop(l, o);
        }
    }
    if (gql) {
        size_t o = ld_push_key(l, "operation_type");
        const char *t = optype ? ld_str(l, optype) : NULL;

        if (!t)
            ld_err(l, optype ? optype : n,
                   "missing field `operation_type` (query, mutation or "
                   "subscription)");
        else if (strcmp(t, "query") && strcmp(t, "mutation") && strcmp(t, "subscription"))
            ld_err(l, optype, "operation_type must be query, mutation or subscription, got '%s'",
                   t);
        ld_pop(l, o);
        if (opname && ld_str(l, opname)) {
            o = ld_push_key(l, "operation_name");
            ld_glob(l, opname, opname->s, '.', PG_PATH);
            ld_pop(l, o);
        }
        if (fields) {
            o = ld_push_key(l, "fields");
            if (ld_seq(l, fields, "a list of root field globs")) {
                if (fields->n == 0)
                    ld_err(l, fields, "fields must not be empty (omit it to match any field)");
                for (size_t i = 0; i < fields->n; i++)
                    if (ld_str(l, fields->items[i]))
                        ld_glob(l, fields->items[i], fields->items[i]->s, '.', PG_PATH);
            }
            ld_pop(l, o);
        }
        return;
    }
    if (params && ld_map(l, params, "params")) {
        for (size_t i = 0; i < params->n; i++) {
            if (!strcmp(params->items[i]->s, "name")) {
                pname = params->vals[i];
            } else {
                size_t o = ld_push_key(l, "params");
                ld_err(l, params->items[i], "tool argument matching is not supported yet ('%s')",
                       params->items[i]->s);
                ld_pop(l, o);
            }
        }
    }
    if (!method && (jrpc || !l->mcp_allow_all)) {
        ld_err(l, n,
               jrpc ? "missing field `method` (an exact JSON-RPC method name or \"*\")"
                    : "missing field `method` (or set mcp.allow_all_known_mcp_methods)");
    } else if (method) {
        size_t o = ld_push_key(l, "method");
        const char *m = ld_str(l, method);

        if (m && jrpc && strcmp(m, "*") && strpbrk(m, "*?[]{}"))
            ld_err(l, method, "json-rpc method must be an exact name or \"*\", got '%s'", m);
        else if (m && !jrpc && !strcmp(m, "*"))
            ld_err(l, method,
                   "method \"*\" is not allowed for mcp (use "
                   "mcp.allow_all_known_mcp_methods)");
        else if (m && !jrpc && strpbrk(m, "*?[]{}") && strncmp(m, "tools/", 6))
            ld_err(l, method, "mcp method globs are only allowed in the tools/ family, got '%s'",
                   m);
        else if (m && !jrpc && (tool || pname) && strcmp(m, "tools/call"))
            ld_err(l, method, "a tool selector needs method tools/call, got '%s'", m);
        ld_pop(l, o);
    }
    if (tool && pname)
        ld_err(l, tool, "use either tool or params.name, not both");
    if (tool || pname) {
        struct pol_qmatch q;
        memset(&q, 0, sizeof(q));
        ld_qmatch(l, tool ? n->items[0] : params->items[0], tool ? tool : pname, &q);
    }
}

/* One allow (the mapping under `allow:`) or deny rule body. */
static void
ld_l7rule(struct ld *l, const struct py_node *n, const char *proto, bool deny, struct pol_l7rule *r)
{
    static const char keys[] =
        "method, path, command, query, operation_type, operation_name, fields, tool, params";
    bool rest = !strcmp(proto, "rest"), ws = !strcmp(proto, "websocket"),
         sql = !strcmp(proto, "sql");
    const struct py_node *method = NULL, *path = NULL, *command = NULL, *query = NULL;

    if (ld_is_null(n) || !ld_map(l, n, deny ? "a deny rule" : "an allow rule"))
        return;
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        const struct py_node *v = n->vals[i];
        size_t o = ld_push_key(l, k);

        if (!strcmp(k, "method"))
            method = v;
        else if (!strcmp(k, "path"))
            path = v;
        else if (!strcmp(k, "command"))
            command = v;
        else if (!strcmp(k, "query"))
            query = v;
        else if (!strcmp(k, "operation_type") || !strcmp(k, "operation_name") ||
                 !strcmp(k, "fields")) {
            if (rest || sql)
                ld_err(l, n->items[i], "'%s' is only valid for protocol graphql", k);
            else if (ws)
                ld_err(l, n->items[i], "GraphQL over WebSocket is not supported yet");
        } else if (!strcmp(k, "tool") || !strcmp(k, "params")) {
            if (rest || ws || sql)
                ld_err(l, n->items[i], "'%s' is only valid for protocol mcp", k);
        } else {
            ld_pop(l, o);
            ld_unknown(l, n->items[i], keys);
            continue;
        }
        ld_pop(l, o);
    }
    if (!rest && !ws && !sql) {
        ld_rule_other(l, n, proto); /* the endpoint is refused anyway */
        return;
    }
    if (sql) {
        size_t o;
        if (method || path || query)
            ld_err(l,
                   method ? method
                   : path ? path
                          : query,
                   "protocol sql rules use `command` only");
        if (!command) {
            ld_err(l, n, "missing field `command` (protocol sql)");
            return;
        }
        o = ld_push_key(l, "command");
        if (ld_str(l, command)) {
            char *m = policy_arena_strdup(l->a, command->s);
            for (char *c = m; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                    *c = (char)(*c - 'a' + 'A');
            r->method = m;
            r->path_any = true;
        }
        ld_pop(l, o);
        return;
    }
    if (command) {
        size_t o = ld_push_key(l, "command");
        ld_err(l, command, "'command' is only valid for protocol sql");
        ld_pop(l, o);
    }
    /* method */
    if (!method || ld_is_null(method)) {
        ld_err(l, n, "missing field `method` (use \"*\" for any method)");
    } else {
        size_t o = ld_push_key(l, "method");
        const char *m = ld_str(l, method);

        if (m) {
            char *u = policy_arena_strdup(l->a, m);
            for (char *c = u; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                    *c = (char)(*c - 'a' + 'A');
            if (ws) {
                if (strcmp(u, "GET") && strcmp(u, "WEBSOCKET_TEXT") && strcmp(u, "*"))
                    ld_err(l, method,
                           "websocket rules allow method GET, WEBSOCKET_TEXT or \"*\", got '%s'",
                           m);
                else
                    r->method = u;
            } else if (strcmp(u, "*") != 0 && !ld_token(u)) {
                ld_err(l, method, "invalid HTTP method '%s'", m);
            } else {
                bool std = !strcmp(u, "*");
                for (size_t i = 0; !std && i < sizeof(ld_std_methods) / sizeof(*ld_std_methods);
                     i++)
                    std = !strcmp(u, ld_std_methods[i]);
                if (!std)
                    ld_warn(l, method, "non-standard HTTP method '%s'", m);
                r->method = u;
            }
        }
        ld_pop(l, o);
    }
    /* path */
    if (!path || ld_is_null(path)) {
        ld_err(l, n, "missing field `path` (use \"**\" for every path)");
    } else {
        size_t o = ld_push_key(l, "path");
        const char *s = ld_str(l, path);

        if (s) {
            r->path_text = s;
            if (!strcmp(s, "**"))
                r->path_any = true;
            else if (s[0] != '/' && strncmp(s, "**/", 3) != 0)
                ld_err(l, path, "path must start with '/' or be '**', got '%s'", s);
            else if (strlen(s) > LD_MAX_PATH)
                ld_err(l, path, "path longer than 4096 bytes");
            else
                r->path = ld_glob(l, path, s, '/', PG_PATH);
        }
        ld_pop(l, o);
    }
    /* query */
    if (query && !ld_is_null(query)) {
        size_t o = ld_push_key(l, "query");

        if (ld_map(l, query, "query matchers")) {
            r->query = policy_arena_alloc(l->a, (query->n ? query->n : 1) * sizeof(*r->query));
            for (size_t i = 0; i < query->n; i++)
                if (ld_qmatch(l, query->items[i], query->vals[i], &r->query[r->nquery]))
                    r->nquery++;
            if (query->n == 0)
                ld_err(l, query, "empty query matcher map");
        }
        ld_pop(l, o);
    }
}

/* rules: [ {allow: {...}}, ... ] */
static void
ld_rules(struct ld *l, const struct py_node *n, const char *proto, struct pol_endpoint *ep)
{
    if (!ld_seq(l, n, "a list of {allow: ...} rules"))
        return;
    if (n->n == 0) {
        ld_err(l, n, "rules is empty: it would deny all traffic (omit it or add rules)");
        return;
    }
    ep->allow = policy_arena_alloc(l->a, n->n * sizeof(*ep->allow));
    for (size_t i = 0; i < n->n; i++) {
        const struct py_node *it = n->items[i];
        const struct py_node *allow = NULL;
        size_t o = ld_push_idx(l, i);

        if (ld_map(l, it, "a rule ({allow: ...})")) {
            for (size_t k = 0; k < it->n; k++) {
                if (!strcmp(it->items[k]->s, "allow"))
                    allow = it->vals[k];
                else
                    ld_unknown(l, it->items[k], "allow");
            }
            if (!allow) {
                ld_err(l, it, "missing field `allow`");
            } else {
                size_t o2 = ld_push_key(l, "allow");
                ld_l7rule(l, allow, proto, false, &ep->allow[ep->nallow++]);
                ld_pop(l, o2);
            }
        }
        ld_pop(l, o);
    }
}

static void
ld_deny_rules(struct ld *l, const struct py_node *n, const char *proto, struct pol_endpoint *ep)
{
    if (!ld_seq(l, n, "a list of deny rules"))
        return;
    if (n->n == 0) {
        ld_err(l, n, "deny_rules is empty (omit it or add rules)");
        return;
    }
    ep->deny = policy_arena_alloc(l->a, n->n * sizeof(*ep->deny));
    for (size_t i = 0; i < n->n; i++) {
        size_t o = ld_push_idx(l, i);
        ld_l7rule(l, n->items[i], proto, true, &ep->deny[ep->ndeny++]);
        ld_pop(l, o);
    }
}

/* Access presets (reference §3.6.4) as explicit allow rules. */
static void
ld_expand_access(struct ld *l, struct pol_endpoint *ep, const char *access, const char *proto)
{
    static const char *const rest_ro[] = { "GET", "HEAD", "OPTIONS" };
    static const char *const rest_rw[] = { "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH" };
    static const char *const ws_ro[] = { "GET" };
    static const char *const ws_rw[] = { "GET", "WEBSOCKET_TEXT" };
    static const char *const all[] = { "*" };
    const char *const *m;
    size_t n;
    bool ws = !strcmp(proto, "websocket");

    if (!strcmp(access, "read-only"))
        m = ws ? ws_ro : rest_ro, n = ws ? 1 : 3;
    else if (!strcmp(access, "read-write"))
        m = ws ? ws_rw : rest_rw, n = ws ? 2 : 6;
    else
        m = all, n = 1;
    ep->allow = policy_arena_alloc(l->a, n * sizeof(*ep->allow));
    ep->nallow = n;
    for (size_t i = 0; i < n; i++) {
        ep->allow[i].method = m[i];
        ep->allow[i].path_any = true;
        ep->allow[i].path_text = "**";
    }
}

/* ------------------------------------------------------------------ endpoints */

static const char ld_ep_keys[] =
    "host, port, ports, path, protocol, tls, enforcement, access, rules, deny_rules, allowed_ips, "
    "allow_encoded_slash, websocket_credential_rewrite, request_body_credential_rewrite, "
    "allow_uninspected_credentials, credential_signing, signing_service, signing_region, "
    "credential_binding, persisted_queries, graphql_persisted_queries, graphql_max_body_bytes, "
    "json_rpc, mcp";

static int
ld_cmp_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static void
ld_endpoint(struct ld *l, const struct py_node *n, struct pol_endpoint *ep)
{
    struct ld_ep r;
    const char *proto = "";
    bool tcp, l7;

    memset(&r, 0, sizeof(r));
    r.node = n;
    l->mcp_allow_all = false;
    r.allow_encoded_slash = r.ws_rewrite = r.body_rewrite = r.uninspected = 0;
    ep->line = n->line;
    ep->col = n->col;
    if (!ld_map(l, n, "an endpoint"))
        return;
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        const struct py_node *v = n->vals[i];
        size_t o = ld_push_key(l, k);
        int b;

#define LD_STRKEY(name, field)                                                                     \
    if (!strcmp(k, name)) {                                                                        \
        r.field = ld_str(l, v);                                                                    \
        r.field##_n = v;                                                                           \
    } else
        LD_STRKEY("host", host)
        LD_STRKEY("path", path)
        LD_STRKEY("protocol", protocol)
        LD_STRKEY("tls", tls)
        LD_STRKEY("enforcement", enforcement)
        LD_STRKEY("access", access)
        if (!strcmp(k, "port")) {
            r.port_n = v;
            if (ld_uint(l, v, 1, 65535, "port", &r.port) < 0)
                r.port = 0;
        } else if (!strcmp(k, "ports")) {
            r.ports_n = v;
        } else if (!strcmp(k, "rules")) {
            r.rules = v;
        } else if (!strcmp(k, "deny_rules")) {
            r.deny_rules = v;
        } else if (!strcmp(k, "allowed_ips")) {
            r.allowed_ips = v;
        } else if (!strcmp(k, "allow_encoded_slash")) {
            if ((b = ld_bool(l, v)) >= 0)
                r.allow_encoded_slash = b;
        } else if (!strcmp(k, "websocket_credential_rewrite")) {
            r.ws_rewrite_n = v;
            if ((b = ld_bool(l, v)) >= 0)
                r.ws_rewrite = b;
        } else if (!strcmp(k, "request_body_credential_rewrite")) {
            r.body_rewrite_n = v;
            if ((b = ld_bool(l, v)) >= 0)
                r.body_rewrite = b;
        } else if (!strcmp(k, "allow_uninspected_credentials")) {
            if ((b = ld_bool(l, v)) >= 0)
                r.uninspected = b;
        } else if (!strcmp(k, "credential_signing") || !strcmp(k, "signing_service") ||
                   !strcmp(k, "signing_region")) {
            if (ld_str(l, v) && !strcmp(k, "credential_signing")) {
                if (strcmp(v->s, "sigv4") && strcmp(v->s, "sigv4:body") &&
                    strcmp(v->s, "sigv4:no_body"))
                    ld_err(l, v,
                           "unknown credential_signing '%s' (expected sigv4, sigv4:body or "
                           "sigv4:no_body)",
                           v->s);
                r.signing = v;
            }
        } else if (!strcmp(k, "credential_binding")) {
            r.binding = v;
            if (ld_map(l, v, "credential_binding")) {
                bool prov = false;
                for (size_t j = 0; j < v->n; j++) {
                    if (!strcmp(v->items[j]->s, "provider"))
                        prov = true;
                    else
                        ld_unknown(l, v->items[j], "provider");
                }
                if (!prov)
                    ld_err(l, v, "missing field `provider`");
            }
        } else if (!strcmp(k, "persisted_queries") || !strcmp(k, "graphql_persisted_queries") ||
                   !strcmp(k, "graphql_max_body_bytes")) {
            r.gql_n = n->items[i];
            if (!strcmp(k, "persisted_queries") && ld_str(l, v) && strcmp(v->s, "deny") &&
                strcmp(v->s, "allow_registered"))
                ld_err(l, v, "unknown persisted_queries '%s' (expected deny or allow_registered)",
                       v->s);
            if (!strcmp(k, "graphql_max_body_bytes")) {
                unsigned long long x;
                ld_uint(l, v, 1, 4294967295ULL, "graphql_max_body_bytes", &x);
            }
        } else if (!strcmp(k, "json_rpc") || !strcmp(k, "mcp")) {
            if (!strcmp(k, "json_rpc"))
                r.jsonrpc_n = n->items[i];
            else
                r.mcp_n = n->items[i];
            if (ld_map(l, v, k)) {
                for (size_t j = 0; j < v->n; j++) {
                    const char *sk = v->items[j]->s;
                    bool ok = !strcmp(sk, "max_body_bytes") ||
                              (!strcmp(k, "mcp") && (!strcmp(sk, "strict_tool_names") ||
                                                     !strcmp(sk, "allow_all_known_mcp_methods")));
                    size_t o2 = ld_push_key(l, sk);
                    unsigned long long x;

                    if (!strcmp(sk, "max_body_bytes"))
                        ld_uint(l, v->vals[j], 1, 4294967295ULL, "max_body_bytes", &x);
                    else if (ok && ld_bool(l, v->vals[j]) == 1 &&
                             !strcmp(sk, "allow_all_known_mcp_methods"))
                        l->mcp_allow_all = true;
                    ld_pop(l, o2);
                    if (!ok)
                        ld_unknown(l, v->items[j],
                                   !strcmp(k, "mcp") ? "max_body_bytes, strict_tool_names, "
                                                       "allow_all_known_mcp_methods"
                                                     : "max_body_bytes");
                }
            }
        } else {
            ld_pop(l, o);
            ld_unknown(l, n->items[i], ld_ep_keys);
            continue;
        }
#undef LD_STRKEY
        ld_pop(l, o);
    }

    /* protocol */
    if (r.protocol) {
        size_t o = ld_push_key(l, "protocol");
        static const char *const known[] = { "tcp", "rest",     "websocket", "graphql",
                                             "sql", "json-rpc", "mcp" };
        bool ok = r.protocol[0] == '\0';

        for (size_t i = 0; !ok && i < sizeof(known) / sizeof(*known); i++)
            ok = !strcmp(r.protocol, known[i]);
        if (!ok)
            ld_err(l, r.protocol_n,
                   "unknown protocol '%s' (expected tcp, rest, websocket, graphql, sql, json-rpc, "
                   "or mcp)",
                   r.protocol);
        else
            proto = r.protocol;
        if (!strcmp(proto, "graphql") || !strcmp(proto, "json-rpc") || !strcmp(proto, "mcp"))
            ld_err(l, r.protocol_n,
                   "protocol '%s' is not supported yet (its requests cannot be inspected, so the "
                   "endpoint would not be enforced)",
                   proto);
        ld_pop(l, o);
    }
    tcp = !strcmp(proto, "tcp");
    l7 = !strcmp(proto, "rest") || !strcmp(proto, "websocket") || !strcmp(proto, "sql");
    ep->protocol = tcp                           ? POLICY_PROTO_TCP
                   : !strcmp(proto, "rest")      ? POLICY_PROTO_REST
                   : !strcmp(proto, "websocket") ? POLICY_PROTO_WEBSOCKET
                   : !strcmp(proto, "sql")       ? POLICY_PROTO_SQL
                                                 : POLICY_PROTO_NONE;
    ep->proto_l7 = l7;

    /* protocol-specific options outside their protocol */
    if (r.gql_n && strcmp(proto, "graphql") != 0)
        ld_err(l, r.gql_n, "'%s' is only valid with protocol graphql", r.gql_n->s);
    if (r.jsonrpc_n && strcmp(proto, "json-rpc") != 0 && strcmp(proto, "mcp") != 0)
        ld_err(l, r.jsonrpc_n, "'json_rpc' is only valid with protocol json-rpc or mcp");
    if (r.mcp_n && strcmp(proto, "mcp") != 0)
        ld_err(l, r.mcp_n, "'mcp' is only valid with protocol mcp");
    if (r.ws_rewrite && strcmp(proto, "rest") != 0 && strcmp(proto, "websocket") != 0)
        ld_warn(l, r.ws_rewrite_n,
                "websocket_credential_rewrite has no effect without protocol rest or websocket");
    if (r.body_rewrite && strcmp(proto, "rest") != 0)
        ld_warn(l, r.body_rewrite_n,
                "request_body_credential_rewrite has no effect without protocol rest");
    if (r.body_rewrite && r.signing)
        ld_err(l, r.signing,
               "request_body_credential_rewrite and credential_signing are mutually exclusive");
    if (r.signing)
        ld_err(l, r.signing, "credential_signing is not supported yet");
    if (r.binding)
        ld_err(l, r.binding, "credential_binding is not supported yet");

    /* host */
    {
        size_t o = ld_push_key(l, "host");
        const char *h = r.host ? r.host : "";
        char *lh = policy_arena_strdup(l->a, h);
        const char *why;

        for (char *c = lh; *c; c++)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
        ep->host = lh;
        if (!*lh) {
            bool has_ips = r.allowed_ips && r.allowed_ips->kind == PY_SEQ && r.allowed_ips->n > 0;
            if (!has_ips || tcp)
                ld_err(l, r.host_n ? r.host_n : n,
                       "endpoint host is required (only a non-tcp endpoint with allowed_ips may "
                       "omit it)");
        } else if ((why = ld_host_problem(lh, tcp))) {
            ld_err(l, r.host_n, "%s: '%s'", why, h);
        } else {
            if (strchr(lh, '*'))
                ep->hostg = ld_glob(l, r.host_n, lh, '.', PG_HOST);
            if (!strcmp(lh, "localhost") || !strcmp(lh, "metadata.google.internal"))
                ld_warn(l, r.host_n,
                        "'%s' resolves to a blocked address: connections will be "
                        "refused by the SSRF check",
                        h);
            else {
                struct policy_addr a;
                if (policy_addr_parse(lh, &a) == 0 && policy_addr_always_blocked(&a))
                    ld_warn(l, r.host_n,
                            "%s is a loopback, link-local or unspecified address: "
                            "connections will be refused by the SSRF check",
                            h);
            }
        }
        ld_pop(l, o);
    }

    /* ports */
    {
        const char *hname = r.host && *r.host ? r.host : "(hostless)";

        if (r.port_n && r.ports_n) {
            size_t o = ld_push_key(l, "ports");
            ld_err(l, r.ports_n, "use either port or ports, not both");
            ld_pop(l, o);
        }
        if (r.ports_n) {
            size_t o = ld_push_key(l, "ports");
            if (ld_seq(l, r.ports_n, "a list of ports")) {
                const struct py_node *pn = r.ports_n;
                ep->ports = policy_arena_alloc(l->a, (pn->n ? pn->n : 1) * sizeof(*ep->ports));
                for (size_t i = 0; i < pn->n; i++) {
                    unsigned long long v;
                    size_t o2 = ld_push_idx(l, i);
                    if (ld_uint(l, pn->items[i], 1, 65535, "port", &v) == 0)
                        ep->ports[ep->nports++] = (uint16_t)v;
                    ld_pop(l, o2);
                }
                qsort(ep->ports, ep->nports, sizeof(*ep->ports), ld_cmp_u16);
                for (size_t i = 1; i < ep->nports; i++)
                    if (ep->ports[i] == ep->ports[i - 1]) {
                        ld_warn(l, pn, "port %u listed twice", ep->ports[i]);
                        break;
                    }
                if (pn->n == 0)
                    ld_err(l, pn, "endpoint '%s' must declare at least one port", hname);
            }
            ld_pop(l, o);
        } else if (r.port_n) {
            if (r.port) {
                ep->ports = policy_arena_alloc(l->a, sizeof(*ep->ports));
                ep->ports[0] = (uint16_t)r.port;
                ep->nports = 1;
            }
        } else {
            ld_err(l, n, "endpoint '%s' must declare at least one port (port or ports)", hname);
        }
    }

    /* path selector */
    ep->path_sel = "";
    if (r.path && *r.path) {
        size_t o = ld_push_key(l, "path");
        if (r.path[0] != '/' && strcmp(r.path, "**") != 0) {
            ld_err(l, r.path_n, "path must start with '/' or be '**', got '%s'", r.path);
        } else if (strlen(r.path) > LD_MAX_PATH) {
            ld_err(l, r.path_n, "path longer than 4096 bytes");
        } else {
            ep->path_sel = r.path;
            ep->path_rego = ld_glob(l, r.path_n, r.path, '/', PG_PATH);
            ep->path_rust = ld_glob(l, r.path_n, r.path, '\0', PG_PATH);
            for (const char *c = r.path; *c; c++)
                if (*c != '*')
                    ep->path_spec++;
            if (!l7 && strcmp(proto, "graphql") && strcmp(proto, "json-rpc") &&
                strcmp(proto, "mcp"))
                ld_err(l, r.path_n,
                       "an endpoint path selector needs an L7 protocol (rest, "
                       "websocket)");
        }
        ld_pop(l, o);
    } else if (r.path_n && r.path && !*r.path) {
        ep->path_sel = "";
    }

    /* tls */
    ep->tls = POLICY_TLS_AUTO;
    if (r.tls) {
        size_t o = ld_push_key(l, "tls");
        if (!strcmp(r.tls, "skip")) {
            ep->tls = POLICY_TLS_SKIP;
            ep->tls_set = true;
        } else if (!strcmp(r.tls, "terminate") || !strcmp(r.tls, "passthrough")) {
            ld_warn(l, r.tls_n,
                    "tls: %s is deprecated: TLS is detected automatically (omit the "
                    "field)",
                    r.tls);
            ep->tls_set = true;
        } else if (*r.tls) {
            ld_err(l, r.tls_n, "unknown tls mode '%s' (expected skip; omit for automatic)", r.tls);
        }
        if (ep->tls == POLICY_TLS_SKIP && l7)
            ld_err(l, r.tls_n,
                   "tls: skip cannot be combined with protocol %s (a raw tunnel cannot "
                   "be inspected)",
                   proto);
        ld_pop(l, o);
    }

    /* enforcement (our default: enforce; sql is audit-only) */
    ep->enforce = strcmp(proto, "sql") != 0;
    if (r.enforcement) {
        size_t o = ld_push_key(l, "enforcement");
        if (!strcmp(r.enforcement, "enforce")) {
            if (!strcmp(proto, "sql"))
                ld_err(l, r.enforcement_n,
                       "protocol sql cannot enforce (there is no SQL parser): use audit");
            ep->enforce = true;
        } else if (!strcmp(r.enforcement, "audit")) {
            ep->enforce = false;
        } else {
            ld_err(l, r.enforcement_n, "unknown enforcement '%s' (expected enforce or audit)",
                   r.enforcement);
        }
        if (!l7 && *proto != '\0' && !tcp)
            ;
        else if (!l7)
            ld_warn(l, r.enforcement_n, "enforcement has no effect without an L7 protocol");
        ld_pop(l, o);
    }

    /* access / rules / deny_rules */
    if (r.access) {
        size_t o = ld_push_key(l, "access");
        if (strcmp(r.access, "read-only") && strcmp(r.access, "read-write") &&
            strcmp(r.access, "full"))
            ld_err(l, r.access_n, "unknown access '%s' (expected read-only, read-write or full)",
                   r.access);
        else if (r.rules)
            ld_err(l, r.access_n, "access and rules are mutually exclusive");
        else if (tcp || !strcmp(proto, "mcp") || !strcmp(proto, "json-rpc"))
            ld_err(l, r.access_n, "access is not valid for protocol %s", proto);
        else if (!l7 && !*proto)
            ld_err(l, r.access_n,
                   "access needs protocol rest or websocket (without a protocol the endpoint is "
                   "plain L4 and the preset would have no effect)");
        else if (!strcmp(proto, "sql"))
            ld_err(l, r.access_n, "access is not valid for protocol sql (use command rules)");
        else if (l7)
            ld_expand_access(l, ep, r.access, proto);
        ld_pop(l, o);
    }
    if (r.rules) {
        size_t o = ld_push_key(l, "rules");
        if (tcp)
            ld_err(l, r.rules, "protocol tcp endpoints cannot have L7 rules");
        else if (!*proto)
            ld_err(l, r.rules,
                   "rules need an L7 protocol (rest, websocket or sql); without one "
                   "the endpoint is plain L4 and the rules would have no effect");
        else
            ld_rules(l, r.rules, proto, ep);
        ld_pop(l, o);
    }
    if (r.deny_rules) {
        size_t o = ld_push_key(l, "deny_rules");
        if (tcp)
            ld_err(l, r.deny_rules, "protocol tcp endpoints cannot have L7 rules");
        else if (!*proto)
            ld_err(l, r.deny_rules, "deny_rules need an L7 protocol (rest or websocket)");
        else if (!r.rules && !r.access)
            ld_err(l, r.deny_rules, "deny_rules need allow rules or access to restrict");
        else
            ld_deny_rules(l, r.deny_rules, proto, ep);
        ld_pop(l, o);
    }
    if (l7 && !r.rules && !r.access)
        ld_err(l, r.protocol_n, "protocol %s requires rules or access", proto);
    if (ep->nallow) {
        bool any = false;
        for (size_t i = 0; i < ep->nallow; i++)
            any |= ep->allow[i].method && (ep->allow[i].path_any || ep->allow[i].path);
        if (!any && r.rules && l7) {
            size_t o = ld_push_key(l, "rules");
            ld_err(l, r.rules, "rules would deny all traffic");
            ld_pop(l, o);
        }
    }

    /* allowed_ips */
    if (r.allowed_ips && !ld_is_null(r.allowed_ips)) {
        size_t o = ld_push_key(l, "allowed_ips");
        const struct py_node *an = r.allowed_ips;

        if (ld_seq(l, an, "a list of IP addresses or CIDRs")) {
            if (an->n == 0)
                ld_err(l, an, "allowed_ips is empty (omit it)");
            if (tcp)
                ld_err(l, an,
                       "allowed_ips is not valid for protocol tcp (policy DNS pins the "
                       "addresses)");
            ep->allowed_ips =
                policy_arena_alloc(l->a, (an->n ? an->n : 1) * sizeof(*ep->allowed_ips));
            for (size_t i = 0; i < an->n; i++) {
                size_t o2 = ld_push_idx(l, i);
                const char *s = ld_str(l, an->items[i]);
                struct pol_cidr c;

                if (!s) {
                    if (ld_is_null(an->items[i]))
                        ld_err(l, an->items[i], "expected an IP address or CIDR, got null");
                } else if (policy_cidr_parse(s, &c) < 0) {
                    ld_err(l, an->items[i],
                           "invalid allowed_ips entry '%s' (expected an IP "
                           "address or CIDR such as 10.0.5.0/24)",
                           s);
                } else if (policy_cidr_overlaps_blocked(&c)) {
                    ld_err(l, an->items[i],
                           "allowed_ips entry '%s' covers loopback, link-local (cloud metadata) "
                           "or unspecified addresses, which are always blocked",
                           s);
                } else {
                    if ((c.addr.family == 4 && c.prefix < 16) ||
                        (c.addr.family == 6 && c.prefix < 32))
                        ld_warn(l, an->items[i], "allowed_ips entry '%s' is very broad", s);
                    ep->allowed_ips[ep->nallowed_ips++] = c;
                }
                ld_pop(l, o2);
            }
        }
        ld_pop(l, o);
    }
    ep->allow_encoded_slash = r.allow_encoded_slash > 0;
    ep->body_rewrite = r.body_rewrite > 0 && !strcmp(proto, "rest");
    if (ep->allow_encoded_slash && !l7)
        ld_warn(l, n, "allow_encoded_slash has no effect without protocol rest or websocket");
    ep->extended = (*proto && !tcp) || ep->nallowed_ips > 0 || ep->tls_set;
}

/* ------------------------------------------------------------------ blocks */

/* Resolve PATH (absolute) component by component under ROOT as the kernel
 * would, following at most 40 symlinks (relative targets against the link's
 * directory). Missing components are kept as written. Returns 0 with the
 * resolved absolute path in OUT, or -ELOOP / -ENAMETOOLONG. */
static int
pol_resolve(const char *root, const char *path, char *out, size_t outsz)
{
    char rest[2 * LD_MAX_PATH + 2], done[LD_MAX_PATH + 1], full[2 * LD_MAX_PATH + 2];
    char target[LD_MAX_PATH + 1];
    size_t dlen = 0;
    int hops = 0;
    bool rootdir = !strcmp(root, "/");

    if (buf_copy_fixed(rest, sizeof(rest), path) < 0)
        return -ENAMETOOLONG;
    done[0] = '\0';
    while (rest[0]) {
        char *c = rest, *slash;
        size_t cl;
        ssize_t n;

        while (*c == '/')
            c++;
        slash = strchr(c, '/');
        cl = slash ? (size_t)(slash - c) : strlen(c);
        if (cl == 0)
            break;
        if (cl == 1 && c[0] == '.') {
            memmove(rest, c + cl, strlen(c + cl) + 1);
            continue;
        }
        if (cl == 2 && c[0] == '.' && c[1] == '.') {
            while (dlen > 0 && done[dlen - 1] != '/')
                dlen--;
            if (dlen > 0)
                dlen--;
            done[dlen] = '\0';
            memmove(rest, c + cl, strlen(c + cl) + 1);
            continue;
        }
        if (dlen + 1 + cl >= sizeof(done))
            return -ENAMETOOLONG;
        done[dlen] = '/';
        memcpy(done + dlen + 1, c, cl);
        done[dlen + 1 + cl] = '\0';
        if (buf_fmt_fixed(full, sizeof(full), "%s%s", rootdir ? "" : root, done) < 0)
            return -ENAMETOOLONG;
        n = readlink(full, target, sizeof(target) - 1);
        if (n < 0) {
            /* Not a link (or missing): keep the component. */
            dlen += 1 + cl;
            memmove(rest, c + cl, strlen(c + cl) + 1);
            continue;
        }
        if (++hops > 40)
            return -ELOOP;
        target[n] = '\0';
        {
            char tmp[sizeof(rest)];
            if (buf_fmt_fixed(tmp, sizeof(tmp), "%s/%s", target, c + cl) < 0)
                return -ENAMETOOLONG;
            memcpy(rest, tmp, strlen(tmp) + 1);
        }
        if (target[0] == '/')
            dlen = 0;
        done[dlen] = '\0';
    }
    if (dlen == 0)
        return buf_copy_fixed(out, outsz, "/");
    return buf_copy_fixed(out, outsz, done);
}

static const char *
ld_binary_problem(const char *path)
{
    if (!*path)
        return "binary path must not be empty";
    if (path[0] != '/')
        return "binary path must be absolute (start with '/')";
    if (strlen(path) > LD_MAX_PATH)
        return "binary path longer than 4096 bytes";
    for (const char *s = path; *s; s++) {
        if (s[0] != '/')
            continue;
        if (s[1] == '.' && s[2] == '.' && (s[3] == '/' || !s[3]))
            return "binary path contains a '..' component";
        if (s[1] == '.' && (s[2] == '/' || !s[2]))
            return "binary path is not canonical (contains a '.' component)";
        if (s[1] == '/')
            return "binary path is not canonical (repeated '/')";
        if (!s[1])
            return "binary path ends with '/' (name the executable)";
    }
    return NULL;
}

static void
ld_block(struct ld *l, const struct py_node *key, const struct py_node *n, struct pol_block *b,
         struct pol_endpoint ***eps_out)
{
    const struct py_node *endpoints = NULL, *binaries = NULL;
    size_t o = ld_push_key(l, key->s);

    b->key = key->s;
    if (!*key->s)
        ld_err(l, key, "network policy name must not be empty");
    if (!strncmp(key->s, "_provider_", 10))
        ld_err(l, key, "network policy '%s' uses reserved '_provider_' prefix", key->s);
    for (const char *c = key->s; *c; c++)
        if ((unsigned char)*c < 0x20) {
            ld_err(l, key, "network policy name contains a control character");
            break;
        }
    if (!ld_map(l, n, "a network policy")) {
        ld_pop(l, o);
        return;
    }
    for (size_t i = 0; i < n->n; i++) {
        const char *k = n->items[i]->s;
        size_t o2 = ld_push_key(l, k);

        if (!strcmp(k, "name"))
            ld_str(l, n->vals[i]);
        else if (!strcmp(k, "endpoints"))
            endpoints = n->vals[i];
        else if (!strcmp(k, "binaries"))
            binaries = n->vals[i];
        else {
            ld_pop(l, o2);
            ld_unknown(l, n->items[i], "name, endpoints, binaries");
            continue;
        }
        ld_pop(l, o2);
    }
    if (!endpoints || ld_is_null(endpoints)) {
        ld_err(l, n, "missing field `endpoints` (a network policy needs at least one endpoint)");
    } else {
        size_t o2 = ld_push_key(l, "endpoints");
        if (ld_seq(l, endpoints, "a list of endpoints")) {
            if (endpoints->n == 0)
                ld_err(l, endpoints, "endpoints is empty: the policy would authorise nothing");
            b->eps = policy_arena_alloc(l->a, (endpoints->n ? endpoints->n : 1) * sizeof(*b->eps));
            for (size_t i = 0; i < endpoints->n; i++) {
                size_t o3 = ld_push_idx(l, i);
                struct pol_endpoint *ep = policy_arena_alloc(l->a, sizeof(*ep));

                ep->index = (unsigned)i;
                ld_endpoint(l, endpoints->items[i], ep);
                b->eps[b->neps++] = ep;
                ld_pop(l, o3);
            }
        }
        ld_pop(l, o2);
    }
    if (!binaries || ld_is_null(binaries)) {
        ld_err(l, n,
               "missing field `binaries` (list the executables allowed to connect, e.g. "
               "- path: /usr/bin/curl)");
    } else {
        size_t o2 = ld_push_key(l, "binaries");
        if (ld_seq(l, binaries, "a list of binaries")) {
            if (binaries->n == 0)
                ld_err(l, binaries,
                       "binaries is empty: an empty list matches no process (list "
                       "the executables allowed to connect)");
            /* Room for one resolved symlink target per entry. */
            b->bins =
                policy_arena_alloc(l->a, (binaries->n ? binaries->n : 1) * 2 * sizeof(*b->bins));
            for (size_t i = 0; i < binaries->n; i++) {
                const struct py_node *it = binaries->items[i];
                const char *path = NULL;
                const struct py_node *path_n = NULL;
                size_t o3 = ld_push_idx(l, i);

                if (ld_map(l, it, "a binary ({path: ...})")) {
                    for (size_t k = 0; k < it->n; k++) {
                        const char *bk = it->items[k]->s;
                        size_t o4 = ld_push_key(l, bk);
                        if (!strcmp(bk, "path")) {
                            path_n = it->vals[k];
                            path = ld_str(l, it->vals[k]);
                        } else if (!strcmp(bk, "harness")) {
                            if (ld_bool(l, it->vals[k]) >= 0)
                                ld_warn(l, it->items[k], "harness is deprecated and ignored");
                        } else {
                            ld_pop(l, o4);
                            ld_unknown(l, it->items[k], "path, harness");
                            continue;
                        }
                        ld_pop(l, o4);
                    }
                    if (!path_n) {
                        ld_err(l, it, "missing field `path`");
                    } else if (path) {
                        size_t o4 = ld_push_key(l, "path");
                        const char *why = ld_binary_problem(path);
                        if (why) {
                            ld_err(l, path_n, "%s: '%s'", why, path);
                        } else {
                            struct pol_binary *pb = &b->bins[b->nbins++];
                            char real[LD_MAX_PATH + 1];

                            pb->path = path;
                            if (policy_glob_has_meta(path))
                                pb->g = ld_glob(l, path_n, path, '/', PG_PATH);
                            else if (strpbrk(path, "?[{"))
                                ld_warn(l, path_n,
                                        "'%s' has glob characters but no '*': it is compared "
                                        "literally",
                                        path);
                            /* The kernel reports resolved executables: a
                             * symlink in the policy also admits its target. */
                            if (l->symroot && !pb->g &&
                                pol_resolve(l->symroot, path, real, sizeof(real)) == 0 &&
                                strcmp(real, path) != 0)
                                b->bins[b->nbins++].path = policy_arena_strdup(l->a, real);
                        }
                        ld_pop(l, o4);
                    } else {
                        size_t o4 = ld_push_key(l, "path");
                        ld_err(l, path_n, "binary path must not be null");
                        ld_pop(l, o4);
                    }
                }
                ld_pop(l, o3);
            }
        }
        ld_pop(l, o2);
    }
    (void)eps_out;
    ld_pop(l, o);
}

/* ------------------------------------------------------------------ middlewares */

/* A middleware selector pattern (reference §3.2.3): lower-case labels, no
 * empty labels, whitespace or braces, each label a valid glob; a "**"
 * label (any position) matches one or more labels. */
static void
ld_host_pattern(struct ld *l, const struct py_node *n, size_t idx)
{
    size_t o = ld_push_idx(l, idx);
    const char *s = ld_str(l, n);

    if (s) {
        if (!*s || s[0] == '.' || s[strlen(s) - 1] == '.' || strstr(s, ".."))
            ld_err(l, n, "invalid host pattern '%s': empty label", s);
        else if (strpbrk(s, " \t{}"))
            ld_err(l, n, "invalid host pattern '%s': no whitespace or braces", s);
        else
            for (const char *c = s; *c; c++)
                if (*c >= 'A' && *c <= 'Z') {
                    ld_err(l, n, "invalid host pattern '%s': use lower case", s);
                    break;
                }
        ld_glob(l, n, s, '.', PG_HOST);
    } else if (ld_is_null(n)) {
        ld_err(l, n, "expected a host pattern, got null");
    }
    ld_pop(l, o);
}

static void
ld_middlewares(struct ld *l, const struct py_node *n)
{
    long long orders[16];
    size_t norders = 0;

    if (ld_is_null(n) || !ld_map(l, n, "network_middlewares"))
        return;
    if (n->n > 10)
        ld_err(l, n, "too many middleware configs (%zu > 10)", n->n);
    for (size_t i = 0; i < n->n; i++) {
        const struct py_node *m = n->vals[i];
        bool have_mw = false, have_ep = false;
        size_t o = ld_push_key(l, n->items[i]->s);

        if (ld_map(l, m, "a middleware config")) {
            for (size_t k = 0; k < m->n; k++) {
                const char *mk = m->items[k]->s;
                const struct py_node *v = m->vals[k];
                size_t o2 = ld_push_key(l, mk);

                if (!strcmp(mk, "name")) {
                    ld_str(l, v);
                } else if (!strcmp(mk, "middleware")) {
                    const char *s = ld_str(l, v);
                    have_mw = s && *s;
                    if (!have_mw)
                        ld_err(l, v, "middleware must be a non-empty name");
                } else if (!strcmp(mk, "order")) {
                    unsigned long long x;
                    if (ld_uint(l, v, 0, 2147483647ULL, "order", &x) == 0) {
                        for (size_t j = 0; j < norders; j++)
                            if (orders[j] == (long long)x)
                                ld_err(l, v, "middleware configs use duplicate order %llu", x);
                        if (norders < 16)
                            orders[norders++] = (long long)x;
                    }
                } else if (!strcmp(mk, "config")) {
                    if (!ld_is_null(v))
                        ld_map(l, v, "config");
                } else if (!strcmp(mk, "on_error")) {
                    const char *s = ld_str(l, v);
                    if (s && *s && strcmp(s, "fail_closed") && strcmp(s, "fail_open"))
                        ld_err(l, v, "unknown on_error '%s' (expected fail_closed or fail_open)",
                               s);
                } else if (!strcmp(mk, "endpoints")) {
                    have_ep = true;
                    if (ld_map(l, v, "endpoints ({include: [...], exclude: [...]})")) {
                        bool inc = false;
                        size_t npat = 0;
                        for (size_t j = 0; j < v->n; j++) {
                            const char *ek = v->items[j]->s;
                            if (!strcmp(ek, "include") || !strcmp(ek, "exclude")) {
                                const struct py_node *lst = v->vals[j];
                                size_t o3 = ld_push_key(l, ek);

                                if (ld_seq(l, lst, "a list of host patterns")) {
                                    if (!strcmp(ek, "include"))
                                        inc = lst->n > 0;
                                    npat += lst->n;
                                    for (size_t q = 0; q < lst->n; q++)
                                        ld_host_pattern(l, lst->items[q], q);
                                }
                                ld_pop(l, o3);
                            } else {
                                ld_unknown(l, v->items[j], "include, exclude");
                            }
                        }
                        if (!inc)
                            ld_err(l, v, "endpoints.include must be a non-empty list");
                        if (npat > 32)
                            ld_err(l, v, "too many selector patterns (%zu > 32)", npat);
                    }
                } else {
                    ld_pop(l, o2);
                    ld_unknown(l, m->items[k],
                               "name, middleware, order, config, on_error, "
                               "endpoints");
                    continue;
                }
                ld_pop(l, o2);
            }
            if (!have_mw)
                ld_err(l, m, "missing field `middleware`");
            if (!have_ep)
                ld_err(l, m, "missing field `endpoints`");
        }
        ld_pop(l, o);
    }
    if (n->n > 0)
        ld_err(l, n,
               "network_middlewares is not supported yet (a policy relying on middlewares "
               "would not be enforced as written)");
}

/* ------------------------------------------------------------------ ambiguity */

static bool
ld_ports_intersect(const struct pol_endpoint *a, const struct pol_endpoint *b, unsigned *port)
{
    size_t i = 0, j = 0;

    while (i < a->nports && j < b->nports) {
        if (a->ports[i] == b->ports[j]) {
            *port = a->ports[i];
            return true;
        }
        if (a->ports[i] < b->ports[j])
            i++;
        else
            j++;
    }
    return false;
}

static bool
ld_hosts_overlap(const struct pol_endpoint *a, const struct pol_endpoint *b)
{
    if (!*a->host || !*b->host)
        return true;
    if (!a->hostg && !b->hostg)
        return !strcmp(a->host, b->host);
    if (a->hostg && !b->hostg)
        return policy_glob_exec(a->hostg, b->host, strlen(b->host)) == 1;
    if (!a->hostg && b->hostg)
        return policy_glob_exec(b->hostg, a->host, strlen(a->host)) == 1;
    /* Two wildcards: they overlap when their fixed parts agree. */
    {
        const char *da = strchr(a->host, '.'), *db = strchr(b->host, '.');
        return da && db && !strcmp(da, db);
    }
}

static bool
ld_paths_overlap(const struct pol_endpoint *a, const struct pol_endpoint *b)
{
    if (!*a->path_sel || !*b->path_sel)
        return true;
    if (!strcmp(a->path_sel, b->path_sel))
        return true;
    return policy_glob_match(a->path_sel, b->path_sel, '/') == 1 ||
           policy_glob_match(b->path_sel, a->path_sel, '/') == 1;
}

static bool
ld_same_ips(const struct pol_endpoint *a, const struct pol_endpoint *b)
{
    if (a->nallowed_ips != b->nallowed_ips)
        return false;
    for (size_t i = 0; i < a->nallowed_ips; i++) {
        bool found = false;
        for (size_t j = 0; j < b->nallowed_ips && !found; j++)
            found = !memcmp(&a->allowed_ips[i], &b->allowed_ips[j], sizeof(struct pol_cidr));
        if (!found)
            return false;
    }
    return true;
}

static const char *
ld_conflict(const struct pol_endpoint *a, const struct pol_endpoint *b)
{
    bool ameta = (a->protocol != POLICY_PROTO_NONE && a->protocol != POLICY_PROTO_TCP) ||
                 a->nallowed_ips || a->tls_set;
    bool bmeta = (b->protocol != POLICY_PROTO_NONE && b->protocol != POLICY_PROTO_TCP) ||
                 b->nallowed_ips || b->tls_set;

    if ((a->protocol == POLICY_PROTO_TCP) != (b->protocol == POLICY_PROTO_TCP))
        return "protocol (tcp vs not tcp)";
    if (a->tls != b->tls)
        return "tls";
    if (!ld_same_ips(a, b))
        return "allowed_ips";
    if (ameta && bmeta && ld_paths_overlap(a, b) && a->path_spec == b->path_spec) {
        if (a->protocol != b->protocol)
            return "protocol";
        if (a->enforce != b->enforce)
            return "enforcement";
        if (a->allow_encoded_slash != b->allow_encoded_slash)
            return "allow_encoded_slash";
    }
    return NULL;
}

static void
ld_check_pair(struct ld *l, struct policy *p, const struct pol_endpoint *a,
              const struct pol_endpoint *b)
{
    unsigned port;
    const char *what;

    if (!ld_ports_intersect(a, b, &port) || !ld_hosts_overlap(a, b))
        return;
    if (!(what = ld_conflict(a, b)))
        return;
    l->flen = 0;
    ld_push_key(l, "network_policies");
    ld_push_key(l, p->blocks[b->block].key);
    ld_push_key(l, "endpoints");
    ld_push_idx(l, b->index);
    ld_err(l, &(struct py_node){ .line = b->line, .col = b->col },
           "network policies '%s' endpoint[%u] (%s) and '%s' endpoint[%u] (%s) overlap on port(s) "
           "%u with conflicting metadata: %s",
           p->blocks[a->block].key, a->index, *a->host ? a->host : "*", p->blocks[b->block].key,
           b->index, *b->host ? b->host : "*", port, what);
    ld_pop(l, 0);
}

/* Endpoints that can be hit by the same connection must agree on how it is
 * handled (reference §3.13). Only endpoints whose hosts can meet are
 * compared: exact hosts within their index slot, a wildcard against the
 * exact hosts below its fixed part and the wildcards sharing it, hostless
 * endpoints against everything. */
static void
ld_ambiguity(struct ld *l, struct policy *p)
{
    size_t reported = l->errors, nkeys = 0;
    struct pol_arena tmp;
    struct pol_hkey *keys;
    struct pol_hidx below;

    for (size_t s = 0; s < p->exact.cap; s++) {
        const struct pol_hslot *h = &p->exact.slots[s];
        for (size_t i = 0; h->host && i < h->n; i++)
            for (size_t j = i + 1; j < h->n && l->errors - reported < 50; j++)
                ld_check_pair(l, p, h->eps[i], h->eps[j]);
    }
    for (size_t s = 0; s < p->wildidx.cap; s++) {
        const struct pol_hslot *h = &p->wildidx.slots[s];
        for (size_t i = 0; h->host && i < h->n; i++)
            for (size_t j = i + 1; j < h->n && l->errors - reported < 50; j++)
                ld_check_pair(l, p, h->eps[i], h->eps[j]);
    }
    /* Exact hosts by every suffix after a '.'. */
    policy_arena_init(&tmp);
    for (size_t i = 0; i < p->neps; i++)
        if (!p->eps[i]->hostg && *p->eps[i]->host)
            for (const char *c = p->eps[i]->host; *c; c++)
                nkeys += *c == '.';
    keys = policy_arena_alloc(&tmp, (nkeys ? nkeys : 1) * sizeof(*keys));
    nkeys = 0;
    for (size_t i = 0; i < p->neps; i++)
        if (!p->eps[i]->hostg && *p->eps[i]->host)
            for (const char *c = p->eps[i]->host; *c; c++)
                if (*c == '.') {
                    keys[nkeys].key = c + 1;
                    keys[nkeys++].ep = p->eps[i];
                }
    policy_hidx_build(&tmp, &below, keys, nkeys);
    for (size_t i = 0; i < p->nwild; i++) {
        const struct pol_endpoint *a = p->wild[i];
        const struct pol_hslot *h = policy_hidx_get(&below, strchr(a->host, '.') + 1);
        for (size_t j = 0; h && j < h->n && l->errors - reported < 50; j++)
            ld_check_pair(l, p, a, h->eps[j]);
    }
    policy_arena_fini(&tmp);
    for (size_t i = 0; i < p->nhostless; i++)
        for (size_t j = 0; j < p->neps && l->errors - reported < 50; j++) {
            const struct pol_endpoint *b = p->eps[j];
            if (b == p->hostless[i] || (!*b->host && b->ordinal < p->hostless[i]->ordinal))
                continue;
            ld_check_pair(l, p, p->hostless[i], b);
        }
}

/* ------------------------------------------------------------------ index */

static int
ld_cmp_block(const void *x, const void *y)
{
    return strcmp(((const struct pol_block *)x)->key, ((const struct pol_block *)y)->key);
}

static void
ld_index(struct ld *l, struct policy *p)
{
    struct pol_hkey *exact, *wild;
    size_t nexact = 0;

    if (p->nblocks)
        qsort(p->blocks, p->nblocks, sizeof(*p->blocks), ld_cmp_block);
    for (size_t b = 0; b < p->nblocks; b++)
        p->neps += p->blocks[b].neps;
    p->eps = policy_arena_alloc(l->a, (p->neps ? p->neps : 1) * sizeof(*p->eps));
    p->neps = 0;
    for (size_t b = 0; b < p->nblocks; b++)
        for (size_t i = 0; i < p->blocks[b].neps; i++) {
            struct pol_endpoint *ep = p->blocks[b].eps[i];
            ep->block = (unsigned)b;
            ep->ordinal = (unsigned)p->neps;
            p->eps[p->neps++] = ep;
            if (ep->hostg)
                p->nwild++;
            else if (!*ep->host)
                p->nhostless++;
            else
                nexact++;
        }
    p->wild = policy_arena_alloc(l->a, (p->nwild ? p->nwild : 1) * sizeof(*p->wild));
    p->hostless =
        policy_arena_alloc(l->a, (p->nhostless ? p->nhostless : 1) * sizeof(*p->hostless));
    exact = xcalloc(nexact ? nexact : 1, sizeof(*exact));
    wild = xcalloc(p->nwild ? p->nwild : 1, sizeof(*wild));
    p->nwild = p->nhostless = 0;
    nexact = 0;
    for (size_t i = 0; i < p->neps; i++) {
        struct pol_endpoint *ep = p->eps[i];
        if (ep->hostg) {
            /* Validation guarantees '*' only in the first label and a '.'. */
            wild[p->nwild].key = strchr(ep->host, '.') + 1;
            wild[p->nwild].ep = ep;
            p->wild[p->nwild++] = ep;
        } else if (!*ep->host) {
            p->hostless[p->nhostless++] = ep;
        } else {
            exact[nexact].key = ep->host;
            exact[nexact++].ep = ep;
        }
    }
    policy_hidx_build(l->a, &p->exact, exact, nexact);
    policy_hidx_build(l->a, &p->wildidx, wild, p->nwild);
    free(exact);
    free(wild);
}

/* ------------------------------------------------------------------ top level */

static void
ld_network(struct ld *l, const struct py_node *n)
{
    struct policy *p = l->p;

    if (ld_is_null(n) || !ld_map(l, n, "network_policies"))
        return;
    p->blocks = policy_arena_alloc(l->a, (n->n ? n->n : 1) * sizeof(*p->blocks));
    for (size_t i = 0; i < n->n; i++)
        ld_block(l, n->items[i], n->vals[i], &p->blocks[p->nblocks++], NULL);
}

static void
ld_root(struct ld *l, const struct py_node *root)
{
    static const char keys[] =
        "version, filesystem_policy, landlock, process, network_policies, network_middlewares";
    bool have_version = false;

    if (!root) {
        ld_err(l, NULL, "empty policy (expected a mapping starting with 'version: 1')");
        return;
    }
    if (root->kind != PY_MAP) {
        ld_err(l, root, "a policy must be a mapping (version, filesystem_policy, ...), got %s",
               ld_kind(root));
        return;
    }
    for (size_t i = 0; i < root->n; i++) {
        const char *k = root->items[i]->s;
        const struct py_node *v = root->vals[i];
        size_t o = ld_push_key(l, k);

        if (!strcmp(k, "version")) {
            unsigned long long ver;
            have_version = true;
            if (ld_uint(l, v, 0, 4294967295ULL, "version", &ver) == 0 && ver != 1)
                ld_err(l, v, "unsupported version %llu (expected 1)", ver);
        } else if (!strcmp(k, "filesystem_policy")) {
            ld_filesystem(l, v);
        } else if (!strcmp(k, "landlock")) {
            ld_landlock(l, v);
        } else if (!strcmp(k, "process")) {
            ld_process(l, v);
        } else if (!strcmp(k, "network_policies")) {
            ld_network(l, v);
        } else if (!strcmp(k, "network_middlewares")) {
            ld_middlewares(l, v);
        } else {
            ld_pop(l, o);
            ld_unknown(l, root->items[i], keys);
            continue;
        }
        ld_pop(l, o);
    }
    if (!have_version) {
        if (l->flags & POLICY_LOAD_VERSION_OPTIONAL)
            ld_warn(l, root, "missing field `version` (assuming 1)");
        else
            ld_err(l, root, "missing field `version` (expected 'version: 1')");
    }
}

static void
pol_free(struct policy *p)
{
    policy_arena_fini(&p->arena);
    free(p);
}

static int
pol_load(const char *name, const char *data, size_t len, unsigned flags, const char *symroot,
         struct policy **out, struct policy_diags *diags, struct err *e)
{
    struct policy *p;
    struct py_node *root;
    struct policy_diags local;
    struct policy_diags *d = diags;
    struct ld l;
    size_t errors_before;
    int rc;

    *out = NULL;
    if (!name)
        name = "<policy>";
    if (!d) {
        policy_diags_init(&local);
        d = &local;
    }
    errors_before = d->errors;
    if (len > POLICY_MAX_BYTES) {
        policy_diag_add(d, name, POLICY_DIAG_ERROR, 0, 0, NULL,
                        "policy is larger than 4 MiB (%zu bytes)", len);
        rc = err_set(e, EINVAL, "%s: policy is larger than 4 MiB", name);
        goto out;
    }
    p = xcalloc(1, sizeof(*p));
    p->refs = 1;
    policy_arena_init(&p->arena);
    p->name = policy_arena_strdup(&p->arena, name);
    p->include_workdir = true;
    p->landlock = POLICY_LANDLOCK_BEST_EFFORT;
    memset(&l, 0, sizeof(l));
    l.p = p;
    l.a = &p->arena;
    l.file = p->name;
    l.d = d;
    l.flags = flags;
    l.symroot = symroot;
    p->flags = flags;
    p->src = policy_arena_strndup(&p->arena, data, len);
    p->srclen = len;
    rc = policy_yaml_parse(&p->arena, p->name, data, len, &root, d);
    /* Duplicate keys are reported by policy_yaml_parse but do not stop the walk, so
     * one run shows every error. */
    if (rc == 0) {
        ld_root(&l, root);
        if (d->errors == errors_before) {
            ld_index(&l, p);
            ld_ambiguity(&l, p);
        }
    }
    if (d->errors != errors_before) {
        size_t n = d->errors - errors_before;
        rc = err_set(e, EINVAL, "%s: %zu error%s", name, n, n == 1 ? "" : "s");
        pol_free(p);
        goto out;
    }
    *out = p;
    rc = 0;
out:
    if (d == &local)
        policy_diags_fini(&local);
    return rc;
}

int
policy_load_mem_flags(const char *name, const char *data, size_t len, unsigned flags,
                      struct policy **out, struct policy_diags *diags, struct err *e)
{
    return pol_load(name, data, len, flags, NULL, out, diags, e);
}

int
policy_expand_symlinks(const struct policy *p, const char *root, struct policy **out, struct err *e)
{
    return pol_load(p->name, p->src, p->srclen, p->flags, root ? root : "/", out, NULL, e);
}

int
policy_load_mem(const char *name, const char *data, size_t len, struct policy **out,
                struct policy_diags *diags, struct err *e)
{
    return policy_load_mem_flags(name, data, len, 0, out, diags, e);
}

int
policy_load_file_flags(const char *path, unsigned flags, struct policy **out,
                       struct policy_diags *diags, struct err *e)
{
    struct buf b = BUF_INIT;
    int rc;

    *out = NULL;
    rc = read_file(path, POLICY_MAX_BYTES, &b, e);
    if (rc == -EFBIG) {
        policy_diag_add(diags, path, POLICY_DIAG_ERROR, 0, 0, NULL, "policy is larger than 4 MiB");
        buf_fini(&b);
        return err_set(e, EINVAL, "%s: policy is larger than 4 MiB", path);
    }
    if (rc < 0) {
        buf_fini(&b);
        return rc;
    }
    rc = policy_load_mem_flags(path, b.data ? b.data : "", b.len, flags, out, diags, e);
    buf_fini(&b);
    return rc;
}

int
policy_load_file(const char *path, struct policy **out, struct policy_diags *diags, struct err *e)
{
    return policy_load_file_flags(path, 0, out, diags, e);
}

struct policy *
policy_ref(struct policy *p)
{
    if (p)
        __atomic_add_fetch(&p->refs, 1, __ATOMIC_RELAXED);
    return p;
}

void
policy_unref(struct policy *p)
{
    if (p && __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) == 0)
        pol_free(p);
}

const char *
policy_name(const struct policy *p)
{
    return p->name;
}

const char *const *
policy_fs_read_only(const struct policy *p, size_t *n)
{
    *n = p->nro;
    return p->ro;
}

const char *const *
policy_fs_read_write(const struct policy *p, size_t *n)
{
    *n = p->nrw;
    return p->rw;
}

bool
policy_fs_include_workdir(const struct policy *p)
{
    return p->include_workdir;
}

bool
policy_fs_present(const struct policy *p)
{
    return p->fs_present;
}

enum policy_landlock
policy_landlock_compat(const struct policy *p)
{
    return p->landlock;
}

const char *
policy_run_as_user(const struct policy *p)
{
    return p->run_as_user;
}

const char *
policy_run_as_group(const struct policy *p)
{
    return p->run_as_group;
}

size_t
policy_network_count(const struct policy *p)
{
    return p->nblocks;
}

static const char policy_default_text[] =
    "# The built-in restrictive default policy: the filesystem the usual\n"
    "# programs need, and no network access at all.\n"
    "version: 1\n"
    "filesystem_policy:\n"
    "  include_workdir: true\n"
    "  read_only:\n"
    "    - /usr\n"
    "    - /lib\n"
    "    - /proc\n"
    "    - /dev/urandom\n"
    "    - /app\n"
    "    - /etc\n"
    "    - /var/log\n"
    "  read_write:\n"
    "    - /tmp\n"
    "    - /dev/null\n"
    "landlock:\n"
    "  compatibility: best_effort\n"
    "network_policies: {}\n";

const char *
policy_default_yaml(void)
{
    return policy_default_text;
}

struct policy *
policy_default(void)
{
    struct policy *p;

    if (policy_load_mem("<default>", policy_default_text, sizeof(policy_default_text) - 1, &p, NULL,
                        NULL) < 0)
        BUG();
    return p;
}
