/*
 * test_policy.c: the policy engine, one test per rule family: globs, path
 * canonicalisation, loader errors (position and field path), L4 and L7
 * decisions with the reference's reasons, SSRF classes, static sections.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "policy.h"
#include "tap.h"

/* Load TEXT; NULL on error (diagnostics printed as TAP comments). */
static struct policy *
load(const char *text)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;

    policy_diags_init(&d);
    if (policy_load_mem("t.yaml", text, strlen(text), &p, &d, &e) < 0)
        for (size_t i = 0; i < d.n; i++)
            tap_diag("%s", d.v[i].text);
    policy_diags_fini(&d);
    return p;
}

/* Whether loading TEXT fails with a diagnostic containing WANT. */
static bool
rejects(const char *text, const char *want)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;
    bool found = false;

    policy_diags_init(&d);
    if (policy_load_mem("t.yaml", text, strlen(text), &p, &d, &e) == 0) {
        tap_diag("accepted, expected an error containing '%s'", want);
        policy_unref(p);
        policy_diags_fini(&d);
        return false;
    }
    for (size_t i = 0; i < d.n; i++)
        if (d.v[i].level == POLICY_DIAG_ERROR && strstr(d.v[i].text, want))
            found = true;
    if (!found)
        for (size_t i = 0; i < d.n; i++)
            tap_diag("got: %s", d.v[i].text);
    policy_diags_fini(&d);
    return found;
}

static int
test_glob(void)
{
    /* hosts: '*' within a label, '**' one or more labels */
    CHECK_INT(policy_glob_match("*.example.com", "a.example.com", '.'), 1);
    CHECK_INT(policy_glob_match("*.example.com", "example.com", '.'), 0);
    CHECK_INT(policy_glob_match("*.example.com", "a.b.example.com", '.'), 0);
    CHECK_INT(policy_glob_match("**.example.com", "a.b.example.com", '.'), 1);
    CHECK_INT(policy_glob_match("**.example.com", "example.com", '.'), 0);
    CHECK_INT(policy_glob_match("*-api.example.com", "eu-api.example.com", '.'), 1);
    CHECK_INT(policy_glob_match("*.s3.*.amazonaws.com", "b.s3.us-east-1.amazonaws.com", '.'), 1);
    /* paths: '*' one segment, trailing '**' needs one segment, middle zero or more */
    CHECK_INT(policy_glob_match("/repos/*/issues", "/repos/a/issues", '/'), 1);
    CHECK_INT(policy_glob_match("/repos/*/issues", "/repos/a/b/issues", '/'), 0);
    CHECK_INT(policy_glob_match("/x/**", "/x", '/'), 0);
    CHECK_INT(policy_glob_match("/x/**", "/x/", '/'), 1);
    CHECK_INT(policy_glob_match("/x/**", "/x/a/b", '/'), 1);
    CHECK_INT(policy_glob_match("/**/info/refs*", "/o/r.git/info/refs", '/'), 1);
    CHECK_INT(policy_glob_match("/a/**/b", "/a/b", '/'), 1);
    CHECK_INT(policy_glob_match("**", "anything/at/all", '/'), 1);
    CHECK_INT(policy_glob_match("/usr/**", "/usr/local/bin/x", '/'), 1);
    CHECK_INT(policy_glob_match("/usr/bin/{curl,wget}", "/usr/bin/wget", '/'), 1);
    CHECK_INT(policy_glob_match("/usr/bin/python3.[0-9]", "/usr/bin/python3.1", '/'), 1);
    CHECK_INT(policy_glob_match("/usr/bin/[!a]*", "/usr/bin/awk", '/'), 0);
    CHECK_INT(policy_glob_match("/a/b**c", "/a/bxc", '/'), 1);
    CHECK_INT(policy_glob_match("/a/b**c", "/a/bx/c", '/'), 0);
    CHECK_INT(policy_glob_match("/a/[", "/a/[", '/'), -EINVAL);
    CHECK_INT(policy_glob_match("/a/{b", "/a/b", '/'), -EINVAL);
    /* a pathological pattern stays fast (greedy matching, no blow-up) */
    CHECK_INT(policy_glob_match("/*a*a*a*a*a*a*a*a*a*a*b",
                                "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", '/'),
              0);
    return TAP_PASS;
}

