/*
 * px_relay.c: raw relays: bytes copied both ways between bufferevents, or
 * moved by the kernel with splice(2) when both sides are plain sockets,
 * with back-pressure and half-closes (see px.c for the connection's life).
 */
#include "px_int.h"

static size_t px_pending(struct bufferevent *bev, bool tls);
static void px_splice_pump(struct px_splice_dir *d);
static void px_splice_cb(evutil_socket_t fd, short what, void *arg);
static void px_splice_fallback(struct px_conn *c);
static void px_splice_switch(struct px_conn *c);

/* Bytes queued for writing on BEV, TLS records below a filter included. */
static size_t
px_pending(struct bufferevent *bev, bool tls)
{
    size_t n;
    struct bufferevent *under;

    if (!bev)
        return 0;
    n = evbuffer_get_length(bufferevent_get_output(bev));
    under = tls ? bufferevent_get_underlying(bev) : NULL;
    if (under)
        n += evbuffer_get_length(bufferevent_get_output(under));
    return n;
}

size_t
px_cli_pending(struct px_conn *c)
{
    return px_pending(c->cli, c->cli_tls != NULL) +
           (c->drain_both ? px_pending(c->up, c->up_tls != NULL) : 0);
}

/* Half-closes in a raw relay over plain sockets: an EOF from one side
 * becomes a shutdown(SHUT_WR) towards the other once what it sent has been
 * written, and the relay ends when both directions are done. */
void
px_raw_eof_step(struct px_conn *c)
{
    if (c->cli_eof && !c->up_shut && px_pending(c->up, false) == 0) {
        shutdown(bufferevent_getfd(c->up), SHUT_WR);
        c->up_shut = true;
    }
    if (c->up_eof && !c->cli_shut && px_pending(c->cli, false) == 0) {
        shutdown(bufferevent_getfd(c->cli), SHUT_WR);
        c->cli_shut = true;
    }
    if (c->up_shut && c->cli_shut)
        px_conn_kill(c);
}

/* One side of a raw relay reached EOF (FROM_CLI: the client). */
void
px_raw_eof(struct px_conn *c, bool from_cli)
{
    if (from_cli) {
        c->cli_eof = true; /* first: no switch to splice from here */
        px_copy(c, c->cli, c->up, &c->bytes_up);
        bufferevent_setwatermark(c->up, EV_WRITE, 0, 0);
    } else {
        c->up_eof = true;
        px_copy(c, c->up, c->cli, &c->bytes_down);
        bufferevent_setwatermark(c->cli, EV_WRITE, 0, 0);
    }
    /* Over TLS a half-close has no clean equivalent: flush and end. */
    if (c->cli_tls || c->up_tls) {
        px_conn_drain(c);
        return;
    }
    px_raw_eof_step(c);
}

/* Every socket of a relay: no Nagle delay (reference 7.1), and reads and
 * writes of up to PX_IO_CHUNK per call (libevent's default 16 KiB caps a
 * tunnel's throughput at a fraction of the link's). */
