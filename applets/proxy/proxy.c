/*
 * proxy.c: the openshell-proxy applet: the policy-enforcing egress proxy
 * (engine in src/px.c).
 *
 * Standalone: `openshell-proxy --policy FILE --listen 127.0.0.1:3128`. The
 * supervisor will start it with --listen-fd (sockets it created inside the
 * agent's network namespace) and --ca-pem-fd (where the proxy hands back
 * the public certificate of the CA whose key never leaves this process).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "../applets.h"
#include "buf.h"
#include "ca.h"
#include "log.h"
#include "loop.h"
#include "policy.h"
#include "px.h"
#include "px_cred.h"
#include "px_ident.h"
#include "tls.h"
#include "xfuncs.h"

static const char proxy_usage[] =
    "Usage: openshell-proxy --policy FILE (--listen ADDR:PORT | --listen-fd N)... [OPTIONS]\n"
    "\n"
    "The egress proxy: CONNECT tunnels and plain-HTTP forwarding, every connection and\n"
    "every inspected request decided by the policy's network_policies. Run on its own,\n"
    "caller identity (which binary connects) is not checked: binary rules pass, unless\n"
    "--agent-pid or --control-fd names the sandbox's agent.\n"
    "\n"
    "Options:\n"
    "  -p, --policy FILE         the policy (YAML); edits are picked up at once (inotify),\n"
    "                            SIGHUP reloads it too\n"
    "      --on-invalid-policy keep|deny-all  an invalid edit keeps the last good policy\n"
    "                            (default) or denies every connection until fixed\n"
    "      --agent-pid PID       caller identity on: PID is the agent's main process, in\n"
    "                            the network namespace of the listeners (see doc/proxy.md)\n"
    "      --control-fd N        caller identity on: the supervisor writes \"agent PID\\n\"\n"
    "                            lines to fd N; its end of file stops the proxy\n"
    "      --diag-fd N           a NETLINK_SOCK_DIAG socket of the listeners' network\n"
    "                            namespace (finds callers' sockets faster than /proc)\n"
    "      --sandbox NAME        name the sandbox in every decision record\n"
    "      --credentials FILE    the providers' credentials document (JSON, see\n"
    "                            doc/providers.md); edits are picked up at once. The\n"
    "                            supervisor sends it on --control-fd instead\n"
    "      --inference-idle-timeout S  inference.local: a streamed response may be\n"
    "                            quiet S seconds before it is cut (default 120)\n"
    "  -l, --listen ADDR:PORT    listen there (repeatable; port 0 picks one)\n"
    "      --listen-fd N         serve listening socket N (repeatable)\n"
    "      --upstream-ca FILE    trust bundle for upstream TLS (default: the system's,\n"
    "                            /etc/ssl/certs/ca-certificates.crt)\n"
    "      --dns-server IP[:PORT]  resolver to use (default: /etc/resolv.conf)\n"
    "      --resolve HOST:ADDR   answer HOST with ADDR without DNS (repeatable)\n"
    "      --ca-out FILE         write the proxy's CA certificate (PEM) to FILE\n"
    "      --bundle-out FILE     write the system trust bundle plus that CA to FILE\n"
    "      --ca-pem-fd N         write the CA certificate to fd N, then close it\n"
    "      --port-file FILE      write the first listener's port to FILE once listening\n"
    "      --header-timeout S    seconds to receive a request head (default 30)\n"
    "      --connect-timeout S   seconds for DNS and the upstream connect (default 10)\n"
    "      --response-timeout S  seconds for an upstream's response head (default 60)\n"
    "      --idle-timeout S      seconds an idle tunnel or connection lives (default 300)\n"
    "      --max-conns N         concurrent client connections (default 8192)\n"
    "  -h, --help                show this help\n"
    "  -V, --version             print the version\n" APPLET_COMMON_HELP;

enum {
    OPT_LISTEN_FD = 0x100,
    OPT_UPSTREAM_CA,
    OPT_DNS_SERVER,
    OPT_RESOLVE,
    OPT_CA_OUT,
    OPT_BUNDLE_OUT,
    OPT_CA_PEM_FD,
    OPT_PORT_FILE,
    OPT_HEADER_TIMEOUT,
    OPT_CONNECT_TIMEOUT,
    OPT_RESPONSE_TIMEOUT,
    OPT_IDLE_TIMEOUT,
    OPT_MAX_CONNS,
    OPT_ON_INVALID,
    OPT_AGENT_PID,
    OPT_CONTROL_FD,
    OPT_DIAG_FD,
    OPT_SANDBOX,
    OPT_CREDENTIALS,
    OPT_INFER_IDLE,
};

#define PROXY_MAX_LIST 16

struct proxy_opts {
    const char *policy;
    const char *listen[PROXY_MAX_LIST];
    unsigned nlisten;
    int listen_fd[PROXY_MAX_LIST];
    unsigned nlisten_fd;
    const char *resolve[64];
    unsigned nresolve;
    const char *ca_out;
    const char *bundle_out;
    int ca_pem_fd;
    const char *port_file;
    bool deny_all_on_invalid;
    long agent_pid;
    int control_fd;
    int diag_fd;
    const char *credentials;
    struct px_opts px;
};

struct proxy_state {
    struct loop *loop;
    struct px_server *srv;
    const char *policy_path;
    bool deny_all_on_invalid;
    struct buf last; /* bytes of the policy in force (an unchanged file is no new generation) */
    bool invalid;    /* the file in force is invalid (deny-all or last good) */
    /* live reload */
    int ino_fd;
    struct event *ino_ev;
    struct loop_timer *debounce;
    struct loop_timer *arm;
    char dir[4096];
    const char *base;
    /* credentials document (--credentials FILE) */
    const char *cred_path;
    const char *cred_base;
    struct buf cred_last;
    struct loop_timer *cred_debounce;
    /* caller identity */
    struct px_ident *ident;
    int control_fd;
    struct event *ctl_ev;
};

