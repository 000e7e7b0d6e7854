/*
 * sandbox_io.c: the sandbox commands that move bytes (doc/cli.md):
 *
 *   logs [NAME] [--follow] [--tail N] [--level L] [--source S]
 *   exec [NAME] [-t] [-i] [--workdir D] [--env K=V]... [--timeout S] -- CMD...
 *   connect [NAME]
 *   upload NAME SRC [DST]      download NAME SRC [DST]
 *
 * exec and connect speak the frame protocol of doc/api.md §2.7 on one
 * HTTP/2 stream (POST .../exec, application/x-openshell-frames): INIT, then
 * STDIN/RESIZE/EOF from us, STDOUT/STDERR/EXIT/ERROR from the sandbox. With
 * a tty the local terminal is raw for the session and restored on every way
 * out. Files are tar streams (include/tar.h) made or unpacked by a child
 * process on the other end of a pipe, so the event loop never blocks on the
 * file system; a download lands in a temporary directory next to its
 * destination and is renamed into place only when complete.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "../applets.h"
#include "buf.h"
#include "cli.h"
#include "client.h"
#include "h2.h"
#include "loop.h"
#include "tar.h"
#include "xfuncs.h"

#define IO_CHUNK (256 * 1024)
#define IO_PIPE_SIZE (1024 * 1024)
#define IO_MAX_ENV 256
/* Exit status when the stream to the sandbox is lost mid-session (as ssh). */
#define IO_EXIT_LOST 255
#define IO_EXIT_TIMEOUT 124
#define FRAMES_CTYPE "application/x-openshell-frames"

/* ------------------------------------------------------------------ terminal */

static struct termios saved_tio;
static bool tio_saved;

static void
tty_restore(void)
{
    if (tio_saved) {
        tcsetattr(0, TCSADRAIN, &saved_tio);
        tio_saved = false;
    }
}

static void
tty_fatal_signal(int sig)
{
    /* Async-signal-safe: tcsetattr is. Then die of the same signal. */
    if (tio_saved)
        tcsetattr(0, TCSADRAIN, &saved_tio);
    signal(sig, SIG_DFL);
    raise(sig);
}

static int
tty_raw(void)
{
    struct termios t;
    static bool hooked;

    if (tcgetattr(0, &saved_tio) < 0)
        return -errno;
    t = saved_tio;
    cfmakeraw(&t);
    if (tcsetattr(0, TCSADRAIN, &t) < 0)
        return -errno;
    tio_saved = true;
    if (!hooked) {
        hooked = true;
        atexit(tty_restore);
        /* In raw mode ^C and ^\ are bytes for the sandbox; these come
         * from elsewhere (kill, a closed terminal). */
        signal(SIGTERM, tty_fatal_signal);
        signal(SIGHUP, tty_fatal_signal);
        signal(SIGQUIT, tty_fatal_signal);
        signal(SIGINT, tty_fatal_signal);
    }
    return 0;
}

static void
tty_size(int *cols, int *rows)
{
    struct winsize ws;

    *cols = 80;
    *rows = 24;
    if (ioctl(isatty(1) ? 1 : 0, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row) {
        *cols = ws.ws_col;
        *rows = ws.ws_row;
    }
}

/* Write all of P[N] to FD (blocking; waits out EAGAIN on a non-blocking
 * terminal). */
static int
write_all(int fd, const void *p, size_t n)
{
    const char *s = p;

    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct pollfd pf = { .fd = fd, .events = POLLOUT };
            poll(&pf, 1, 1000);
            continue;
        }
        if (w < 0)
            return -errno;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ------------------------------------------------------------------ exec */

struct exec {
    struct cli_stream s;
    struct cli_ctx *c;
    struct buf in; /* unparsed response bytes */
    struct event *stdin_ev;
    struct loop_timer *pump;    /* stdin that cannot be polled (files) */
    struct loop_timer *timeout; /* --timeout */
    bool stdin_open;            /* still forwarding stdin */
    bool stdin_paused;          /* waiting for on_drain */
    bool tty;
    bool done;
    bool timed_out;
    int exit_code; /* -1 until EXIT */
    char error[1200];
};

static void
exec_send(struct exec *x, uint8_t type, const void *p, size_t n)
{
    struct buf f = BUF_INIT;
    int rc;

    if (!x->s.st)
        return;
    h2_frame_put(&f, type, p, n);
    rc = h2_stream_write(x->s.st, f.data, f.len);
    buf_fini(&f);
    if (rc == -EAGAIN && x->stdin_open) {
        x->stdin_paused = true;
        if (x->stdin_ev)
            event_del(x->stdin_ev);
        if (x->pump)
            loop_timer_stop(x->pump);
    }
}

static void
stdin_eof(struct exec *x)
{
    uint8_t t = H2_FRAME_STDIN;

    if (!x->stdin_open)
        return;
    x->stdin_open = false;
    if (x->stdin_ev)
        event_del(x->stdin_ev);
    if (x->pump)
        loop_timer_stop(x->pump);
    exec_send(x, H2_FRAME_EOF, &t, 1);
}

/* Read one chunk of stdin into a STDIN frame. */
static void
stdin_read(struct exec *x)
{
    char b[IO_CHUNK];
    ssize_t n = read(0, b, sizeof(b));

    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        stdin_eof(x);
        return;
    }
    exec_send(x, H2_FRAME_STDIN, b, (size_t)n);
}

static void
on_stdin(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stdin_read(arg);
}

static void
on_pump(void *arg)
{
    struct exec *x = arg;

    stdin_read(x);
    if (x->stdin_open && !x->stdin_paused)
        loop_timer_start(x->pump, 0, false);
}

