/*
 * cli_conn.c: what the gateway-facing commands share: global options, the
 * one-line errors with hints, gateway selection, the connection, one call,
 * and starting / stopping the local gateway daemon (applets/client/cli.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netdb.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/util.h>
#include <unistd.h>

#include "../applets.h"
#include "cli.h"
#include "cli_out.h"
#include "h2.h"
#include "loop.h"
#include "tls.h"
#include "xfuncs.h"

#define CLI_RESP_MAX (64u * 1024 * 1024)
#define CLI_START_TIMEOUT_MS 15000
#define CLI_STOP_TIMEOUT_MS 10000
/* A gateway that accepts but never answers must not hang the CLI
 * (OPENSHELL_REQUEST_TIMEOUT seconds per request, default 60). */
#define CLI_CALL_TIMEOUT_S 60
#define CLI_HEALTH_TIMEOUT_S 5

static void
on_alarm(int sig)
{
    static const char msg[] = "openshell: error: the gateway did not answer in time\n"
                              "hint: check it with: openshell gateway status\n";

    (void)sig;
    /* Async-signal-safe: write and _exit only. */
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(CLI_EXIT_UNREACHABLE);
    _exit(CLI_EXIT_UNREACHABLE);
}

/* Arm (SECS > 0) or disarm (0) the answer deadline. */
static void
deadline(unsigned secs)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_alarm;
    sigemptyset(&sa.sa_mask);
    if (secs)
        sigaction(SIGALRM, &sa, NULL);
    alarm(secs);
}

struct cli_globals cli_globals = { .output = -1 };

void
cli_ctx_init(struct cli_ctx *c, const char *prog)
{
    const char *ws = getenv("OPENSHELL_WORKSPACE");

    memset(c, 0, sizeof(*c));
    c->prog = prog;
    c->workspace = ws && *ws ? ws : "default";
    c->color = cli_color_wanted(2);
    c->cfg = cli_config_dir();
    /* Options before the command: as if given after it (which still win). */
    c->gateway_flag = cli_globals.gateway;
    c->endpoint_flag = cli_globals.endpoint;
    if (cli_globals.workspace)
        c->workspace = cli_globals.workspace;
    if (cli_globals.output >= 0)
        c->output = (enum cli_output)cli_globals.output;
}

void
cli_ctx_fini(struct cli_ctx *c)
{
    if (c->conn)
        h2_conn_free(c->conn);
    if (c->loop)
        loop_free(c->loop);
    tls_client_ctx_free(c->tls);
    c->tls = NULL;
    free(c->cfg);
    c->conn = NULL;
    c->loop = NULL;
    c->cfg = NULL;
}

long
cli_parse_num(const struct cli_ctx *c, const char *opt, const char *arg, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(arg, &end, 10);
    if (!*arg || *end || errno || v < 0 || v > max)
        applet_usage_error(c->prog, "%s '%s': expected a number 0-%ld", opt, arg, max);
    return v;
}

bool
cli_common_opt(struct cli_ctx *c, int opt, const char *arg)
{
    switch (opt) {
    case CLI_OPT_GATEWAY:
        if (!cli_gw_name_ok(arg))
            applet_usage_error(c->prog, "--gateway '%s': not a gateway name", arg);
        c->gateway_flag = arg;
        return true;
    case CLI_OPT_OUTPUT:
        if (!strcmp(arg, "table"))
            c->output = CLI_OUT_TABLE;
        else if (!strcmp(arg, "json"))
            c->output = CLI_OUT_JSON;
        else if (!strcmp(arg, "yaml"))
            c->output = CLI_OUT_YAML;
        else
            applet_usage_error(c->prog, "--output '%s': expected table, json or yaml", arg);
        return true;
    case CLI_OPT_ENDPOINT: c->endpoint_flag = arg; return true;
    case CLI_OPT_WORKSPACE:
        if (!*arg)
            applet_usage_error(c->prog, "--workspace: empty name");
        c->workspace = arg;
        return true;
    }
    return false;
}

