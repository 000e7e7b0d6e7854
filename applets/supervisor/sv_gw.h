#ifndef OPENSHELL_SV_GW_H
#define OPENSHELL_SV_GW_H
/*
 * Private to the supervisor: its gateway side (sv_gw.c) and the exec relays
 * (sv_relay.c). One `struct sv_gw` per supervisor process, owned by
 * sv_gw_run(); relays hang off it and die with their HTTP/2 stream.
 *
 * Why the outer supervisor and not PID 1: the outer process lives in the
 * host's mount namespace (it reaches the gateway's socket by path on every
 * reconnect, and the private policy directory), holds the token (PID 1 and
 * everything it forks never do), and runs no sandbox restrictions of its
 * own; PID 1 stays a small poll loop that only forks and reaps, driven over
 * the control channel (supervisor.h).
 */
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "buf.h"
#include "log.h"
#include "sb_plan.h"
#include "supervisor.h"

struct cJSON;
struct event;
struct h2_conn;
struct h2_stream;
struct loop;
struct loop_timer;
struct policy;
struct sv_relay;

struct sv_log {
    struct sv_log *next;
    size_t len;
    char text[]; /* one JSON record */
};

struct sv_gw {
    struct loop *loop;
    char sock[108];
    char auth[600]; /* "Bearer TOKEN" */
    const char *sandbox_id;
    const char *token_file; /* gone: the gateway forgot the sandbox (orphaned) */
    bool orphaned;
    /* the policy in force */
    char dir[PATH_MAX]; /* private 0700 directory the proxy watches */
    char file[PATH_MAX];
    long pol_version;  /* the last one seen */
    long good_version; /* the one in force (hello's policy_version) */
    char pol_source[16];
    char pol_hash[80];
    bool have_policy;
    struct policy *start_policy; /* what the sandbox was built with */
    bool fail_closed;
    bool last_failed;       /* the newest policy could not be applied */
    char *good_text;        /* the policy in force (to restore after fail_closed) */
    struct buf status_line; /* the last policy_status line (resent on connect) */
    /* credentials */
    char *cred_doc;
    char **cred_env; /* "K=V" */
    /* the connection and its session */
    struct h2_conn *conn;
    struct h2_stream *sess;
    bool sess_ok, was_connected, reported_down, stopping;
    int sess_status;
    struct buf sess_in;
    uint64_t last_rx;
    unsigned backoff;
    bool config_inflight, config_again, cred_inflight;
    struct loop_timer *t_reconnect, *t_watch, *t_config, *t_flush, *t_stop, *t_poll;
    /* logs waiting for the gateway */
    struct sv_log *lhead, *ltail;
    size_t lbytes, lcount;
    unsigned long ldropped;
    /* PID 1 */
    pid_t pid1;
    int ctl;
    bool exited;
    int exit_code;
    int err_fd, out_fd; /* its stderr and stdout (pipes), or -1 */
    struct event *ev_ctl, *ev_err, *ev_out;
    struct buf err_in, out_in;
    /* exec relays */
    struct sv_relay *relays;
    long next_id;
};

/* Before the clone: config (policy file written, O->policy set to it) and
 * credentials (their environment appended to O->env). Exits with a clear
 * message when the gateway refuses or stays away for 30 s. */
struct sv_gw *sv_gw_start(struct sb_opts *o, const char *token);
/* After the clone: serve until PID 1 ends. Takes CTL, ERR_FD and OUT_FD;
 * SIGS are the (blocked) signals to handle. Frees G. Returns PID 1's
 * status. */
int sv_gw_run(struct sv_gw *g, pid_t pid1, int ctl, int err_fd, int out_fd, const sigset_t *sigs);
/* Remove the private policy directory (idempotent). */
void sv_gw_cleanup(struct sv_gw *g);
/* The credentials' "K=V" list (borrowed), or NULL. */
char *const *sv_gw_cred_env(const struct sv_gw *g);
/* Log a line of the supervisor's and ship it to the gateway. */
void sv_gw_note(struct sv_gw *g, enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* sv_relay.c */
void sv_relay_open(struct sv_gw *g, const char *relay_id, const struct cJSON *init);
/* A message from PID 1 (fds are ours). */
void sv_relay_ctl(struct sv_gw *g, const char *msg, int *fds, int nfds);
/* PID 1 is gone or we stop: end every relay. */
void sv_relay_shutdown(struct sv_gw *g);

#endif
