/*
 * gateway.c: the openshell-gateway applet: the control plane.
 *
 * This slice serves, on a unix socket (h2c, callers checked with
 * SO_PEERCRED: root or the gateway's own uid), the health and readiness
 * probes, gateway info and sandbox records (create, list with label
 * selectors, get, patch, delete, watch) from the SQLite store under the
 * state directory, starts one supervisor per sandbox (local compute driver)
 * and serves their sessions, exec, file transfer and logs.
 * doc/api.md is the contract.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting, end watch streams, GOAWAY on
 * every connection, exit once they are closed (at most 5 s later).
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

#include "../applets.h"
#include "api.h"
#include "driver.h"
#include "gw.h"
#include "gw_provider.h"
#include "gw_pki.h"
#include "h2.h"
#include "log.h"
#include "loop.h"
#include "store.h"
#include "tls.h"
#include "version.h"
#include "xfuncs.h"

#define GW_SOCKET_NAME "gateway.sock"
#define GW_STOP_GRACE_MS 5000
#define GW_DEFAULT_LISTEN "127.0.0.1:17670"

static const char gateway_usage[] =
    "Usage: openshell-gateway [OPTIONS]\n"
    "\n"
    "openshell-gateway is the control plane: it keeps sandbox records and\n"
    "policies in its state directory and serves the JSON-over-HTTP/2 API\n"
    "(doc/api.md) on a unix socket for local clients.\n"
    "\n"
    "Options:\n"
    "      --state-dir DIR     state directory (default\n"
    "                          $XDG_STATE_HOME/openshell/gateway, else\n"
    "                          ~/.local/state/openshell/gateway)\n"
    "      --socket PATH       unix socket to serve (default STATE_DIR/" GW_SOCKET_NAME ")\n"
    "      --listen ADDR:PORT  TLS 1.3 (ALPN h2) listener (default " GW_DEFAULT_LISTEN ");\n"
    "                          \"none\" for none. Its PKI is made on first start in\n"
    "                          STATE_DIR/tls and the client bundle copied to\n"
    "                          ~/.config/openshell/gateways/NAME/mtls/\n"
    "      --name NAME         gateway name for the client bundle (default openshell)\n"
    "      --idle-timeout SECS close connections without a stream after SECS\n"
    "                          (default 300; 0: never)\n"
    "      --compute-driver D  local (default): one detached supervisor per sandbox,\n"
    "                          connected back over the socket (state in\n"
    "                          STATE_DIR/sandboxes); none: sandbox records only\n"
    "  -h, --help              show this help\n"
    "  -V, --version           print the version\n" APPLET_COMMON_HELP;

struct gateway_opts {
    const char *state_dir;
    const char *socket;
    const char *listen;
    const char *name;
    long idle_timeout_s;
    const char *driver;
};

/* The TLS listener's material (process lifetime). */
static mbedtls_x509_crt gw_chain, gw_ca;
static mbedtls_pk_context gw_key;
static const char *const gw_alpn[] = { "h2", NULL };
static struct tls_server_opts gw_tls_opts;

bool
gw_authorized(struct gw *gw, struct h2_stream *st)
{
    const struct h2_peer *p = h2_stream_peer(st);

    if (p->kind == H2_PEER_UNIX && (p->uid == 0 || p->uid == gw->owner_uid))
        return true;
    /* A client certificate that chained to this gateway's CA (tls.c
     * verified it; the CA signs nothing but this gateway's own leaves). */
    if (p->kind == H2_PEER_TLS)
        return true;
    if (p->kind != H2_PEER_UNIX) {
        h2_stream_error(st, 401, "unauthenticated",
                        "no client identity: present a client certificate issued by this "
                        "gateway's CA (~/.config/openshell/gateways/NAME/mtls/tls.crt)");
        return false;
    }
    h2_stream_error(st, 401, "unauthenticated",
                    "caller not authorized: local callers must be root or uid %u",
                    (unsigned)gw->owner_uid);
    return false;
}

/* The h2 server's hook: authorize on the headers, before any body is read
 * (handlers check again). */
static bool
auth_hook(struct h2_stream *st, void *arg)
{
    const char *path = h2_stream_path(st);
    struct store_obj *sb = NULL;
    int rc;

    /* Supervisor endpoints take sandbox tokens and nothing else; every
     * other endpoint takes local users and never a sandbox token. */
    if (path && strncmp(path, "/v1/supervisor/", 15) == 0) {
        rc = gw_sandbox_principal(arg, st, &sb);
        store_obj_free(sb);
        return rc == 0;
    }
    return gw_authorized(arg, st);
}