int
cli_fail(const struct cli_ctx *c, int code, const char *hint, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s: %serror%s: ", c->prog, c->color ? "\033[31m" : "",
            c->color ? "\033[0m" : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (hint)
        fprintf(stderr, "hint: %s\n", hint);
    return code;
}

void
cli_ok(const struct cli_ctx *c, const char *fmt, ...)
{
    va_list ap;

    fputs(c->color ? "\033[32m\u2713\033[0m " : "\u2713 ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void
cli_warn(const struct cli_ctx *c, const char *fmt, ...)
{
    va_list ap;

    fputs(c->color ? "\033[33m!\033[0m " : "! ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

void
cli_print_data(const struct cli_ctx *c, const cJSON *j)
{
    char *s;

    if (c->output == CLI_OUT_YAML) {
        struct buf b = BUF_INIT;
        cli_yaml_render(j, &b);
        fwrite(b.data, 1, b.len, stdout);
        buf_fini(&b);
        return;
    }
    s = cJSON_Print(j);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        free(s);
    }
}

void
cli_pct_encode(const char *s, struct buf *out)
{
    static const char hex[] = "0123456789ABCDEF";

    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            buf_putc(out, (char)*p);
        } else {
            buf_putc(out, '%');
            buf_putc(out, hex[*p >> 4]);
            buf_putc(out, hex[*p & 15]);
        }
    }
}

char *
cli_ws_path(const struct cli_ctx *c, const char *fmt, ...)
{
    struct buf b = BUF_INIT;
    va_list ap;

    buf_puts(&b, "/v1/workspaces/");
    cli_pct_encode(c->workspace, &b);
    va_start(ap, fmt);
    buf_vprintf(&b, fmt, ap);
    va_end(ap);
    return buf_steal(&b);
}

/* ------------------------------------------------------------------ local gateway */

bool
cli_socket_healthy(const char *sock)
{
    struct loop *l = loop_new();
    struct h2_conn *conn = NULL;
    struct buf resp = BUF_INIT;
    int status = 0;
    bool ok = false;

    if (h2_client_connect_unix(loop_base(l), sock, NULL, &conn, NULL) == 0) {
        deadline(CLI_HEALTH_TIMEOUT_S);
        ok = h2_client_call(conn, "GET", "/healthz", NULL, 0, NULL, 0, &status, &resp, 4096,
                            NULL) == 0 &&
             status == 200;
        deadline(0);
        h2_conn_free(conn);
    }
    buf_fini(&resp);
    loop_free(l);
    return ok;
}

long
cli_gateway_pid(const char *state_dir)
{
    char *path = xasprintf("%s/gateway.lock", state_dir);
    struct buf b = BUF_INIT, cmd = BUF_INIT;
    long pid = 0;
    char *proc;

    /* The lock file holds the pid of the gateway that last held it. No
     * flock probe here: even a shared lock held for a moment would make a
     * gateway starting at that instant give up. The pid counts if that
     * process is alive and is an openshell-gateway of STATE_DIR (its
     * command line says so; a reused pid or a zombie does not). */
    if (read_file(path, 64, &b, NULL) == 0)
        pid = strtol(buf_cstr(&b), NULL, 10);
    free(path);
    buf_fini(&b);
    if (pid <= 0)
        return 0;
    proc = xasprintf("/proc/%ld/cmdline", pid);
    if (read_file(proc, 64 * 1024, &cmd, NULL) < 0 || cmd.len == 0 ||
        !strstr(buf_cstr(&cmd), "openshell-gateway"))
        pid = 0;
    else {
        /* argv is NUL-separated: look for STATE_DIR as a whole argument. */
        bool found = false;
        for (size_t off = 0; off < cmd.len; off += strlen(cmd.data + off) + 1)
            if (!strcmp(cmd.data + off, state_dir))
                found = true;
        if (!found)
            pid = 0;
    }
    free(proc);
    buf_fini(&cmd);
    return pid;
}

/* The last few lines of the gateway's log, for a failed start. */
static void
print_log_tail(const char *log)
{
    struct buf b = BUF_INIT;
    const char *s, *start;
    int lines = 0;

    if (read_file(log, 1024 * 1024, &b, NULL) == 0 && b.len) {
        s = buf_cstr(&b);
        start = s + b.len;
        while (start > s && lines < 6)
            if (*--start == '\n' && start + 1 != s + b.len)
                lines++;
        fprintf(stderr, "%s", start == s ? s : start + 1);
    }
    buf_fini(&b);
}

static int
mkdir_p0700(const char *path)
{
    char *p = xstrdup(path);

    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            free(p);
            return -errno;
        }
        *s = '/';
    }
    free(p);
    return mkdir(path, 0700) < 0 && errno != EEXIST ? -errno : 0;
}