static unsigned
proxy_uint(const char *prog, const char *opt, const char *arg, unsigned max)
{
    char *end;
    unsigned long v;

    errno = 0;
    v = strtoul(arg, &end, 10);
    if (errno || end == arg || *end || v == 0 || v > max)
        applet_usage_error(prog, "%s: expected a number from 1 to %u, got '%s'", opt, max, arg);
    return (unsigned)v;
}

static int
proxy_fd_arg(const char *prog, const char *opt, const char *arg)
{
    unsigned v = proxy_uint(prog, opt, arg, 1 << 20);

    if (v < 3)
        applet_usage_error(prog, "%s: fd %u is a standard stream", opt, v);
    return (int)v;
}

static void
proxy_write_file(const char *path, const struct buf *b)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

    if (fd < 0)
        die_errno("open %s", path);
    if (write_full(fd, b->data, b->len) < 0)
        die_errno("write %s", path);
    close(fd);
}

/* Every tunnel holds two descriptors: lift the soft limit to the hard one
 * so thousands of connections fit (the default 1024 would not). */
static void
proxy_raise_nofile(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("raising the descriptor limit");
    }
}

static void
proxy_on_stop(int signo, void *arg)
{
    struct proxy_state *st = arg;

    log_info("signal %d: stopping", signo);
    loop_stop(st->loop);
}

/* With caller identity on, a binary named through a symlink
 * (/usr/bin/python3) also admits its target (/usr/bin/python3.11): the
 * kernel reports resolved paths. The proxy shares the agent's mount
 * namespace, so "/" is the agent's root. Takes over P's reference. */
static struct policy *
proxy_expand(struct policy *p, bool identity)
{
    struct policy *q = NULL;
    struct err e;

    if (!identity)
        return p;
    if (policy_expand_symlinks(p, "/", &q, &e) < 0) {
        log_warnx("resolving symlinked binary paths: %s (paths are matched as written)", e.msg);
        return p;
    }
    policy_unref(p);
    return q;
}

/* Load the policy file again. An unchanged file changes nothing; an invalid
 * one keeps the last good policy or, with --on-invalid-policy deny-all,
 * installs one that denies every connection. Either way the log says why. */