static void
exec_drain(struct cli_stream *s)
{
    struct exec *x = s->arg;

    if (!x->stdin_paused || !x->stdin_open)
        return;
    x->stdin_paused = false;
    if (x->stdin_ev)
        event_add(x->stdin_ev, NULL);
    if (x->pump)
        loop_timer_start(x->pump, 0, false);
}

static void
on_winch(int sig, void *arg)
{
    struct exec *x = arg;
    char j[64];
    int cols, rows;

    (void)sig;
    tty_size(&cols, &rows);
    snprintf(j, sizeof(j), "{\"cols\":%d,\"rows\":%d}", cols, rows);
    exec_send(x, H2_FRAME_RESIZE, j, strlen(j));
}

static void
on_exec_timeout(void *arg)
{
    struct exec *x = arg;

    x->timed_out = true;
    x->done = true;
    loop_stop(x->c->loop);
}

static void
exec_data(struct cli_stream *s, const uint8_t *p, size_t n)
{
    struct exec *x = s->arg;
    size_t off = 0;

    buf_append(&x->in, p, n);
    while (!x->done) {
        struct h2_frame f;
        size_t used;
        struct err e;
        int rc = h2_frame_parse((const uint8_t *)x->in.data + off, x->in.len - off, &f, &used, &e);

        if (rc == 0)
            break;
        if (rc < 0) {
            snprintf(x->error, sizeof(x->error), "bad frame from the gateway: %s", e.msg);
            x->done = true;
            break;
        }
        off += used;
        switch (f.type) {
        case H2_FRAME_STDOUT: write_all(1, f.payload, f.len); break;
        case H2_FRAME_STDERR: write_all(2, f.payload, f.len); break;
        case H2_FRAME_EXIT: {
            cJSON *j = cJSON_ParseWithLength((const char *)f.payload, f.len);
            const cJSON *v = cli_jget(j, "exit_code");
            x->exit_code = cJSON_IsNumber(v) ? (int)v->valuedouble : IO_EXIT_LOST;
            cJSON_Delete(j);
            x->done = true;
            break;
        }
        case H2_FRAME_ERROR: {
            cJSON *j = cJSON_ParseWithLength((const char *)f.payload, f.len);
            snprintf(x->error, sizeof(x->error), "%s",
                     *cli_jstr(j, "error.message") ? cli_jstr(j, "error.message")
                                                   : "the sandbox reported an error");
            cJSON_Delete(j);
            x->done = true;
            break;
        }
        default: break; /* EOF of stdout/stderr: nothing to do */
        }
    }
    buf_consume(&x->in, off);
    if (x->done)
        loop_stop(x->c->loop);
}

int
cli_exec(struct cli_ctx *c, const char *name, const struct cli_exec_opts *o)
{
    struct exec x;
    cJSON *init = cJSON_CreateObject(), *cmd;
    struct buf first = BUF_INIT;
    char *text, *path;
    struct stat st;
    int rc, cols, rows;
    uint64_t t0 = cli_now_ms();

    memset(&x, 0, sizeof(x));
    x.c = c;
    x.exit_code = -1;
    x.tty = o->tty;
    cJSON_AddStringToObject(init, "op", "exec");
    cmd = cJSON_AddArrayToObject(init, "command");
    for (int i = 0; i < o->argc; i++)
        cJSON_AddItemToArray(cmd, cJSON_CreateString(o->argv[i]));
    cJSON_AddBoolToObject(init, "tty", o->tty);
    if (o->tty) {
        tty_size(&cols, &rows);
        cJSON_AddNumberToObject(init, "cols", cols);
        cJSON_AddNumberToObject(init, "rows", rows);
    }
    if (o->workdir)
        cJSON_AddStringToObject(init, "workdir", o->workdir);
    if (o->nenv) {
        cJSON *env = cJSON_AddObjectToObject(init, "environment");
        for (size_t i = 0; i < o->nenv; i++) {
            const char *eq = strchr(o->env[i], '=');
            char *k = xstrndup(o->env[i], (size_t)(eq - o->env[i]));
            cJSON_DeleteItemFromObjectCaseSensitive(env, k);
            cJSON_AddStringToObject(env, k, eq + 1);
            free(k);
        }
    }
    text = cJSON_PrintUnformatted(init);
    h2_frame_put(&first, H2_FRAME_INIT, text, strlen(text));
    free(text);
    cJSON_Delete(init);
    path = cli_sb_path(c, name, "/exec");

    /* A supervisor that has just started may not be connected yet: 503 is
     * retried for a few seconds. */
    for (;;) {
        memset(&x.s, 0, sizeof(x.s));
        x.s.arg = &x;
        x.s.on_data = exec_data;
        x.s.on_drain = exec_drain;
        x.s.stop_on_response = true;
        if ((rc = cli_stream_open(&x.s, c, "POST", path, FRAMES_CTYPE, first.data, first.len,
                                  true)) != 0)
            goto out;
        while (!x.s.status && !x.s.closed)
            cli_stream_run(&x.s);
        if (x.s.status == 503 && cli_now_ms() - t0 < (uint64_t)o->connect_wait_ms) {
            cli_stream_fini(&x.s);
            cli_sleep_ms(200);
            continue;
        }
        break;
    }
    x.s.stop_on_response = false;
    if (x.s.status != 200) {
        if (x.s.status == 404) {
            /* not found: which one, the sandbox or the endpoint? */
            rc = cli_stream_fail(&x.s, "list them with: openshell sandbox list");
        } else if (x.s.status == 503) {
            cli_stream_fail(&x.s, "wait until the sandbox is ready: openshell sandbox get");
            rc = CLI_EXIT_FAIL; /* the gateway answered: the sandbox is not there yet */
        } else {
            rc = cli_stream_fail(&x.s, NULL);
        }
        goto out;
    }

    /* stdin: forwarded when asked (-i, -t) or when it is not a terminal. */
    x.stdin_open = true;
    if (!o->stdin_on) {
        stdin_eof(&x);
    } else if (fstat(0, &st) == 0 && (S_ISREG(st.st_mode) || (S_ISCHR(st.st_mode) && !isatty(0)))) {
        x.pump = loop_timer_new(c->loop, on_pump, &x);
        loop_timer_start(x.pump, 0, false);
    } else {
        x.stdin_ev = event_new(loop_base(c->loop), 0, EV_READ | EV_PERSIST, on_stdin, &x);
        if (!x.stdin_ev || event_add(x.stdin_ev, NULL) < 0)
            stdin_eof(&x);
    }
    if (o->tty && isatty(0) && tty_raw() < 0)
        cli_warn(c, "could not make the terminal raw: %s", strerror(errno));
    if (o->tty)
        loop_on_signal(c->loop, SIGWINCH, on_winch, &x);
    if (o->timeout_s > 0) {
        x.timeout = loop_timer_new(c->loop, on_exec_timeout, &x);
        loop_timer_start(x.timeout, (uint64_t)o->timeout_s * 1000, false);
    }
    /* SIGINT (without a tty: with one, ^C is a byte for the sandbox),
     * SIGTERM or SIGHUP end the session cleanly: the terminal is restored
     * and `create --no-keep` still deletes its sandbox. */
    cli_catch_signals(c, !o->tty);
    while (!x.done && !x.s.closed && !cli_interrupted)
        cli_stream_run(&x.s);
    tty_restore();
    if (cli_interrupted) {
        rc = cli_fail(c, 130, NULL, "interrupted: the command in sandbox '%s' was stopped", name);
    } else if (x.timed_out) {
        rc = cli_fail(c, IO_EXIT_TIMEOUT, NULL, "command timed out after %lds", o->timeout_s);
    } else if (x.error[0]) {
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "%s", x.error);
    } else if (x.exit_code < 0) {
        rc = cli_fail(c, IO_EXIT_LOST, "check the gateway with: openshell status",
                      "the connection to sandbox '%s' was lost%s", name,
                      x.s.reset ? " (stream reset)" : "");
    } else {
        rc = x.exit_code;
        if (x.s.st)
            h2_stream_end(x.s.st);
    }
