/*
 * sv_relay.c: exec relays (doc/sandbox.md, "Gateway session"). On
 * {"type":"relay"} the outer supervisor opens POST
 * /v1/supervisor/relay/{id}, asks PID 1 to start the process inside the
 * sandbox (the agent's path: namespaces, identity, Landlock, seccomp) with
 * pipes or a pty, and splices frames: STDOUT/STDERR/EOF/EXIT/ERROR up,
 * STDIN/RESIZE/EOF down.
 *
 * Back-pressure both ways: when the stream answers -EAGAIN the child's
 * output is not read until on_drain; when the child's stdin is full the
 * stream's input is paused until it drains.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "h2.h"
#include "log.h"
#include "loop.h"
#include "sv_gw.h"
#include "xfuncs.h"

#define SV_RELAY_CHUNK (64 * 1024)
#define SV_RELAY_IN_HIGH (256 * 1024)
#define SV_RELAY_ERRTEXT 4096
#define SV_RELAY_GRACE_MS 1000

struct sv_relay {
    struct sv_relay *next;
    struct sv_gw *g;
    long id;
    char relay_id[40];
    struct h2_stream *st;
    /* INIT */
    char *init;  /* the spawn request (JSON), sent once the stream is accepted */
    char *error; /* a bad INIT: answered with an ERROR frame */
    bool tty;
    bool task;         /* untar / tar: stderr becomes the ERROR text */
    struct winsize ws; /* the last RESIZE */
    bool ws_pending;   /* ... received before the pty came */
    /* the process */
    bool spawned, started, exited, finished;
    int code;
    int in_fd, out_fd, err_fd, master;
    struct event *ev_out, *ev_err, *ev_in_w;
    bool out_paused;
    struct buf frames_in;
    struct buf stdin_pending;
    bool stdin_eof, stdin_closed;
    struct buf errtext;
    struct loop_timer *t_grace;
};

static void sv_relay_try_finish(struct sv_relay *r);

static void
relay_frame(struct sv_relay *r, uint8_t type, const void *p, size_t n)
{
    /* One frame at a time is built here and copied by h2_stream_write: the
     * buffer is kept (no allocation per chunk on the hot path). */
    static struct buf b = BUF_INIT;
    int rc;

    if (!r->st || r->finished)
        return;
    buf_reset(&b);
    if (h2_frame_put(&b, type, p, n) == 0) {
        rc = h2_stream_write(r->st, b.data, b.len);
        if (rc == -EAGAIN && !r->out_paused) {
            /* Queued, but over the mark: stop reading until on_drain. */
            r->out_paused = true;
            if (r->ev_out)
                event_del(r->ev_out);
            if (r->ev_err)
                event_del(r->ev_err);
        }
    }
}

static void
relay_error(struct sv_relay *r, const char *code, const char *msg)
{
    struct buf b = BUF_INIT;

    buf_printf(&b, "{\"error\":{\"code\":\"%s\",\"message\":", code);
    buf_put_json_str(&b, msg, strlen(msg));
    buf_puts(&b, "}}");
    relay_frame(r, H2_FRAME_ERROR, b.data, b.len);
    buf_fini(&b);
    if (r->st && !r->finished)
        h2_stream_end(r->st);
    r->finished = true;
}