/* Is 127.0.0.1:PORT bound by someone? */
static bool
port_taken(unsigned port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    bool taken = false;

    if (fd < 0)
        return false;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* SO_REUSEADDR as the gateway sets it: TIME_WAIT leftovers do not count. */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno == EADDRINUSE)
        taken = true;
    close(fd);
    return taken;
}

/* Register G and make it active; say where it lives. */
static int
register_local(struct cli_ctx *c, struct cli_gateway *g, bool say)
{
    struct err e;

    if (cli_gw_save(c->cfg, g, &e) < 0 || cli_active_set(c->cfg, g->name, &e) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "registering gateway '%s': %s", g->name, e.msg);
    c->gw = *g;
    if (say) {
        fprintf(stderr, "  Name:     %s (active)\n", g->name);
        fprintf(stderr, "  Socket:   %s\n", g->unix_socket);
        if (strncmp(g->endpoint, "unix://", 7) != 0)
            fprintf(stderr, "  Endpoint: %s\n", g->endpoint);
        fprintf(stderr, "  State:    %s\n", g->state_dir);
        fprintf(stderr, "  Log:      %s/gateway.log\n", g->state_dir);
    }
    return 0;
}

int
cli_gateway_start_local(struct cli_ctx *c, const char *name, const char *state_dir,
                        const char *listen, bool quiet)
{
    struct cli_gateway g, old;
    char *sd = NULL, *sock = NULL, *log = NULL, *lst = NULL;
    const char *port_env = getenv("OPENSHELL_SERVER_PORT");
    int rc = CLI_EXIT_FAIL, fd;
    pid_t pid;

    if (!c->cfg)
        return cli_fail(c, CLI_EXIT_FAIL, "set HOME or XDG_CONFIG_HOME",
                        "no configuration directory");
    memset(&g, 0, sizeof(g));
    if (cli_gw_load(c->cfg, name, &old, NULL) == 0 && !old.state_dir[0])
        return cli_fail(c, CLI_EXIT_FAIL, "pick another name with --name, or remove it first",
                        "gateway '%s' is registered as a remote gateway (%s)", name, old.endpoint);
    if (state_dir)
        sd = xstrdup(state_dir);
    else if (cli_gw_load(c->cfg, name, &old, NULL) == 0)
        sd = xstrdup(old.state_dir);
    else if (!(sd = cli_state_dir(name)))
        return cli_fail(c, CLI_EXIT_FAIL, "set HOME or XDG_STATE_HOME", "no state directory");
    sock = xasprintf("%s/gateway.sock", sd);
    log = xasprintf("%s/gateway.log", sd);
    if (listen)
        lst = xstrdup(listen);
    else if (port_env && *port_env)
        lst = xasprintf("127.0.0.1:%s", port_env);
    else if (port_taken(17670) && !cli_socket_healthy(sock)) {
        /* Someone else's gateway (or anything) holds the default port: the
         * CLI needs only the unix socket, so start without TLS rather than
         * fail; say so. */
        cli_warn(c,
                 "127.0.0.1:17670 is in use: gateway '%s' serves its unix socket only "
                 "(pass --listen ADDR:PORT for TLS)",
                 name);
        lst = xstrdup("none");
    } else
        lst = xstrdup("127.0.0.1:17670");

    buf_copy_fixed(g.name, sizeof(g.name), name);
    buf_copy_fixed(g.unix_socket, sizeof(g.unix_socket), sock);
    buf_copy_fixed(g.state_dir, sizeof(g.state_dir), sd);
    if (!strcmp(lst, "none")) {
        buf_fmt_fixed(g.endpoint, sizeof(g.endpoint), "unix://%s", sock);
        buf_copy_fixed(g.auth, sizeof(g.auth), "local");
    } else {
        const char *colon = strrchr(lst, ':');
        buf_fmt_fixed(g.endpoint, sizeof(g.endpoint), "https://%s", lst);
        buf_copy_fixed(g.auth, sizeof(g.auth), "mtls");
        g.port = colon ? (unsigned)strtoul(colon + 1, NULL, 10) : 0;
    }

    if (cli_socket_healthy(sock)) {
        /* Running already: keep what the registration says about it. */
        if (cli_gw_load(c->cfg, name, &old, NULL) == 0 && !strcmp(old.unix_socket, sock))
            g = old;
        if (!quiet)
            cli_ok(c, "Gateway '%s' is already running (pid %ld)", name, cli_gateway_pid(sd));
        rc = register_local(c, &g, !quiet);
        goto out;
    }
    if (mkdir_p0700(sd) < 0) {
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "creating %s: %s", sd, strerror(errno));
        goto out;
    }
    fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "opening %s: %s", log, strerror(errno));
        goto out;
    }
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(fd);
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "fork: %s", strerror(errno));
        goto out;
    }
    if (pid == 0) {
        /* The daemon: its own session (no terminal signals reach it), stdin
         * from /dev/null, its log in the state directory; a fresh image of
         * this binary as openshell-gateway. */
        const char *drv = getenv("OPENSHELL_COMPUTE_DRIVER");
        char *args[] = { "openshell-gateway",
                         "--state-dir",
                         sd,
                         "--name",
                         (char *)name,
                         "--listen",
                         lst,
                         "--log-format",
                         "text",
                         drv && *drv ? "--compute-driver" : NULL,
                         (char *)drv,
                         NULL };
        int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

        setsid();
        if (nul >= 0)
            dup2(nul, 0);
        dup2(fd, 1);
        dup2(fd, 2);
        signal(SIGPIPE, SIG_DFL);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(fd);
    for (int waited = 0;; waited += 20) {
        int st;

        if (cli_socket_healthy(sock))
            break;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "%s: error: the gateway exited during start; its log says:\n", c->prog);
            print_log_tail(log);
            rc = cli_fail(c, CLI_EXIT_FAIL,
                          "if the port is taken, pass --listen ADDR:PORT (or --listen none)",
                          "gateway '%s' did not start", name);
            goto out;
        }
        if (waited >= CLI_START_TIMEOUT_MS) {
            kill(pid, SIGTERM);
            rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL,
                          "gateway '%s' did not answer on %s within %d s (log: %s)", name, sock,
                          CLI_START_TIMEOUT_MS / 1000, log);
            goto out;
        }
        cli_sleep_ms(20);
    }
    if (!quiet)
        cli_ok(c, "Gateway '%s' started (pid %ld)", name, (long)pid);
    rc = register_local(c, &g, true);
