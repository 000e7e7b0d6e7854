/*
 * test_policy_hostile.c: hostile policies get one clear error, quickly and
 * in bounded memory: a file over 4 MiB, a 100k-element list, deep nesting,
 * a billion-laughs alias bomb, invalid UTF-8, a NUL byte. Elapsed time is
 * printed as a diagnostic (bench/ measures; tests do not assert on time).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "policy.h"
#include "tap.h"

static double
now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Load B; it must fail with an error containing WANT. */
static int
expect_error(const char *what, struct buf *b, const char *want)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;
    double t0 = now();
    int rc;
    bool found = false;

    policy_diags_init(&d);
    rc = policy_load_mem("hostile.yaml", b->data ? b->data : "", b->len, &p, &d, &e);
    tap_diag("%s (%zu bytes): %.3f s, %zu error(s)%s%s", what, b->len, now() - t0, d.errors,
             d.n ? ", first: " : "", d.n ? d.v[0].text : "");
    for (size_t i = 0; i < d.n; i++)
        if (strstr(d.v[i].text, want))
            found = true;
    policy_unref(p);
    policy_diags_fini(&d);
    buf_fini(b);
    CHECK(rc < 0);
    CHECK(found);
    return TAP_PASS;
}

static int
test_too_big(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\n");
    while (b.len <= POLICY_MAX_BYTES)
        buf_puts(&b, "# padding padding padding padding padding padding padding padding\n");
    return expect_error("4 MiB policy", &b, "larger than 4 MiB");
}

static int
test_long_list(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\nfilesystem_policy:\n  read_only:\n");
    for (int i = 0; i < 100000; i++)
        buf_printf(&b, "    - /p%d\n", i);
    return expect_error("100k-element list", &b, "too many items in one list");
}

static int
test_deep_nesting(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\nx: ");
    for (int i = 0; i < 100000; i++)
        buf_putc(&b, '[');
    for (int i = 0; i < 100000; i++)
        buf_putc(&b, ']');
    buf_putc(&b, '\n');
    return expect_error("deep nesting", &b, "nesting deeper than 32 levels");
}

static int
test_alias_bomb(void)
{
    struct buf b = BUF_INIT;

    buf_puts(
        &b,
        "version: 1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    for (char c = 'b'; c <= 'j'; c++)
        buf_printf(&b, "%c: &%c [*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c,*%c]\n", c, c, c - 1, c - 1, c - 1,
                   c - 1, c - 1, c - 1, c - 1, c - 1, c - 1);
    return expect_error("billion laughs", &b, "anchors");
}

static int
test_invalid_utf8(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\nnetwork_policies:\n  caf\xc3\x28: {}\n");
    return expect_error("invalid UTF-8", &b, "hostile.yaml:3:6: invalid UTF-8");
}

static int
test_overlong_utf8(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\nx: \"\xc0\xaf\"\n");
    return expect_error("overlong UTF-8", &b, "invalid UTF-8");
}

static int
test_nul_byte(void)
{
    struct buf b = BUF_INIT;

    buf_append(&b, "version: 1\nx: a\0b\n", 18);
    return expect_error("NUL byte", &b, "control character 0x00");
}

static int
test_many_keys(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\nnetwork_policies:\n");
    for (int i = 0; i < 20000; i++)
        buf_printf(&b, "  k%d: {}\n", i);
    return expect_error("20k-key mapping", &b, "too many keys in one mapping");
}

static int
test_node_flood(void)
{
    struct buf b = BUF_INIT;

    /* 4 MiB of "1," in nested lists: a million nodes, refused at 500k. */
    buf_puts(&b, "version: 1\nx: [");
    for (int l = 0; l < 200 && b.len < POLICY_MAX_BYTES - 30000; l++) {
        buf_puts(&b, l ? ",[" : "[");
        for (int i = 0; i < 9999; i++)
            buf_puts(&b, i ? ",1" : "1");
        buf_putc(&b, ']');
    }
    buf_puts(&b, "]\n");
    return expect_error("node flood", &b, "too many YAML nodes");
}

static int
test_long_scalar(void)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "version: 1\nnetwork_policies:\n  a:\n    endpoints: [{host: \"");
    for (int i = 0; i < 100000; i++)
        buf_putc(&b, 'a');
    buf_puts(&b, "\", port: 443}]\n");
    return expect_error("100 kB scalar", &b, "scalar longer than 65536 bytes");
}

TAP_MAIN(TAP_TEST(test_too_big), TAP_TEST(test_long_list), TAP_TEST(test_deep_nesting),
         TAP_TEST(test_alias_bomb), TAP_TEST(test_invalid_utf8), TAP_TEST(test_overlong_utf8),
         TAP_TEST(test_nul_byte), TAP_TEST(test_many_keys), TAP_TEST(test_node_flood),
         TAP_TEST(test_long_scalar))
