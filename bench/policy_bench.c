/*
 * policy_bench.c: figures for the policy engine (run through bench/policy).
 *
 * 1. A generated 500-block policy with mixed L4 and L7 endpoints (exact,
 *    wildcard and hostless hosts, REST rules with query matchers, deny rules,
 *    presets) answers a fixed mix of requests: L4 decisions for admitted and
 *    refused callers and hosts, then L7 decisions with raw targets (so
 *    canonicalisation and query decoding are included). Prints decisions/s
 *    over the whole mix and p50/p99 of single decisions.
 * 2. Load + compile time of a generated policy of about 1 MiB.
 * Prints figures only; never fails on them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "buf.h"
#include "policy.h"

#define NREQ 20000
#define ROUNDS 50

static double
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A policy of NBLOCKS blocks; block i has 3 endpoints and 3 binaries. */
static void
gen_policy(struct buf *b, int nblocks)
{
    buf_puts(b, "version: 1\nnetwork_policies:\n");
    for (int i = 0; i < nblocks; i++) {
        buf_printf(b, "  block_%04d:\n    endpoints:\n", i);
        if (i % 2 == 0) {
            buf_printf(b,
                       "      - host: api%d.example.com\n        ports: [443, 8443]\n"
                       "        protocol: rest\n        rules:\n"
                       "          - allow: {method: GET, path: \"/v1/repos/*/issues\", query: "
                       "{state: {any: [open, closed]}}}\n"
                       "          - allow: {method: POST, path: \"/v1/repos/**\"}\n"
                       "          - allow: {method: GET, path: \"/v1/users/*/profile\"}\n"
                       "        deny_rules:\n"
                       "          - {method: POST, path: \"/v1/repos/*/admin/**\"}\n",
                       i);
        } else {
            buf_printf(b, "      - host: api%d.example.com\n        port: 443\n", i);
        }
        buf_printf(b, "      - host: \"*.cdn%d.example.net\"\n        port: 443\n", i);
        if (i % 5 == 0)
            buf_printf(b,
                       "      - host: ro%d.example.org\n        port: 443\n"
                       "        protocol: rest\n        access: read-only\n",
                       i);
        else
            buf_printf(b, "      - host: git%d.example.org\n        ports: [22, 443]\n", i);
        buf_printf(
            b,
            "    binaries:\n      - path: /usr/bin/tool%d\n      - path: /usr/local/bin/agent%d\n"
            "      - path: \"/opt/app%d/**\"\n",
            i, i % 50, i);
    }
}

struct breq {
    char host[64], binary[64], target[96];
    const char *method;
    unsigned port;
    const char *anc[2];
    size_t nanc;
};

static void
gen_requests(struct breq *r, int n, int nblocks)
{
    unsigned seed = 12345;

    for (int i = 0; i < n; i++) {
        int blk, kind;

        seed = seed * 1103515245u + 12345u;
        blk = (int)((seed >> 8) % (unsigned)nblocks);
        kind = (int)((seed >> 20) % 8);
        memset(&r[i], 0, sizeof(r[i]));
        r[i].port = 443;
        snprintf(r[i].binary, sizeof(r[i].binary), "/usr/bin/tool%d", blk);
        switch (kind) {
        case 0: snprintf(r[i].host, sizeof(r[i].host), "api%d.example.com", blk); break;
        case 1: snprintf(r[i].host, sizeof(r[i].host), "x.cdn%d.example.net", blk); break;
        case 2: /* ancestor grants */
            snprintf(r[i].host, sizeof(r[i].host), "git%d.example.org", blk | 1);
            snprintf(r[i].binary, sizeof(r[i].binary), "/usr/bin/git");
            r[i].anc[0] = "/bin/sh";
            r[i].anc[1] = "/usr/local/bin/agent1";
            r[i].nanc = 2;
            break;
        case 3: /* unknown host */
            snprintf(r[i].host, sizeof(r[i].host), "nowhere%d.example.com", blk);
            break;
        case 4: /* wrong binary */
            snprintf(r[i].host, sizeof(r[i].host), "api%d.example.com", blk);
            snprintf(r[i].binary, sizeof(r[i].binary), "/usr/bin/intruder");
            break;
        default: /* L7 on a REST endpoint */
            snprintf(r[i].host, sizeof(r[i].host), "api%d.example.com", blk & ~1);
            snprintf(r[i].binary, sizeof(r[i].binary), "/usr/bin/tool%d", blk & ~1);
            r[i].method = kind == 5 ? "GET" : "POST";
            snprintf(r[i].target, sizeof(r[i].target),
                     kind == 5   ? "/v1/repos/r%d/issues?state=open"
                     : kind == 6 ? "/v1/repos/r%d/pulls"
                                 : "/v1/repos/r%d/admin/x/../y",
                     blk);
            break;
        }
    }
}