static void
relay_close_fd(int *fd, struct event **ev)
{
    if (ev && *ev) {
        event_free(*ev);
        *ev = NULL;
    }
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* --------------------------------------------------------------- output */

/* Read one chunk of the child's output: true while more may come. */
static void
relay_read(struct sv_relay *r, bool is_err)
{
    int *fd = r->tty ? &r->master : is_err ? &r->err_fd : &r->out_fd;
    struct event **ev = is_err ? &r->ev_err : &r->ev_out;
    static uint8_t chunk[SV_RELAY_CHUNK];
    ssize_t n;

    n = read(*fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n > 0) {
        if (is_err && r->task) {
            size_t room = SV_RELAY_ERRTEXT - r->errtext.len;
            buf_append(&r->errtext, chunk, (size_t)n < room ? (size_t)n : room);
        } else {
            relay_frame(r, is_err ? H2_FRAME_STDERR : H2_FRAME_STDOUT, chunk, (size_t)n);
        }
        return;
    }
    /* End of file (a pty says EIO once no slave is open). */
    if (!r->task || !is_err) {
        uint8_t t = is_err ? H2_FRAME_STDERR : H2_FRAME_STDOUT;
        relay_frame(r, H2_FRAME_EOF, &t, 1);
    }
    if (r->tty) {
        /* The master is also stdin's way in: keep it for writing until the
         * end, only stop reading. */
        if (*ev) {
            event_free(*ev);
            *ev = NULL;
        }
        r->out_fd = -2; /* output done */
    } else {
        relay_close_fd(fd, ev);
    }
    sv_relay_try_finish(r);
}

static void
relay_on_out(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay_read(arg, false);
}

static void
relay_on_err(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay_read(arg, true);
}

static void
relay_on_drain(struct h2_stream *st, void *arg)
{
    struct sv_relay *r = arg;

    (void)st;
    if (!r->out_paused)
        return;
    r->out_paused = false;
    if (r->ev_out)
        event_add(r->ev_out, NULL);
    if (r->ev_err)
        event_add(r->ev_err, NULL);
    sv_relay_try_finish(r);
}

/* ---------------------------------------------------------------- input */

static int
relay_in_fd(const struct sv_relay *r)
{
    return r->tty ? r->master : r->in_fd;
}

/* Write what stdin has pending; pause the stream's input while the child
 * does not read. */
static void
relay_flush_stdin(struct sv_relay *r)
{
    int fd = relay_in_fd(r);

    if (r->stdin_closed)
        return;
    if (fd < 0) {
        /* Not started yet (a pty comes back from PID 1 asynchronously):
         * hold what came, within the same bound. */
        if (r->st && r->stdin_pending.len > SV_RELAY_IN_HIGH)
            h2_stream_pause_input(r->st, true);
        return;
    }
    while (r->stdin_pending.len) {
        ssize_t n = write(fd, r->stdin_pending.data, r->stdin_pending.len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            if (r->ev_in_w)
                event_add(r->ev_in_w, NULL);
            if (r->st && r->stdin_pending.len > SV_RELAY_IN_HIGH)
                h2_stream_pause_input(r->st, true);
            return;
        }
        if (n < 0) {
            /* The child closed its stdin (EPIPE): drop the rest. */
            buf_reset(&r->stdin_pending);
            r->stdin_eof = true;
            break;
        }
        buf_consume(&r->stdin_pending, (size_t)n);
    }
    if (r->st)
        h2_stream_pause_input(r->st, false);
    if (r->ev_in_w)
        event_del(r->ev_in_w);
    if (r->stdin_eof) {
        r->stdin_closed = true;
        if (r->tty) {
            /* The terminal's end-of-file character: a shell reading the
             * pty sees EOF as at a keyboard. */
            (void)!write(r->master, "\x04", 1);
        } else {
            relay_close_fd(&r->in_fd, &r->ev_in_w);
        }
    }
}

static void
relay_on_in_w(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    relay_flush_stdin(arg);
}

static void
relay_resize(struct sv_relay *r, const uint8_t *p, size_t n)
{
    cJSON *j = cJSON_ParseWithLength((const char *)p, n);
    const cJSON *c = j ? cJSON_GetObjectItemCaseSensitive(j, "cols") : NULL;
    const cJSON *w = j ? cJSON_GetObjectItemCaseSensitive(j, "rows") : NULL;

    if (r->tty && cJSON_IsNumber(c) && cJSON_IsNumber(w) && c->valuedouble >= 1 &&
        c->valuedouble <= 10000 && w->valuedouble >= 1 && w->valuedouble <= 10000) {
        r->ws.ws_col = (unsigned short)c->valuedouble;
        r->ws.ws_row = (unsigned short)w->valuedouble;
        /* The pty signals SIGWINCH to its foreground process group. Before
         * the pty is here, the size waits for it. */
        if (r->master >= 0)
            ioctl(r->master, TIOCSWINSZ, &r->ws);
        else
            r->ws_pending = true;
    }
    cJSON_Delete(j);
}

static void
relay_on_data(struct h2_stream *st, const uint8_t *p, size_t n, void *arg)
{
    struct sv_relay *r = arg;
    size_t off = 0;

    (void)st;
    buf_append(&r->frames_in, p, n);
    for (;;) {
        struct h2_frame f;
        struct err e;
        size_t used;
        int rc;

        err_clear(&e);
        rc = h2_frame_parse((const uint8_t *)r->frames_in.data + off, r->frames_in.len - off, &f,
                            &used, &e);
        if (rc == 0)
            break;
        if (rc < 0) {
            buf_reset(&r->frames_in);
            relay_error(r, "invalid_argument", e.msg);
            return;
        }
        off += used;
        switch (f.type) {
        case H2_FRAME_STDIN:
            if (!r->stdin_eof)
                buf_append(&r->stdin_pending, f.payload, f.len);
            break;
        case H2_FRAME_EOF: r->stdin_eof = true; break;
        case H2_FRAME_RESIZE: relay_resize(r, f.payload, f.len); break;
        default: break; /* INIT again, or what we do not take: ignored */
        }
    }
    buf_consume(&r->frames_in, off);
    relay_flush_stdin(r);
}

/* ------------------------------------------------------------ lifecycle */

static void
relay_on_grace(void *arg)
{
    struct sv_relay *r = arg;

    if (r->out_paused) {
        loop_timer_start(r->t_grace, SV_RELAY_GRACE_MS, false);
        return;
    }
    /* The process ended but something it started still holds its output:
     * the relay ends with the process. */
    if (r->tty) {
        if (r->ev_out) {
            event_free(r->ev_out);
            r->ev_out = NULL;
        }
        r->out_fd = -2;
    } else {
        relay_close_fd(&r->out_fd, &r->ev_out);
        relay_close_fd(&r->err_fd, &r->ev_err);
    }
    sv_relay_try_finish(r);
}

/* The last frame once the process ended and its output was read. */
static void
sv_relay_try_finish(struct sv_relay *r)
{
    char line[64];

    if (r->finished || !r->exited)
        return;
    if ((r->tty && r->out_fd != -2) || (!r->tty && (r->out_fd >= 0 || r->err_fd >= 0))) {
        if (!loop_timer_pending(r->t_grace))
            loop_timer_start(r->t_grace, SV_RELAY_GRACE_MS, false);
        return;
    }
    loop_timer_stop(r->t_grace);
    if (r->task && r->code != 0) {
        while (r->errtext.len && (r->errtext.data[r->errtext.len - 1] == '\n'))
            r->errtext.data[--r->errtext.len] = '\0';
        relay_error(r, "failed_precondition",
                    r->errtext.len ? buf_cstr(&r->errtext) : "the operation failed");
        return;
    }
    buf_fmt_fixed(line, sizeof(line), "{\"exit_code\":%d}", r->code);
    relay_frame(r, H2_FRAME_EXIT, line, strlen(line));
    if (r->st)
        h2_stream_end(r->st);
    r->finished = true;
}

static void
relay_free(struct sv_relay *r)
{
    struct sv_relay **pp;

    for (pp = &r->g->relays; *pp; pp = &(*pp)->next)
        if (*pp == r) {
            *pp = r->next;
            break;
        }
    if (r->spawned && !r->exited && r->g->ctl >= 0) {
        char msg[96];

        /* Nobody is listening any more: end the process. */
        buf_fmt_fixed(msg, sizeof(msg), "{\"op\":\"signal\",\"id\":%ld,\"sig\":%d}", r->id,
                      SIGKILL);
        sv_ctl_send(r->g->ctl, msg, NULL, 0);
    }
    relay_close_fd(&r->out_fd, &r->ev_out);
    relay_close_fd(&r->err_fd, &r->ev_err);
    relay_close_fd(r->tty ? &r->master : &r->in_fd, &r->ev_in_w);
    loop_timer_free(r->t_grace);
    buf_fini(&r->frames_in);
    buf_fini(&r->stdin_pending);
    buf_fini(&r->errtext);
    free(r->init);
    free(r->error);
    free(r);
}

static void
relay_on_close(struct h2_stream *st, uint32_t code, void *arg)
{
    struct sv_relay *r = arg;

    (void)st;
    (void)code;
    r->st = NULL;
    relay_free(r);
}

/* Ask PID 1 to start the process: pipes for stdio (a pty comes back from
 * PID 1, made in the sandbox's devpts). */
static void
relay_spawn(struct sv_relay *r)
{
    int in[2] = { -1, -1 }, out[2] = { -1, -1 }, err[2] = { -1, -1 };
    int fds[3];
    int rc;

    if (!r->tty) {
        if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0) {
            int e = errno;
            for (int i = 0; i < 2; i++) {
                if (in[i] >= 0)
                    close(in[i]);
                if (out[i] >= 0)
                    close(out[i]);
                if (err[i] >= 0)
                    close(err[i]);
            }
            relay_error(r, "internal", strerror(e));
            return;
        }
        fds[0] = in[0];
        fds[1] = out[1];
        fds[2] = err[1];
    }
    rc = sv_ctl_send(r->g->ctl, r->init, fds, r->tty ? 0 : 3);
    if (!r->tty) {
        close(in[0]);
        close(out[1]);
        close(err[1]);
    }
    if (rc < 0) {
        if (!r->tty) {
            close(in[1]);
            close(out[0]);
            close(err[0]);
        }
        relay_error(r, "unavailable", "the sandbox cannot start processes now");
        return;
    }
    r->spawned = true;
    if (!r->tty) {
        struct event_base *base = loop_base(r->g->loop);

        r->in_fd = in[1];
        r->out_fd = out[0];
        r->err_fd = err[0];
        evutil_make_socket_nonblocking(r->in_fd);
        evutil_make_socket_nonblocking(r->out_fd);
        evutil_make_socket_nonblocking(r->err_fd);
        r->ev_out = event_new(base, r->out_fd, EV_READ | EV_PERSIST, relay_on_out, r);
        r->ev_err = event_new(base, r->err_fd, EV_READ | EV_PERSIST, relay_on_err, r);
        r->ev_in_w = event_new(base, r->in_fd, EV_WRITE, relay_on_in_w, r);
        event_add(r->ev_out, NULL);
        event_add(r->ev_err, NULL);
        relay_flush_stdin(r);
    }
}

