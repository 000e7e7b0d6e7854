#ifndef OPENSHELL_SB_NS_H
#define OPENSHELL_SB_NS_H
/*
 * sb_ns: namespaces of a sandbox.
 *
 * sb_ns_clone() creates the sandbox's first process (the supervisor as PID 1
 * of a new pid namespace) in new mount, ipc, uts and cgroup namespaces, plus
 * a user namespace when the caller is not root, with fork(2) semantics.
 * sb_ns_write_maps() maps the invoking user (and only that user) into such a
 * user namespace, from the parent.
 *
 * The agent's network namespace is created and OWNED by the supervisor:
 * sb_netns_create() makes it on a short-lived thread (a thread can change
 * its own network namespace without moving the rest of the process, and
 * simply ends instead of switching back, which an unprivileged user
 * namespace would not allow), brings loopback up, runs the proxy hook
 * inside it, and hands back an fd of the namespace. The supervisor itself
 * stays in the outer namespace. The agent child joins with sb_netns_enter()
 * before dropping privileges. Nothing else is in that namespace: no route
 * leaves it.
 *
 * Proxy hook: sb_netns_proxy_hook() runs on that thread, inside the agent
 * namespace, after loopback is up and before the agent exists. When
 * `proxy` is set it creates the proxy's listeners on 127.0.0.1:3128 and
 * [::1]:3128 (px_spawn_listen) into `listen_fds`: sockets created there
 * belong to the agent namespace for their whole life, wherever their fds
 * go, so the proxy process running in the outer namespace accepts the
 * agent's connections through them, plus a sock_diag netlink socket
 * (`diag_fd`) through which the proxy finds the agent's sockets (caller
 * identity). Without `proxy` there is no listener
 * (a connection to 3128 is refused at once).
 */
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

#define SB_NETNS_MAX_LISTENERS 4

struct sb_netns {
    int fd;                                 /* the agent netns (O_CLOEXEC), -1 if none */
    int listen_fds[SB_NETNS_MAX_LISTENERS]; /* created by the hook inside the netns */
    int nlisten;
    bool proxy;  /* set before sb_netns_begin: create the proxy's listeners */
    int diag_fd; /* with them, a NETLINK_SOCK_DIAG socket of the netns (or -1) */
    /* private: the creating thread */
    pthread_t thread;
    bool running;
    int proc_fd; /* /proc, opened before the thread starts */
    int rc;
    struct err err;
};

/* Namespace flags for the sandbox's PID 1 (without CLONE_NEWUSER). */
#define SB_NS_FLAGS (CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWCGROUP)

/* clone(2) with FLAGS | SIGCHLD and fork semantics (child returns 0, parent
 * the child's pid in its namespace). Returns -errno on failure. */
pid_t sb_ns_clone(unsigned long flags);

/* From the parent: deny setgroups in PID's user namespace and map OUTER_UID
 * and OUTER_GID to themselves (one id each). Returns 0 or -errno. */
int sb_ns_write_maps(pid_t pid, uid_t outer_uid, gid_t outer_gid, struct err *e);

/* Create the agent's network namespace (see above) into NS. Returns 0 or
 * -errno with E set. sb_netns_begin() starts the work on its thread (it
 * overlaps with building the filesystem view: creating a network namespace
 * costs the kernel a few milliseconds) and sb_netns_end() waits for it;
 * sb_netns_create() does both. /proc must be the host's at begin time. */
int sb_netns_begin(struct sb_netns *ns, struct err *e);
int sb_netns_end(struct sb_netns *ns, struct err *e);
int sb_netns_create(struct sb_netns *ns, struct err *e);
/* Close everything NS holds. */
void sb_netns_fini(struct sb_netns *ns);

/* The proxy hook: called inside the agent netns (see above). Returns 0 or
 * -errno with E set (the sandbox then does not start). */
int sb_netns_proxy_hook(struct sb_netns *ns, struct err *e);

/* Join the namespace FD (agent child, before the privilege drop).
 * Returns 0 or -errno. */
int sb_netns_enter(int fd);

#endif