static void
to_request(const struct breq *b, struct policy_request *q)
{
    memset(q, 0, sizeof(*q));
    q->binary = b->binary;
    q->host = b->host;
    q->port = b->port;
    q->ancestors = b->anc;
    q->nancestors = b->nanc;
    q->method = b->method;
    q->raw_target = b->method ? b->target : NULL;
    q->transport = b->method ? POLICY_TRANSPORT_L7 : POLICY_TRANSPORT_CONNECT;
}

/* One decision the way the proxy asks: L4 for a connection, L7 per request. */
static int
decide_one(const struct policy *p, const struct policy_request *q)
{
    if (q->method) {
        struct policy_l7_result r;
        return policy_decide_l7(p, q, &r);
    } else {
        struct policy_l4_result r;
        return policy_decide_l4(p, q, &r);
    }
}

int
main(void)
{
    struct buf b = BUF_INIT;
    struct policy *p;
    struct policy_diags d;
    struct err e;
    struct breq *reqs = calloc(NREQ, sizeof(*reqs));
    double *lat = calloc(NREQ, sizeof(*lat));
    double t0, best = 1e30;
    int allow = 0, nl7 = 0;

    gen_policy(&b, 500);
    policy_diags_init(&d);
    if (policy_load_mem("bench500.yaml", b.data, b.len, &p, &d, &e) < 0) {
        fprintf(stderr, "bench policy does not load: %s\n", d.n ? d.v[0].text : e.msg);
        return 1;
    }
    policy_diags_fini(&d);
    gen_requests(reqs, NREQ, 500);
    for (int i = 0; i < NREQ; i++) {
        struct policy_request q;
        to_request(&reqs[i], &q);
        allow += decide_one(p, &q) == 0;
        nl7 += q.method != NULL;
    }
    /* Throughput: best of ROUNDS passes over the whole mix. */
    for (int r = 0; r < ROUNDS; r++) {
        t0 = now_ns();
        for (int i = 0; i < NREQ; i++) {
            struct policy_request q;
            to_request(&reqs[i], &q);
            decide_one(p, &q);
        }
        double dt = now_ns() - t0;
        if (dt < best)
            best = dt;
    }
    /* Latency of single decisions (clock overhead included, ~20-30 ns),
     * overall and per kind. */
    {
        double *l4 = calloc(NREQ, sizeof(*l4)), *l7 = calloc(NREQ, sizeof(*l7));
        int n4 = 0, n7 = 0;

        for (int i = 0; i < NREQ; i++) {
            struct policy_request q;
            to_request(&reqs[i], &q);
            t0 = now_ns();
            decide_one(p, &q);
            lat[i] = now_ns() - t0;
            if (q.method)
                l7[n7++] = lat[i];
            else
                l4[n4++] = lat[i];
        }
        qsort(lat, NREQ, sizeof(*lat), cmp_double);
        qsort(l4, (size_t)n4, sizeof(*l4), cmp_double);
        qsort(l7, (size_t)n7, sizeof(*l7), cmp_double);
        printf("policy: 500 blocks, %zu bytes of YAML; %d requests (%d L7, %d L4), %d allowed\n",
               b.len, NREQ, nl7, NREQ - nl7, allow);
        printf("decisions/s:        %.0f (best of %d passes)\n", NREQ / (best / 1e9), ROUNDS);
        printf(
            "per decision:       p50 %.0f ns, p99 %.0f ns, max %.0f ns (budget: p50 < 2000 ns)\n",
            lat[NREQ / 2], lat[NREQ * 99 / 100], lat[NREQ - 1]);
        printf("  L4 (connections): p50 %.0f ns, p99 %.0f ns\n", l4[n4 / 2], l4[n4 * 99 / 100]);
        printf("  L7 (requests):    p50 %.0f ns, p99 %.0f ns\n", l7[n7 / 2], l7[n7 * 99 / 100]);
        free(l4);
        free(l7);
    }
    policy_unref(p);

    /* Load + compile of ~1 MiB. */
    {
        struct buf big = BUF_INIT;
        double times[11];
        int blocks = 0;

        while (big.len < 1024 * 1024) {
            buf_reset(&big);
            blocks += 500;
            gen_policy(&big, blocks);
        }
        for (int r = 0; r < 11; r++) {
            t0 = now_ns();
            if (policy_load_mem("big.yaml", big.data, big.len, &p, NULL, &e) < 0) {
                fprintf(stderr, "1 MiB policy does not load: %s\n", e.msg);
                return 1;
            }
            times[r] = now_ns() - t0;
            policy_unref(p);
        }
        qsort(times, 11, sizeof(*times), cmp_double);
        printf("load+compile:       %.1f ms median (min %.1f ms) for %zu bytes, %d blocks\n",
               times[5] / 1e6, times[0] / 1e6, big.len, blocks);
        buf_fini(&big);
    }
    buf_fini(&b);
    free(reqs);
    free(lat);
    return 0;
}
