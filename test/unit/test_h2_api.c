/* Unit tests for src/api.c: strict JSON bodies, typed access, errno mapping,
 * If-Match parsing. */
#include <errno.h>
#include <string.h>

#include "api.h"
#include "tap.h"
#include "xfuncs.h"

static int
parse(const char *s, struct err *e)
{
    cJSON *j = NULL;
    int rc = api_parse_object(s, strlen(s), &j, e);

    cJSON_Delete(j);
    return rc;
}

static int
test_parse_strict(void)
{
    struct err e;
    struct buf deep = BUF_INIT;

    CHECK_INT(parse("{\"a\":1}", &e), 0);
    CHECK_INT(parse("  {\"a\":[1,2,{\"b\":null}]}\n ", &e), 0);
    CHECK_INT(parse("", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "empty");
    CHECK_INT(parse("{\"a\":", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "not valid JSON");
    CHECK_INT(parse("{} x", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "after the JSON value");
    CHECK_INT(parse("[1]", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "JSON object");
    CHECK_INT(parse("\"s\"", &e), -EINVAL);
    CHECK_INT(parse("{\"a\":1,\"a\":2}", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "a: duplicate key");
    CHECK_INT(parse("{\"s\":{\"t\":[{\"x\":1,\"x\":1}]}}", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "s.t[0].x: duplicate key");
    CHECK_INT(api_parse_object("{\"a\":\"\0\"}", 9, &(cJSON *){ NULL }, &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "NUL");
    /* A \u0000 escape would cut every C string after it short. */
    CHECK_INT(parse("{\"env\":{\"A\":\"x\\u0000y\"}}", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "u0000");
    CHECK_INT(parse("{\"k\\u0000\":1}", &e), -EINVAL);
    /* ...but an escaped backslash followed by the text u0000 is fine. */
    CHECK_INT(parse("{\"a\":\"\\\\u0000\"}", &e), 0);
    CHECK_INT(parse("{\"a\":\"\\u0001\"}", &e), 0);
    /* Too many members in one object. */
    buf_putc(&deep, '{');
    for (int i = 0; i <= API_MAX_MEMBERS; i++)
        buf_printf(&deep, "%s\"k%d\":%d", i ? "," : "", i, i);
    buf_putc(&deep, '}');
    CHECK_INT(parse(buf_cstr(&deep), &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "more than");
    /* Nesting beyond cJSON's limit is an error, not a crash. */
    buf_reset(&deep);
    buf_puts(&deep, "{\"a\":");
    for (int i = 0; i < 5000; i++)
        buf_putc(&deep, '[');
    for (int i = 0; i < 5000; i++)
        buf_putc(&deep, ']');
    buf_putc(&deep, '}');
    CHECK_INT(parse(buf_cstr(&deep), &e), -EINVAL);
    buf_fini(&deep);
    return TAP_PASS;
}

static int
test_typed_access(void)
{
    static const char *const keys[] = { "name", "n", "flag", "obj", "arr", "nul", NULL };
    cJSON *j;
    struct err e;
    const char *s = NULL;
    const cJSON *o = NULL;
    bool b = false;
    const char *body =
        "{\"name\":\"x\",\"n\":3,\"flag\":true,\"obj\":{\"k\":\"v\"},\"arr\":[],\"nul\":null}";

    CHECK_INT(api_parse_object(body, strlen(body), &j, &e), 0);
    CHECK_INT(api_check_keys(j, keys, "", &e), 0);
    CHECK_INT(api_check_keys(j, keys + 1, "spec", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "spec.name: unknown field (known: n, flag");
    CHECK_INT(api_get_string(j, "name", "", true, &s, &e), 0);
    CHECK_STR(s, "x");
    CHECK_INT(api_get_string(j, "n", "spec", false, &s, &e), -EINVAL);
    CHECK_STR(e.msg, "spec.n: expected a string");
    CHECK_INT(api_get_string(j, "missing", "", false, &s, &e), 1);
    CHECK_INT(api_get_string(j, "missing", "", true, &s, &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "missing: required");
    CHECK_INT(api_get_string(j, "nul", "", false, &s, &e), 1); /* null is absent */
    CHECK_INT(api_get_bool(j, "flag", "", &b, &e), 0);
    CHECK(b);
    CHECK_INT(api_get_bool(j, "name", "", &b, &e), -EINVAL);
    CHECK_INT(api_get_object(j, "obj", "", &o, &e), 0);
    CHECK_INT(api_check_string_map(o, "obj", &e), 0);
    CHECK_INT(api_get_object(j, "arr", "", &o, &e), -EINVAL);
    CHECK_INT(api_get_array(j, "arr", "", &o, &e), 0);
    CHECK_INT(api_check_string_map(j, "top", &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "top.n: expected a string");
    cJSON_Delete(j);
    return TAP_PASS;
}

static int
test_errno_map(void)
{
    const char *code;

    CHECK_INT(api_status_for_errno(-EINVAL, &code), 400);
    CHECK_STR(code, "invalid_argument");
    CHECK_INT(api_status_for_errno(-ENOENT, &code), 404);
    CHECK_INT(api_status_for_errno(-EEXIST, &code), 409);
    CHECK_STR(code, "already_exists");
    CHECK_INT(api_status_for_errno(-ESTALE, &code), 409);
    CHECK_STR(code, "aborted");
    CHECK_INT(api_status_for_errno(-EBUSY, &code), 503);
    CHECK_INT(api_status_for_errno(-EPERM, &code), 401);
    CHECK_INT(api_status_for_errno(-EFBIG, &code), 413);
    CHECK_INT(api_status_for_errno(-EIO, &code), 500);
    CHECK_STR(code, "internal");
    return TAP_PASS;
}

static int
test_if_match(void)
{
    struct err e;
    uint64_t rv = 99;

    CHECK_INT(api_parse_if_match(NULL, &rv, &e), 0);
    CHECK_INT(rv, 0);
    CHECK_INT(api_parse_if_match("*", &rv, &e), 0);
    CHECK_INT(rv, 0);
    CHECK_INT(api_parse_if_match("\"12\"", &rv, &e), 0);
    CHECK_INT(rv, 12);
    CHECK_INT(api_parse_if_match("7", &rv, &e), 0);
    CHECK_INT(rv, 7);
    static const char *bad[] = {
        "W/\"1\"", "\"0\"", "\"\"", "\"1\", \"2\"", "\"-1\"", "abc", "\"99999999999999999999999\"",
        "\"1x\""
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(api_parse_if_match(bad[i], &rv, &e), -EINVAL);
        CHECK_CONTAINS(e.msg, "If-Match");
    }
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_parse_strict), TAP_TEST(test_typed_access), TAP_TEST(test_errno_map),
         TAP_TEST(test_if_match))
