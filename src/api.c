/*
 * api.c: strict JSON request parsing and the error/ETag conventions of the
 * HTTP API (contract in include/api.h and doc/api.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "buf.h"
#include "h2.h"
#include "xfuncs.h"

/* Reject duplicate keys and oversized objects at any depth. */
static int
check_tree(const cJSON *j, struct buf *path, struct err *e)
{
    const cJSON *a, *b;
    size_t n = 0, plen = path->len;
    int rc;

    if (!cJSON_IsObject(j) && !cJSON_IsArray(j))
        return 0;
    for (a = j->child; a; a = a->next) {
        if (++n > API_MAX_MEMBERS)
            return err_set(e, EINVAL, "%s: more than %d members",
                           path->len ? buf_cstr(path) : "body", API_MAX_MEMBERS);
        if (cJSON_IsObject(j)) {
            for (b = a->next; b; b = b->next)
                if (strcmp(a->string, b->string) == 0)
                    return err_set(e, EINVAL, "%s%s%s: duplicate key", buf_cstr(path),
                                   path->len ? "." : "", a->string);
            if (path->len)
                buf_putc(path, '.');
            buf_puts(path, a->string);
        } else {
            buf_printf(path, "[%zu]", n - 1);
        }
        rc = check_tree(a, path, e);
        path->len = plen;
        if (path->data)
            path->data[plen] = '\0';
        if (rc < 0)
            return rc;
    }
    return 0;
}

int
api_parse_object(const char *body, size_t len, cJSON **out, struct err *e)
{
    const char *end = NULL;
    struct buf path = BUF_INIT;
    cJSON *j;
    int rc;

    *out = NULL;
    if (len == 0)
        return err_set(e, EINVAL, "empty request body: expected a JSON object");
    if (memchr(body, '\0', len))
        return err_set(e, EINVAL, "request body contains a NUL byte");
    j = cJSON_ParseWithLengthOpts(body, len, &end, false);
    if (!j) {
        size_t off = end && end >= body ? (size_t)(end - body) : 0;
        return err_set(e, EINVAL, "request body is not valid JSON (at byte %zu)", off);
    }
    /* Only whitespace may follow the value. */
    while (end && (size_t)(end - body) < len &&
           (*end == ' ' || *end == '\n' || *end == '\r' || *end == '\t'))
        end++;
    if (end && (size_t)(end - body) < len) {
        rc = err_set(e, EINVAL, "request body: unexpected data after the JSON value (byte %zu)",
                     (size_t)(end - body));
        cJSON_Delete(j);
        return rc;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return err_set(e, EINVAL, "request body must be a JSON object");
    }
    if (buf_json_has_nul_escape(body, len)) {
        cJSON_Delete(j);
        return err_set(e, EINVAL, "request body: a \\u0000 escape (no string may contain NUL)");
    }
    if ((rc = check_tree(j, &path, e)) < 0) {
        buf_fini(&path);
        cJSON_Delete(j);
        return rc;
    }
    buf_fini(&path);
    *out = j;
    return 0;
}

int
api_check_keys(const cJSON *obj, const char *const *allowed, const char *where, struct err *e)
{
    for (const cJSON *c = obj->child; c; c = c->next) {
        size_t i;

        for (i = 0; allowed[i]; i++)
            if (strcmp(allowed[i], c->string) == 0)
                break;
        if (!allowed[i]) {
            struct buf b = BUF_INIT;
            int rc;

            for (i = 0; allowed[i]; i++) {
                if (i)
                    buf_puts(&b, ", ");
                buf_puts(&b, allowed[i]);
            }
            rc = err_set(e, EINVAL, "%s%s%.100s: unknown field (known: %s)", where ? where : "",
                         where && *where ? "." : "", c->string, buf_cstr(&b));
            buf_fini(&b);
            return rc;
        }
    }
    return 0;
}

static const cJSON *
member(const cJSON *obj, const char *key)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(obj, key);

    return c && !cJSON_IsNull(c) ? c : NULL;
}

static int
wrong_type(struct err *e, const char *where, const char *key, const char *want)
{
    return err_set(e, EINVAL, "%s%s%s: expected %s", where ? where : "", where && *where ? "." : "",
                   key, want);
}