static void
relay_on_response(struct h2_stream *st, int status, void *arg)
{
    struct sv_relay *r = arg;

    if (status != 200) {
        sv_gw_note(r->g, LOG_LVL_WARN, "relay %s: the gateway answered %d", r->relay_id, status);
        h2_stream_reset(st, 0x8);
        return;
    }
    if (r->error) {
        relay_error(r, "invalid_argument", r->error);
        return;
    }
    relay_spawn(r);
}

/* A string array member of INIT as a JSON array text, or NULL. */
static bool
init_strv(const cJSON *a, size_t max)
{
    const cJSON *it;

    if (!cJSON_IsArray(a) || (size_t)cJSON_GetArraySize(a) > max)
        return false;
    cJSON_ArrayForEach(it, a) if (!cJSON_IsString(it)) return false;
    return true;
}

/* Build the spawn request from INIT, or set R->error. */
static void
relay_parse_init(struct sv_relay *r, const cJSON *init)
{
    const cJSON *op = cJSON_GetObjectItemCaseSensitive(init, "op");
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(init, "command");
    const cJSON *tty = cJSON_GetObjectItemCaseSensitive(init, "tty");
    const cJSON *cols = cJSON_GetObjectItemCaseSensitive(init, "cols");
    const cJSON *rows = cJSON_GetObjectItemCaseSensitive(init, "rows");
    const cJSON *wd = cJSON_GetObjectItemCaseSensitive(init, "workdir");
    const cJSON *env = cJSON_GetObjectItemCaseSensitive(init, "environment");
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(init, "path");
    char *const *cred = sv_gw_cred_env(r->g);
    const char *opname = cJSON_IsString(op) ? op->valuestring : "exec";
    cJSON *m, *e;
    const cJSON *it;

    if (op && !cJSON_IsString(op)) {
        r->error = xstrdup("init.op: expected a string");
        return;
    }
    if (strcmp(opname, "exec") == 0) {
        if (!init_strv(cmd, 4096) || cJSON_GetArraySize(cmd) == 0) {
            r->error = xstrdup("init.command: expected a non-empty array of strings");
            return;
        }
    } else if (strcmp(opname, "untar") == 0 || strcmp(opname, "tar") == 0) {
        if (!cJSON_IsString(path) || !path->valuestring[0]) {
            r->error = xasprintf("init.path: required for %s", opname);
            return;
        }
        r->task = true;
    } else {
        r->error = xasprintf("init.op '%.32s': expected exec, untar or tar", opname);
        return;
    }
    if (env && !cJSON_IsObject(env)) {
        r->error = xstrdup("init.environment: expected an object of strings");
        return;
    }
    if (wd && (!cJSON_IsString(wd) || wd->valuestring[0] != '/')) {
        r->error = xstrdup("init.workdir: expected an absolute path");
        return;
    }
    r->tty = !r->task && cJSON_IsTrue(tty);
    m = cJSON_CreateObject();
    cJSON_AddStringToObject(m, "op", "spawn");
    cJSON_AddNumberToObject(m, "id", (double)r->id);
    cJSON_AddStringToObject(m, "task", opname);
    if (!r->task)
        cJSON_AddItemToObject(m, "argv", cJSON_Duplicate(cmd, true));
    else
        cJSON_AddStringToObject(m, "path", path->valuestring);
    e = cJSON_AddArrayToObject(m, "env");
    for (size_t i = 0; cred && cred[i]; i++)
        cJSON_AddItemToArray(e, cJSON_CreateString(cred[i]));
    if (env) {
        cJSON_ArrayForEach(it, env)
        {
            char *kv;

            if (!cJSON_IsString(it) || !it->string[0] || strchr(it->string, '=')) {
                cJSON_Delete(m);
                r->error = xstrdup("init.environment: names must be non-empty, without '=', "
                                   "with string values");
                return;
            }
            kv = xasprintf("%s=%s", it->string, it->valuestring);
            cJSON_AddItemToArray(e, cJSON_CreateString(kv));
            free(kv);
        }
    }
    cJSON_AddStringToObject(m, "cwd", cJSON_IsString(wd) ? wd->valuestring : "/sandbox");
    cJSON_AddBoolToObject(m, "tty", r->tty);
    cJSON_AddNumberToObject(m, "cols", cJSON_IsNumber(cols) ? cols->valuedouble : 80);
    cJSON_AddNumberToObject(m, "rows", cJSON_IsNumber(rows) ? rows->valuedouble : 24);
    r->init = cJSON_PrintUnformatted(m);
    cJSON_Delete(m);
    if (strlen(r->init) > SV_CTL_MAX) {
        free(r->init);
        r->init = NULL;
        r->error = xstrdup("init: command and environment too large");
    }
}