void
px_tune(struct bufferevent *bev)
{
    int one = 1;
    evutil_socket_t fd = bufferevent_getfd(bev);

    if (fd >= 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    bufferevent_set_max_single_read(bev, PX_IO_CHUNK);
    bufferevent_set_max_single_write(bev, PX_IO_CHUNK);
}

/* Read from BEV again. A TLS filter also needs a nudge: records that
 * arrived while it was paused sit below it until the next packet. */
void
px_resume(struct bufferevent *bev, bool tls)
{
    bufferevent_enable(bev, EV_READ);
    if (tls)
        bufferevent_flush(bev, EV_READ, BEV_NORMAL);
}

/* Move SRC's input to DST's output; stop reading SRC when DST is full. */
void
px_copy(struct px_conn *c, struct bufferevent *src, struct bufferevent *dst, uint64_t *count)
{
    struct evbuffer *in = bufferevent_get_input(src);

    *count += evbuffer_get_length(in);
    bufferevent_write_buffer(dst, in);
    if (evbuffer_get_length(bufferevent_get_output(dst)) >= PX_HIGH)
        bufferevent_disable(src, EV_READ);
    px_touch(c);
    /* A bulk transfer: hand it to the kernel. */
    if (c->splice_candidate && !c->cli_eof && !c->up_eof &&
        c->bytes_up + c->bytes_down - c->raw_start_bytes >= PX_SPLICE_AFTER)
        px_splice_switch(c);
}

void
px_splice_free(struct px_conn *c)
{
    struct px_splice *sp = c->sp;

    if (!sp)
        return;
    if (sp->counted)
        c->srv->nspliced--;
    for (int i = 0; i < 2; i++) {
        struct px_splice_dir *d = &sp->d[i];

        if (d->rd)
            event_free(d->rd);
        if (d->wr)
            event_free(d->wr);
        if (d->pipe[0] >= 0)
            close(d->pipe[0]);
        if (d->pipe[1] >= 0)
            close(d->pipe[1]);
    }
    free(sp);
    c->sp = NULL;
}

/* Move what can move in direction D without blocking; arm the event that
 * lets it continue. */
static void
px_splice_pump(struct px_splice_dir *d)
{
    struct px_conn *c = d->c;
    const unsigned fl = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
    ssize_t n;

    for (;;) {
        while (d->inpipe) {
            n = splice(d->pipe[0], NULL, d->dst, NULL, d->inpipe, fl);
            if (n > 0) {
                d->inpipe -= (size_t)n;
                *d->count += (uint64_t)n;
                px_touch(c);
                continue;
            }
            if (n < 0 && errno == EAGAIN) {
                event_del(d->rd);
                event_add(d->wr, NULL);
                return;
            }
            log_debug("conn %llu: relay write: %s", (unsigned long long)c->id,
                      n < 0 ? strerror(errno) : "closed");
            px_conn_kill(c);
            return;
        }
        event_del(d->wr);
        if (d->eof) {
            /* Everything SRC sent has been written: pass the half-close on. */
            shutdown(d->dst, SHUT_WR);
            d->done = true;
            event_del(d->rd);
            if (c->sp->d[0].done && c->sp->d[1].done)
                px_conn_kill(c);
            return;
        }
        n = splice(d->src, NULL, d->pipe[1], NULL, PX_SPLICE_PIPE, fl);
        if (n > 0) {
            d->inpipe += (size_t)n;
            continue;
        }
        if (n == 0) {
            d->eof = true;
            continue;
        }
        if (errno == EAGAIN) {
            event_add(d->rd, NULL);
            return;
        }
        log_debug("conn %llu: relay read: %s", (unsigned long long)c->id, strerror(errno));
        px_conn_kill(c);
        return;
    }
}

static void
px_splice_cb(evutil_socket_t fd, short what, void *arg)
{
    struct px_splice_dir *d = arg;

    (void)fd;
    (void)what;
    if (d->c->dead)
        return;
    px_splice_pump(d);
}

/* A raw relay that stays on bufferevents. */
static void
px_splice_fallback(struct px_conn *c)
{
    bufferevent_setwatermark(c->cli, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_setwatermark(c->up, EV_WRITE, PX_HIGH / 2, 0);
    bufferevent_enable(c->cli, EV_READ);
    bufferevent_enable(c->up, EV_READ);
}

/* Switch a raw relay to splice once the bufferevents have nothing queued;
 * without pipes (descriptor limit) it stays on bufferevents. */
void
px_splice_maybe_start(struct px_conn *c)
{
    struct px_splice *sp;
    int fds[2] = { bufferevent_getfd(c->cli), bufferevent_getfd(c->up) };

    if (!c->splice_pending || px_pending(c->cli, false) || px_pending(c->up, false))
        return;
    c->splice_pending = false;
    if (c->srv->nspliced >= c->srv->max_spliced) {
        /* Keep descriptors for sockets: this one relays in user space. */
        px_splice_fallback(c);
        return;
    }
    sp = xcalloc(1, sizeof(*sp));
    for (int i = 0; i < 2; i++) {
        struct px_splice_dir *d = &sp->d[i];

        d->c = c;
        d->src = fds[i];
        d->dst = fds[1 - i];
        d->count = i == 0 ? &c->bytes_up : &c->bytes_down;
        d->pipe[0] = d->pipe[1] = -1;
        if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
            log_debug("conn %llu: pipe: %s; relaying in user space", (unsigned long long)c->id,
                      strerror(errno));
            c->sp = sp;
            px_splice_free(c);
            px_splice_fallback(c);
            return;
        }
        fcntl(d->pipe[1], F_SETPIPE_SZ, PX_SPLICE_PIPE);
        d->rd = event_new(c->srv->base, d->src, EV_READ | EV_PERSIST, px_splice_cb, d);
        d->wr = event_new(c->srv->base, d->dst, EV_WRITE | EV_PERSIST, px_splice_cb, d);
    }
    c->sp = sp;
    c->srv->nspliced++;
    sp->counted = true;
    bufferevent_disable(c->cli, EV_READ | EV_WRITE);
    bufferevent_disable(c->up, EV_READ | EV_WRITE);
    /* An EOF seen by the bufferevents before the switch carries over. */
    sp->d[0].eof = c->cli_eof;
    sp->d[1].eof = c->up_eof;
    px_splice_pump(&sp->d[0]);
    if (!c->dead)
        px_splice_pump(&sp->d[1]);
}

/* Switch a raw relay between plain sockets to splice: what the
 * bufferevents hold goes out first (px_splice_maybe_start waits for it). */
static void
px_splice_switch(struct px_conn *c)
{
    c->splice_candidate = false;
    bufferevent_disable(c->cli, EV_READ);
    bufferevent_disable(c->up, EV_READ);
    c->bytes_up += evbuffer_get_length(bufferevent_get_input(c->cli));
    bufferevent_write_buffer(c->up, bufferevent_get_input(c->cli));
    c->bytes_down += evbuffer_get_length(bufferevent_get_input(c->up));
    bufferevent_write_buffer(c->cli, bufferevent_get_input(c->up));
    c->splice_pending = true;
    bufferevent_setwatermark(c->cli, EV_WRITE, 0, 0);
    bufferevent_setwatermark(c->up, EV_WRITE, 0, 0);
    px_splice_maybe_start(c);
}

void
px_start_raw(struct px_conn *c)
{
    c->state = PX_RAW;
    px_touch(c);
    px_timer(c, c->srv->o.idle_timeout_s);
    /* Plain sockets both sides: bufferevents first (short exchanges are
     * cheapest there), splice once it turns out to be a bulk transfer. */
    c->splice_candidate = !c->cli_tls && !c->up_tls;
    c->raw_start_bytes = c->bytes_up + c->bytes_down;
    bufferevent_enable(c->cli, EV_READ);
    bufferevent_enable(c->up, EV_READ);
    if (evbuffer_get_length(bufferevent_get_input(c->cli)))
        px_copy(c, c->cli, c->up, &c->bytes_up);
    if (evbuffer_get_length(bufferevent_get_input(c->up)))
        px_copy(c, c->up, c->cli, &c->bytes_down);
}
