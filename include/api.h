#ifndef OPENSHELL_API_H
#define OPENSHELL_API_H
/*
 * api: the envelope rules of the JSON-over-HTTP/2 API (doc/api.md is the
 * contract): strict request parsing, errno -> HTTP status mapping, error
 * bodies, ETag / If-Match handling. Used by the gateway's handlers; the
 * clients use the same mapping to turn statuses back into messages.
 *
 * Strictness: a request body must be one JSON object (nothing after it),
 * without duplicate keys at any depth, with at most API_MAX_MEMBERS members
 * per object; unknown fields and wrong types are errors naming the field
 * path ("spec.environment.PATH: expected a string").
 *
 * cJSON values returned through OUT are the caller's (cJSON_Delete).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "err.h"

struct h2_stream;

#define API_MAX_MEMBERS 256

/* Parse BODY[LEN] as one JSON object. 0 and *OUT, or -EINVAL with E saying
 * where and why. */
int api_parse_object(const char *body, size_t len, cJSON **out, struct err *e);
/* Every member of OBJ must be named in ALLOWED (NULL-terminated); WHERE
 * prefixes the field name in the message ("spec"). -EINVAL otherwise. */
int api_check_keys(const cJSON *obj, const char *const *allowed, const char *where, struct err *e);
/* Typed member access: 0 found (OUT set), 1 absent (OUT untouched; an error
 * when REQUIRED), -EINVAL wrong type (JSON null counts as absent). */
int api_get_string(const cJSON *obj, const char *key, const char *where, bool required,
                   const char **out, struct err *e);
int api_get_bool(const cJSON *obj, const char *key, const char *where, bool *out, struct err *e);
int api_get_object(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                   struct err *e);
int api_get_array(const cJSON *obj, const char *key, const char *where, const cJSON **out,
                  struct err *e);
/* OBJ must be an object whose members are all strings. */
int api_check_string_map(const cJSON *obj, const char *where, struct err *e);

/* The HTTP status and error code for a negative errno:
 *   -EINVAL 400 invalid_argument     -ENOENT 404 not_found
 *   -EEXIST 409 already_exists       -ESTALE 409 aborted
 *   -EBUSY  503 unavailable          -EACCES 403 permission_denied
 *   -EPERM  401 unauthenticated      -EFBIG  413 payload_too_large
 *   -EPROTO 412 failed_precondition  -EMSGSIZE 413 payload_too_large
 *   -ENOSPC 507 insufficient_storage  anything else 500 internal */
int api_status_for_errno(int rc, const char **code);
/* Respond with the error for RC and E's message (or strerror). */
int api_respond_err(struct h2_stream *st, int rc, const struct err *e);
/* Respond STATUS with JSON (printed compactly, newline-terminated), plus
 * ETag "RV" when RV > 0. */
int api_respond_json(struct h2_stream *st, int status, const cJSON *json, uint64_t rv);

/* If-Match: NULL or "*" -> 0 (no condition); "\"N\"" (or bare N) -> N;
 * anything else (weak tags, lists, junk) -> -EINVAL. */
int api_parse_if_match(const char *v, uint64_t *rv, struct err *e);

/* JSON text of J, compact, on the heap (caller frees). */
char *api_json_print(const cJSON *j);

#endif
