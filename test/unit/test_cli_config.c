/* Unit tests for cli_config (registry, selection, last sandbox, endpoints)
 * and cli_out (tables). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli_config.h"
#include "cli_out.h"
#include "tap.h"
#include "xfuncs.h"

static char cfg[256];

static void
cleanup(void)
{
    if (system("rm -rf /tmp/test_cli_config.*") != 0)
        fputs("# could not remove the temporary directories\n", stdout);
}

static void
fresh_cfg(void)
{
    char tmpl[] = "/tmp/test_cli_config.XXXXXX";
    char *d;

    cleanup(); /* the previous test's (tests may run in child processes) */
    d = mkdtemp(tmpl);
    snprintf(cfg, sizeof(cfg), "%s/openshell", d ? d : "/nonexistent");
}

static int
test_names(void)
{
    CHECK(cli_gw_name_ok("openshell"));
    CHECK(cli_gw_name_ok("my-gw.1_x"));
    CHECK(!cli_gw_name_ok(""));
    CHECK(!cli_gw_name_ok("."));
    CHECK(!cli_gw_name_ok(".."));
    CHECK(!cli_gw_name_ok("a/b"));
    CHECK(!cli_gw_name_ok("a b"));
    return TAP_PASS;
}

static int
test_registry(void)
{
    struct cli_gateway g = { 0 }, got, *list;
    struct err e;
    size_t n;
    char active[64];
    struct stat st;
    char *p;

    fresh_cfg();
    CHECK_INT(cli_gw_load(cfg, "nope", &got, &e), -ENOENT);
    CHECK_INT(cli_gw_list(cfg, &list, &n, &e), 0);
    CHECK_INT((int)n, 0);
    strcpy(g.name, "beta");
    strcpy(g.endpoint, "unix:///tmp/x.sock");
    strcpy(g.auth, "local");
    strcpy(g.unix_socket, "/tmp/x.sock");
    strcpy(g.state_dir, "/tmp/st\"ate");
    CHECK_INT(cli_gw_save(cfg, &g, &e), 0);
    strcpy(g.name, "alpha");
    g.is_remote = true;
    g.port = 17670;
    CHECK_INT(cli_gw_save(cfg, &g, &e), 0);
    CHECK_INT(cli_gw_load(cfg, "beta", &got, &e), 0);
    CHECK_STR(got.endpoint, "unix:///tmp/x.sock");
    CHECK_STR(got.unix_socket, "/tmp/x.sock");
    CHECK_STR(got.state_dir, "/tmp/st\"ate");
    CHECK(!got.is_remote);
    p = xasprintf("%s/gateways/beta/metadata.json", cfg);
    CHECK_INT(stat(p, &st), 0);
    CHECK_INT((int)(st.st_mode & 0777), 0600);
    free(p);
    CHECK_INT(cli_gw_list(cfg, &list, &n, &e), 0);
    CHECK_INT((int)n, 2);
    CHECK_STR(list[0].name, "alpha");
    CHECK(list[0].is_remote);
    CHECK_INT((int)list[0].port, 17670);
    free(list);
    CHECK_INT(cli_active_get(cfg, active, sizeof(active)), -ENOENT);
    CHECK_INT(cli_active_set(cfg, "beta", &e), 0);
    CHECK_INT(cli_active_get(cfg, active, sizeof(active)), 0);
    CHECK_STR(active, "beta");
    CHECK_INT(cli_last_sandbox_set(cfg, "beta", "default", "sb1", &e), 0);
    CHECK_INT(cli_gw_remove(cfg, "beta", &e), 0);
    CHECK_INT(cli_active_get(cfg, active, sizeof(active)), -ENOENT);
    CHECK_INT(cli_gw_load(cfg, "beta", &got, &e), -ENOENT);
    CHECK_INT(cli_gw_remove(cfg, "beta", &e), -ENOENT);
    CHECK_INT(cli_gw_load(cfg, "../x", &got, &e), -EINVAL);
    return TAP_PASS;
}