out:
    free(sd);
    free(sock);
    free(log);
    free(lst);
    return rc;
}

int
cli_gateway_stop_local(struct cli_ctx *c, const struct cli_gateway *g)
{
    long pid = cli_gateway_pid(g->state_dir);

    if (pid == 0 && g->unix_socket[0] && cli_socket_healthy(g->unix_socket))
        return cli_fail(c, CLI_EXIT_FAIL, "stop it where it was started",
                        "a gateway answers on %s but is not the one of %s", g->unix_socket,
                        g->state_dir);
    if (pid == 0) {
        cli_warn(c, "Gateway '%s' is not running", g->name);
        return 0;
    }
    if (pid < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "gateway '%s' runs but its pid is unknown (%s)",
                        g->name, g->state_dir);
    if (kill((pid_t)pid, SIGTERM) < 0 && errno != ESRCH)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "stopping gateway '%s' (pid %ld): %s", g->name, pid,
                        strerror(errno));
    for (int waited = 0; cli_gateway_pid(g->state_dir) != 0; waited += 20) {
        if (waited >= CLI_STOP_TIMEOUT_MS)
            return cli_fail(c, CLI_EXIT_FAIL, "kill it with: kill -9 PID",
                            "gateway '%s' (pid %ld) did not stop within %d s", g->name, pid,
                            CLI_STOP_TIMEOUT_MS / 1000);
        cli_sleep_ms(20);
    }
    cli_ok(c, "Gateway '%s' stopped", g->name);
    return 0;
}