/* ------------------------------------------------------------------ health, info */

static void
h_healthz(struct h2_stream *st, struct h2_req *req, void *arg)
{
    (void)req;
    (void)arg;
    h2_stream_respond(st, 200, "application/json", NULL, 0, "{\"status\":\"ok\"}\n", 16);
}

/* Readiness: the database answers. */
static void
h_readyz(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct err e;
    cJSON *j = cJSON_CreateObject(), *db;
    int rc = store_ping(gw->store, &e);
    bool ok = rc == 0 && !gw->stopping;

    (void)req;
    cJSON_AddStringToObject(j, "status", ok ? "healthy" : "unhealthy");
    cJSON_AddStringToObject(j, "version", OPENSHELL_VERSION);
    db = cJSON_AddObjectToObject(cJSON_AddObjectToObject(j, "checks"), "database");
    cJSON_AddStringToObject(db, "status", rc == 0 ? "healthy" : "unhealthy");
    if (rc < 0)
        cJSON_AddStringToObject(db, "error", err_str(&e, rc));
    api_respond_json(st, ok ? 200 : 503, j, 0);
    cJSON_Delete(j);
}

static void
h_health(struct h2_stream *st, struct h2_req *req, void *arg)
{
    cJSON *j = cJSON_CreateObject();

    (void)req;
    (void)arg;
    cJSON_AddStringToObject(j, "status", "healthy");
    cJSON_AddStringToObject(j, "version", OPENSHELL_VERSION);
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
}

static void
h_gateway(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    cJSON *j;

    (void)req;
    if (!gw_authorized(gw, st))
        return;
    j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "version", OPENSHELL_VERSION);
    cJSON_AddStringToObject(j, "api", "v1");
    cJSON_AddNumberToObject(j, "schema_version", store_schema_version(gw->store));
    cJSON_AddStringToObject(j, "state_dir", gw->state_dir);
    {
        cJSON *drivers = cJSON_AddArrayToObject(j, "compute_drivers");

        if (gw->drv)
            cJSON_AddItemToArray(drivers, cJSON_CreateString("local"));
    }
    cJSON_AddNumberToObject(j, "watch_streams", (double)gw->nwatches);
    {
        size_t ns, nr;

        gw_session_counts(gw, &ns, &nr);
        cJSON_AddNumberToObject(j, "supervisor_sessions", (double)ns);
        cJSON_AddNumberToObject(j, "relays", (double)nr);
    }
    cJSON_AddNumberToObject(j, "connections", (double)h2_server_conn_count(gw->srv));
    api_respond_json(st, 200, j, 0);
    cJSON_Delete(j);
}