static int
test_resolve(void)
{
    enum cli_gw_source src;
    char out[64];
    struct err e;

    fresh_cfg();
    CHECK_INT(cli_gw_resolve(cfg, NULL, NULL, out, sizeof(out), &src), -ENOENT);
    CHECK_INT(src, CLI_GW_NONE);
    CHECK_INT(cli_active_set(cfg, "act", &e), 0);
    CHECK_INT(cli_gw_resolve(cfg, NULL, "", out, sizeof(out), &src), 0);
    CHECK_STR(out, "act");
    CHECK_INT(src, CLI_GW_ACTIVE);
    CHECK_INT(cli_gw_resolve(cfg, NULL, "envgw", out, sizeof(out), &src), 0);
    CHECK_STR(out, "envgw");
    CHECK_INT(src, CLI_GW_ENV);
    CHECK_INT(cli_gw_resolve(cfg, "flaggw", "envgw", out, sizeof(out), &src), 0);
    CHECK_STR(out, "flaggw");
    CHECK_INT(src, CLI_GW_FLAG);
    return TAP_PASS;
}

static int
test_last_sandbox(void)
{
    char out[64];
    struct err e;

    fresh_cfg();
    CHECK_INT(cli_last_sandbox_get(cfg, "g", "default", out, sizeof(out)), -ENOENT);
    CHECK_INT(cli_last_sandbox_set(cfg, "g", "default", "alpha", &e), 0);
    CHECK_INT(cli_last_sandbox_get(cfg, "g", "default", out, sizeof(out)), 0);
    CHECK_STR(out, "alpha");
    CHECK_INT(cli_last_sandbox_get(cfg, "g", "other", out, sizeof(out)), -ENOENT);
    cli_last_sandbox_clear(cfg, "g", "default", "beta");
    CHECK_INT(cli_last_sandbox_get(cfg, "g", "default", out, sizeof(out)), 0);
    cli_last_sandbox_clear(cfg, "g", "default", "alpha");
    CHECK_INT(cli_last_sandbox_get(cfg, "g", "default", out, sizeof(out)), -ENOENT);
    return TAP_PASS;
}

static int
test_endpoints(void)
{
    char out[256];
    char *host;
    unsigned port;
    struct err e;

    CHECK_INT(cli_endpoint_parse("127.0.0.1:17670", out, sizeof(out), &host, &port, &e), 0);
    CHECK_STR(out, "https://127.0.0.1:17670");
    CHECK_STR(host, "127.0.0.1");
    CHECK(cli_host_is_loopback(host));
    free(host);
    CHECK_INT(cli_endpoint_parse("http://gw.example.com/", out, sizeof(out), &host, &port, &e), 0);
    CHECK_STR(out, "http://gw.example.com:80");
    CHECK(!cli_host_is_loopback(host));
    free(host);
    CHECK_INT(cli_endpoint_parse("https://[::1]:9", out, sizeof(out), &host, &port, &e), 0);
    CHECK_STR(host, "[::1]");
    CHECK_INT((int)port, 9);
    free(host);
    CHECK_INT(cli_endpoint_parse("unix:///run/gw.sock", out, sizeof(out), &host, &port, &e), 0);
    free(host);
    CHECK_INT(cli_endpoint_parse("unix://rel", out, sizeof(out), &host, &port, &e), -EINVAL);
    CHECK_INT(cli_endpoint_parse("ftp://x", out, sizeof(out), &host, &port, &e), -EINVAL);
    CHECK_INT(cli_endpoint_parse("https://x:0", out, sizeof(out), &host, &port, &e), -EINVAL);
    CHECK_INT(cli_endpoint_parse("https://x:80/path", out, sizeof(out), &host, &port, &e), -EINVAL);
    CHECK_INT(cli_endpoint_parse("https://:80", out, sizeof(out), &host, &port, &e), -EINVAL);
    return TAP_PASS;
}