/* ------------------------------------------------------------------ selection */

/* --gateway-endpoint / OPENSHELL_GATEWAY_ENDPOINT: the registration with
 * that endpoint (or -g's name), else an unregistered one. 1 when none was
 * given, 0 selected, -CLI_EXIT_* after printing the error. */
static int
select_endpoint(struct cli_ctx *c)
{
    const char *ep = c->endpoint_flag ? c->endpoint_flag : getenv("OPENSHELL_GATEWAY_ENDPOINT");
    struct cli_gateway *all = NULL;
    char url[1024];
    char *host = NULL;
    unsigned port;
    struct err e;
    size_t n = 0;

    if (!ep || !*ep)
        return 1;
    if (cli_endpoint_parse(ep, url, sizeof(url), &host, &port, &e) < 0)
        return -cli_fail(c, CLI_EXIT_USAGE, NULL, "gateway endpoint: %s", e.msg);
    free(host);
    cli_gw_list(c->cfg, &all, &n, NULL);
    for (size_t i = 0; i < n; i++) {
        bool same = !strcmp(all[i].endpoint, url) ||
                    (!strncmp(url, "unix://", 7) && !strcmp(all[i].unix_socket, url + 7));
        if (same && (!c->gateway_flag || !strcmp(c->gateway_flag, all[i].name))) {
            c->gw = all[i];
            c->src = CLI_GW_FLAG;
            free(all);
            return 0;
        }
    }
    free(all);
    memset(&c->gw, 0, sizeof(c->gw));
    buf_copy_fixed(c->gw.name, sizeof(c->gw.name), c->gateway_flag ? c->gateway_flag : "endpoint");
    buf_copy_fixed(c->gw.endpoint, sizeof(c->gw.endpoint), url);
    buf_copy_fixed(c->gw.auth, sizeof(c->gw.auth), "local");
    if (!strncmp(url, "unix://", 7))
        buf_copy_fixed(c->gw.unix_socket, sizeof(c->gw.unix_socket), url + 7);
    c->adhoc = true;
    c->src = CLI_GW_FLAG;
    return 0;
}

