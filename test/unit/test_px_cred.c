/*
 * test_px_cred: the credentials document (what is accepted and refused),
 * placeholder resolution in targets and headers (every injection point and
 * every refusal), endpoint binding, marker detection (raw, percent-encoded,
 * alias, split across feeds) and log redaction.
 */
#include <mbedtls/base64.h>
#include <stdlib.h>
#include <string.h>

#include "px_cred.h"
#include "tap.h"

static const char doc[] =
    "{\"revision\":4,\"environment\":{\"TOK\":\"openshell:resolve:env:TOK\"},"
    "\"credentials\":["
    "{\"provider\":\"gh\",\"key\":\"TOK\",\"value\":\"s3cr3t\","
    "\"endpoints\":[{\"host\":\"api.example.com\",\"port\":443},{\"host\":\"*.gh.test\",\"port\":"
    "8080}]},"
    "{\"key\":\"SPACE\",\"value\":\"a "
    "b&c\",\"endpoints\":[{\"host\":\"api.example.com\",\"port\":443}]},"
    "{\"key\":\"CRLF\",\"value\":\"x\\r\\nEvil: "
    "1\",\"endpoints\":[{\"host\":\"api.example.com\",\"port\":443}]},"
    "{\"key\":\"SLASH\",\"value\":\"a/"
    "b\",\"endpoints\":[{\"host\":\"api.example.com\",\"port\":443}]},"
    "{\"key\":\"DOTS\",\"value\":\"..\",\"endpoints\":[{\"host\":\"api.example.com\",\"port\":443}]"
    "}"
    "],"
    "\"inference\":{\"api\":\"anthropic\",\"base_url\":\"https://llm.test:8443/api/\","
    "\"model\":\"m1\",\"api_key\":\"k\"}}";

static struct px_creds *
load(void)
{
    struct px_creds *c = NULL;
    struct err e;

    if (px_creds_parse(doc, strlen(doc), &c, &e) < 0)
        tap_diag("parse: %s", e.msg);
    return c;
}

static int
test_parse(void)
{
    struct px_creds *c = load();
    const struct px_route *r;

    CHECK(c);
    CHECK_INT(px_creds_revision(c), 4);
    CHECK_INT(px_creds_count(c), 5);
    r = px_creds_route(c);
    CHECK(r);
    CHECK_INT(r->api, PX_API_ANTHROPIC);
    CHECK(r->https);
    CHECK_STR(r->host, "llm.test");
    CHECK_INT(r->port, 8443);
    CHECK_STR(r->prefix, "/api");
    CHECK(!r->auth_bearer); /* anthropic default: x-api-key */
    CHECK_INT(r->timeout_s, 60);
    CHECK(px_creds_bound_to(c, "API.example.com", 443));
    CHECK(px_creds_bound_to(c, "a.b.gh.test", 8080));
    CHECK(!px_creds_bound_to(c, "gh.test", 8080));
    CHECK(!px_creds_bound_to(c, "api.example.com", 80));
    px_creds_unref(c);
    return TAP_PASS;
}

static int
refused(const char *text, const char *want)
{
    struct px_creds *c = NULL;
    struct err e;

    if (px_creds_parse(text, strlen(text), &c, &e) == 0) {
        px_creds_unref(c);
        tap_diag("accepted: %s", text);
        return 0;
    }
    if (!strstr(e.msg, want)) {
        tap_diag("'%s' refused with '%s', expected '%s'", text, e.msg, want);
        return 0;
    }
    if (strstr(e.msg, "s3cr3t")) {
        tap_diag("the error names the value: %s", e.msg);
        return 0;
    }
    return 1;
}