static int
test_table(void)
{
    static const char *const hdr[] = { "NAME", "PHASE" };
    static const char *const r1[] = { "alpha", "ready" };
    static const char *const r2[] = { "b", NULL };
    struct cli_table *t = cli_table_new(2, hdr);
    struct buf b = BUF_INIT;
    char ts[32];

    cli_table_add(t, r1);
    cli_table_color_last(t, 1, "32");
    cli_table_add(t, r2);
    CHECK_INT((int)cli_table_rows(t), 2);
    cli_table_render(t, false, &b);
    CHECK_STR(buf_cstr(&b), "NAME   PHASE\nalpha  ready\nb      -\n");
    buf_reset(&b);
    cli_table_render(t, true, &b);
    CHECK_CONTAINS(buf_cstr(&b), "\033[32mready\033[0m");
    CHECK_CONTAINS(buf_cstr(&b), "\033[1mNAME\033[0m");
    buf_fini(&b);
    cli_table_free(t);
    cli_format_time_ms(0, ts, sizeof(ts));
    CHECK_STR(ts, "1970-01-01 00:00:00");
    cleanup();
    setenv("NO_COLOR", "1", 1);
    CHECK(!cli_color_wanted(1));
    return TAP_PASS;
}

static int
test_yaml(void)
{
    cJSON *j = cJSON_Parse("{\"name\":\"a\\nb\",\"n\":3,\"ok\":true,\"labels\":{},"
                           "\"cmd\":[\"x\",\"y\"],\"nest\":{\"a b\":null},\"items\":[{\"k\":1}]}");
    struct buf b = BUF_INIT;

    CHECK(j != NULL);
    cli_yaml_render(j, &b);
    CHECK_STR(buf_cstr(&b), "name: \"a\\nb\"\nn: 3\nok: true\nlabels: {}\ncmd:\n  - \"x\"\n"
                            "  - \"y\"\nnest:\n  \"a b\": null\nitems:\n  -\n    k: 1\n");
    buf_reset(&b);
    cJSON_Delete(j);
    j = cJSON_CreateArray();
    cli_yaml_render(j, &b);
    CHECK_STR(buf_cstr(&b), "[]\n");
    cJSON_Delete(j);
    buf_fini(&b);
    return TAP_PASS;
}

/* The client TLS bundle import: all three files or nothing, 0600. */
static int
test_mtls_import(void)
{
    char src[300], ca[320], crt[320], key[320], dst[400];
    struct stat st;
    struct err e;
    FILE *f;

    fresh_cfg();
    snprintf(src, sizeof(src), "%.*s/src", (int)(strrchr(cfg, '/') - cfg), cfg);
    CHECK(mkdir(src, 0700) == 0);
    snprintf(ca, sizeof(ca), "%s/ca.pem", src);
    snprintf(crt, sizeof(crt), "%s/c.pem", src);
    snprintf(key, sizeof(key), "%s/k.pem", src);
    CHECK((f = fopen(ca, "w")) != NULL);
    fputs("CA\n", f);
    fclose(f);
    CHECK((f = fopen(crt, "w")) != NULL);
    fputs("CRT\n", f);
    fclose(f);
    /* the key is missing: nothing may be written */
    CHECK(cli_mtls_import(cfg, "gw", ca, crt, key, &e) == -ENOENT);
    CHECK(strstr(e.msg, "k.pem") != NULL);
    snprintf(dst, sizeof(dst), "%s/gateways/gw/mtls/ca.crt", cfg);
    CHECK(stat(dst, &st) < 0 && errno == ENOENT);
    CHECK((f = fopen(key, "w")) != NULL);
    fputs("KEY\n", f);
    fclose(f);
    CHECK(cli_mtls_import(cfg, "gw", ca, crt, key, &e) == 0);
    snprintf(dst, sizeof(dst), "%s/gateways/gw/mtls/tls.key", cfg);
    CHECK(stat(dst, &st) == 0 && (st.st_mode & 0777) == 0600);
    {
        struct buf b = BUF_INIT;
        CHECK(read_file(dst, 100, &b, NULL) == 0);
        CHECK_STR(buf_cstr(&b), "KEY\n");
        buf_fini(&b);
    }
    cleanup();
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_names), TAP_TEST(test_yaml), TAP_TEST(test_registry), TAP_TEST(test_resolve),
         TAP_TEST(test_last_sandbox), TAP_TEST(test_endpoints), TAP_TEST(test_table),
         TAP_TEST(test_mtls_import))