int
cli_select(struct cli_ctx *c, bool autostart)
{
    char name[CLI_NAME_MAX];
    struct err e;
    int rc;

    if (!c->cfg)
        return cli_fail(c, CLI_EXIT_UNREACHABLE, "set HOME or XDG_CONFIG_HOME",
                        "no configuration directory");
    if ((rc = select_endpoint(c)) <= 0)
        return -rc;
    rc = cli_gw_resolve(c->cfg, c->gateway_flag, getenv("OPENSHELL_GATEWAY"), name, sizeof(name),
                        &c->src);
    if (rc == -ENOENT) {
        struct cli_gateway *all;
        size_t n = 0;

        if (cli_gw_list(c->cfg, &all, &n, NULL) == 0)
            free(all);
        if (!autostart || n > 0)
            return cli_fail(c, CLI_EXIT_UNREACHABLE,
                            n ? "select one with: openshell gateway select NAME"
                              : "start the local one with: openshell gateway start, or register "
                                "one with: openshell gateway add ENDPOINT",
                            "no active gateway");
        fprintf(stderr, "No gateway configured: starting the local one "
                        "('openshell gateway start')\n");
        return cli_gateway_start_local(c, "openshell", NULL, NULL, true);
    }
    if (rc < 0 || !cli_gw_name_ok(name))
        return cli_fail(c, CLI_EXIT_USAGE, NULL, "'%s' is not a gateway name", name);
    if ((rc = cli_gw_load(c->cfg, name, &c->gw, &e)) == -ENOENT) {
        char *hint = xasprintf("list them with: openshell gateway list; register it with: "
                               "openshell gateway add ENDPOINT --name %s",
                               name);
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, hint, "unknown gateway '%s'%s", name,
                      c->src == CLI_GW_ENV ? " (from OPENSHELL_GATEWAY)" : "");
        free(hint);
        return rc;
    }
    if (rc < 0)
        return cli_fail(c, CLI_EXIT_FAIL, "remove and add it again", "gateway '%s': %s", name,
                        e.msg);
    if (autostart && c->gw.state_dir[0] && !cli_socket_healthy(c->gw.unix_socket)) {
        fprintf(stderr, "Gateway '%s' is not running: starting it\n", name);
        return cli_gateway_start_local(c, name, c->gw.state_dir, NULL, true);
    }
    return 0;
}

/* Bulk transfers (files, exec output) want more in flight than the
 * defaults: a 4 MiB receive window per stream, 1 MiB queued per stream. */
static const struct h2_limits cli_h2_limits = {
    .stream_window = 4u * 1024 * 1024,
    .stream_out_high = 1024 * 1024,
};

/* ------------------------------------------------------------------ TLS */

struct hs_wait {
    struct loop *loop;
    int done; /* 1 connected, -1 failed */
};

static void
hs_event(struct bufferevent *bev, short what, void *arg)
{
    struct hs_wait *w = arg;

    (void)bev;
    if (what & BEV_EVENT_CONNECTED)
        w->done = 1;
    else if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF))
        w->done = -1;
    if (w->done)
        loop_stop(w->loop);
}

/* A TCP connection to HOST:PORT (blocking connect, at most TIMEOUT_S per
 * address). The fd or -errno with E. */
static int
tcp_connect(const char *host, unsigned port, struct err *e)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
    struct addrinfo *res = NULL, *ai;
    char pstr[16];
    int fd = -1, rc, saved = ECONNREFUSED;

    snprintf(pstr, sizeof(pstr), "%u", port);
    if ((rc = getaddrinfo(host, pstr, &hints, &res)) != 0)
        return err_set(e, ENOENT, "resolving %s: %s", host, gai_strerror(rc));
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            saved = errno;
            continue;
        }
        deadline(CLI_HEALTH_TIMEOUT_S * 2);
        rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        deadline(0);
        if (rc == 0)
            break;
        saved = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        return err_set(e, saved, "connecting to %s:%u: %s", host, port, strerror(saved));
    return fd;
}

/* Split an https:// endpoint into HOST (brackets of an IPv6 literal
 * removed) and PORT. */
static int
split_https(const char *url, char *host, size_t size, unsigned *port)
{
    const char *h = url + 8, *end = h + strcspn(h, "/"), *colon;

    *port = 443;
    if (*h == '[') {
        const char *rb = memchr(h, ']', (size_t)(end - h));
        if (!rb || (size_t)(rb - h - 1) >= size)
            return -EINVAL;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
        colon = rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(h, ':', (size_t)(end - h));
        size_t n = (size_t)((colon ? colon : end) - h);
        if (n == 0 || n >= size)
            return -EINVAL;
        memcpy(host, h, n);
        host[n] = '\0';
    }
    if (colon)
        *port = (unsigned)strtoul(colon + 1, NULL, 10);
    return *port > 0 && *port < 65536 ? 0 : -EINVAL;
}