static void
proxy_reload(struct proxy_state *st, const char *why)
{
    struct policy_diags d;
    struct policy *p = NULL;
    struct buf text = BUF_INIT;
    struct err e;
    int rc;

    policy_diags_init(&d);
    rc = read_file(st->policy_path, POLICY_MAX_BYTES + 1, &text, &e);
    if (rc == 0 && !st->invalid && text.len == st->last.len &&
        memcmp(text.data, st->last.data, text.len) == 0) {
        log_debug("policy %s unchanged (%s)", st->policy_path, why);
        goto out;
    }
    if (rc == 0)
        rc = policy_load_mem(st->policy_path, text.data, text.len, &p, &d, &e);
    if (rc < 0) {
        for (size_t i = 0; i < d.n; i++)
            log_warnx("%s", d.v[i].text);
        if (st->deny_all_on_invalid) {
            struct policy *none = policy_default();

            log_warnx("policy reload (%s) failed, denying every connection until the policy is "
                      "fixed: %s",
                      why, e.msg);
            px_server_set_policy(st->srv, none);
            policy_unref(none);
        } else {
            log_warnx("policy reload (%s) failed, keeping the last good policy: %s", why, e.msg);
        }
        st->invalid = true;
        goto out;
    }
    for (size_t i = 0; i < d.n; i++)
        log_warnx("%s", d.v[i].text);
    p = proxy_expand(p, st->ident != NULL);
    px_server_set_policy(st->srv, p);
    policy_unref(p);
    buf_reset(&st->last);
    buf_append(&st->last, text.data, text.len);
    st->invalid = false;
    log_info("policy reloaded from %s (%s)", st->policy_path, why);
out:
    buf_fini(&text);
    policy_diags_fini(&d);
}

/* Install a credentials document (JSON text). A bad one is refused as a
 * whole and the one in force stays. Never logs a value. */
static int
proxy_install_creds(struct proxy_state *st, const char *text, size_t len, const char *from)
{
    struct px_creds *c = NULL;
    struct err e;

    if (px_creds_parse(text, len, &c, &e) < 0) {
        log_warnx("credentials from %s refused (the previous ones stay): %s", from, e.msg);
        return -EINVAL;
    }
    px_server_set_credentials(st->srv, c);
    log_info("credentials revision %llu from %s: %zu key(s), inference route %s",
             (unsigned long long)px_creds_revision(c), from, px_creds_count(c),
             px_creds_route(c) ? "set" : "none");
    px_creds_unref(c);
    return 0;
}

static void
proxy_reload_creds(struct proxy_state *st, const char *why)
{
    struct buf text = BUF_INIT;
    struct err e;

    if (!st->cred_path)
        return;
    if (read_file(st->cred_path, PX_CRED_DOC_MAX + 1, &text, &e) < 0) {
        log_warnx("credentials reload (%s): %s (the previous ones stay)", why, e.msg);
        goto out;
    }
    if (text.len == st->cred_last.len && memcmp(text.data, st->cred_last.data, text.len) == 0)
        goto out;
    if (proxy_install_creds(st, text.data, text.len, st->cred_path) == 0) {
        if (st->cred_last.data)
            explicit_bzero(st->cred_last.data, st->cred_last.len);
        buf_reset(&st->cred_last);
        buf_append(&st->cred_last, text.data, text.len);
    }
out:
    if (text.data)
        explicit_bzero(text.data, text.len);
    buf_fini(&text);
}

static void
proxy_on_cred_debounce(void *arg)
{
    proxy_reload_creds(arg, "file changed");
}

/* A JSON line on the control channel: {"type":"credentials","doc":{...}}. */
static void
proxy_on_control_json(void *arg, const char *line, size_t n)
{
    struct proxy_state *st = arg;
    cJSON *j = cJSON_ParseWithLength(line, n);
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *doc = cJSON_GetObjectItemCaseSensitive(j, "doc");

    if (!cJSON_IsString(type)) {
        log_warnx("control channel: a JSON line without a type");
    } else if (strcmp(type->valuestring, "credentials") != 0) {
        log_warnx("control channel: unknown message type '%.32s'", type->valuestring);
    } else if (!cJSON_IsObject(doc)) {
        log_warnx("control channel: credentials without a doc object");
    } else {
        char *text = cJSON_PrintUnformatted(doc);

        (void)proxy_install_creds(st, text, strlen(text), "the supervisor");
        explicit_bzero(text, strlen(text));
        cJSON_free(text);
    }
    cJSON_Delete(j);
}