static void
relay_on_end(struct h2_stream *st, void *arg)
{
    struct sv_relay *r = arg;

    (void)st;
    /* The gateway ended its side: stdin is over. */
    r->stdin_eof = true;
    relay_flush_stdin(r);
}

void
sv_relay_open(struct sv_gw *g, const char *relay_id, const cJSON *init)
{
    static const struct h2_stream_cbs cbs = {
        .on_response = relay_on_response,
        .on_data = relay_on_data,
        .on_end = relay_on_end,
        .on_drain = relay_on_drain,
        .on_close = relay_on_close,
    };
    struct h2_header h[] = { { "authorization", g->auth },
                             { "content-type", "application/x-openshell-frames" } };
    struct sv_relay *r;
    char path[96];
    struct err e;
    size_t n = strlen(relay_id);

    if (n != 32 || strspn(relay_id, "0123456789abcdef") != 32) {
        sv_gw_note(g, LOG_LVL_WARN, "relay: bad relay_id from the gateway");
        return;
    }
    if (!g->conn || g->exited)
        return;
    r = xcalloc(1, sizeof(*r));
    r->g = g;
    r->id = ++g->next_id;
    r->in_fd = r->out_fd = r->err_fd = r->master = -1;
    buf_copy_fixed(r->relay_id, sizeof(r->relay_id), relay_id);
    r->t_grace = loop_timer_new(g->loop, relay_on_grace, r);
    relay_parse_init(r, init);
    buf_fmt_fixed(path, sizeof(path), "/v1/supervisor/relay/%s", relay_id);
    err_clear(&e);
    r->next = g->relays;
    g->relays = r;
    r->st = h2_client_request(g->conn, "POST", path, h, 2, NULL, 0, true, &cbs, r, &e);
    if (!r->st) {
        sv_gw_note(g, LOG_LVL_WARN, "relay %s: %s", relay_id, e.msg);
        relay_free(r);
    }
}