static int
test_parse_refusals(void)
{
    CHECK(refused("[]", "not a JSON object"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"v2_TOK\",\"value\":\"x\"}]}",
                  "reserved"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"A\",\"value\":\"s3\\u0000cr3t\"}]}",
                  "NUL"));
    CHECK(refused("{\"credentials\":[]}", "revision"));
    CHECK(refused("{\"revision\":1,\"credentials\":{}}", "expected an array"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"a-b\",\"value\":\"s3cr3t\"}]}",
                  "key"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"A\",\"value\":1}]}", "value"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"A\",\"value\":\"s3cr3t\"},"
                  "{\"key\":\"A\",\"value\":\"s3cr3t\"}]}",
                  "duplicate"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"A\",\"value\":\"s3cr3t\","
                  "\"endpoints\":[{\"host\":\"a*.b\",\"port\":1}]}]}",
                  "wildcard"));
    CHECK(refused("{\"revision\":1,\"credentials\":[{\"key\":\"A\",\"value\":\"s3cr3t\","
                  "\"endpoints\":[{\"host\":\"a.b\",\"port\":70000}]}]}",
                  "port"));
    CHECK(refused("{\"revision\":1,\"inference\":{\"api\":\"x\"}}", "inference.api"));
    CHECK(refused("{\"revision\":1,\"inference\":{\"api\":\"openai\",\"base_url\":\"ftp://x\","
                  "\"model\":\"m\",\"api_key\":\"k\"}}",
                  "base_url"));
    CHECK(refused("{\"revision\":1,\"inference\":{\"api\":\"openai\","
                  "\"base_url\":\"http://u@x/\",\"model\":\"m\",\"api_key\":\"k\"}}",
                  "user info"));
    CHECK(refused("{\"revision\":1,\"inference\":{\"api\":\"openai\",\"base_url\":\"http://x\","
                  "\"model\":\"m\",\"api_key\":\"k\\nX: y\"}}",
                  "api_key"));
    return TAP_PASS;
}

/* Rewrite TARGET for HOST:PORT; returns the status, OUT the result. */
static enum px_cred_status
target(struct px_creds *c, const char *host, unsigned port, const char *t, struct buf *out)
{
    struct px_cred_ctx x = { .creds = c, .host = host, .port = port };

    buf_reset(out);
    return px_cred_target(&x, t, out);
}

static enum px_cred_status
header(struct px_creds *c, const char *v, struct buf *out)
{
    struct px_cred_ctx x = { .creds = c, .host = "api.example.com", .port = 443 };

    buf_reset(out);
    return px_cred_header(&x, "X", v, out);
}