out:
    if (x.stdin_ev)
        event_free(x.stdin_ev);
    loop_timer_free(x.pump);
    loop_timer_free(x.timeout);
    cli_stream_fini(&x.s);
    buf_fini(&x.in);
    buf_fini(&first);
    free(path);
    return rc;
}

/* ------------------------------------------------------------------ options */

static const char io_usage[] =
    "Usage: openshell sandbox logs [NAME] [--follow] [--tail N] [--level L] [--source S]\n"
    "                              [--since 30s|5m|1h]\n"
    "       openshell logs [NAME] [-n N] [--tail] [--level L] [--source S] [--since D]\n"
    "                 (the reference's form: -n lines, --tail streams)\n"
    "       openshell sandbox exec [NAME] [-t|--no-tty] [-i] [--workdir DIR] [--env K=V]...\n"
    "                              [--timeout SECS] -- CMD [ARGS...]\n"
    "       openshell sandbox connect [NAME]\n"
    "       openshell sandbox upload NAME SRC [DST]\n"
    "       openshell sandbox download NAME SRC [DST]\n"
    "\n"
    "  logs      the sandbox's log lines (supervisor, proxy, agent); --follow keeps\n"
    "            streaming; --tail N the last N lines (default 200); --level the\n"
    "            minimum level (debug, info, warn, error); --source supervisor, proxy\n"
    "            or agent. -o json prints each line as the gateway's JSON.\n"
    "  exec      run CMD in the sandbox as a new process: stdout and stderr stream\n"
    "            back, the exit status is the command's. stdin is forwarded with\n"
    "            -i, with -t, or when it is not a terminal. -t gives CMD a pty (the\n"
    "            local terminal goes raw; window size changes follow).\n"
    "  connect   an interactive login shell in the sandbox (exec -t of bash -l,\n"
    "            else sh -l); exits with the shell's status.\n"
    "  upload    copy the local file or directory SRC into the sandbox directory\n"
    "            DST (default /sandbox), as DST/basename(SRC).\n"
    "  download  copy the sandbox's SRC to DST (default .): into DST when it is a\n"
    "            directory, else as DST. Nothing is left half-written on failure.\n"
    "\n"
    "Options:\n" CLI_COMMON_HELP "\n"
    "Examples:\n"
    "  openshell sandbox exec demo -- ls -la /sandbox\n"
    "  echo hello | openshell sandbox exec demo -- cat\n"
    "  openshell sandbox exec -t demo -- python3\n"
    "  openshell sandbox connect demo\n"
    "  openshell sandbox upload demo ./src /sandbox\n"
    "  openshell sandbox download demo /sandbox/out.json .\n"
    "  openshell sandbox logs demo --follow --level warn\n"
    "\n"
    "NAME defaults to the last used sandbox (not for upload and download).\n"
    "Exit status: exec and connect exit with the command's status (128+N for\n"
    "signal N), 124 --timeout, 255 connection lost mid-session, 130 interrupted\n"
    "(Ctrl-C without a tty, SIGTERM, SIGHUP; upload and download: Ctrl-C);\n"
    "otherwise 0 ok,\n"
    "1 failed (unknown sandbox, no such file, not writable, not ready),\n"
    "2 usage error, 3 no gateway reachable.\n";