/* Prometheus text exposition (version 0.0.4). */
static void
h_metrics(struct h2_stream *st, struct h2_req *req, void *arg)
{
    struct gw *gw = arg;
    struct h2_server_stats hs;
    struct store_query q = { .type = "sandbox", .limit = 1 };
    struct store_list l;
    struct buf b = BUF_INIT;
    struct err e;
    bool db_ok;

    (void)req;
    if (!gw_authorized(gw, st))
        return;
    h2_server_get_stats(gw->srv, &hs);
    db_ok = store_list(gw->store, &q, &l, &e) == 0;
#define COUNTER(name, help, val)                                                                   \
    buf_printf(&b, "# HELP " name " " help "\n# TYPE " name " counter\n" name " %llu\n",           \
               (unsigned long long)(val))
#define GAUGE(name, help, val)                                                                     \
    buf_printf(&b, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " %llu\n",             \
               (unsigned long long)(val))
    buf_puts(&b, "# HELP openshell_gateway_build_info The running build.\n"
                 "# TYPE openshell_gateway_build_info gauge\n"
                 "openshell_gateway_build_info{version=");
    buf_put_json_str(&b, OPENSHELL_VERSION, strlen(OPENSHELL_VERSION));
    buf_puts(&b, "} 1\n");
    buf_puts(&b, "# HELP openshell_gateway_http_responses_total Responses sent, by status class.\n"
                 "# TYPE openshell_gateway_http_responses_total counter\n");
    for (int i = 1; i <= 5; i++)
        buf_printf(&b, "openshell_gateway_http_responses_total{class=\"%dxx\"} %llu\n", i,
                   hs.responses[i]);
    COUNTER("openshell_gateway_http_requests_total", "HTTP/2 requests (streams) received.",
            hs.streams_total);
    COUNTER("openshell_gateway_request_body_bytes_total", "Request body bytes received.",
            hs.bytes_in);
    COUNTER("openshell_gateway_connections_total", "Connections accepted.", hs.conns_total);
    GAUGE("openshell_gateway_connections", "Open connections.", h2_server_conn_count(gw->srv));
    COUNTER("openshell_gateway_connections_idle_closed_total", "Connections closed for idleness.",
            hs.idle_closed);
    COUNTER("openshell_gateway_connections_protocol_errors_total",
            "Connections dropped on an HTTP/2 protocol error.", hs.protocol_errors);
    GAUGE("openshell_gateway_watch_streams", "Open watch streams.", gw->nwatches);
    {
        size_t ns, nr;

        gw_session_counts(gw, &ns, &nr);
        GAUGE("openshell_gateway_supervisor_sessions", "Connected supervisor sessions.", ns);
        GAUGE("openshell_gateway_relays", "Open exec and file relays (pending or spliced).", nr);
    }
    GAUGE("openshell_gateway_sandboxes", "Sandbox records.", db_ok ? l.total : 0);
    GAUGE("openshell_gateway_database_healthy", "1 when the state database answers.", db_ok);
    GAUGE("openshell_gateway_uptime_seconds", "Seconds since start.",
          (loop_now_ms(gw->loop) - gw->started_ms) / 1000);
#undef COUNTER
#undef GAUGE
    if (db_ok)
        store_list_fini(&l);
    h2_stream_respond(st, 200, "text/plain; version=0.0.4; charset=utf-8", NULL, 0, b.data, b.len);
    buf_fini(&b);
}

/* ------------------------------------------------------------------ listener, shutdown */

static void
accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct gw *gw = arg;
    struct h2_peer peer;
    struct bufferevent *bev;
    struct err e;

    (void)l;
    (void)sa;
    (void)len;
    if (h2_peer_from_unix_fd(fd, &peer) < 0) {
        log_warn("peer credentials of a new connection");
        close(fd);
        return;
    }
    bev = bufferevent_socket_new(loop_base(gw->loop), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    if (!h2_server_adopt(gw->srv, bev, &peer, &e))
        log_debug("connection from uid %u refused: %s", (unsigned)peer.uid, e.msg);
}

/* A TCP connection: TLS 1.3 with ALPN h2 first, HTTP/2 inside. */
static void
accept_tls_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len, void *arg)
{
    struct gw *gw = arg;
    struct h2_peer peer = { .kind = H2_PEER_NONE };
    struct bufferevent *bev, *tbev;
    struct tls_conn *tc;
    struct h2_conn *c;
    struct err e;

    (void)l;
    (void)sa;
    (void)len;
    bev = bufferevent_socket_new(loop_base(gw->loop), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    if (!(tbev = tls_wrap_server(bev, &gw_tls_opts, &tc, &e))) {
        log_debug("TLS connection refused: %s", e.msg);
        return;
    }
    if (!(c = h2_server_adopt(gw->srv, tbev, &peer, &e)))
        log_debug("TLS connection refused: %s", e.msg);
    else
        h2_conn_set_tls(c, tc);
}

/* ADDR:PORT or [ADDR6]:PORT -> a listening TCP socket, or die. */
static int
listen_tcp(const char *spec)
{
    struct sockaddr_storage ss = { 0 };
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    char host[64];
    const char *colon = strrchr(spec, ':');
    char *end;
    unsigned long port;
    socklen_t slen;
    int fd, one = 1;

    if (!colon || (size_t)(colon - spec) >= sizeof(host))
        die("--listen %s: expected ADDR:PORT", spec);
    memcpy(host, spec, (size_t)(colon - spec));
    host[colon - spec] = '\0';
    port = strtoul(colon + 1, &end, 10);
    if (!colon[1] || *end || port > 65535)
        die("--listen %s: bad port", spec);
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        host[strlen(host) - 1] = '\0';
        memmove(host, host + 1, strlen(host));
        if (inet_pton(AF_INET6, host, &s6->sin6_addr) != 1)
            die("--listen %s: bad IPv6 address", spec);
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        slen = sizeof(*s6);
    } else {
        if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
            die("--listen %s: bad IPv4 address", spec);
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        slen = sizeof(*s4);
    }
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        die_errno("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, 128) < 0)
        die_errno("listening on %s", spec);
    return fd;
}

static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
    (void)l;
    (void)arg;
    /* EMFILE and friends: keep serving the connections we have. */
    log_warn("accept on the unix socket");
}

