#ifndef OPENSHELL_DRIVER_H
#define OPENSHELL_DRIVER_H
/*
 * driver: compute drivers run one sandbox's main process (for the gateway:
 * an openshell-supervisor) and report its phase. This is the local driver:
 * processes on this host, detached so that they survive the gateway.
 *
 * Layout under the driver's state directory, one directory per sandbox ID
 * ([A-Za-z0-9._-], at most 64 bytes, not starting with a dot):
 *   ID/monitor   "PID STARTTIME\n" of the monitor (written atomically
 *                before drv_create() returns)
 *   ID/exit      "CODE SIGNAL\n" of the main process once it ended
 *   ID/output    its stdout and stderr
 * The caller may put its own files in ID/ before drv_create() (the gateway:
 * the sandbox token, logs, the work directory); drv_delete() removes the
 * whole directory.
 * drv_create() double-forks a monitor in its own session (reparented to
 * init, so the caller may exit or be killed); the monitor ignores SIGTERM,
 * starts ARGV, waits for it and records its exit. The pid plus the start
 * time from /proc/PID/stat identify the monitor across pid reuse, so a new
 * driver over the same directory reconciles: monitor alive -> READY, exit
 * recorded -> EXITED, neither -> ERROR.
 *
 * Functions return 0 or a negative errno with E set (-ENOENT: no such
 * sandbox, -EEXIST: ID exists, -EINVAL: bad ID or ARGV).
 */
#include <stdbool.h>
#include <sys/types.h>

#include "err.h"

struct drv;

enum drv_phase {
    DRV_PROVISIONING = 0, /* directory made, monitor not recorded yet */
    DRV_READY,            /* the monitor (and so the main process) runs */
    DRV_EXITED,           /* the main process ended; exit recorded */
    DRV_ERROR,            /* the monitor vanished without recording */
};

struct drv_status {
    enum drv_phase phase;
    pid_t pid;       /* the monitor, 0 when unknown */
    int exit_code;   /* EXITED: the exit status, or -1 when signalled */
    int exit_signal; /* EXITED: the terminating signal, or 0 */
};

/* "provisioning", "ready", "exited", "error". */
const char *drv_phase_name(enum drv_phase p);

/* The local driver over STATE_DIR (created 0700 if missing). */
struct drv *drv_local_new(const char *state_dir, struct err *e);
void drv_free(struct drv *d);

/* Start ARGV (NULL-terminated) for ID: the program at PATH (absolute; NULL:
 * ARGV[0], which must then be absolute) with working directory CWD (NULL:
 * the sandbox's directory). */
int drv_create(struct drv *d, const char *id, const char *path, const char *const *argv,
               const char *cwd, struct err *e);
int drv_get(struct drv *d, const char *id, struct drv_status *out, struct err *e);
/* FN(ID, ARG) for every sandbox directory, in no particular order. */
int drv_list(struct drv *d, void (*fn)(const char *id, void *arg), void *arg, struct err *e);
/* SIGTERM to the main process's group, SIGKILL to the whole session after
 * GRACE_MS; returns once it has ended (0 when it was not running). */
int drv_stop(struct drv *d, const char *id, int grace_ms, struct err *e);
/* Forget the run records (monitor, exit) of a sandbox that is not running,
 * keeping its directory, so that drv_create() may start it again (after a
 * reboot, say). In phase ERROR a main process that outlived its monitor
 * (its command line names ID) is killed first. -EBUSY while it runs. */
int drv_forget(struct drv *d, const char *id, struct err *e);
/* Send SIG to the main process's group without waiting (the non-blocking
 * form of drv_stop() for an event loop: poll drv_get() until the phase
 * leaves READY). 0, or -ESRCH when it is not running. */
int drv_signal(struct drv *d, const char *id, int sig, struct err *e);
/* drv_stop() then remove the sandbox's directory. */
int drv_delete(struct drv *d, const char *id, int grace_ms, struct err *e);

#endif