static const char *
canon(const char *raw, bool slash)
{
    static char out[POLICY_PATH_MAX + 1];
    const char *why, *q;

    if (policy_canon_path(raw, strlen(raw), slash, out, sizeof(out), &q, &why) < 0)
        return why ? why : "error";
    return out;
}

static int
test_canon(void)
{
    CHECK_STR(canon("/public/../secret", false), "/secret");
    CHECK_STR(canon("/public/%2e%2e/secret", false), "/secret");
    CHECK_STR(canon("/a;jsessionid=x/b", false), "/a/b");
    CHECK_STR(canon("/users/%40alice", false), "/users/@alice");
    CHECK_STR(canon("/search/a%3Fb", false), "/search/a%3Fb");
    CHECK_STR(canon("/a/caf%c3%a9", false), "/a/caf%C3%A9");
    CHECK_STR(canon("/a//b/./c/", false), "/a/b/c/");
    CHECK_STR(canon("http://h.example:8080/p/q?x=1", false), "/p/q");
    CHECK_STR(canon("http://h.example", false), "/");
    CHECK_STR(canon("/a/b/..", false), "/a/");
    CHECK_STR(canon("/a%2Fb", true), "/a%2Fb");
    CHECK_CONTAINS(canon("/a%2Fb", false), "%2F");
    CHECK_CONTAINS(canon("/..", false), "above the root");
    CHECK_CONTAINS(canon("/a/../../b", false), "above the root");
    CHECK_CONTAINS(canon("/a#frag", false), "fragment");
    CHECK_CONTAINS(canon("/a%00b", false), "control");
    CHECK_CONTAINS(canon("/a%0d%0a", false), "control");
    CHECK_CONTAINS(canon("/a%zz", false), "percent");
    CHECK_CONTAINS(canon("*", false), "asterisk");
    CHECK_CONTAINS(canon("a/b", false), "origin form");
    CHECK_CONTAINS(canon("/caf\xc3\xa9", false), "non-ASCII");
    {
        char big[POLICY_PATH_MAX + 8];
        memset(big, 'a', sizeof(big) - 1);
        big[0] = '/';
        big[sizeof(big) - 1] = '\0';
        CHECK_CONTAINS(canon(big, false), "4096");
    }
    return TAP_PASS;
}

static int
test_loader_errors(void)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;
    static const char two[] = "version: 1\n"
                              "network_policies:\n"
                              "  github:\n"
                              "    endpoints:\n"
                              "      - host: api.github.com\n"
                              "        port: 0\n"
                              "    binaries: []\n";

    /* every error, each with FILE:LINE:COL and the field path */
    policy_diags_init(&d);
    CHECK_INT(policy_load_mem("t.yaml", two, strlen(two), &p, &d, &e), -EINVAL);
    CHECK(p == NULL);
    CHECK_INT(d.errors, 2);
    CHECK_STR(d.v[0].text, "t.yaml:6:15: network_policies.github.endpoints[0].port: port 0 is out "
                           "of range (expected 1..65535)");
    CHECK_CONTAINS(d.v[1].text, "t.yaml:7:15: network_policies.github.binaries: binaries is empty");
    policy_diags_fini(&d);

    CHECK(rejects("version: 2\n", "unsupported version 2"));
    CHECK(rejects("network_policies: {}\n", "missing field `version`"));
    CHECK(rejects("version: 1\nbogus: 1\n", "unknown field `bogus`"));
    CHECK(rejects("version: 1\nversion: 1\n", "duplicate field `version`"));
    CHECK(rejects("version: 1\nlandlock: {compatibility: best-effort}\n",
                  "unknown compatibility 'best-effort'"));
    CHECK(rejects("version: 1\nprocess: {run_as_user: root}\n",
                  "run_as_user must be 'sandbox' or a numeric UID/GID"));
    CHECK(rejects("version: 1\nprocess: {run_as_group: \"0\"}\n", "run_as_group must be"));
    CHECK(rejects("version: 1\nprocess: {run_as_user: \"4294967295\"}\n", "run_as_user must"));
    CHECK(rejects("version: 1\nfilesystem_policy: {read_only: [usr]}\n", "must be absolute"));
    CHECK(rejects("version: 1\nfilesystem_policy: {read_only: [/a/../b]}\n", "'..'"));
    CHECK(rejects("version: 1\nfilesystem_policy: {read_only: [/a//b]}\n", "not canonical"));
    CHECK(rejects("version: 1\nfilesystem_policy: {read_write: [/]}\n", "overly broad"));
    CHECK(rejects("x: &a 1\ny: *a\n", "anchors"));
    CHECK(rejects("version: 1\n<<: {a: 1}\n", "merge keys"));
    CHECK(rejects("version: !!int 1\n", "tags"));
    CHECK(rejects("version: 1\n---\nversion: 1\n", "exactly one YAML document"));
    CHECK(rejects("version: 1\nname: \"\xff\"\n", "invalid UTF-8"));
    CHECK(rejects("version: 1\nname: [\n", "YAML syntax error"));