enum {
    OPT_FOLLOW = 0x100,
    OPT_TAIL,
    OPT_LEVEL,
    OPT_SOURCE,
    OPT_WORKDIR,
    OPT_ENV,
    OPT_TIMEOUT,
    OPT_NO_TTY,
    OPT_SINCE,
};

/* `openshell logs` (the reference's top-level form): -n N lines, --tail
 * streams. `sandbox logs`: --tail N lines, --follow streams. */
static bool ref_logs;

struct io_args {
    bool follow, tty, no_tty, interactive;
    long tail, timeout_s, since_s;
    const char *level, *source, *workdir;
    const char *env[IO_MAX_ENV];
    size_t nenv;
    char **pos;
    int npos;
    char **cmd; /* after -- */
    int ncmd;
};

static void
parse(struct cli_ctx *c, int argc, char **argv, struct io_args *a)
{
    static const struct option longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "follow", no_argument, NULL, 'f' },
        { "tail", required_argument, NULL, OPT_TAIL },
        { "level", required_argument, NULL, OPT_LEVEL },
        { "source", required_argument, NULL, OPT_SOURCE },
        { "tty", no_argument, NULL, 't' },
        { "no-tty", no_argument, NULL, OPT_NO_TTY },
        { "interactive", no_argument, NULL, 'i' },
        { "workdir", required_argument, NULL, OPT_WORKDIR },
        { "env", required_argument, NULL, OPT_ENV },
        { "timeout", required_argument, NULL, OPT_TIMEOUT },
        { "name", required_argument, NULL, 'n' },
        { "since", required_argument, NULL, OPT_SINCE },
        { NULL, 0, NULL, 0 },
    };
    static const struct option ref_longopts[] = {
        CLI_COMMON_LONGOPTS,
        { "tail", no_argument, NULL, 'f' },
        { "follow", no_argument, NULL, 'f' },
        { "level", required_argument, NULL, OPT_LEVEL },
        { "source", required_argument, NULL, OPT_SOURCE },
        { "since", required_argument, NULL, OPT_SINCE },
        { NULL, 0, NULL, 0 },
    };
    static const char *const levels[] = { "trace", "debug", "info", "warn", "error", NULL };
    const char *name_opt = NULL;
    int opt;

    memset(a, 0, sizeof(*a));
    a->tail = 200;
    /* Everything after the first "--" is the command: getopt never sees it
     * (its permutation would lose where the operands end and CMD starts). */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--")) {
            a->cmd = argv + i + 1;
            a->ncmd = argc - i - 1;
            argc = i;
            break;
        }
    optind = 0;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, CLI_COMMON_SHORTOPTS "ftin:",
                              ref_logs ? ref_longopts : longopts, NULL)) != -1) {
        if (cli_common_opt(c, opt, optarg))
            continue;
        switch (opt) {
        case 'h': fputs(io_usage, stdout); exit(0);
        case 'f': a->follow = true; break;
        case OPT_TAIL: a->tail = cli_parse_num(c, "--tail", optarg, 1000000); break;
        case OPT_LEVEL: {
            bool ok = false;
            for (const char *const *l = levels; *l; l++)
                ok |= !strcmp(*l, optarg);
            if (!ok)
                applet_usage_error(c->prog,
                                   "--level '%s': expected trace, debug, info, warn or "
                                   "error",
                                   optarg);
            a->level = optarg;
            break;
        }
        case OPT_SOURCE: a->source = optarg; break;
        case 't': a->tty = true; break;
        case OPT_NO_TTY: a->no_tty = true; break;
        case 'i': a->interactive = true; break;
        case 'n':
            if (ref_logs)
                a->tail = cli_parse_num(c, "-n", optarg, 1000000);
            else
                name_opt = optarg;
            break;
        case OPT_SINCE: {
            char *end;
            long v = strtol(optarg, &end, 10);
            long mul = !strcmp(end, "s")   ? 1
                       : !strcmp(end, "m") ? 60
                       : !strcmp(end, "h") ? 3600
                                           : 0;
            if (end == optarg || v <= 0 || !mul || v > 86400L * 365)
                applet_usage_error(c->prog, "--since '%s': expected a duration like 30s, 5m or 1h",
                                   optarg);
            a->since_s = v * mul;
            break;
        }
        case OPT_WORKDIR: a->workdir = optarg; break;
        case OPT_ENV:
            if (!strchr(optarg, '=') || optarg[0] == '=')
                applet_usage_error(c->prog, "--env '%s': expected KEY=VALUE", optarg);
            if (a->nenv >= IO_MAX_ENV)
                applet_usage_error(c->prog, "too many --env");
            a->env[a->nenv++] = optarg;
            break;
        case OPT_TIMEOUT: a->timeout_s = cli_parse_num(c, "--timeout", optarg, 86400 * 7); break;
        default: applet_bad_option(c->prog, argv, optind, optopt);
        }
    }
    a->pos = argv + optind;
    a->npos = argc - optind;
    if (name_opt) {
        /* -n NAME: the reference's exec form; the operands are the command. */
        static char *one[1];
        if (!a->cmd) {
            a->cmd = a->pos;
            a->ncmd = a->npos;
        }
        one[0] = (char *)name_opt;
        a->pos = one;
        a->npos = 1;
    }
}

/* ------------------------------------------------------------------ logs */

struct logs {
    struct cli_ctx *c;
    struct buf line;
    bool raw;
    unsigned long printed;
    double since_ms; /* wall clock: older lines are not shown (0: all) */
};