/* HTTP/2 over TLS (ALPN h2) to an https:// gateway with its mTLS client
 * bundle CFG/gateways/NAME/mtls/{ca.crt,tls.crt,tls.key}: the server
 * certificate must chain to ca.crt and name the host. 0 or CLI_EXIT_*. */
static int
connect_tls(struct cli_ctx *c)
{
    static const char *const alpn[] = { "h2", NULL };
    char host[256], *dir = NULL, *ca = NULL, *crt = NULL, *key = NULL;
    struct hs_wait w = { 0 };
    struct bufferevent *bev;
    struct tls_conn *tc = NULL;
    unsigned port;
    struct err e;
    int fd, rc = 0;

    err_clear(&e);
    if (split_https(c->gw.endpoint, host, sizeof(host), &port) < 0)
        return cli_fail(c, CLI_EXIT_USAGE, NULL, "gateway '%s': bad endpoint %s", c->gw.name,
                        c->gw.endpoint);
    dir = xasprintf("%s/gateways/%s/mtls", c->cfg, c->gw.name);
    ca = xasprintf("%s/ca.crt", dir);
    crt = xasprintf("%s/tls.crt", dir);
    key = xasprintf("%s/tls.key", dir);
    if (access(ca, R_OK) < 0) {
        char *hint = xasprintf("place the gateway's client bundle (ca.crt, tls.crt, tls.key) in "
                               "%s",
                               dir);
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, hint,
                      "gateway '%s' (%s): TLS CA is required for https endpoints (%s: %s)",
                      c->gw.name, c->gw.endpoint, ca, strerror(errno));
        free(hint);
        goto out;
    }
    if (tls_global_init(&e) < 0 || !(c->tls = tls_client_ctx_new(ca, alpn, TLS_VERSION_ANY, &e))) {
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL, "gateway '%s': %s", c->gw.name, e.msg);
        goto out;
    }
    if (access(crt, R_OK) == 0 && tls_client_ctx_set_cert(c->tls, crt, key, &e) < 0) {
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL, "gateway '%s': client certificate: %s",
                      c->gw.name, e.msg);
        goto out;
    }
    if ((fd = tcp_connect(host, port, &e)) < 0) {
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, "check that the gateway runs: openshell status",
                      "cannot reach gateway '%s': %s", c->gw.name, e.msg);
        goto out;
    }
    c->loop = loop_new();
    evutil_make_socket_nonblocking(fd);
    bev = bufferevent_socket_new(loop_base(c->loop), fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev || !(bev = tls_wrap_client(bev, c->tls, host, &tc, &e))) {
        if (!bev)
            close(fd);
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL, "gateway '%s': %s", c->gw.name,
                      e.msg[0] ? e.msg : "TLS setup failed");
        goto out;
    }
    /* Finish the handshake here, so that a refused certificate reads as
     * such rather than as a closed connection. */
    w.loop = c->loop;
    bufferevent_setcb(bev, NULL, NULL, hs_event, &w);
    bufferevent_enable(bev, EV_READ | EV_WRITE);
    deadline(CLI_HEALTH_TIMEOUT_S * 2);
    while (!w.done && loop_run(c->loop) == 0)
        ;
    deadline(0);
    if (w.done != 1) {
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE,
                      "check the bundle in ~/.config/openshell/gateways/NAME/mtls",
                      "gateway '%s' (%s): TLS handshake failed: %s", c->gw.name, c->gw.endpoint,
                      *tls_conn_error(tc) ? tls_conn_error(tc) : "connection closed");
        bufferevent_free(bev);
        goto out;
    }
    bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
    if (!(c->conn = h2_client_new(loop_base(c->loop), bev, true, &cli_h2_limits, &e)))
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL, "gateway '%s': %s", c->gw.name, e.msg);
out:
    free(dir);
    free(ca);
    free(crt);
    free(key);
    return rc;
}

