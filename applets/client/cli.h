#ifndef OPENSHELL_CLI_H
#define OPENSHELL_CLI_H
/*
 * Private to the client applet: what the gateway-facing commands (gateway,
 * sandbox, status) share. A `struct cli_ctx` holds the global options
 * (-g/--gateway, --workspace, -o/--output), the config directory, the
 * selected gateway and, once cli_connect() succeeded, one HTTP/2
 * connection to it. Errors reach the user as one line plus a hint line
 * (cli_fail), and the command returns CLI_EXIT_*.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "buf.h"
#include "cli_config.h"

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1        /* the operation failed (not found, clash, bad policy...) */
#define CLI_EXIT_USAGE 2       /* bad command line */
#define CLI_EXIT_UNREACHABLE 3 /* no gateway, or it cannot be reached */

enum cli_output { CLI_OUT_TABLE = 0, CLI_OUT_JSON, CLI_OUT_YAML };

struct loop;
struct h2_conn;
struct tls_client_ctx;

struct cli_ctx {
    const char *prog;          /* "openshell sandbox list" */
    const char *gateway_flag;  /* -g */
    const char *endpoint_flag; /* --gateway-endpoint */
    bool adhoc;                /* talking to an unregistered endpoint: no files written */
    const char *workspace;     /* --workspace / OPENSHELL_WORKSPACE / "default" */
    enum cli_output output;
    bool color;            /* stderr/stdout colour (TTY, no NO_COLOR) */
    char *cfg;             /* config dir (heap) */
    struct cli_gateway gw; /* valid after cli_select() */
    enum cli_gw_source src;
    struct loop *loop;
    struct h2_conn *conn;
    struct tls_client_ctx *tls; /* the mTLS client context of an https gateway */
};

/* Global options given before the command (`openshell -g NAME sandbox
 * list`); client.c fills them, cli_ctx_init() copies them, and options
 * after the command win over them. */
struct cli_globals {
    const char *gateway, *endpoint, *workspace;
    int output; /* -1: not given */
};
extern struct cli_globals cli_globals;

/* Global options every command takes (after the command). */
#define CLI_OPT_GATEWAY 'g'
#define CLI_OPT_OUTPUT 'o'
#define CLI_OPT_WORKSPACE 0x2001
#define CLI_OPT_ENDPOINT 0x2002
/* clang-format off */
#define CLI_COMMON_LONGOPTS \
    {"gateway", required_argument, NULL, CLI_OPT_GATEWAY}, \
    {"output", required_argument, NULL, CLI_OPT_OUTPUT}, \
    {"workspace", required_argument, NULL, CLI_OPT_WORKSPACE}, \
    {"gateway-endpoint", required_argument, NULL, CLI_OPT_ENDPOINT}, \
    {"help", no_argument, NULL, 'h'}
/* clang-format on */
#define CLI_COMMON_SHORTOPTS "g:o:h"
#define CLI_COMMON_HELP                                                                            \
    "  -g, --gateway NAME      use this registered gateway (OPENSHELL_GATEWAY)\n"                  \
    "      --gateway-endpoint URL\n"                                                               \
    "                          talk to URL (unix:///PATH), registered or not\n"                    \
    "                          (OPENSHELL_GATEWAY_ENDPOINT; wins over -g)\n"                       \
    "      --workspace NAME    workspace (OPENSHELL_WORKSPACE; default 'default')\n"               \
    "  -o, --output FORMAT     table (default), json or yaml\n"                                    \
    "  -h, --help              show this help\n"

/* Fill C's defaults (env, colour, config dir). */
void cli_ctx_init(struct cli_ctx *c, const char *prog);
void cli_ctx_fini(struct cli_ctx *c);
/* Handle a common option; true when OPT was one. Exits 2 on a bad value. */
bool cli_common_opt(struct cli_ctx *c, int opt, const char *arg);
/* ARG of option OPT as a number 0..MAX; a usage error (exit 2) otherwise. */
long cli_parse_num(const struct cli_ctx *c, const char *opt, const char *arg, long max);

/* Print "PROG: error: MSG" and, when HINT is set, "hint: HINT" to stderr.
 * Returns CODE. */