static void
print_log_line(struct logs *l, const char *s, size_t n)
{
    cJSON *j;

    if (!n)
        return;
    if (l->since_ms > 0) {
        cJSON *t = cJSON_ParseWithLength(s, n);
        const cJSON *ts = cli_jget(t, "ts_ms");
        bool old = cJSON_IsNumber(ts) && ts->valuedouble < l->since_ms;
        cJSON_Delete(t);
        if (old)
            return;
    }
    if (l->raw) {
        fwrite(s, 1, n, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        l->printed++;
        return;
    }
    j = cJSON_ParseWithLength(s, n);
    if (!j) {
        fprintf(stdout, "%.*s\n", (int)n, s);
        return;
    }
    if (!strcmp(cli_jstr(j, "type"), "error")) {
        fprintf(stderr, "%s: error: %s\n", l->c->prog, cli_jstr(j, "error.message"));
    } else {
        const cJSON *ts = cli_jget(j, "ts_ms"), *f;
        double t = cJSON_IsNumber(ts) ? ts->valuedouble : 0;
        char lvl[8];
        size_t i;

        snprintf(lvl, sizeof(lvl), "%s", cli_jstr(j, "level"));
        for (i = 0; lvl[i]; i++)
            lvl[i] = (char)(lvl[i] >= 'a' && lvl[i] <= 'z' ? lvl[i] - 32 : lvl[i]);
        printf("[%.0f.%03.0f] [%-10s] [%-5s] %s", (double)((long long)t / 1000),
               (double)((long long)t % 1000), cli_jstr(j, "source"), lvl, cli_jstr(j, "message"));
        /* fields as k=v, in key order */
        f = cli_jget(j, "fields");
        if (cJSON_IsObject(f) && f->child) {
            const cJSON *it;
            char *keys[64];
            size_t nk = 0;
            cJSON_ArrayForEach(it, f)
            {
                if (nk < 64)
                    keys[nk++] = it->string;
            }
            for (size_t a = 1; a < nk; a++)
                for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
                    char *tmp = keys[b];
                    keys[b] = keys[b - 1];
                    keys[b - 1] = tmp;
                }
            for (size_t k = 0; k < nk; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, keys[k]);
                if (cJSON_IsString(v))
                    printf(" %s=%s", keys[k], v->valuestring);
                else {
                    char *p = cJSON_PrintUnformatted(v);
                    printf(" %s=%s", keys[k], p ? p : "?");
                    free(p);
                }
            }
        }
        putchar('\n');
        fflush(stdout);
        l->printed++;
    }
    cJSON_Delete(j);
}

static void
logs_data(struct cli_stream *s, const uint8_t *p, size_t n)
{
    struct logs *l = s->arg;
    size_t start = 0;

    buf_append(&l->line, p, n);
    for (size_t i = 0; i < l->line.len; i++)
        if (l->line.data[i] == '\n') {
            print_log_line(l, l->line.data + start, i - start);
            start = i + 1;
        }
    buf_consume(&l->line, start);
}

static int
io_logs(struct cli_ctx *c, struct io_args *a)
{
    struct logs l = { .c = c, .line = BUF_INIT, .raw = c->output != CLI_OUT_TABLE };
    struct timespec now;
    struct cli_stream s;
    struct buf q = BUF_INIT;
    char name[256], *path;
    int rc;

    if ((rc = cli_connect(c, true)) != 0 ||
        (rc = cli_sandbox_name(c, a->npos, a->pos, name, sizeof(name))) != 0)
        return rc;
    if (a->since_s) {
        clock_gettime(CLOCK_REALTIME, &now);
        l.since_ms = ((double)now.tv_sec - (double)a->since_s) * 1000;
        if (a->tail == 200)
            a->tail = 100000; /* --since alone: everything the gateway keeps */
    }
    buf_printf(&q, "/logs?tail=%ld", a->tail);
    if (a->follow)
        buf_puts(&q, "&follow=1");
    if (a->level) {
        buf_puts(&q, "&level=");
        cli_pct_encode(a->level, &q);
    }
    if (a->source) {
        buf_puts(&q, "&source=");
        cli_pct_encode(a->source, &q);
    }
    path = cli_sb_path(c, name, buf_cstr(&q));
    buf_fini(&q);
    memset(&s, 0, sizeof(s));
    s.arg = &l;
    s.on_data = logs_data;
    rc = cli_stream_open(&s, c, "GET", path, NULL, NULL, 0, false);
    free(path);
    if (rc)
        goto out;
    while (!s.closed)
        cli_stream_run(&s);
    if (s.status != 200) {
        rc = cli_stream_fail(&s, s.status == 404 ? "list them with: openshell sandbox list" : NULL);
        goto out;
    }
    if (l.line.len)
        print_log_line(&l, l.line.data, l.line.len);
    if (s.reset)
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL, "the log stream was cut off");
    else if (!l.printed && !a->follow && c->output == CLI_OUT_TABLE)
        fprintf(stderr, "No log lines.\n");
out:
    cli_stream_fini(&s);
    buf_fini(&l.line);
    return rc;
}

/* ------------------------------------------------------------------ exec / connect */

/* exec and connect need a ready sandbox (the reference's check): fail
 * fast with its phase otherwise. */
static int
check_ready(struct cli_ctx *c, const char *name)
{
    char *path = cli_sb_path(c, name, "");
    cJSON *sb = NULL;
    const char *phase;
    int status, rc = cli_call(c, "GET", path, NULL, NULL, 0, &status, &sb);

    free(path);
    if (rc)
        return rc;
    if (status == 404)
        rc = cli_fail(c, CLI_EXIT_FAIL, "list them with: openshell sandbox list",
                      "sandbox '%s' not found in workspace '%s'", name, c->workspace);
    else if (status != 200)
        rc = cli_api_fail(c, status, sb, NULL);
    else if (strcmp((phase = cli_jstr(sb, "status.phase")), "ready") != 0) {
        const cJSON *conds = cli_jget(sb, "status.conditions");
        const cJSON *cond = cJSON_IsArray(conds) ? cJSON_GetArrayItem(conds, 0) : NULL;
        rc = cli_fail(c, CLI_EXIT_FAIL, "see: openshell sandbox get NAME",
                      "sandbox '%s' is not ready (phase: %s%s%s)", name, phase, cond ? ", " : "",
                      cond ? cli_jstr(cond, "reason") : "");
    }
    cJSON_Delete(sb);
    return rc;
}