void
sv_relay_ctl(struct sv_gw *g, const char *msg, int *fds, int nfds)
{
    cJSON *j = cJSON_Parse(msg);
    const cJSON *op = j ? cJSON_GetObjectItemCaseSensitive(j, "op") : NULL;
    const cJSON *id = j ? cJSON_GetObjectItemCaseSensitive(j, "id") : NULL;
    struct sv_relay *r = NULL;

    if (cJSON_IsNumber(id))
        for (r = g->relays; r && r->id != (long)id->valuedouble; r = r->next)
            ;
    if (!cJSON_IsString(op) || !r) {
        /* A relay that is gone already: nothing to do. */
        goto out;
    }
    if (strcmp(op->valuestring, "started") == 0) {
        r->started = true;
        if (r->tty) {
            struct event_base *base = loop_base(g->loop);

            if (nfds < 1) {
                relay_error(r, "internal", "no pty from PID 1");
                goto out;
            }
            r->master = fds[0];
            fds[0] = -1;
            if (r->ws_pending)
                ioctl(r->master, TIOCSWINSZ, &r->ws);
            evutil_make_socket_nonblocking(r->master);
            r->ev_out = event_new(base, r->master, EV_READ | EV_PERSIST, relay_on_out, r);
            r->ev_in_w = event_new(base, r->master, EV_WRITE, relay_on_in_w, r);
            event_add(r->ev_out, NULL);
            relay_flush_stdin(r);
        }
    } else if (strcmp(op->valuestring, "failed") == 0) {
        const cJSON *er = cJSON_GetObjectItemCaseSensitive(j, "error");

        r->exited = true;
        relay_error(r, "failed_precondition",
                    cJSON_IsString(er) ? er->valuestring : "cannot start the process");
    } else if (strcmp(op->valuestring, "exited") == 0) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(j, "code");

        r->exited = true;
        r->code = cJSON_IsNumber(c) ? c->valueint : SB_EXIT_SETUP;
        sv_relay_try_finish(r);
    }
out:
    for (int i = 0; i < nfds; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    cJSON_Delete(j);
}

void
sv_relay_shutdown(struct sv_gw *g)
{
    struct sv_relay *r, *next;

    for (r = g->relays; r; r = next) {
        next = r->next;
        if (r->st && !r->finished)
            relay_error(r, "unavailable", "the sandbox stopped");
        r->exited = true; /* its process is gone with the sandbox */
    }
}
