/* Unit tests for src/buf.c: growth, formatting, JSON escaping, fixed copies. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "tap.h"

static int
test_append_and_grow(void)
{
    struct buf b = BUF_INIT;

    CHECK_STR(buf_cstr(&b), "");
    for (int i = 0; i < 10000; i++)
        buf_putc(&b, (char)('a' + i % 26));
    CHECK_INT(b.len, 10000);
    CHECK_INT(strlen(buf_cstr(&b)), 10000);
    CHECK(b.cap > b.len);
    CHECK_INT(b.data[9999], 'a' + 9999 % 26);
    buf_fini(&b);
    CHECK(b.data == NULL && b.len == 0);
    return TAP_PASS;
}

static int
test_binary_data(void)
{
    struct buf b = BUF_INIT;

    buf_append(&b, "a\0b", 3);
    CHECK_INT(b.len, 3);
    CHECK(memcmp(b.data, "a\0b", 3) == 0);
    CHECK_INT(b.data[3], '\0');
    buf_fini(&b);
    return TAP_PASS;
}

static int
test_printf_long(void)
{
    struct buf b = BUF_INIT;
    char big[5000];

    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    buf_printf(&b, "<%s>%d", big, 42);
    CHECK_INT(b.len, sizeof(big) - 1 + 4);
    CHECK(strcmp(b.data + b.len - 3, ">42") == 0);
    buf_printf(&b, "%s", "");
    CHECK_INT(b.len, sizeof(big) - 1 + 4);
    buf_fini(&b);
    return TAP_PASS;
}

static int
test_consume_reset_steal(void)
{
    struct buf b = BUF_INIT;
    char *s;

    buf_puts(&b, "hello world");
    buf_consume(&b, 6);
    CHECK_STR(buf_cstr(&b), "world");
    buf_reset(&b);
    CHECK_STR(buf_cstr(&b), "");
    buf_puts(&b, "kept");
    s = buf_steal(&b);
    CHECK_STR(s, "kept");
    CHECK(b.data == NULL);
    free(s);
    s = buf_steal(&b); /* empty buf still yields a heap string */
    CHECK_STR(s, "");
    free(s);
    return TAP_PASS;
}

static int
test_json_escaping(void)
{
    struct buf b = BUF_INIT;
    const char in[] = "q\"b\\n\n\t\x01\x7f caf\xc3\xa9 \xff\xc0\xaf \xed\xa0\x80";

    buf_put_json_str(&b, in, sizeof(in) - 1);
    /* Valid UTF-8 passes through; invalid bytes, overlongs and surrogates are escaped. */
    CHECK_STR(buf_cstr(&b), "\"q\\\"b\\\\n\\n\\t\\u0001\\u007f caf\xc3\xa9 \\u00ff\\u00c0\\u00af "
                            "\\u00ed\\u00a0\\u0080\"");
    buf_reset(&b);
    buf_put_json_str(&b, "a\0b", 3);
    CHECK_STR(buf_cstr(&b), "\"a\\u0000b\"");
    buf_fini(&b);
    return TAP_PASS;
}

/* A \u0000 escape anywhere is found; an escaped backslash before "u0000"
 * is not one, nor is a cut-short escape at the end. */
static int
test_json_nul_escape(void)
{
    static const char *const yes[] = { "{\"a\":\"x\\u0000\"}", "{\"\\u0000\":1}", "\"\\\\\\u0000\"",
                                       "\\u0000" };
    static const char *const no[] = { "{\"a\":\"x\\\\u0000\"}", "{\"a\":\"\\u0001\"}", "\"\\u000",
                                      "\"\\\\\"", "" };

    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++)
        CHECK(buf_json_has_nul_escape(yes[i], strlen(yes[i])));
    for (size_t i = 0; i < sizeof(no) / sizeof(no[0]); i++)
        CHECK(!buf_json_has_nul_escape(no[i], strlen(no[i])));
    /* Only the first N bytes count. */
    CHECK(!buf_json_has_nul_escape("\\u0000", 5));
    return TAP_PASS;
}

static int
test_fixed_copies(void)
{
    char small[4];

    CHECK_INT(buf_copy_fixed(small, sizeof(small), "abc"), 0);
    CHECK_STR(small, "abc");
    CHECK_INT(buf_copy_fixed(small, sizeof(small), "abcd"), -ENAMETOOLONG);
    CHECK_STR(small, "abc");
    CHECK_INT(buf_fmt_fixed(small, sizeof(small), "%d", 123), 0);
    CHECK_INT(buf_fmt_fixed(small, sizeof(small), "%d", 1234), -ENAMETOOLONG);
    CHECK_INT(buf_copy_fixed(small, 0, "x"), -ENAMETOOLONG);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_append_and_grow), TAP_TEST(test_binary_data), TAP_TEST(test_printf_long),
         TAP_TEST(test_consume_reset_steal), TAP_TEST(test_json_escaping),
         TAP_TEST(test_json_nul_escape), TAP_TEST(test_fixed_copies))
