#ifndef OPENSHELL_FUZZ_POLICY_H
#define OPENSHELL_FUZZ_POLICY_H
/*
 * fuzz_policy.h: the entry points the policy fuzz targets drive, shared with
 * test/unit/test_policy_corpus.c, which replays the kept corpus through the
 * very same code under ASan/UBSan in every CI run.
 *
 * fuzz_policy_load_one(): load DATA as a policy; when it loads, run fixed
 * L4/L7/SSRF questions against it.
 * fuzz_policy_request_one(): parse DATA as one JSON request and decide it
 * against a fixed policy covering every matcher.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "policy.h"

static const char fuzz_policy_fixed[] =
    "version: 1\n"
    "network_policies:\n"
    "  api:\n"
    "    endpoints:\n"
    "      - host: api.example.com\n"
    "        ports: [443, 8443]\n"
    "        protocol: rest\n"
    "        rules:\n"
    "          - allow: {method: GET, path: \"/repos/*/issues\", query: {state: {any: [open, "
    "\"c*\"]}}}\n"
    "          - allow: {method: POST, path: \"/v1/**\"}\n"
    "        deny_rules:\n"
    "          - {method: POST, path: /v1/admin/**}\n"
    "      - host: \"*.cdn.example.com\"\n"
    "        port: 443\n"
    "      - host: \"**.deep.example.org\"\n"
    "        port: 80\n"
    "        protocol: websocket\n"
    "        access: read-write\n"
    "        path: /ws/**\n"
    "    binaries:\n"
    "      - path: /usr/bin/curl\n"
    "      - path: /opt/**/bin/agent-*\n"
    "  internal:\n"
    "    endpoints:\n"
    "      - port: 5432\n"
    "        protocol: rest\n"
    "        access: full\n"
    "        enforcement: audit\n"
    "        allowed_ips: [10.0.5.0/24, \"fd00::/64\"]\n"
    "      - host: db.internal.example\n"
    "        port: 443\n"
    "        protocol: rest\n"
    "        allow_encoded_slash: true\n"
    "        access: read-only\n"
    "    binaries:\n"
    "      - path: /usr/bin/{psql,python3}\n";

static void
fuzz_policy_ask(const struct policy *p, const struct policy_request *base)
{
    static const char *const hosts[] = {
        "api.example.com",     "x.cdn.example.com", "a.b.deep.example.org",
        "db.internal.example", "10.0.5.7",          "example.com"
    };
    static const char *const targets[] = { "/repos/a/issues?state=open", "/v1/admin/x",
                                           "/a/%2e%2e/b;x=1//c/?q=%zz", "http://h:1/p?x=1&x=2" };
    struct policy_request r = *base;
    struct policy_decision d;
    struct policy_l4_result l4;
    struct policy_l7_result l7;
    struct buf out = BUF_INIT;

    for (size_t h = 0; h < sizeof(hosts) / sizeof(*hosts); h++) {
        for (size_t t = 0; t < sizeof(targets) / sizeof(*targets); t++) {
            r.host = hosts[h];
            r.port = t & 1 ? 443 : 5432;
            r.method = t & 2 ? "POST" : "GET";
            r.raw_target = targets[t];
            policy_decide(p, &r, &d);
            policy_decide_l4(p, &r, &l4);
            policy_decide_l7(p, &r, &l7);
            policy_decision_json(&d, &out);
        }
    }
    buf_fini(&out);
}

static inline void
fuzz_policy_load_one(const uint8_t *data, size_t size)
{
    static const char *const anc[] = { "/usr/bin/bash", "/usr/local/bin/claude" };
    struct policy_request r;
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;

    policy_diags_init(&d);
    if (policy_load_mem("fuzz.yaml", (const char *)data, size, &p, &d, &e) == 0) {
        memset(&r, 0, sizeof(r));
        r.binary = "/usr/bin/curl";
        r.ancestors = anc;
        r.nancestors = 2;
        fuzz_policy_ask(p, &r);
        r.binary_identity_relaxed = true;
        fuzz_policy_ask(p, &r);
    }
    policy_unref(p);
    policy_diags_fini(&d);
}

static struct policy *fuzz_policy_fixed_p;

static inline void
fuzz_policy_request_one(const uint8_t *data, size_t size)
{
    struct policy_json_request r;
    struct policy_decision d;
    struct policy_l4_result l4;
    struct policy_l7_result l7;
    struct buf out = BUF_INIT;
    struct policy *fixed;
    struct err e;

    if (!fuzz_policy_fixed_p &&
        policy_load_mem("fixed.yaml", fuzz_policy_fixed, sizeof(fuzz_policy_fixed) - 1,
                        &fuzz_policy_fixed_p, NULL, &e) < 0)
        abort();
    fixed = fuzz_policy_fixed_p;
    if (policy_json_request_parse(&r, (const char *)data, size, &e) == 0) {
        policy_decide(fixed, &r.req, &d);
        policy_decision_json(&d, &out);
        policy_decide_l4(fixed, &r.req, &l4);
        policy_decide_l7(fixed, &r.req, &l7);
        if (r.req.raw_target) {
            char path[POLICY_PATH_MAX + 1];
            const char *q, *why;
            policy_canon_path(r.req.raw_target, strlen(r.req.raw_target), false, path, sizeof(path),
                              &q, &why);
        }
        if (r.req.host && r.req.path)
            policy_glob_match(r.req.path, r.req.host, '/');
    }
    policy_json_request_fini(&r);
    buf_fini(&out);
}

/* For the corpus replay: drop the fixed policy so leak checks stay clean. */
static inline void
fuzz_policy_cleanup(void)
{
    policy_unref(fuzz_policy_fixed_p);
    fuzz_policy_fixed_p = NULL;
}

#endif