static void
stop_now(void *arg)
{
    struct gw *gw = arg;

    log_info("shutdown: closing %zu remaining connection(s)", h2_server_conn_count(gw->srv));
    loop_stop(gw->loop);
}

static void
conn_closed(struct h2_conn *c, void *arg)
{
    struct gw *gw = arg;

    (void)c;
    if (gw->stopping && h2_server_conn_count(gw->srv) == 0)
        loop_stop(gw->loop);
}

static void
on_signal(int signo, void *arg)
{
    struct gw *gw = arg;

    if (gw->stopping)
        return;
    gw->stopping = true;
    log_info("signal %d: shutting down", signo);
    if (gw->unix_lst) {
        evconnlistener_free(gw->unix_lst);
        gw->unix_lst = NULL;
        unlink(gw->sock_path);
    }
    if (gw->tls_lst) {
        evconnlistener_free(gw->tls_lst);
        gw->tls_lst = NULL;
    }
    gw_watch_end_all(gw, "gateway shutting down");
    gw_log_end(gw, NULL, "gateway shutting down");
    gw_session_end_all(gw);
    h2_server_shutdown(gw->srv);
    if (h2_server_conn_count(gw->srv) == 0) {
        loop_stop(gw->loop);
        return;
    }
    loop_timer_start(gw->stop_timer, GW_STOP_GRACE_MS, false);
}

/* ------------------------------------------------------------------ setup */

/* mkdir -p with mode 0700 for the components we create. */
static void
mkdir_p(const char *path)
{
    char *p = xstrdup(path);

    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST)
            die_errno("creating %s", p);
        *s = '/';
    }
    if (mkdir(p, 0700) < 0 && errno != EEXIST)
        die_errno("creating %s", p);
    free(p);
}

/* Where the CLI looks for gateway NAME's client material. */
static char *
client_dir(const char *name)
{
    const char *xdg = getenv("XDG_CONFIG_HOME"), *home = getenv("HOME");

    if (xdg && xdg[0] == '/')
        return xasprintf("%s/openshell/gateways/%s", xdg, name);
    if (home && home[0] == '/')
        return xasprintf("%s/.config/openshell/gateways/%s", home, name);
    return NULL;
}

/* The PKI and the TLS listener (before the loop runs: die on failure). */
static void
setup_tls(struct gw *gw, const struct gateway_opts *o)
{
    const char *spec = o->listen ? o->listen : GW_DEFAULT_LISTEN;
    const char *name = o->name ? o->name : "openshell";
    char *dir = xasprintf("%s/tls", gw->state_dir), *cdir = client_dir(name);
    char *endpoint = xasprintf("https://%s", spec);
    const char *colon = strrchr(spec, ':');
    struct gw_pki_opts po = {
        .dir = dir,
        .client_dir = cdir,
        .name = name,
        .endpoint = endpoint,
        .port = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0,
        .socket = gw->sock_path,
    };
    struct err e;
    int fd;

    if (gw_pki_ensure(&po, &e) < 0)
        die("gateway PKI: %s", e.msg);
    mbedtls_x509_crt_init(&gw_chain);
    mbedtls_x509_crt_init(&gw_ca);
    mbedtls_pk_init(&gw_key);
    if (gw_pki_load_server(dir, &gw_chain, &gw_key, &gw_ca, &e) < 0)
        die("gateway PKI: %s", e.msg);
    gw_tls_opts.chain = &gw_chain;
    gw_tls_opts.key = &gw_key;
    gw_tls_opts.alpn = gw_alpn;
    gw_tls_opts.version = TLS_VERSION_1_3;
    /* Optional at the TLS layer so the health probes answer anyone;
     * gw_authorized() gives 401 to callers without a verified one. */
    gw_tls_opts.client_auth = TLS_CLIENT_AUTH_OPTIONAL;
    gw_tls_opts.client_ca = &gw_ca;
    fd = listen_tcp(spec);
    gw->tls_lst = evconnlistener_new(loop_base(gw->loop), accept_tls_cb, gw,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!gw->tls_lst)
        die("listening on %s: libevent listener", spec);
    evconnlistener_set_error_cb(gw->tls_lst, accept_error_cb);
    log_kv(LOG_LVL_INFO, "TLS listener", "address", spec, "pki", dir, "client_bundle",
           cdir ? cdir : "(no HOME)", NULL);
    free(dir);
    free(cdir);
    free(endpoint);
}