#define NP(ep, bins)                                                                               \
    "version: 1\nnetwork_policies:\n  r:\n    endpoints:\n      - " ep "\n    binaries: " bins "\n"
#define NPB(ep) NP(ep, "[{path: /usr/bin/curl}]")
    CHECK(rejects(NPB("{host: \"*.com\", port: 443}"), "too broad"));
    CHECK(rejects(NPB("{host: \"*com\", port: 443}"), "too broad"));
    CHECK(rejects(NPB("{host: \"*\", port: 443}"), "every host"));
    CHECK(rejects(NPB("{host: \"api.*.example.com\", port: 443}"), "first label"));
    CHECK(rejects(NPB("{host: \"foo**.example.com\", port: 443}"), "whole label"));
    CHECK(rejects(NPB("{host: \"a b.com\", port: 443}"), "invalid character"));
    CHECK(rejects(NPB("{host: a.com}"), "at least one port"));
    CHECK(
        rejects(NPB("{host: a.com, port: 65536}"), "invalid value: integer `65536`, expected u16"));
    CHECK(rejects(NPB("{host: a.com, port: 1, ports: [2]}"), "either port or ports"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: REST, access: full}"),
                  "unknown protocol 'REST'"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, access: write}"),
                  "unknown access 'write'"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, access: full, tls: on}"),
                  "unknown tls mode"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, access: full, enforcement: Enforce}"),
                  "unknown enforcement"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, access: full, rules: [{allow: "
                      "{method: GET, path: /}}]}"),
                  "mutually exclusive"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest}"), "requires rules or access"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: graphql, access: full}"),
                  "not supported yet"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: mcp}"), "not supported yet"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: json-rpc}"), "not supported yet"));
    CHECK(rejects(NPB("{host: a.com, port: 1, access: full}"), "access needs protocol"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, access: full, deny_rules: [{method: "
                      "GET}]}"),
                  "missing field `path`"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: tcp, access: full}"),
                  "not valid for protocol tcp"));
    CHECK(rejects(NPB("{host: 10.0.0.1, port: 1, protocol: tcp}"), "not an IP literal"));
    CHECK(rejects(NPB("{port: 1, protocol: rest, access: full, allowed_ips: [127.0.0.0/8]}"),
                  "always blocked"));
    CHECK(rejects(NPB("{port: 1, protocol: rest, access: full, allowed_ips: [0.0.0.0/0]}"),
                  "always blocked"));
    CHECK(rejects(NPB("{port: 1, protocol: rest, access: full, allowed_ips: [\"::ffff:0:0/96\"]}"),
                  "always blocked"));
    CHECK(rejects(NPB("{port: 1, protocol: rest, access: full, allowed_ips: [10.0.0.300]}"),
                  "invalid allowed_ips"));
    CHECK(rejects(NPB("{port: 1}"), "host is required"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: sql, enforcement: enforce, rules: "
                      "[{allow: {command: SELECT}}]}"),
                  "cannot enforce"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, tls: skip, access: full}"),
                  "tls: skip cannot"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, rules: [{allow: {method: GET, path: "
                      "/a, query: {q: {any: []}}}}]}"),
                  "non-empty list"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: rest, rules: [{allow: {method: GET, path: "
                      "/a, query: {q: {regex: x}}}}]}"),
                  "only `glob` or `any`"));
    CHECK(rejects(NPB("{host: a.com, port: 1, protocol: websocket, rules: [{allow: {method: POST, "
                      "path: /a}}]}"),
                  "websocket rules allow"));
    CHECK(rejects(NPB("{host: a.com, port: 1, middleware: x}"), "unknown field `middleware`"));
    CHECK(rejects(NP("{host: a.com, port: 1}", "[]"), "binaries is empty"));
    CHECK(rejects(NP("{host: a.com, port: 1}", "[{path: curl}]"), "must be absolute"));
    CHECK(rejects(NP("{host: a.com, port: 1}", "[{path: \"/usr/bin/*[a\"}]"), "unclosed '['"));
    CHECK(rejects("version: 1\nnetwork_policies:\n  _provider_x:\n    endpoints: [{host: a.com, "
                  "port: 1}]\n    binaries: [{path: /x}]\n",
                  "reserved '_provider_' prefix"));
    CHECK(rejects("version: 1\nnetwork_middlewares:\n  m: {middleware: openshell/regex, endpoints: "
                  "{include: [\"*.a.com\"]}}\n",
                  "network_middlewares is not supported yet"));
    /* overlapping endpoints that disagree on how the connection is handled */
    CHECK(
        rejects("version: 1\nnetwork_policies:\n"
                "  a: {endpoints: [{host: x.com, port: 443, tls: skip}], binaries: [{path: /a}]}\n"
                "  b: {endpoints: [{host: x.com, port: 443, protocol: rest, access: full}], "
                "binaries: [{path: /b}]}\n",
                "conflicting metadata"));
    CHECK(rejects("version: 1\nnetwork_policies:\n"
                  "  a: {endpoints: [{host: \"*.x.com\", port: 443, protocol: rest, access: full, "
                  "enforcement: audit}], binaries: [{path: /a}]}\n"
                  "  b: {endpoints: [{host: a.x.com, port: 443, protocol: rest, access: full}], "
                  "binaries: [{path: /b}]}\n",
                  "enforcement"));
    return TAP_PASS;
}

static int
test_static_sections(void)
{
    struct policy *p = load("version: 1\n"
                            "filesystem_policy: {read_only: [/usr, /etc], read_write: [/tmp]}\n"
                            "landlock: {compatibility: hard_requirement}\n"
                            "process: {run_as_user: sandbox, run_as_group: \"1000\"}\n");
    const char *const *v;
    size_t n;

    CHECK(p != NULL);
    v = policy_fs_read_only(p, &n);
    CHECK_INT(n, 2);
    CHECK_STR(v[1], "/etc");
    v = policy_fs_read_write(p, &n);
    CHECK_INT(n, 1);
    CHECK_STR(v[0], "/tmp");
    CHECK(policy_fs_present(p));
    CHECK(!policy_fs_include_workdir(p));
    CHECK_INT(policy_landlock_compat(p), POLICY_LANDLOCK_HARD_REQUIREMENT);
    CHECK_STR(policy_run_as_user(p), "sandbox");
    CHECK_STR(policy_run_as_group(p), "1000");
    CHECK_INT(policy_network_count(p), 0);
    policy_unref(p);

    p = policy_default();
    CHECK(policy_fs_include_workdir(p));
    v = policy_fs_read_only(p, &n);
    CHECK_INT(n, 7);
    CHECK_STR(v[3], "/dev/urandom");
    v = policy_fs_read_write(p, &n);
    CHECK_INT(n, 2);
    CHECK_STR(v[1], "/dev/null");
    CHECK(policy_run_as_user(p) == NULL);
    CHECK_INT(policy_landlock_compat(p), POLICY_LANDLOCK_BEST_EFFORT);
    CHECK(policy_ref(p) == p);
    policy_unref(p);
    policy_unref(p);

    p = load("version: 1\n");
    CHECK(policy_fs_include_workdir(p) && !policy_fs_present(p));
    policy_unref(p);
    return TAP_PASS;
}

static const char l4_policy[] =
    "version: 1\n"
    "network_policies:\n"
    "  zeta:\n"
    "    endpoints: [{host: api.github.com, port: 443}]\n"
    "    binaries: [{path: /usr/bin/git}]\n"
    "  alpha:\n"
    "    endpoints: [{host: API.GitHub.com, ports: [443, 80]}, {host: \"*.cdn.example.com\", port: "
    "443}]\n"
    "    binaries: [{path: /usr/local/bin/claude}, {path: \"/opt/**/bin/*\"}]\n"
    "  mid:\n"
    "    endpoints: [{host: api.github.com, port: 443}]\n"
    "    binaries: [{path: /usr/bin/git}]\n";

static int
test_l4(void)
{
    struct policy *p = load(l4_policy);
    struct policy_l4_result r;
    struct policy_request q;
    const char *anc[] = { "/bin/bash", "/usr/local/bin/claude" };

    CHECK(p != NULL);
    memset(&q, 0, sizeof(q));
    q.binary = "/usr/bin/git";
    q.host = "api.github.com";
    q.port = 443;
    CHECK_INT(policy_decide_l4(p, &q, &r), 0);
    CHECK_STR(r.policy, "mid"); /* smallest admitting key, not the first in the file */
    /* a listed ancestor authorises its descendants; argv never counts */
    q.binary = "/usr/bin/node";
    q.ancestors = anc;
    q.nancestors = 2;
    CHECK_INT(policy_decide_l4(p, &q, &r), 0);
    CHECK_STR(r.policy, "alpha");
    q.nancestors = 1;
    CHECK_INT(policy_decide_l4(p, &q, &r), -EACCES);
    CHECK_CONTAINS(r.reason, "binary '/usr/bin/node' not allowed in policy 'alpha' (ancestors: "
                             "[/bin/bash], cmdline: []). SYMLINK HINT");
    CHECK_CONTAINS(r.reason, "; binary '/usr/bin/node' not allowed in policy 'mid'");
    /* glob binaries, case-insensitive hosts */
    q.binary = "/opt/tools/x/bin/agent";
    q.host = "API.GITHUB.COM";
    q.port = 80;
    CHECK_INT(policy_decide_l4(p, &q, &r), 0);
    q.binary = "/opt/bin/agent"; /* '**' between /opt and /bin matches zero segments */
    CHECK_INT(policy_decide_l4(p, &q, &r), 0);
    q.host = "x.cdn.example.com";
    q.port = 443;
    CHECK_INT(policy_decide_l4(p, &q, &r), 0);
    q.host = "cdn.example.com";
    CHECK_INT(policy_decide_l4(p, &q, &r), -EACCES);
    CHECK_STR(r.reason, "endpoint cdn.example.com:443 is not allowed by any policy");
    q.host = "api.github.com";
    q.port = 8443;
    CHECK_INT(policy_decide_l4(p, &q, &r), -EACCES);
    CHECK_STR(r.reason, "endpoint api.github.com:8443 is not allowed by any policy");
    /* relaxed identity: endpoints only */
    q.binary = "/nope";
    q.port = 443;
    q.binary_identity_relaxed = true;
    CHECK_INT(policy_decide_l4(p, &q, &r), 0);
    CHECK_STR(r.policy, "alpha");
    policy_unref(p);

    p = load("version: 1\nnetwork_policies: {}\n");
    CHECK_INT(policy_decide_l4(p, &q, &r), -EACCES);
    CHECK_STR(r.reason, "network connections not allowed by policy");
    policy_unref(p);
    return TAP_PASS;
}

static const char l7_policy[] =
    "version: 1\n"
    "network_policies:\n"
    "  gh:\n"
    "    endpoints:\n"
    "      - host: api.github.com\n"
    "        port: 443\n"
    "        protocol: rest\n"
    "        rules:\n"
    "          - allow: {method: GET, path: \"/repos/*/issues\", query: {state: {any: [open, "
    "closed]}}}\n"
    "          - allow: {method: POST, path: \"/repos/**\"}\n"
    "        deny_rules:\n"
    "          - {method: POST, path: \"/repos/*/admin/**\"}\n"
    "          - {method: GET, path: \"/repos/*/issues\", query: {state: closed}}\n"
    "      - host: ro.example.com\n"
    "        port: 443\n"
    "        protocol: rest\n"
    "        access: read-only\n"
    "      - host: audit.example.com\n"
    "        port: 443\n"
    "        protocol: rest\n"
    "        access: read-only\n"
    "        enforcement: audit\n"
    "      - host: ws.example.com\n"
    "        port: 443\n"
    "        protocol: websocket\n"
    "        access: read-write\n"
    "      - host: sel.example.com\n"
    "        port: 443\n"
    "        protocol: rest\n"
    "        path: /api/**\n"
    "        access: full\n"
    "      - host: l4.example.com\n"
    "        port: 443\n"
    "    binaries: [{path: /usr/bin/curl}]\n";

static int
l7(const struct policy *p, const char *host, const char *method, const char *target,
   struct policy_l7_result *r)
{
    struct policy_request q;

    memset(&q, 0, sizeof(q));
    q.transport = POLICY_TRANSPORT_L7;
    q.binary = "/usr/bin/curl";
    q.host = host;
    q.port = 443;
    q.method = method;
    q.raw_target = target;
    policy_decide_l7(p, &q, r);
    return (int)r->verdict;
}

static int
test_l7(void)
{
    struct policy *p = load(l7_policy);
    struct policy_l7_result r;

    CHECK(p != NULL);
    CHECK_INT(l7(p, "api.github.com", "GET", "/repos/a/issues?state=open", &r), POLICY_L7_ALLOW);
    CHECK_STR(r.path, "/repos/a/issues");
    /* every value must match on the allow side; any value triggers a deny */
    CHECK_INT(l7(p, "api.github.com", "GET", "/repos/a/issues?state=open&state=x", &r),
              POLICY_L7_DENY);
    CHECK_STR(r.reason, "GET /repos/a/issues not permitted by policy");
    CHECK_INT(l7(p, "api.github.com", "GET", "/repos/a/issues?state=open&state=closed", &r),
              POLICY_L7_DENY);
    CHECK_STR(r.reason, "GET /repos/a/issues blocked by deny rule");
    CHECK_INT(l7(p, "api.github.com", "GET", "/repos/a/issues", &r), POLICY_L7_DENY);
    /* '*' stays in one segment */
    CHECK_INT(l7(p, "api.github.com", "GET", "/repos/a/b/issues?state=open", &r), POLICY_L7_DENY);
    /* HEAD rides on GET; deny rules win */
    CHECK_INT(l7(p, "api.github.com", "HEAD", "/repos/a/issues?state=open", &r), POLICY_L7_ALLOW);
    CHECK_INT(l7(p, "api.github.com", "post", "/repos/a/pulls", &r), POLICY_L7_ALLOW);
    CHECK_INT(l7(p, "api.github.com", "POST", "/repos/a/admin/x", &r), POLICY_L7_DENY);
    CHECK_STR(r.reason, "POST /repos/a/admin/x blocked by deny rule");
    /* canonicalisation before matching: no escape through dot segments */
    CHECK_INT(l7(p, "api.github.com", "POST", "/repos/a/x/../admin/y", &r), POLICY_L7_DENY);
    CHECK_INT(l7(p, "api.github.com", "POST", "/repos/a/%2e%2e/a/admin/y", &r), POLICY_L7_DENY);
    CHECK_INT(l7(p, "api.github.com", "POST", "/repos/a%2Fb", &r), POLICY_L7_DENY);
    CHECK_CONTAINS(r.reason, "request-target must be canonical");
    /* presets */
    CHECK_INT(l7(p, "ro.example.com", "OPTIONS", "/x", &r), POLICY_L7_ALLOW);
    CHECK_INT(l7(p, "ro.example.com", "DELETE", "/x", &r), POLICY_L7_DENY);
    CHECK_STR(r.reason, "DELETE /x not permitted by policy");
    /* enforcement: audit forwards, omitted enforces (our deviation) */
    CHECK_INT(l7(p, "audit.example.com", "POST", "/x", &r), POLICY_L7_AUDIT);
    CHECK_STR(r.reason, "POST /x not permitted by policy");
    CHECK(r.enforce == false);
    /* websocket: a plain GET is not an upgrade */
    CHECK_INT(l7(p, "ws.example.com", "GET", "/chat", &r), POLICY_L7_DENY);
    CHECK_STR(r.reason, "websocket endpoint requires a valid WebSocket upgrade request");
    CHECK_INT(l7(p, "ws.example.com", "WEBSOCKET_TEXT", "/chat", &r), POLICY_L7_ALLOW);
    /* endpoint path selector: "/api/ **" also selects "/api" */
    CHECK_INT(l7(p, "sel.example.com", "DELETE", "/api/x", &r), POLICY_L7_ALLOW);
    CHECK_INT(l7(p, "sel.example.com", "DELETE", "/other", &r), POLICY_L7_DENY);
    CHECK_STR(r.reason, "no L7 endpoint path matched request");
    /* L4-only endpoints are not inspected */
    CHECK_INT(l7(p, "l4.example.com", "DELETE", "/anything", &r), POLICY_L7_ALLOW);
    policy_unref(p);
    return TAP_PASS;
}

static enum policy_ssrf
ssrf(const struct policy *p, const char *host, unsigned port, const char *ip)
{
    struct policy_request q;
    struct policy_addr a;

    memset(&q, 0, sizeof(q));
    q.binary = "/usr/bin/curl";
    q.host = host;
    q.port = port;
    if (policy_addr_parse(ip, &a) < 0)
        return (enum policy_ssrf) - 1;
    return policy_ssrf_check(p, &q, &a, 1, NULL);
}

static int
test_ssrf(void)
{
    struct policy *p = load("version: 1\nnetwork_policies:\n"
                            "  a:\n"
                            "    endpoints:\n"
                            "      - {host: internal.example.com, ports: [443, 6443]}\n"
                            "      - {host: \"*.example.org\", port: 443}\n"
                            "      - {port: 8080, protocol: rest, access: full, allowed_ips: "
                            "[10.0.5.0/24]}\n"
                            "      - {host: 10.1.2.3, port: 443}\n"
                            "    binaries: [{path: /usr/bin/curl}]\n");

    CHECK(p != NULL);
    CHECK_INT(ssrf(p, "internal.example.com", 443, "10.0.0.7"), POLICY_SSRF_OK);
    CHECK_INT(ssrf(p, "internal.example.com", 443, "127.0.0.1"), POLICY_SSRF_DECLARED);
    CHECK_INT(ssrf(p, "internal.example.com", 443, "::ffff:169.254.169.254"), POLICY_SSRF_DECLARED);
    CHECK_INT(ssrf(p, "internal.example.com", 6443, "93.184.216.34"), POLICY_SSRF_DECLARED);
    CHECK_INT(ssrf(p, "a.example.org", 443, "93.184.216.34"), POLICY_SSRF_OK);
    CHECK_INT(ssrf(p, "a.example.org", 443, "192.168.1.1"), POLICY_SSRF_INTERNAL);
    CHECK_INT(ssrf(p, "a.example.org", 443, "100.64.0.1"), POLICY_SSRF_INTERNAL);
    CHECK_INT(ssrf(p, "a.example.org", 443, "fd00::1"), POLICY_SSRF_INTERNAL);
    CHECK_INT(ssrf(p, "db", 8080, "10.0.5.20"), POLICY_SSRF_OK);
    CHECK_INT(ssrf(p, "db", 8080, "10.0.6.20"), POLICY_SSRF_ALLOWED_IPS);
    CHECK_INT(ssrf(p, "10.1.2.3", 443, "10.1.2.3"), POLICY_SSRF_OK);
    CHECK_INT(ssrf(p, "10.1.2.3", 443, "10.1.2.4"), POLICY_SSRF_INTERNAL);
    CHECK_STR(policy_ssrf_kind(POLICY_SSRF_ALLOWED_IPS), "allowed_ips check failed");
    policy_unref(p);
    return TAP_PASS;
}

static int
test_decide_json(void)
{
    struct policy *p = load(l7_policy);
    struct policy_json_request r;
    struct policy_decision d;
    struct buf out = BUF_INIT;
    struct err e;
    static const char line[] = "{\"transport\":\"l7\",\"binary\":\"/usr/bin/curl\",\"host\":\"api."
                               "github.com\",\"port\":443,\"method\":\"GET\",\"path\":\"/repos/a/"
                               "issues\",\"query\":{\"state\":[\"open\"]}}";

    CHECK(p != NULL);
    CHECK_INT(policy_json_request_parse(&r, line, strlen(line), &e), 0);
    CHECK_INT(policy_decide(p, &r.req, &d), 0);
    policy_decision_json(&d, &out);
    CHECK_STR(
        buf_cstr(&out),
        "{\"decision\":\"allow\",\"policy\":\"gh\",\"l7_decision\":\"allow\",\"reason\":null}");
    policy_json_request_fini(&r);
    CHECK_INT(policy_json_request_parse(&r, "{\"hots\":1}", 10, &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "unknown key 'hots'");
    policy_json_request_fini(&r);
    CHECK_INT(policy_json_request_parse(&r, "{\"port\":70000}", 14, &e), -EINVAL);
    policy_json_request_fini(&r);
    CHECK_INT(policy_json_request_parse(&r, "{\"host\":\"a\\u0000b\"}", 19, &e), -EINVAL);
    policy_json_request_fini(&r);
    buf_fini(&out);
    policy_unref(p);
    return TAP_PASS;
}

static int
test_symlinks(void)
{
    char root[] = "/tmp/test_policy_root.XXXXXX", path[256];
    struct policy *p, *x = NULL;
    struct policy_l4_result r;
    struct policy_request q;
    struct err e;
    FILE *f;

    CHECK(mkdtemp(root) != NULL);
    snprintf(path, sizeof(path), "%s/usr", root);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/usr/bin", root);
    CHECK(mkdir(path, 0755) == 0);
    snprintf(path, sizeof(path), "%s/usr/bin/python3.11", root);
    CHECK((f = fopen(path, "w")) != NULL);
    fclose(f);
    snprintf(path, sizeof(path), "%s/usr/bin/python3", root);
    CHECK(symlink("python3.11", path) == 0);
    snprintf(path, sizeof(path), "%s/bin", root);
    CHECK(symlink("usr/bin", path) == 0);
    snprintf(path, sizeof(path), "%s/loop", root);
    CHECK(symlink("loop", path) == 0);

    p = load("version: 1\nnetwork_policies:\n  py:\n    endpoints: [{host: pypi.org, port: 443}]\n"
             "    binaries: [{path: /bin/python3}, {path: /loop/x}, {path: /nope/x}]\n");
    CHECK(p != NULL);
    memset(&q, 0, sizeof(q));
    q.binary = "/usr/bin/python3.11";
    q.host = "pypi.org";
    q.port = 443;
    CHECK_INT(policy_decide_l4(p, &q, &r), -EACCES);
    CHECK_INT(policy_expand_symlinks(p, root, &x, &e), 0);
    CHECK_INT(policy_decide_l4(x, &q, &r), 0);
    q.binary = "/bin/python3"; /* the original entry stays */
    CHECK_INT(policy_decide_l4(x, &q, &r), 0);
    policy_unref(x);
    policy_unref(p);
    snprintf(path, sizeof(path), "rm -rf '%s'", root);
    CHECK(system(path) == 0);
    return TAP_PASS;
}

/* ASan's allocation hooks (libasan exports them; declared here since GCC
 * ships no allocator_interface.h). Weak: absent means skip. */
int __sanitizer_install_malloc_and_free_hooks(void (*m)(const volatile void *, size_t),
                                              void (*f)(const volatile void *))
    __attribute__((weak));
static volatile size_t test_allocs;

static void
count_malloc(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    test_allocs++;
}

static void
count_free(const volatile void *p)
{
    (void)p;
}

/* Decisions allocate nothing (the proxy calls them per connection and per
 * request): count allocations across a mix of L4, L7, SSRF and full
 * decisions with every kind of reason. */
static int
test_no_alloc(void)
{
    struct policy *p = load(l7_policy), *q = load(l4_policy);
    struct policy_request r;
    struct policy_l4_result l4;
    struct policy_l7_result l7;
    struct policy_decision d;
    struct policy_addr a;
    static const char *const targets[] = { "/repos/a/issues?state=open&state=closed",
                                           "/repos/a/../../x", "/repos/a%2Fb", "/x?q=%zz" };
    static const char *const anc[] = { "/bin/sh", "/usr/local/bin/claude" };
    static const char *const ips[] = { "10.0.0.1" };

    if (!__sanitizer_install_malloc_and_free_hooks)
        TAP_SKIP_BECAUSE("no sanitizer allocation hooks");
    CHECK(p && q);
    CHECK(policy_addr_parse("93.184.216.34", &a) == 0);
    __sanitizer_install_malloc_and_free_hooks(count_malloc, count_free);
    test_allocs = 0;
    for (int i = 0; i < 200; i++) {
        memset(&r, 0, sizeof(r));
        r.binary = i & 1 ? "/usr/bin/curl" : "/usr/bin/wget";
        r.ancestors = anc;
        r.nancestors = 2;
        r.host = i & 2 ? "api.github.com" : "x.cdn.example.com";
        r.port = 443;
        r.method = i & 4 ? "POST" : "GET";
        r.raw_target = targets[i % 4];
        r.resolved_ips = ips;
        r.nresolved_ips = i & 8 ? 1 : 0;
        policy_decide_l4(p, &r, &l4);
        policy_decide_l4(q, &r, &l4);
        policy_decide_l7(p, &r, &l7);
        policy_ssrf_check(p, &r, &a, 1, NULL);
        policy_decide(p, &r, &d);
        policy_decide(q, &r, &d);
    }
    __sanitizer_install_malloc_and_free_hooks(NULL, NULL);
    CHECK_INT(test_allocs, 0);
    policy_unref(p);
    policy_unref(q);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_glob), TAP_TEST(test_canon), TAP_TEST(test_loader_errors),
         TAP_TEST(test_static_sections), TAP_TEST(test_l4), TAP_TEST(test_l7), TAP_TEST(test_ssrf),
         TAP_TEST(test_decide_json), TAP_TEST(test_symlinks), TAP_TEST(test_no_alloc))