int
api_get_string(const cJSON *obj, const char *key, const char *where, bool required,
               const char **out, struct err *e)
{
    const cJSON *c = member(obj, key);

    if (!c) {
        if (required)
            return err_set(e, EINVAL, "%s%s%s: required", where ? where : "",
                           where && *where ? "." : "", key);
        return 1;
    }
    if (!cJSON_IsString(c))
        return wrong_type(e, where, key, "a string");
    *out = c->valuestring;
    return 0;
}

int
api_get_bool(const cJSON *obj, const char *key, const char *where, bool *out, struct err *e)
{
    const cJSON *c = member(obj, key);

    if (!c)
        return 1;
    if (!cJSON_IsBool(c))
        return wrong_type(e, where, key, "true or false");
    *out = cJSON_IsTrue(c);
    return 0;
}

int
api_get_object(const cJSON *obj, const char *key, const char *where, const cJSON **out,
               struct err *e)
{
    const cJSON *c = member(obj, key);

    if (!c)
        return 1;
    if (!cJSON_IsObject(c))
        return wrong_type(e, where, key, "an object");
    *out = c;
    return 0;
}

int
api_get_array(const cJSON *obj, const char *key, const char *where, const cJSON **out,
              struct err *e)
{
    const cJSON *c = member(obj, key);

    if (!c)
        return 1;
    if (!cJSON_IsArray(c))
        return wrong_type(e, where, key, "an array");
    *out = c;
    return 0;
}

int
api_check_string_map(const cJSON *obj, const char *where, struct err *e)
{
    for (const cJSON *c = obj->child; c; c = c->next)
        if (!cJSON_IsString(c))
            return wrong_type(e, where, c->string, "a string");
    return 0;
}

int
api_status_for_errno(int rc, const char **code)
{
    switch (-rc) {
    case EINVAL: *code = "invalid_argument"; return 400;
    case ENOENT: *code = "not_found"; return 404;
    case EEXIST: *code = "already_exists"; return 409;
    case ESTALE: *code = "aborted"; return 409;
    case EBUSY: *code = "unavailable"; return 503;
    case EACCES: *code = "permission_denied"; return 403;
    case EPERM: *code = "unauthenticated"; return 401;
    case EFBIG:
    case EMSGSIZE: *code = "payload_too_large"; return 413;
    case EPROTO: *code = "failed_precondition"; return 412;
    case ENOSPC: *code = "insufficient_storage"; return 507;
    default: *code = "internal"; return 500;
    }
}

int
api_respond_err(struct h2_stream *st, int rc, const struct err *e)
{
    const char *code;
    int status = api_status_for_errno(rc, &code);

    return h2_stream_error(st, status, code, "%s", err_str(e, rc));
}

char *
api_json_print(const cJSON *j)
{
    char *s = cJSON_PrintBuffered(j, 16384, false);

    if (!s)
        BUG(); /* cJSON fails only on allocation */
    return s;
}

int
api_respond_json(struct h2_stream *st, int status, const cJSON *json, uint64_t rv)
{
    char *s = api_json_print(json);
    struct buf b = BUF_INIT;
    char etag[32];
    struct h2_header h = { "etag", etag };
    int rc;

    buf_puts(&b, s);
    buf_putc(&b, '\n');
    free(s);
    snprintf(etag, sizeof(etag), "\"%llu\"", (unsigned long long)rv);
    rc = h2_stream_respond(st, status, "application/json", rv ? &h : NULL, rv ? 1 : 0, b.data,
                           b.len);
    buf_fini(&b);
    return rc;
}

int
api_parse_if_match(const char *v, uint64_t *rv, struct err *e)
{
    const char *p;
    char *end;
    unsigned long long n;
    size_t len;

    *rv = 0;
    if (!v || strcmp(v, "*") == 0)
        return 0;
    len = strlen(v);
    p = v;
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') {
        p = v + 1;
        len -= 2;
    }
    if (len == 0 || len > 20 || p[0] < '1' || p[0] > '9')
        goto bad;
    errno = 0;
    n = strtoull(p, &end, 10);
    if (errno || (size_t)(end - p) != len)
        goto bad;
    *rv = n;
    return 0;
bad:
    return err_set(e, EINVAL, "If-Match %.40s: expected a resource_version ETag such as \"3\"", v);
}