/* One gateway per state directory: an exclusive lock on STATE_DIR/gateway.lock
 * held for the process's life (the kernel drops it when the process dies,
 * even by SIGKILL). The fd is deliberately kept open. */
static void
lock_state_dir(const char *dir)
{
    char *path = xasprintf("%s/gateway.lock", dir);
    char pid[32];
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);

    if (fd < 0)
        die_errno("opening %s", path);
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        ssize_t n;

        if (errno != EWOULDBLOCK)
            die_errno("locking %s", path);
        n = read(fd, pid, sizeof(pid) - 1);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        die("another openshell-gateway (pid %s) is using state directory %s", *pid ? pid : "?",
            dir);
    }
    snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || write_full(fd, pid, strlen(pid)) < 0)
        log_warn("writing %s", path);
    free(path);
}

static char *
default_state_dir(void)
{
    const char *xdg = getenv("XDG_STATE_HOME"), *home = getenv("HOME");

    if (xdg && xdg[0] == '/')
        return xasprintf("%s/openshell/gateway", xdg);
    if (home && home[0] == '/')
        return xasprintf("%s/.local/state/openshell/gateway", home);
    die("no state directory: set HOME or XDG_STATE_HOME, or pass --state-dir");
}

static void
parse_opts(int argc, char **argv, struct gateway_opts *o)
{
    enum { OPT_STATE_DIR = 0x100, OPT_SOCKET, OPT_LISTEN, OPT_NAME, OPT_IDLE, OPT_DRIVER };
    static const struct option longopts[] = {
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { "state-dir", required_argument, NULL, OPT_STATE_DIR },
        { "socket", required_argument, NULL, OPT_SOCKET },
        { "listen", required_argument, NULL, OPT_LISTEN },
        { "name", required_argument, NULL, OPT_NAME },
        { "idle-timeout", required_argument, NULL, OPT_IDLE },
        { "compute-driver", required_argument, NULL, OPT_DRIVER },
        APPLET_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    const char *prog = "openshell-gateway";
    int opt;

    opterr = 0;
    while ((opt = getopt_long(argc, argv, "hV", longopts, NULL)) != -1) {
        if (applet_common_option(prog, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(gateway_usage, stdout); exit(0);
        case 'V': exit(applet_print_version(prog));
        case OPT_STATE_DIR:
            if (!*optarg)
                applet_usage_error(prog, "--state-dir: empty path");
            o->state_dir = optarg;
            break;
        case OPT_SOCKET:
            if (!*optarg)
                applet_usage_error(prog, "--socket: empty path");
            o->socket = optarg;
            break;
        case OPT_LISTEN: o->listen = optarg; break;
        case OPT_DRIVER:
            if (strcmp(optarg, "local") != 0 && strcmp(optarg, "none") != 0)
                applet_usage_error(prog, "--compute-driver %s: expected local or none", optarg);
            o->driver = optarg;
            break;
        case OPT_IDLE: {
            char *end;

            errno = 0;
            o->idle_timeout_s = strtol(optarg, &end, 10);
            if (!*optarg || *end || errno || o->idle_timeout_s < 0 || o->idle_timeout_s > 86400)
                applet_usage_error(prog, "--idle-timeout %s: expected seconds, 0-86400", optarg);
            break;
        }
        case OPT_NAME:
            for (const char *p = optarg; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
                    applet_usage_error(prog, "--name %s: expected [a-z0-9-]", optarg);
            if (!*optarg || strlen(optarg) > 63)
                applet_usage_error(prog, "--name: 1 to 63 characters");
            o->name = optarg;
            break;
        default: applet_bad_option(prog, argv, optind, optopt);
        }
    }
    if (optind < argc)
        applet_usage_error(prog, "unexpected argument '%s'", argv[optind]);
}

int
gateway_main(int argc, char **argv)
{
    struct gateway_opts o = { .idle_timeout_s = 300 };
    struct h2_limits limits = { 0 };
    struct gw gw = { 0 };
    struct err e;
    cJSON_Hooks hooks = { .malloc_fn = xmalloc, .free_fn = free };
    int fd, rc;

    log_init("openshell-gateway");
    parse_opts(argc, argv, &o);
    cJSON_InitHooks(&hooks);
    signal(SIGPIPE, SIG_IGN);
    gw.owner_uid = geteuid();
    gw.state_dir = o.state_dir ? xstrdup(o.state_dir) : default_state_dir();
    mkdir_p(gw.state_dir);
    lock_state_dir(gw.state_dir);
    gw.sock_path = o.socket ? xstrdup(o.socket) : xasprintf("%s/%s", gw.state_dir, GW_SOCKET_NAME);
    if ((rc = store_open(gw.state_dir, NULL, &gw.store, &e)) < 0)
        die("state store: %s", e.msg);
    if (gw_workspace_ensure_default(&gw, &e) < 0)
        die("state store: default workspace: %s", e.msg);
    if (!o.driver || strcmp(o.driver, "local") == 0) {
        char *dd = xasprintf("%s/sandboxes", gw.state_dir);

        if (!(gw.drv = drv_local_new(dd, &e)))
            die("compute driver: %s", e.msg);
        free(dd);
    }

    gw.loop = loop_new();
    gw.started_ms = loop_now_ms(gw.loop);
    gw.router = h2_router_new();
    h2_router_add(gw.router, "GET", "/healthz", H2_ROUTE_PUBLIC, h_healthz, &gw);
    h2_router_add(gw.router, "GET", "/readyz", H2_ROUTE_PUBLIC, h_readyz, &gw);
    h2_router_add(gw.router, "GET", "/v1/health", H2_ROUTE_PUBLIC, h_health, &gw);
    h2_router_add(gw.router, "GET", "/v1/gateway", 0, h_gateway, &gw);
    h2_router_add(gw.router, "GET", "/metrics", 0, h_metrics, &gw);
    gw_workspace_routes(&gw);
    gw_sandbox_routes(&gw);
    gw_policy_routes(&gw);
    gw_settings_routes(&gw);
    gw_supervisor_routes(&gw);
    gw_provider_routes(&gw);
    gw_inference_routes(&gw);
    gw_session_routes(&gw);
    gw_log_routes(&gw);
    gw_sandbox_reconcile(&gw);
    limits.idle_timeout_ms = (uint32_t)o.idle_timeout_s * 1000;
    gw.srv = h2_server_new(loop_base(gw.loop), gw.router, &limits);
    h2_server_set_conn_close_cb(gw.srv, conn_closed, &gw);
    h2_server_set_auth(gw.srv, auth_hook, &gw);
    gw.stop_timer = loop_timer_new(gw.loop, stop_now, &gw);

    /* Anyone may connect; SO_PEERCRED decides what they get (401 for
     * other users), so the socket itself is world-writable. */
    if ((fd = h2_listen_unix(gw.sock_path, 0666, &e)) < 0)
        die("listening: %s", e.msg);
    gw.unix_lst = evconnlistener_new(loop_base(gw.loop), accept_cb, &gw,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!gw.unix_lst)
        die("listening on %s: libevent listener", gw.sock_path);
    evconnlistener_set_error_cb(gw.unix_lst, accept_error_cb);
    if (!o.listen || strcmp(o.listen, "none") != 0)
        setup_tls(&gw, &o);
    loop_on_signal(gw.loop, SIGTERM, on_signal, &gw);
    loop_on_signal(gw.loop, SIGINT, on_signal, &gw);
    log_kv(LOG_LVL_INFO, "gateway ready", "socket", gw.sock_path, "state_dir", gw.state_dir,
           "version", OPENSHELL_VERSION, NULL);

    rc = loop_run(gw.loop);

    if (gw.unix_lst) {
        evconnlistener_free(gw.unix_lst);
        unlink(gw.sock_path);
    }
    if (gw.tls_lst)
        evconnlistener_free(gw.tls_lst);
    h2_server_free(gw.srv);
    gw_session_fini(&gw);
    gw_sandbox_fini(&gw);
    h2_router_free(gw.router);
    mbedtls_x509_crt_free(&gw_chain);
    mbedtls_x509_crt_free(&gw_ca);
    mbedtls_pk_free(&gw_key);
    loop_timer_free(gw.stop_timer);
    drv_free(gw.drv);
    store_close(gw.store);
    loop_free(gw.loop);
    free(gw.sock_path);
    free(gw.state_dir);
    log_info("stopped");
    return rc < 0 ? 1 : 0;
}