/* SIGHUP: load the policy (and the credentials file) again. */
static void
proxy_on_reload(int signo, void *arg)
{
    (void)signo;
    proxy_reload(arg, "SIGHUP");
    proxy_reload_creds(arg, "SIGHUP");
}

static void
proxy_on_debounce(void *arg)
{
    proxy_reload(arg, "file changed");
}

/* Something happened in the policy file's directory: if it concerns the
 * file, reload once the writes have settled (100 ms without another event;
 * editors write a temporary file and rename it over the original). */
static void
proxy_on_inotify(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_state *st = arg;
    char evbuf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool hit = false;
    ssize_t n;

    (void)what;
    while ((n = read(fd, evbuf, sizeof(evbuf))) > 0) {
        for (char *p = evbuf; p < evbuf + n;) {
            const struct inotify_event *ev = (const struct inotify_event *)p;

            if (ev->mask & IN_Q_OVERFLOW) {
                hit = true;
                if (st->cred_debounce)
                    loop_timer_start(st->cred_debounce, 100, false);
            } else if (ev->len && strcmp(ev->name, st->base) == 0) {
                hit = true;
            } else if (ev->len && st->cred_base && strcmp(ev->name, st->cred_base) == 0 &&
                       st->cred_debounce) {
                loop_timer_start(st->cred_debounce, 100, false);
            }
            p += sizeof(*ev) + ev->len;
        }
    }
    if (hit)
        loop_timer_start(st->debounce, 100, false);
}

static void
proxy_watch(struct proxy_state *st)
{
    const char *slash = strrchr(st->policy_path, '/');

    if (slash) {
        size_t n = (size_t)(slash - st->policy_path);

        if (n >= sizeof(st->dir))
            die("policy path too long: %s", st->policy_path);
        memcpy(st->dir, st->policy_path, n ? n : 1);
        st->dir[n ? n : 1] = '\0';
        st->base = slash + 1;
    } else {
        buf_copy_fixed(st->dir, sizeof(st->dir), ".");
        st->base = st->policy_path;
    }
    st->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (st->ino_fd < 0 || inotify_add_watch(st->ino_fd, st->dir,
                                            IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE |
                                                IN_MOVED_FROM | IN_ATTRIB) < 0) {
        log_warn("watching %s for policy edits (SIGHUP still reloads)", st->dir);
        if (st->ino_fd >= 0)
            close(st->ino_fd);
        st->ino_fd = -1;
        return;
    }
    st->debounce = loop_timer_new(st->loop, proxy_on_debounce, st);
    if (st->cred_path) {
        /* The credentials file's directory, in the same inotify instance. */
        char cdir[4096];
        const char *cs = strrchr(st->cred_path, '/');

        if (cs) {
            size_t n = (size_t)(cs - st->cred_path);

            buf_fmt_fixed(cdir, sizeof(cdir), "%.*s", (int)(n ? n : 1), st->cred_path);
            st->cred_base = cs + 1;
        } else {
            buf_copy_fixed(cdir, sizeof(cdir), ".");
            st->cred_base = st->cred_path;
        }
        st->cred_debounce = loop_timer_new(st->loop, proxy_on_cred_debounce, st);
        if (inotify_add_watch(st->ino_fd, cdir,
                              IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_MOVED_FROM |
                                  IN_ATTRIB) < 0)
            log_warn("watching %s for credentials edits (SIGHUP still reloads)", cdir);
    }
    st->ino_ev =
        event_new(loop_base(st->loop), st->ino_fd, EV_READ | EV_PERSIST, proxy_on_inotify, st);
    event_add(st->ino_ev, NULL);
}

static void
proxy_on_arm(void *arg)
{
    struct proxy_state *st = arg;

    proxy_watch(st);
    proxy_reload(st, "file changed");
    proxy_reload_creds(st, "file changed");
}

/* The supervisor's control channel: the agent's pid; end of file means
 * the sandbox is going away. */
static void
proxy_on_control(evutil_socket_t fd, short what, void *arg)
{
    struct proxy_state *st = arg;
    int rc;

    (void)fd;
    (void)what;
    rc = px_ident_read_control(st->ident, st->control_fd, 0);
    if (rc == -EPIPE || (rc < 0 && rc != -EAGAIN)) {
        log_info("control channel closed: stopping");
        event_del(st->ctl_ev);
        loop_stop(st->loop);
    }
}

