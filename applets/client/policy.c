/*
 * policy.c: "openshell policy validate|check|default" (doc/policy.md).
 *
 *   validate FILE...   load each policy strictly; "FILE: ok" or every error
 *   check FILE         decide requests: JSON lines on stdin (reference §8
 *                      shape) or one request from flags; one verdict each
 *   default            print the built-in restrictive default policy
 *
 * set|get|list|update against the gateway are in policy_gw.c.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../applets.h"
#include "buf.h"
#include "client.h"
#include "policy.h"
#include "xfuncs.h"

static const char policy_usage[] =
    "Usage: openshell policy COMMAND [ARGS...]\n"
    "\n"
    "Commands:\n"
    "  validate FILE...   check policy files; prints 'FILE: ok' (and warnings) or\n"
    "                     every error as FILE:LINE:COL: field: message\n"
    "  check FILE         decide requests against FILE (see 'openshell policy check -h')\n"
    "  default            print the built-in default policy\n"
    "  set|get|list|update [NAME] ...\n"
    "                     a sandbox's policy on the gateway (see 'openshell policy\n"
    "                     set --help')\n"
    "\n"
    "Exit status: 0 ok, 1 invalid policy (or a denied request with check flags),\n"
    "2 usage error.\n";

static const char check_usage[] =
    "Usage: openshell policy check [OPTIONS] FILE\n"
    "\n"
    "Without request options, read one JSON request per line from stdin, e.g.\n"
    "  {\"binary\":\"/usr/bin/curl\",\"host\":\"api.github.com\",\"port\":443}\n"
    "(keys: transport, binary, ancestors, cmdline_paths, host, port, method, path,\n"
    "query, resolved_ips, raw_target, websocket_upgrade, env) and print one line\n"
    "  {\"decision\":\"allow\"|\"deny\",\"policy\":NAME|null,\n"
    "   \"l7_decision\":\"allow\"|\"audit\"|\"deny\"|null,\"reason\":TEXT|null}\n"
    "A malformed line prints {\"error\":MESSAGE} and makes the exit status 1.\n"
    "\n"
    "Options (one request, readable verdict; exit 0 allow, 1 deny):\n"
    "      --transport T       connect (default), forward, transparent or l7\n"
    "      --binary PATH       the calling executable\n"
    "      --ancestor PATH     a parent executable, nearest first (repeatable)\n"
    "      --host HOST         destination host\n"
    "      --port N            destination port\n"
    "      --method M          HTTP method (runs the L7 decision)\n"
    "      --path P            canonical request path\n"
    "      --raw-target T      raw request-target (canonicalised here)\n"
    "      --query K=V         a decoded query value (repeatable)\n"
    "      --resolved-ip IP    a DNS answer for the SSRF check (repeatable)\n"
    "      --websocket-upgrade the GET carries a WebSocket upgrade\n"
    "      --json              print the JSON line instead of text\n"
    "  -h, --help              show this help\n"
    "\n"
    "OPENSHELL_NETWORK_BINARY_IDENTITY=relaxed disables binary matching.\n";

/* Print every diagnostic of D to stderr. */
static void
print_diags(const struct policy_diags *d)
{
    for (size_t i = 0; i < d->n; i++)
        fprintf(stderr, "%s\n", d->v[i].text);
    if (d->errors + d->warnings > d->n)
        fprintf(stderr, "... and %zu more\n", d->errors + d->warnings - d->n);
}

static int
policy_validate(int argc, char **argv)
{
    int status = 0;

    if (argc < 2)
        applet_usage_error("openshell policy validate", "expected at least one FILE");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs("Usage: openshell policy validate FILE...\n", stdout);
        return 0;
    }
    for (int i = 1; i < argc; i++) {
        struct policy_diags d;
        struct policy *p = NULL;
        struct err e;
        int rc;

        err_clear(&e);
        policy_diags_init(&d);
        rc = policy_load_file(argv[i], &p, &d, &e);
        print_diags(&d);
        if (rc == 0) {
            printf("%s: ok\n", argv[i]);
        } else {
            if (d.errors == 0)
                fprintf(stderr, "%s\n", err_str(&e, rc));
            else
                fprintf(stderr, "%s: %zu error%s\n", argv[i], d.errors, d.errors == 1 ? "" : "s");
            status = 1;
        }
        policy_unref(p);
        policy_diags_fini(&d);
    }
    return status;
}