static int
io_exec(struct cli_ctx *c, struct io_args *a, bool connect)
{
    static char *shell[] = { "/bin/sh", "-c",
                             "if [ -x /bin/bash ]; then exec /bin/bash -l; fi; exec /bin/sh -l" };
    struct cli_exec_opts o;
    char name[256];
    int rc;

    memset(&o, 0, sizeof(o));
    if (connect) {
        if (a->cmd)
            applet_usage_error(c->prog, "connect takes no command (use: sandbox exec)");
        o.argv = shell;
        o.argc = 3;
        o.tty = !a->no_tty;
        o.stdin_on = true;
    } else {
        if (!a->cmd && a->npos >= 2) {
            /* exec NAME CMD ARGS... without "--" */
            a->cmd = a->pos + 1;
            a->ncmd = a->npos - 1;
            a->npos = 1;
        }
        if (!a->cmd || !a->ncmd)
            applet_usage_error(c->prog, "expected -- CMD [ARGS...]");
        o.argv = a->cmd;
        o.argc = a->ncmd;
        /* -t, or by default when both ends are terminals (--no-tty: never) */
        o.tty = a->tty || (!a->no_tty && isatty(0) && isatty(1));
        o.stdin_on = a->interactive || o.tty || !isatty(0);
    }
    if (o.tty && !isatty(0))
        cli_warn(c, "stdin is not a terminal: the session is not interactive");
    o.workdir = a->workdir;
    o.env = a->env;
    o.nenv = a->nenv;
    o.timeout_s = a->timeout_s;
    o.connect_wait_ms = 5000;
    if ((rc = cli_connect(c, true)) != 0 ||
        (rc = cli_sandbox_name(c, a->npos, a->pos, name, sizeof(name))) != 0)
        return rc;
    if ((rc = check_ready(c, name)) != 0)
        return rc;
    if (!c->adhoc)
        cli_last_sandbox_set(c->cfg, c->gw.name, c->workspace, name, NULL);
    fflush(stdout);
    return cli_exec(c, name, &o);
}

/* ------------------------------------------------------------------ files */

/* Progress on a terminal: bytes so far and the rate, at most 5 times a second. */
struct progress {
    bool on;
    uint64_t t0, last;
    uint64_t bytes;
    const char *verb;
};

static void
progress_show(struct progress *p, bool final)
{
    uint64_t now = cli_now_ms();
    double secs;

    if (!p->on || (!final && now - p->last < 200))
        return;
    p->last = now;
    secs = (double)(now - p->t0) / 1000;
    fprintf(stderr, "\r\033[K%s %.1f MiB (%.1f MiB/s)", p->verb, (double)p->bytes / 1048576,
            secs > 0 ? (double)p->bytes / 1048576 / secs : 0);
    if (final)
        fputs("\r\033[K", stderr);
}

struct upload {
    struct cli_stream s;
    int fd; /* the tar child's output */
    struct event *ev;
    bool paused, eof;
    struct progress pg;
};

static void
up_read(evutil_socket_t fd, short what, void *arg)
{
    struct upload *u = arg;
    char b[IO_CHUNK];
    ssize_t n;

    (void)what;
    n = read(fd, b, sizeof(b));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        u->eof = true;
        event_del(u->ev);
        if (u->s.st)
            h2_stream_end(u->s.st);
        return;
    }
    u->pg.bytes += (uint64_t)n;
    progress_show(&u->pg, false);
    if (!u->s.st)
        return;
    if (h2_stream_write(u->s.st, b, (size_t)n) == -EAGAIN) {
        u->paused = true;
        event_del(u->ev);
    }
}

static void
up_drain(struct cli_stream *s)
{
    struct upload *u = s->arg;

    if (u->paused && !u->eof) {
        u->paused = false;
        event_add(u->ev, NULL);
    }
}

/* Fork a child that writes a tar of PATH (top name basename) to a pipe;
 * the read end into *FD. */
static pid_t
spawn_tar_create(const char *path, int *fd, struct err *e)
{
    int p[2];
    pid_t pid;

    if (pipe2(p, O_CLOEXEC) < 0)
        return err_errno(e, "pipe");
    fflush(NULL);
    pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return err_errno(e, "fork");
    }
    if (pid == 0) {
        struct err ce;
        close(p[0]);
        signal(SIGPIPE, SIG_DFL);
        if (tar_create(p[1], AT_FDCWD, path, NULL, NULL, &ce) < 0) {
            fprintf(stderr, "openshell sandbox upload: error: %s\n", ce.msg);
            _exit(1);
        }
        _exit(0);
    }
    close(p[1]);
    fcntl(p[0], F_SETPIPE_SZ, IO_PIPE_SIZE); /* fewer wake-ups; best effort */
    *fd = p[0];
    return pid;
}