static int
test_target(void)
{
    struct px_creds *c = load();
    struct buf b = BUF_INIT;
    const char *h = "api.example.com";

    CHECK_INT(target(c, h, 443, "/bot" PX_CRED_MARKER "TOK/send?x=1", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "/bots3cr3t/send?x=1");
    CHECK_INT(target(c, h, 443, "/q?a=" PX_CRED_MARKER "SPACE&b=" PX_CRED_MARKER "v12_TOK", &b),
              PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "/q?a=a%20b%26c&b=s3cr3t");
    CHECK_INT(target(c, h, 443, "/p/" PX_CRED_MARKER "SPACE", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "/p/a%20b&c");
    CHECK_INT(target(c, h, 443, "/p/" PX_CRED_MARKER "SLASH", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(target(c, h, 443, "/p/" PX_CRED_MARKER "DOTS", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(target(c, h, 443, "/p?a=" PX_CRED_MARKER "CRLF", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(target(c, h, 443, "/p?a=" PX_CRED_MARKER, &b), PX_CRED_BAD_SYNTAX);
    CHECK_INT(target(c, h, 443, "/p?a=" PX_CRED_MARKER "NOPE", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(target(c, "evil.test", 443, "/p?a=" PX_CRED_MARKER "TOK", &b), PX_CRED_MISMATCH);
    CHECK_INT(target(c, "x.gh.test", 8080, "/p?a=" PX_CRED_MARKER "TOK", &b), PX_CRED_OK);
    CHECK_INT(target(NULL, h, 443, "/p?a=" PX_CRED_MARKER "TOK", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(target(NULL, h, 443, "/plain?x=y", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "/plain?x=y");
    buf_fini(&b);
    px_creds_unref(c);
    return TAP_PASS;
}

static int
test_header(void)
{
    struct px_creds *c = load();
    struct buf b = BUF_INIT;

    CHECK_INT(header(c, PX_CRED_MARKER "TOK", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "s3cr3t");
    CHECK_INT(header(c, "Bearer " PX_CRED_MARKER "TOK", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "Bearer s3cr3t");
    /* Basic base64("user:openshell:resolve:env:TOK") -> base64("user:s3cr3t") */
    CHECK_INT(header(c, "Basic dXNlcjpvcGVuc2hlbGw6cmVzb2x2ZTplbnY6VE9L", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "Basic dXNlcjpzM2NyM3Q=");
    CHECK_INT(header(c, "Basic dXNlcjpwdw==", &b), PX_CRED_OK); /* user:pw untouched */
    CHECK_STR(buf_cstr(&b), "Basic dXNlcjpwdw==");
    CHECK_INT(header(c, "text " PX_CRED_MARKER "TOK more", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(header(c, "Bearer " PX_CRED_MARKER "CRLF", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(header(c, PX_CRED_MARKER, &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(header(c, "OPENSHELL%3Aresolve%3Aenv%3ATOK", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(header(c, "sk-OPENSHELL-RESOLVE-ENV-TOK", &b), PX_CRED_UNAVAILABLE);
    CHECK_INT(header(c, "ordinary value", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "ordinary value");
    buf_fini(&b);
    px_creds_unref(c);
    return TAP_PASS;
}

/* Basic credentials far longer than any fixed buffer still get rewritten. */
static int
test_basic_long(void)
{
    struct px_creds *c = load();
    size_t ulen = 20000, plen, el = 0, dl = 0;
    char *plain = malloc(ulen + 64), *hdr = malloc(40000), *dec = malloc(40000);
    struct buf b = BUF_INIT;

    memset(plain, 'u', ulen);
    memcpy(plain + ulen, ":" PX_CRED_MARKER "TOK", strlen(":" PX_CRED_MARKER "TOK") + 1);
    plen = strlen(plain);
    memcpy(hdr, "Basic ", 6);
    CHECK_INT(mbedtls_base64_encode((unsigned char *)hdr + 6, 40000 - 7, &el,
                                    (unsigned char *)plain, plen),
              0);
    hdr[6 + el] = '\0';
    CHECK_INT(header(c, hdr, &b), PX_CRED_OK);
    CHECK_INT(mbedtls_base64_decode((unsigned char *)dec, 40000, &dl, (unsigned char *)b.data + 6,
                                    b.len - 6),
              0);
    CHECK_INT(dl, ulen + 7);
    CHECK(memcmp(dec + ulen, ":s3cr3t", 7) == 0);
    free(plain);
    free(hdr);
    free(dec);
    buf_fini(&b);
    px_creds_unref(c);
    return TAP_PASS;
}

static int
test_body(void)
{
    struct px_creds *c = load();
    struct px_cred_ctx x = { .creds = c, .host = "api.example.com", .port = 443 };
    struct buf b = BUF_INIT;
    static const char json[] = "{\"t\":\"" PX_CRED_MARKER "SPACE\"}";
    static const char form[] = "a=1&t=" PX_CRED_MARKER "SPACE";

    CHECK_INT(px_cred_body(&x, json, strlen(json), "application/json", &b), PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "{\"t\":\"a b&c\"}");
    buf_reset(&b);
    CHECK_INT(px_cred_body(&x, form, strlen(form), "application/x-www-form-urlencoded", &b),
              PX_CRED_OK);
    CHECK_STR(buf_cstr(&b), "a=1&t=a%20b%26c");
    buf_reset(&b);
    CHECK_INT(px_cred_body(&x, form, strlen(form), "image/png", &b), PX_CRED_OK);
    CHECK(px_cred_marker(b.data, b.len)); /* left for the caller to refuse */
    buf_reset(&b);
    x.host = "elsewhere.test";
    CHECK_INT(px_cred_body(&x, json, strlen(json), "application/json", &b), PX_CRED_MISMATCH);
    buf_fini(&b);
    px_creds_unref(c);
    return TAP_PASS;
}

static int
test_marker_and_scan(void)
{
    static const char enc[] = "%6F%70%65%6E%73%68%65%6C%6C%3A%72%65%73%6F%6C%76%65%3A%65%6E%76%3A";
    struct px_cred_scan s = { 0 };
    char out[128];

    CHECK(px_cred_marker("x=openshell:resolve:env:A", 25));
    CHECK(px_cred_marker(enc, strlen(enc)));
    CHECK(px_cred_marker("OpenShell%253Aresolve%253Aenv%253AK", 35));
    CHECK(!px_cred_marker("openshell:resolve:en", 20));
    CHECK(!px_cred_scan_feed(&s, "{\"a\":\"openshell:res", 19));
    CHECK(px_cred_scan_feed(&s, "olve:env:K\"}", 12));
    memset(&s, 0, sizeof(s));
    for (size_t i = 0; i < strlen(enc); i += 5)
        (void)px_cred_scan_feed(&s, enc + i, strlen(enc) - i < 5 ? strlen(enc) - i : 5);
    CHECK(s.hit);
    memset(&s, 0, sizeof(s));
    for (int i = 0; i < 1000; i++)
        CHECK(!px_cred_scan_feed(&s, "harmless body bytes openshell resolve ", 38));
    px_cred_redact("/bot" PX_CRED_MARKER "TOK/send/" PX_CRED_MARKER "v3_X", out, sizeof(out));
    CHECK_STR(out, "/bot[CREDENTIAL]/send/[CREDENTIAL]");
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_parse), TAP_TEST(test_parse_refusals), TAP_TEST(test_target),
         TAP_TEST(test_header), TAP_TEST(test_basic_long), TAP_TEST(test_body),
         TAP_TEST(test_marker_and_scan))