/* Read JSON lines from stdin and print one verdict per line. */
static int
check_stream(const struct policy *p, bool relaxed)
{
    struct buf line = BUF_INIT, out = BUF_INIT;
    int status = 0;
    char *l = NULL;
    size_t cap = 0;
    ssize_t n;

    while ((n = getline(&l, &cap, stdin)) >= 0) {
        struct policy_json_request r;
        struct policy_decision d;
        struct err e;
        size_t len = (size_t)n;

        while (len && (l[len - 1] == '\n' || l[len - 1] == '\r'))
            len--;
        if (len == 0)
            continue;
        buf_reset(&out);
        err_clear(&e);
        if (policy_json_request_parse(&r, l, len, &e) < 0) {
            buf_puts(&out, "{\"error\":");
            buf_put_json_str(&out, e.msg, strlen(e.msg));
            buf_puts(&out, "}");
            status = 1;
        } else {
            if (relaxed)
                r.req.binary_identity_relaxed = true;
            policy_decide(p, &r.req, &d);
            policy_decision_json(&d, &out);
        }
        policy_json_request_fini(&r);
        buf_putc(&out, '\n');
        fwrite(out.data, 1, out.len, stdout);
        fflush(stdout);
    }
    free(l);
    buf_fini(&line);
    buf_fini(&out);
    return status;
}

#define CHECK_MAX_LIST 64