int
cli_connect(struct cli_ctx *c, bool autostart)
{
    const char *sock;
    struct err e;
    int rc;

    if ((rc = cli_select(c, autostart)) != 0)
        return rc;
    sock = c->gw.unix_socket[0] ? c->gw.unix_socket : NULL;
    if (!sock && !strncmp(c->gw.endpoint, "unix://", 7))
        sock = c->gw.endpoint + 7;
    if (!sock && !strncmp(c->gw.endpoint, "https://", 8))
        return connect_tls(c);
    if (!sock)
        return cli_fail(c, CLI_EXIT_UNREACHABLE,
                        "use an https:// (mTLS) or unix:/// endpoint; plaintext http is not "
                        "served by this gateway",
                        "gateway '%s' at %s: no way to reach it", c->gw.name, c->gw.endpoint);
    c->loop = loop_new();
    if (h2_client_connect_unix(loop_base(c->loop), sock, &cli_h2_limits, &c->conn, &e) < 0)
        return cli_fail(c, CLI_EXIT_UNREACHABLE,
                        c->gw.state_dir[0] ? "start it with: openshell gateway start"
                                           : "check that the gateway runs, or select another "
                                             "with: openshell gateway select NAME",
                        "cannot reach gateway '%s': %s", c->gw.name, e.msg);
    return 0;
}

int
cli_call(struct cli_ctx *c, const char *method, const char *path, const char *ctype,
         const char *body, size_t len, int *status, cJSON **json)
{
    struct h2_header hdr = { "content-type", ctype ? ctype : "application/json" };
    struct buf resp = BUF_INIT;
    struct err e;
    int rc;

    *json = NULL;
    {
        const char *t = getenv("OPENSHELL_REQUEST_TIMEOUT");
        long secs = t && *t ? strtol(t, NULL, 10) : CLI_CALL_TIMEOUT_S;
        deadline(secs > 0 && secs < 86400 ? (unsigned)secs : CLI_CALL_TIMEOUT_S);
    }
    rc = h2_client_call(c->conn, method, path, body ? &hdr : NULL, body ? 1 : 0, body, len, status,
                        &resp, CLI_RESP_MAX, &e);
    deadline(0);
    if (rc < 0) {
        buf_fini(&resp);
        return cli_fail(c, CLI_EXIT_UNREACHABLE, "check the gateway with: openshell status",
                        "gateway '%s': %s %s: %s", c->gw.name, method, path, e.msg);
    }
    *json = cJSON_ParseWithLength(resp.data ? resp.data : "", resp.len);
    buf_fini(&resp);
    return 0;
}

int
cli_call_json(struct cli_ctx *c, const char *method, const char *path, const cJSON *body,
              int *status, cJSON **json)
{
    char *text = body ? cJSON_PrintUnformatted(body) : NULL;
    int rc = cli_call(c, method, path, NULL, text, text ? strlen(text) : 0, status, json);

    if (text) {
        /* The body may carry credential values. */
        explicit_bzero(text, strlen(text));
        free(text);
    }
    return rc;
}

int
cli_api_fail(const struct cli_ctx *c, int status, const cJSON *j, const char *hint)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(err, "message");
    const char *m = cJSON_IsString(msg) ? msg->valuestring : "no error message";

    if (status == 401)
        return cli_fail(c, CLI_EXIT_UNREACHABLE,
                        hint ? hint : "local gateways answer their owner (and root) only", "%s", m);
    if (status == 503)
        return cli_fail(c, CLI_EXIT_UNREACHABLE, hint ? hint : "retry in a moment", "%s", m);
    return cli_fail(c, CLI_EXIT_FAIL, hint, "%s", m);
}