static int
wait_child(pid_t pid)
{
    int st;

    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

int
cli_upload(struct cli_ctx *c, const char *name, const char *src, const char *dst)
{
    struct upload u;
    struct buf q = BUF_INIT;
    struct stat st;
    struct err e;
    char *path;
    pid_t pid;
    int rc = 0, crc;

    if (lstat(src, &st) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "cannot upload %s: %s", src, strerror(errno));
    memset(&u, 0, sizeof(u));
    u.fd = -1;
    buf_puts(&q, "/files?path=");
    cli_pct_encode(dst, &q);
    path = cli_sb_path(c, name, buf_cstr(&q));
    buf_fini(&q);
    if ((pid = spawn_tar_create(src, &u.fd, &e)) < 0) {
        free(path);
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "upload: %s", e.msg);
    }
    fprintf(stderr, "Uploading %s -> sandbox:%s\n", src, dst);
    u.s.arg = &u;
    u.s.on_drain = up_drain;
    u.pg = (struct progress){ .on = isatty(2) == 1, .t0 = cli_now_ms(), .verb = "Uploading" };
    if ((rc = cli_stream_open(&u.s, c, "PUT", path, "application/x-tar", NULL, 0, true)) != 0)
        goto out;
    evutil_make_socket_nonblocking(u.fd);
    u.ev = event_new(loop_base(c->loop), u.fd, EV_READ | EV_PERSIST, up_read, &u);
    event_add(u.ev, NULL);
    cli_catch_signals(c, true); /* Ctrl-C: stop, clean up, exit 130 */
    while (!u.s.closed && !(u.s.status && u.s.status != 200) && !cli_interrupted)
        cli_stream_run(&u.s);
    progress_show(&u.pg, true);
    if (cli_interrupted) {
        kill(pid, SIGTERM);
        rc = cli_fail(c, 130, NULL, "upload of %s interrupted", src);
        goto out;
    }
    if (u.s.status != 200) {
        kill(pid, SIGTERM);
        rc = cli_stream_fail(&u.s, u.s.status == 404 ? "check the sandbox name and that the "
                                                       "gateway serves files"
                                                     : NULL);
        goto out;
    }
    if (u.s.reset) {
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL, "upload to '%s' was cut off", name);
        goto out;
    }
out:
    if (u.ev)
        event_free(u.ev);
    if (u.fd >= 0)
        close(u.fd);
    crc = wait_child(pid);
    if (rc == 0 && crc != 0)
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "the upload of %s was incomplete", src);
    if (rc == 0)
        cli_ok(c, "Upload complete (%.1f MiB)", (double)u.pg.bytes / 1048576);
    cli_stream_fini(&u.s);
    free(path);
    return rc;
}

static int
io_upload(struct cli_ctx *c, struct io_args *a)
{
    struct stat st;
    int rc;

    if (a->npos < 2 || a->npos > 3)
        applet_usage_error(c->prog, "expected NAME SRC [DST]");
    if (lstat(a->pos[1], &st) < 0)
        return cli_fail(c, CLI_EXIT_FAIL, NULL, "cannot upload %s: %s", a->pos[1], strerror(errno));
    if ((rc = cli_connect(c, true)) != 0)
        return rc;
    return cli_upload(c, a->pos[0], a->pos[1], a->npos == 3 ? a->pos[2] : "/sandbox");
}

struct download {
    struct cli_stream s;
    int fd; /* the extracting child's input */
    bool write_failed;
    struct progress pg;
};

static void
down_data(struct cli_stream *s, const uint8_t *p, size_t n)
{
    struct download *d = s->arg;

    d->pg.bytes += n;
    progress_show(&d->pg, false);
    if (!d->write_failed && write_all(d->fd, p, n) < 0) {
        /* the extractor stopped (it reports why): stop receiving */
        d->write_failed = true;
        loop_stop(s->c->loop);
    }
}

/* Remove DIR recursively (our own temporary directory; no symlink is
 * followed). */
static void
rm_rf(const char *dir)
{
    pid_t pid;

    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        execl("/bin/rm", "rm", "-rf", "--", dir, (char *)NULL);
        _exit(127);
    }
    if (pid > 0)
        wait_child(pid);
}