static int
policy_check(int argc, char **argv)
{
    enum {
        OPT_TRANSPORT = 0x100,
        OPT_BINARY,
        OPT_ANCESTOR,
        OPT_HOST,
        OPT_PORT,
        OPT_METHOD,
        OPT_PATH,
        OPT_RAW,
        OPT_QUERY,
        OPT_IP,
        OPT_WS,
        OPT_JSON,
    };
    static const struct option longopts[] = {
        { "transport", required_argument, NULL, OPT_TRANSPORT },
        { "binary", required_argument, NULL, OPT_BINARY },
        { "ancestor", required_argument, NULL, OPT_ANCESTOR },
        { "host", required_argument, NULL, OPT_HOST },
        { "port", required_argument, NULL, OPT_PORT },
        { "method", required_argument, NULL, OPT_METHOD },
        { "path", required_argument, NULL, OPT_PATH },
        { "raw-target", required_argument, NULL, OPT_RAW },
        { "query", required_argument, NULL, OPT_QUERY },
        { "resolved-ip", required_argument, NULL, OPT_IP },
        { "websocket-upgrade", no_argument, NULL, OPT_WS },
        { "json", no_argument, NULL, OPT_JSON },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell policy check";
    const char *ancestors[CHECK_MAX_LIST], *ips[CHECK_MAX_LIST];
    struct policy_query_param query[CHECK_MAX_LIST];
    const char *qvals[CHECK_MAX_LIST];
    struct policy_request req;
    struct policy_diags d;
    struct policy *p = NULL;
    struct err e;
    bool flags = false, json = false;
    int opt, status;

    memset(&req, 0, sizeof(req));
    req.ancestors = ancestors;
    req.resolved_ips = ips;
    req.query = query;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (opt != 'h' && opt != OPT_JSON && opt != '?' && opt != ':')
            flags = true;
        switch (opt) {
        case OPT_TRANSPORT:
            if (!strcmp(optarg, "connect"))
                req.transport = POLICY_TRANSPORT_CONNECT;
            else if (!strcmp(optarg, "forward"))
                req.transport = POLICY_TRANSPORT_FORWARD;
            else if (!strcmp(optarg, "transparent"))
                req.transport = POLICY_TRANSPORT_TRANSPARENT;
            else if (!strcmp(optarg, "l7"))
                req.transport = POLICY_TRANSPORT_L7;
            else
                applet_usage_error(prog, "unknown transport '%s'", optarg);
            break;
        case OPT_BINARY: req.binary = optarg; break;
        case OPT_ANCESTOR:
            if (req.nancestors >= CHECK_MAX_LIST)
                applet_usage_error(prog, "too many --ancestor");
            ancestors[req.nancestors++] = optarg;
            break;
        case OPT_HOST: req.host = optarg; break;
        case OPT_PORT: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || end == optarg || v < 0 || v > 65535)
                applet_usage_error(prog, "--port wants 0..65535, got '%s'", optarg);
            req.port = (unsigned)v;
            break;
        }
        case OPT_METHOD: req.method = optarg; break;
        case OPT_PATH: req.path = optarg; break;
        case OPT_RAW: req.raw_target = optarg; break;
        case OPT_QUERY: {
            char *eq = strchr(optarg, '=');
            if (!eq)
                applet_usage_error(prog, "--query wants KEY=VALUE, got '%s'", optarg);
            if (req.nquery >= CHECK_MAX_LIST)
                applet_usage_error(prog, "too many --query");
            /* A repeated key is another entry: the matcher reads them all. */
            *eq = '\0';
            qvals[req.nquery] = eq + 1;
            query[req.nquery].key = optarg;
            query[req.nquery].values = &qvals[req.nquery];
            query[req.nquery].nvalues = 1;
            req.nquery++;
            break;
        }
        case OPT_IP:
            if (req.nresolved_ips >= CHECK_MAX_LIST)
                applet_usage_error(prog, "too many --resolved-ip");
            ips[req.nresolved_ips++] = optarg;
            break;
        case OPT_WS: req.websocket_upgrade = true; break;
        case OPT_JSON: json = true; break;
        case 'h': fputs(check_usage, stdout); return 0;
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    if (optind != argc - 1)
        applet_usage_error(prog, "expected exactly one policy FILE");
    err_clear(&e);
    policy_diags_init(&d);
    if (policy_load_file_flags(argv[optind], POLICY_LOAD_VERSION_OPTIONAL, &p, &d, &e) < 0) {
        print_diags(&d);
        if (d.errors == 0)
            fprintf(stderr, "%s\n", e.msg);
        policy_diags_fini(&d);
        return 1;
    }
    print_diags(&d); /* warnings: stderr, the answers stay clean on stdout */
    policy_diags_fini(&d);
    req.binary_identity_relaxed =
        policy_binary_identity_relaxed(getenv("OPENSHELL_NETWORK_BINARY_IDENTITY"));
    if (!flags) {
        status = check_stream(p, req.binary_identity_relaxed);
    } else {
        struct policy_decision dec;
        static const char *const l7s[] = { "allow", "audit", "deny" };

        status = policy_decide(p, &req, &dec) == 0 ? 0 : 1;
        if (json) {
            struct buf out = BUF_INIT;
            policy_decision_json(&dec, &out);
            puts(buf_cstr(&out));
            buf_fini(&out);
        } else {
            printf("%s", dec.allow ? "allow" : "deny");
            if (dec.policy)
                printf(" (policy %s)", dec.policy);
            if (dec.l7_ran)
                printf(", L7 %s", l7s[dec.l7]);
            if (dec.reason[0])
                printf(": %s", dec.reason);
            putchar('\n');
        }
    }
    policy_unref(p);
    return status;
}

int
cli_policy(int argc, char **argv)
{
    if (argc < 2) {
        fputs(policy_usage, stderr);
        return EXIT_USAGE;
    }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
        fputs(policy_usage, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "validate"))
        return policy_validate(argc - 1, argv + 1);
    {
        int rc = cli_policy_gw(argc - 1, argv + 1);
        if (rc >= 0)
            return rc;
    }
    if (!strcmp(argv[1], "check")) {
        optind = 0;
        return policy_check(argc - 1, argv + 1);
    }
    if (!strcmp(argv[1], "default")) {
        if (argc > 2)
            applet_usage_error("openshell policy default", "unexpected argument '%s'", argv[2]);
        fputs(policy_default_yaml(), stdout);
        return 0;
    }
    applet_usage_error("openshell policy", "unknown command '%s'", argv[1]);
}