int cli_fail(const struct cli_ctx *c, int code, const char *hint, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "✓ MSG" (green on a terminal) / "! MSG" (yellow) to stderr. */
void cli_ok(const struct cli_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void cli_warn(const struct cli_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Print J on stdout as -o asked: pretty JSON or YAML, newline-terminated. */
void cli_print_data(const struct cli_ctx *c, const cJSON *j);

/* Pick the gateway (--gateway-endpoint / OPENSHELL_GATEWAY_ENDPOINT, then
 * -g, OPENSHELL_GATEWAY, the active one). With AUTOSTART and
 * nothing selected anywhere, start the local gateway (saying so). 0, or a
 * CLI_EXIT_* after printing the error. */
int cli_select(struct cli_ctx *c, bool autostart);
/* cli_select() then connect. 0 or CLI_EXIT_* after printing the error. */
int cli_connect(struct cli_ctx *c, bool autostart);
/* One request: METHOD PATH with BODY (JSON when CTYPE is NULL). *STATUS and
 * *JSON (the parsed answer, or NULL; caller deletes). 0, or
 * CLI_EXIT_UNREACHABLE after printing the error. */
int cli_call(struct cli_ctx *c, const char *method, const char *path, const char *ctype,
             const char *body, size_t len, int *status, cJSON **json);
/* cli_call() with the JSON BODY (NULL: none), its text wiped afterwards. */
int cli_call_json(struct cli_ctx *c, const char *method, const char *path, const cJSON *body,
                  int *status, cJSON **json);
/* Report an API error answer (STATUS, its JSON body J) about WHAT; returns
 * CLI_EXIT_FAIL (CLI_EXIT_UNREACHABLE for 401/503). */
int cli_api_fail(const struct cli_ctx *c, int status, const cJSON *j, const char *hint);
/* "/v1/workspaces/WS" + SUFFIX, percent-encoding WS (heap). */
char *cli_ws_path(const struct cli_ctx *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Percent-encode S as one path segment or query value into OUT. */
void cli_pct_encode(const char *s, struct buf *out);

/* The sandbox a command is about: POS[0] when NPOS is 1, else the last
 * used sandbox of this gateway and workspace (saying so on stderr). More
 * than one is a usage error. 0 or CLI_EXIT_* after printing the error. */
int cli_sandbox_name(struct cli_ctx *c, int npos, char **pos, char *out, size_t size);
/* ".../sandboxes/NAME" + SUFFIX under the workspace, encoded (heap). */
char *cli_sb_path(const struct cli_ctx *c, const char *name, const char *suffix);
/* O's member at PATH ("a.b.c"), or NULL; its string or "". */
const cJSON *cli_jget(const cJSON *o, const char *path);
const char *cli_jstr(const cJSON *o, const char *path);
/* Set O's member K to V for each "K=V" of KV[N] (the last one wins);
 * returns O. */
cJSON *cli_kv_into(cJSON *o, const char *const *kv, size_t n);
/* Signals ending a long operation cleanly: once cli_catch_signals() ran
 * (SIGTERM and SIGHUP, and SIGINT when SIGINT is true), such a signal sets
 * cli_interrupted and stops C's loop; the operation cleans up and exits
 * 130. Handlers live as long as the loop. */
extern volatile bool cli_interrupted;
void cli_catch_signals(struct cli_ctx *c, bool sigint);
/* Milliseconds of a monotonic clock. */
uint64_t cli_now_ms(void);
/* Sleep MS milliseconds. */
void cli_sleep_ms(long ms);

/*
 * A streamed request (logs, exec, file transfer): the response body comes
 * through ON_DATA as it arrives while cli_stream_run() runs the loop.
 * A non-2xx answer's body is collected into ERR_BODY instead.
 */
struct h2_stream;
struct cli_stream {
    struct cli_ctx *c;
    struct h2_stream *st; /* NULL once closed */
    int status;           /* 0 until the response headers arrive */
    bool ended;           /* the peer ended its side */
    bool closed;
    uint32_t reset; /* HTTP/2 error code when reset */
    struct buf err_body;
    /* Called with response body bytes of a 2xx answer. */
    void (*on_data)(struct cli_stream *s, const uint8_t *p, size_t n);
    /* The request body may take more (after h2_stream_write said -EAGAIN). */
    void (*on_drain)(struct cli_stream *s);
    /* Status known (any status). */
    void (*on_response)(struct cli_stream *s);
    void *arg;
    bool stop_on_response; /* cli_stream_run() returns once the status is known */
};
/* Send METHOD PATH (CTYPE, BODY[LEN]); OPEN_BODY leaves the request body
 * open. 0 or CLI_EXIT_* after printing the error. */
int cli_stream_open(struct cli_stream *s, struct cli_ctx *c, const char *method, const char *path,
                    const char *ctype, const void *body, size_t len, bool open_body);
/* Run the loop once: until the stream closes, its status is known (with
 * stop_on_response) or a callback calls loop_stop(). Callers loop on their
 * own condition and on S->closed. */
void cli_stream_run(struct cli_stream *s);
/* After a non-2xx status: report it (the error body's message) and return
 * the CLI_EXIT_* code. */
int cli_stream_fail(struct cli_stream *s, const char *hint);
void cli_stream_fini(struct cli_stream *s);

/* One command in a sandbox over the frame protocol (sandbox_io.c). */
struct cli_exec_opts {
    char **argv;
    int argc;
    bool tty;      /* a pty for the command; the local terminal goes raw */
    bool stdin_on; /* forward stdin (else EOF at once) */
    const char *workdir;
    const char *const *env; /* "K=V" */
    size_t nenv;
    long timeout_s;       /* 0: none (then exit 124) */
    long connect_wait_ms; /* retry a 503 (supervisor not connected yet) this long */
};
/* Run it in sandbox NAME (connected C): the command's exit status, or 124
 * (timeout), 255 (stream lost), CLI_EXIT_* (refused) after printing why. */
int cli_exec(struct cli_ctx *c, const char *name, const struct cli_exec_opts *o);

/* Upload the local SRC into directory DST of sandbox NAME (connected C):
 * 0 or CLI_EXIT_* (130 interrupted) after printing why. */
int cli_upload(struct cli_ctx *c, const char *name, const char *src, const char *dst);

/* Is a local gateway listening on SOCK (GET /healthz answers 200)? */
bool cli_socket_healthy(const char *sock);
/* Start the local gateway NAME (idempotent); QUIET skips the "already
 * running" line. LISTEN is --listen's value or NULL. 0 or CLI_EXIT_*. */
int cli_gateway_start_local(struct cli_ctx *c, const char *name, const char *state_dir,
                            const char *listen, bool quiet);
/* Stop the local gateway G (started by cli_gateway_start_local). 0 or
 * CLI_EXIT_*. */
int cli_gateway_stop_local(struct cli_ctx *c, const struct cli_gateway *g);
/* The pid of the gateway holding STATE_DIR's lock, or 0 when none runs. */
long cli_gateway_pid(const char *state_dir);

#endif