static int
io_download(struct cli_ctx *c, struct io_args *a)
{
    struct download d;
    const char *src, *dst;
    char tmpl[PATH_MAX], *dst_dir = NULL, *final = NULL, *top = NULL, *path = NULL;
    struct buf q = BUF_INIT;
    struct stat st;
    bool into_dir;
    int p[2] = { -1, -1 }, errp[2] = { -1, -1 }, rc, crc = 0;
    char why[1100] = "";
    pid_t pid = -1;

    if (a->npos < 2 || a->npos > 3)
        applet_usage_error(c->prog, "expected NAME SRC [DST]");
    src = a->pos[1];
    dst = a->npos == 3 ? a->pos[2] : ".";
    memset(&d, 0, sizeof(d));
    d.fd = -1;
    {
        /* the top entry: basename of SRC */
        const char *end = src + strlen(src), *b;
        while (end > src + 1 && end[-1] == '/')
            end--;
        b = end;
        while (b > src && b[-1] != '/')
            b--;
        top = xstrndup(b, (size_t)(end - b));
        if (!*top || !strcmp(top, ".") || !strcmp(top, ".."))
            applet_usage_error(c->prog, "download: '%s' names no file", src);
    }
    /* cp-style: into DST when it is a directory, else as DST */
    into_dir = stat(dst, &st) == 0 && S_ISDIR(st.st_mode);
    if (into_dir) {
        dst_dir = xstrdup(dst);
        final = xasprintf("%s/%s", dst, top);
    } else {
        char *slash = strrchr(dst, '/');
        dst_dir = slash ? (slash == dst ? xstrdup("/") : xstrndup(dst, (size_t)(slash - dst)))
                        : xstrdup(".");
        final = xstrdup(dst);
    }
    if (buf_fmt_fixed(tmpl, sizeof(tmpl), "%s/.openshell-download.XXXXXX", dst_dir) < 0 ||
        !mkdtemp(tmpl)) {
        rc = cli_fail(c, CLI_EXIT_FAIL, "choose a writable destination",
                      "cannot download into %s: %s", dst_dir, strerror(errno));
        tmpl[0] = '\0';
        goto out;
    }
    if ((rc = cli_connect(c, true)) != 0)
        goto out;
    if (pipe2(p, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0) {
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "pipe: %s", strerror(errno));
        goto out;
    }
    fcntl(p[1], F_SETPIPE_SZ, IO_PIPE_SIZE);
    fflush(NULL);
    pid = fork();
    if (pid == 0) {
        /* The extractor: its one-line error goes to ERRP[1] for the parent
         * to show only when the transfer itself went through. */
        struct tar_stats ts;
        struct err ce;
        int dfd = open(tmpl, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        close(p[1]);
        close(errp[0]);
        if (dfd < 0 || tar_extract(p[0], dfd, NULL, &ts, &ce) < 0) {
            const char *m = dfd < 0 ? strerror(errno) : ce.msg;
            if (write(errp[1], m, strlen(m)) < 0)
                _exit(2);
            _exit(1);
        }
        _exit(0);
    }
    close(p[0]);
    p[0] = -1;
    close(errp[1]);
    errp[1] = -1;
    if (pid < 0) {
        rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "fork: %s", strerror(errno));
        goto out;
    }
    d.fd = p[1];
    p[1] = -1;
    signal(SIGPIPE, SIG_IGN);
    buf_puts(&q, "/files?path=");
    cli_pct_encode(src, &q);
    path = cli_sb_path(c, a->pos[0], buf_cstr(&q));
    fprintf(stderr, "Downloading sandbox:%s -> %s\n", src, final);
    d.s.arg = &d;
    d.s.on_data = down_data;
    d.pg = (struct progress){ .on = isatty(2) == 1, .t0 = cli_now_ms(), .verb = "Downloading" };
    if ((rc = cli_stream_open(&d.s, c, "GET", path, NULL, NULL, 0, false)) != 0)
        goto out;
    cli_catch_signals(c, true); /* Ctrl-C: stop, clean up, exit 130 */
    while (!d.s.closed && !d.write_failed && !cli_interrupted)
        cli_stream_run(&d.s);
    progress_show(&d.pg, true);
    if (cli_interrupted) {
        rc = cli_fail(c, 130, NULL, "download of %s interrupted; nothing was written", src);
        goto out;
    }
    close(d.fd);
    d.fd = -1;
    crc = wait_child(pid);
    pid = -1;
    {
        ssize_t n = read(errp[0], why, sizeof(why) - 1);
        why[n > 0 ? n : 0] = '\0';
    }
    if (d.s.status != 200) {
        rc =
            cli_stream_fail(&d.s, d.s.status == 404 ? "check the sandbox name and the path" : NULL);
        goto out;
    }
    if (d.s.reset || (!d.s.ended && !d.write_failed)) {
        rc = cli_fail(c, CLI_EXIT_UNREACHABLE, NULL,
                      "the download of %s was cut off; nothing was written", src);
        goto out;
    }
    if (crc != 0) {
        rc =
            cli_fail(c, CLI_EXIT_FAIL, NULL, "the download of %s failed; nothing was written", src);
        goto out;
    }
    {
        /* The archive's single top entry into place, in one rename. */
        char *got = xasprintf("%s/%s", tmpl, top);
        if (lstat(got, &st) < 0) {
            rc = cli_fail(c, CLI_EXIT_FAIL, NULL, "the archive of %s did not hold '%s'", src, top);
        } else if (rename(got, final) < 0) {
            rc = cli_fail(c, CLI_EXIT_FAIL,
                          errno == ENOTEMPTY || errno == EEXIST || errno == EISDIR
                              ? "remove it first, or download elsewhere"
                              : NULL,
                          "cannot place %s: %s", final, strerror(errno));
        } else {
            cli_ok(c, "Download complete (%.1f MiB)", (double)d.pg.bytes / 1048576);
        }
        free(got);
    }
out:
    if (d.fd >= 0)
        close(d.fd);
    if (pid > 0) {
        kill(pid, SIGTERM);
        wait_child(pid);
    }
    if (p[0] >= 0)
        close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    if (errp[0] >= 0)
        close(errp[0]);
    if (errp[1] >= 0)
        close(errp[1]);
    if (tmpl[0])
        rm_rf(tmpl);
    cli_stream_fini(&d.s);
    buf_fini(&q);
    free(path);
    free(dst_dir);
    free(final);
    free(top);
    return rc;
}

int
cli_sandbox_io(int argc, char **argv)
{
    static const char *const subs[] = { "logs", "exec", "connect", "upload", "download" };
    struct cli_ctx c;
    struct io_args a;
    char prog[64];
    int rc;

    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        if (strcmp(argv[0], subs[i]) != 0)
            continue;
        snprintf(prog, sizeof(prog), "openshell %s%s", ref_logs ? "" : "sandbox ", subs[i]);
        cli_ctx_init(&c, prog);
        parse(&c, argc, argv, &a);
        switch (i) {
        case 0: rc = io_logs(&c, &a); break;
        case 1: rc = io_exec(&c, &a, false); break;
        case 2: rc = io_exec(&c, &a, true); break;
        case 3: rc = io_upload(&c, &a); break;
        default: rc = io_download(&c, &a); break;
        }
        cli_ctx_fini(&c);
        return rc;
    }
    return -1;
}

int
cli_logs(int argc, char **argv)
{
    ref_logs = true;
    argv[0] = "logs";
    return cli_sandbox_io(argc, argv);
}