/* A connection arrived before the supervisor announced the agent (it does
 * right after the fork, so this is rare and short): wait up to 1 s. */
static void
proxy_ident_wait(void *arg)
{
    struct proxy_state *st = arg;

    if (st->control_fd >= 0)
        (void)px_ident_read_control(st->ident, st->control_fd, 1000);
}

static void
proxy_parse(int argc, char **argv, struct proxy_opts *o)
{
    static const struct option longopts[] = {
        { "policy", required_argument, NULL, 'p' },
        { "listen", required_argument, NULL, 'l' },
        { "listen-fd", required_argument, NULL, OPT_LISTEN_FD },
        { "upstream-ca", required_argument, NULL, OPT_UPSTREAM_CA },
        { "dns-server", required_argument, NULL, OPT_DNS_SERVER },
        { "resolve", required_argument, NULL, OPT_RESOLVE },
        { "ca-out", required_argument, NULL, OPT_CA_OUT },
        { "bundle-out", required_argument, NULL, OPT_BUNDLE_OUT },
        { "ca-pem-fd", required_argument, NULL, OPT_CA_PEM_FD },
        { "port-file", required_argument, NULL, OPT_PORT_FILE },
        { "header-timeout", required_argument, NULL, OPT_HEADER_TIMEOUT },
        { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
        { "response-timeout", required_argument, NULL, OPT_RESPONSE_TIMEOUT },
        { "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
        { "max-conns", required_argument, NULL, OPT_MAX_CONNS },
        { "on-invalid-policy", required_argument, NULL, OPT_ON_INVALID },
        { "agent-pid", required_argument, NULL, OPT_AGENT_PID },
        { "control-fd", required_argument, NULL, OPT_CONTROL_FD },
        { "diag-fd", required_argument, NULL, OPT_DIAG_FD },
        { "sandbox", required_argument, NULL, OPT_SANDBOX },
        { "credentials", required_argument, NULL, OPT_CREDENTIALS },
        { "inference-idle-timeout", required_argument, NULL, OPT_INFER_IDLE },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        APPLET_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell-proxy";
    int opt;

    o->ca_pem_fd = -1;
    o->control_fd = -1;
    o->diag_fd = -1;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "p:l:hV", longopts, NULL)) != -1) {
        if (applet_common_option(prog, opt, optarg))
            continue;
        switch (opt) {
        case 'p': o->policy = optarg; break;
        case 'l':
            if (o->nlisten == PROXY_MAX_LIST)
                applet_usage_error(prog, "too many --listen");
            o->listen[o->nlisten++] = optarg;
            break;
        case OPT_LISTEN_FD:
            if (o->nlisten_fd == PROXY_MAX_LIST)
                applet_usage_error(prog, "too many --listen-fd");
            o->listen_fd[o->nlisten_fd++] = proxy_fd_arg(prog, "--listen-fd", optarg);
            break;
        case OPT_UPSTREAM_CA: o->px.upstream_ca = optarg; break;
        case OPT_DNS_SERVER: o->px.dns_server = optarg; break;
        case OPT_RESOLVE:
            if (o->nresolve == sizeof(o->resolve) / sizeof(o->resolve[0]))
                applet_usage_error(prog, "too many --resolve");
            o->resolve[o->nresolve++] = optarg;
            break;
        case OPT_CA_OUT: o->ca_out = optarg; break;
        case OPT_BUNDLE_OUT: o->bundle_out = optarg; break;
        case OPT_CA_PEM_FD: o->ca_pem_fd = proxy_fd_arg(prog, "--ca-pem-fd", optarg); break;
        case OPT_PORT_FILE: o->port_file = optarg; break;
        case OPT_HEADER_TIMEOUT:
            o->px.header_timeout_s = proxy_uint(prog, "--header-timeout", optarg, 86400);
            break;
        case OPT_CONNECT_TIMEOUT:
            o->px.connect_timeout_s = proxy_uint(prog, "--connect-timeout", optarg, 86400);
            break;
        case OPT_RESPONSE_TIMEOUT:
            o->px.response_timeout_s = proxy_uint(prog, "--response-timeout", optarg, 86400);
            break;
        case OPT_IDLE_TIMEOUT:
            o->px.idle_timeout_s = proxy_uint(prog, "--idle-timeout", optarg, 7 * 86400);
            break;
        case OPT_MAX_CONNS:
            o->px.max_conns = proxy_uint(prog, "--max-conns", optarg, 1 << 20);
            break;
        case OPT_ON_INVALID:
            if (strcmp(optarg, "keep") == 0)
                o->deny_all_on_invalid = false;
            else if (strcmp(optarg, "deny-all") == 0)
                o->deny_all_on_invalid = true;
            else
                applet_usage_error(prog, "--on-invalid-policy: expected keep or deny-all, got '%s'",
                                   optarg);
            break;
        case OPT_AGENT_PID:
            o->agent_pid = (long)proxy_uint(prog, "--agent-pid", optarg, 1u << 22);
            break;
        case OPT_CONTROL_FD: o->control_fd = proxy_fd_arg(prog, "--control-fd", optarg); break;
        case OPT_DIAG_FD: o->diag_fd = proxy_fd_arg(prog, "--diag-fd", optarg); break;
        case OPT_SANDBOX: o->px.sandbox = optarg; break;
        case OPT_CREDENTIALS: o->credentials = optarg; break;
        case OPT_INFER_IDLE:
            o->px.infer_idle_s = proxy_uint(prog, "--inference-idle-timeout", optarg, 86400);
            break;
        case 'h': fputs(proxy_usage, stdout); exit(0);
        case 'V': exit(applet_print_version(prog));
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    if (optind < argc)
        applet_usage_error(prog, "unexpected argument '%s'", argv[optind]);
    if (!o->policy)
        applet_usage_error(prog, "--policy FILE is required");
    if (!o->nlisten && !o->nlisten_fd)
        applet_usage_error(prog, "nothing to serve: give --listen ADDR:PORT or --listen-fd N");
    o->px.resolve = o->resolve;
    o->px.nresolve = o->nresolve;
}

int
proxy_main(int argc, char **argv)
{
    struct proxy_opts o = { 0 };
    struct proxy_state st = { 0 };
    struct policy_diags d;
    struct policy *pol = NULL;
    struct ca *ca;
    struct err e;
    struct buf pem = BUF_INIT;
    int rc;

    proxy_parse(argc, argv, &o);
    signal(SIGPIPE, SIG_IGN);
    /* The CA key lives in this process's memory only: no core dumps, no
     * ptrace or /proc/PID/mem by same-uid processes. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    proxy_raise_nofile();
    policy_diags_init(&d);
    /* One read serves both the compiled policy and the text later reloads
     * compare against: reading twice would let an edit landing in between
     * (a supervisor writing a new revision while we start) look like the
     * file we compiled, and it would never be loaded. */
    buf_init(&st.last);
    rc = read_file(o.policy, POLICY_MAX_BYTES, &st.last, &e);
    if (rc == -EFBIG)
        die("%s: policy is larger than 4 MiB", o.policy);
    if (rc == 0)
        rc = policy_load_mem(o.policy, st.last.data ? st.last.data : "", st.last.len, &pol, &d, &e);
    for (size_t i = 0; i < d.n; i++)
        log_warnx("%s", d.v[i].text);
    policy_diags_fini(&d);
    if (rc < 0)
        die("%s", e.msg);
    st.control_fd = o.control_fd;
    if (o.agent_pid || o.control_fd >= 0) {
        st.ident = px_ident_new("/proc");
        if (o.agent_pid)
            px_ident_set_anchor(st.ident, (pid_t)o.agent_pid);
        /* Sockets are found with sock_diag in the listeners' namespace: the
         * supervisor's socket from there, or (standalone) our own. */
        if (o.diag_fd >= 0) {
            fcntl(o.diag_fd, F_SETFD, FD_CLOEXEC);
            px_ident_set_diag_fd(st.ident, o.diag_fd);
        } else if (o.agent_pid) {
            int fd = px_ident_diag_open();

            if (fd >= 0)
                px_ident_set_diag_fd(st.ident, fd);
        }
        px_ident_set_control_handler(st.ident, proxy_on_control_json, &st);
        o.px.ident = st.ident;
        o.px.ident_wait = proxy_ident_wait;
        o.px.ident_wait_arg = &st;
    } else {
        /* Standalone: there is no agent namespace to attribute sockets to. */
        o.px.identity_off = true;
        log_warnx("caller identity checks are off (standalone proxy): binary rules are not "
                  "enforced");
    }
    ca = ca_new(&e);
    if (!ca)
        die("%s", e.msg);
    ca_cert_pem(ca, &pem);
    if (o.ca_out)
        proxy_write_file(o.ca_out, &pem);
    if (o.ca_pem_fd >= 0) {
        if (write_full(o.ca_pem_fd, pem.data, pem.len) < 0)
            die_errno("write CA certificate to fd %d", o.ca_pem_fd);
        close(o.ca_pem_fd);
    }
    if (o.bundle_out) {
        struct buf bundle = BUF_INIT;

        if (ca_bundle_pem(ca, NULL, &bundle, &e) < 0)
            die("%s", e.msg);
        proxy_write_file(o.bundle_out, &bundle);
        buf_fini(&bundle);
    }
    buf_fini(&pem);

    st.loop = loop_new();
    st.policy_path = o.policy;
    st.deny_all_on_invalid = o.deny_all_on_invalid;
    pol = proxy_expand(pol, st.ident != NULL);
    st.srv = px_server_new(st.loop, pol, ca, &o.px, &e);
    if (!st.srv)
        die("%s", e.msg);
    policy_unref(pol);
    if (o.credentials) {
        struct buf text = BUF_INIT;

        st.cred_path = o.credentials;
        if (read_file(o.credentials, PX_CRED_DOC_MAX + 1, &text, &e) < 0)
            die("%s", e.msg);
        if (proxy_install_creds(&st, text.data, text.len, o.credentials) < 0)
            die("credentials %s: refused (see above)", o.credentials);
        buf_append(&st.cred_last, text.data, text.len);
        explicit_bzero(text.data, text.len);
        buf_fini(&text);
    }
    for (unsigned i = 0; i < o.nlisten_fd; i++)
        if (px_server_listen_fd(st.srv, o.listen_fd[i], &e) < 0)
            die("%s", e.msg);
    for (unsigned i = 0; i < o.nlisten; i++)
        if (px_server_listen(st.srv, o.listen[i], &e) < 0)
            die("%s", e.msg);
    if (o.port_file) {
        struct buf b = BUF_INIT;

        buf_printf(&b, "%u\n", px_server_port(st.srv));
        proxy_write_file(o.port_file, &b);
        buf_fini(&b);
    }
    loop_on_signal(st.loop, SIGTERM, proxy_on_stop, &st);
    loop_on_signal(st.loop, SIGINT, proxy_on_stop, &st);
    loop_on_signal(st.loop, SIGHUP, proxy_on_reload, &st);
    st.ino_fd = -1;
    /* The watch is armed after 100 ms: releasing an inotify instance waits
     * for an SRCU grace period (about 10 ms here), which a sandbox that only
     * lives a few milliseconds would pay at exit. Arming checks the file
     * once, so an edit made before then is not missed. */
    st.arm = loop_timer_new(st.loop, proxy_on_arm, &st);
    loop_timer_start(st.arm, 100, false);
    if (st.control_fd >= 0) {
        evutil_make_socket_nonblocking(st.control_fd);
        st.ctl_ev = event_new(loop_base(st.loop), st.control_fd, EV_READ | EV_PERSIST,
                              proxy_on_control, &st);
        event_add(st.ctl_ev, NULL);
    }
    log_info("listening on port %u (policy %s)", px_server_port(st.srv), o.policy);
    rc = loop_run(st.loop);
    if (st.ctl_ev)
        event_free(st.ctl_ev);
    if (st.ino_ev)
        event_free(st.ino_ev);
    loop_timer_free(st.debounce);
    loop_timer_free(st.cred_debounce);
    if (st.cred_last.data)
        explicit_bzero(st.cred_last.data, st.cred_last.len);
    buf_fini(&st.cred_last);
    loop_timer_free(st.arm);
    if (st.ino_fd >= 0)
        close(st.ino_fd);
    buf_fini(&st.last);
    px_server_free(st.srv);
    px_ident_free(st.ident);
    ca_free(ca);
    loop_free(st.loop);
    return rc < 0 ? 1 : 0;
}
