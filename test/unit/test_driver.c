/* Unit tests: the local compute driver (real detached processes). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "driver.h"
#include "tap.h"
#include "xfuncs.h"

static char dir[64];

static void
sleep_ms(int ms)
{
    struct timespec ts = { 0, (long)ms * 1000000L };

    nanosleep(&ts, NULL);
}

/* Poll ID until its phase is not READY/PROVISIONING (at most 5 s). */
static int
wait_end(struct drv *d, const char *id, struct drv_status *st)
{
    struct err e;

    for (int i = 0; i < 500; i++) {
        if (drv_get(d, id, st, &e) < 0)
            return -1;
        if (st->phase == DRV_EXITED || st->phase == DRV_ERROR)
            return 0;
        sleep_ms(10);
    }
    return -1;
}

static struct drv *
new_drv(void)
{
    struct err e;
    struct drv *d;

    if (!dir[0]) {
        strcpy(dir, "/tmp/test_driver.XXXXXX");
        if (!mkdtemp(dir))
            return NULL;
    }
    d = drv_local_new(dir, &e);
    if (!d)
        tap_diag("drv_local_new: %s", e.msg);
    return d;
}

static void
count_cb(const char *id, void *arg)
{
    if (strcmp(id, "long") == 0)
        (*(int *)arg)++;
}

static int
test_lifecycle(void)
{
    static const char *const argv[] = { "/bin/sh", "-c", "echo started; exec sleep 30", NULL };
    struct drv *d = new_drv(), *d2;
    struct drv_status st;
    struct err e;
    struct buf out = BUF_INIT;
    char path[128];
    int n = 0;

    CHECK(d != NULL);
    CHECK_INT(drv_create(d, "long", NULL, argv, NULL, &e), 0);
    CHECK_INT(drv_get(d, "long", &st, &e), 0);
    CHECK_STR(drv_phase_name(st.phase), "ready");
    CHECK(st.pid > 0);
    CHECK(getpgid(st.pid) != getpgid(0)); /* detached: its own session */
    CHECK(getsid(st.pid) != getsid(0));
    CHECK_INT(drv_create(d, "long", NULL, argv, NULL, &e), -EEXIST);
    CHECK_INT(drv_list(d, count_cb, &n, &e), 0);
    CHECK_INT(n, 1);
    /* A new driver over the same directory (a restarted gateway) finds it. */
    d2 = new_drv();
    CHECK_INT(drv_get(d2, "long", &st, &e), 0);
    CHECK_STR(drv_phase_name(st.phase), "ready");
    /* The command runs (its output arrives) before it is stopped. */
    snprintf(path, sizeof(path), "%s/long/output", dir);
    for (int i = 0; i < 500; i++) {
        struct stat sb;

        if (stat(path, &sb) == 0 && sb.st_size > 0)
            break;
        sleep_ms(10);
    }
    CHECK_INT(drv_stop(d2, "long", 2000, &e), 0);
    CHECK_INT(drv_get(d2, "long", &st, &e), 0);
    CHECK_STR(drv_phase_name(st.phase), "exited");
    CHECK_INT(st.exit_code, -1);
    CHECK_INT(st.exit_signal, SIGTERM);
    CHECK_INT(read_file(path, 4096, &out, &e), 0);
    CHECK_STR(buf_cstr(&out), "started\n");
    buf_fini(&out);
    CHECK_INT(drv_delete(d2, "long", 1000, &e), 0);
    CHECK_INT(drv_get(d2, "long", &st, &e), -ENOENT);
    snprintf(path, sizeof(path), "%s/long", dir);
    CHECK(access(path, F_OK) < 0);
    drv_free(d);
    drv_free(d2);
    return TAP_PASS;
}

static int
test_exit_status(void)
{
    static const char *const three[] = { "/bin/sh", "-c", "exit 3", NULL };
    static const char *const missing[] = { "/nonexistent/cmd", NULL };
    struct drv *d = new_drv();
    struct drv_status st;
    struct err e;

    CHECK_INT(drv_create(d, "three", NULL, three, NULL, &e), 0);
    CHECK_INT(wait_end(d, "three", &st), 0);
    CHECK_STR(drv_phase_name(st.phase), "exited");
    CHECK_INT(st.exit_code, 3);
    CHECK_INT(st.exit_signal, 0);
    CHECK_INT(drv_create(d, "missing", NULL, missing, NULL, &e), 0);
    CHECK_INT(wait_end(d, "missing", &st), 0);
    CHECK_INT(st.exit_code, 127);
    CHECK_INT(drv_delete(d, "three", 100, &e), 0);
    CHECK_INT(drv_delete(d, "missing", 100, &e), 0);
    drv_free(d);
    return TAP_PASS;
}

static int
test_stop_escalates(void)
{
    static const char *const stubborn[] = { "/bin/sh", "-c", "trap '' TERM; echo trapped; sleep 30",
                                            NULL };
    struct drv *d = new_drv();
    struct drv_status st;
    struct err e;
    char path[128];

    CHECK_INT(drv_create(d, "stubborn", NULL, stubborn, NULL, &e), 0);
    /* Let the shell install its trap (it says so) before stopping it. */
    snprintf(path, sizeof(path), "%s/stubborn/output", dir);
    for (int i = 0; i < 500; i++) {
        struct stat sb;

        if (stat(path, &sb) == 0 && sb.st_size > 0)
            break;
        sleep_ms(10);
    }
    CHECK_INT(drv_stop(d, "stubborn", 200, &e), 0);
    CHECK_INT(drv_get(d, "stubborn", &st, &e), 0);
    CHECK_STR(drv_phase_name(st.phase), "exited");
    CHECK_INT(st.exit_signal, SIGKILL);
    CHECK_INT(drv_delete(d, "stubborn", 100, &e), 0);
    drv_free(d);
    return TAP_PASS;
}

static int
test_monitor_lost(void)
{
    static const char *const argv[] = { "/bin/sleep", "30", NULL };
    struct drv *d = new_drv();
    struct drv_status st;
    struct err e;
    struct buf b = BUF_INIT;
    char path[128];
    int mpid = 0, child = 0;
    unsigned long long start;

    CHECK_INT(drv_create(d, "lost", NULL, argv, NULL, &e), 0);
    snprintf(path, sizeof(path), "%s/lost/monitor", dir);
    CHECK_INT(read_file(path, 256, &b, &e), 0);
    CHECK_INT(sscanf(b.data, "%d %llu %d", &mpid, &start, &child), 3);
    buf_fini(&b);
    CHECK_INT(kill(mpid, SIGKILL), 0);
    kill(-child, SIGKILL);
    CHECK_INT(wait_end(d, "lost", &st), 0);
    CHECK_STR(drv_phase_name(st.phase), "error");
    CHECK_INT(drv_delete(d, "lost", 100, &e), 0);
    drv_free(d);
    return TAP_PASS;
}

/* The event-loop form of stop (drv_signal), a restart after forgetting
 * the run records, and the caller's files in the sandbox's directory. */
static int
test_signal_forget(void)
{
    static const char *const argv[] = { "/bin/sleep", "30", NULL };
    struct drv *d = new_drv();
    struct drv_status st;
    struct err e;
    char path[128];
    int fd;

    snprintf(path, sizeof(path), "%s/sig", dir);
    CHECK_INT(mkdir(path, 0700), 0);
    /* The caller's files (token, work directory) made before the start. */
    snprintf(path, sizeof(path), "%s/sig/token", dir);
    CHECK((fd = open(path, O_WRONLY | O_CREAT, 0600)) >= 0);
    close(fd);
    snprintf(path, sizeof(path), "%s/sig/work", dir);
    CHECK_INT(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/sig/work/f", dir);
    CHECK((fd = open(path, O_WRONLY | O_CREAT, 0600)) >= 0);
    close(fd);
    CHECK_INT(drv_create(d, "sig", NULL, argv, NULL, &e), 0);
    CHECK_INT(drv_forget(d, "sig", &e), -EBUSY);
    CHECK_INT(drv_signal(d, "sig", SIGTERM, &e), 0);
    CHECK_INT(wait_end(d, "sig", &st), 0);
    CHECK_INT(st.exit_signal, SIGTERM);
    CHECK_INT(drv_signal(d, "sig", SIGTERM, &e), -ESRCH);
    CHECK_INT(drv_create(d, "sig", NULL, argv, NULL, &e), -EEXIST);
    CHECK_INT(drv_forget(d, "sig", &e), 0);
    CHECK_INT(drv_get(d, "sig", &st, &e), 0);
    CHECK_STR(drv_phase_name(st.phase), "provisioning");
    CHECK(access(path, F_OK) == 0); /* the caller's files stay */
    CHECK_INT(drv_create(d, "sig", NULL, argv, NULL, &e), 0);
    CHECK_INT(drv_get(d, "sig", &st, &e), 0);
    CHECK_STR(drv_phase_name(st.phase), "ready");
    /* Delete removes everything, the caller's files and directories too. */
    CHECK_INT(drv_delete(d, "sig", 1000, &e), 0);
    snprintf(path, sizeof(path), "%s/sig", dir);
    CHECK(access(path, F_OK) < 0);
    drv_free(d);
    return TAP_PASS;
}

/* A main process that outlived its monitor is ended by drv_forget, so a
 * restart never runs it twice. */
static int
test_forget_orphan(void)
{
    static const char *const argv[] = { "/bin/sh", "-c", "sleep 30", "orph", NULL };
    struct drv *d = new_drv();
    struct drv_status st;
    struct err e;
    struct buf b = BUF_INIT;
    char path[128];
    int mpid = 0, child = 0, gone = 0;
    unsigned long long start;

    CHECK_INT(drv_create(d, "orph", NULL, argv, NULL, &e), 0);
    snprintf(path, sizeof(path), "%s/orph/monitor", dir);
    CHECK_INT(read_file(path, 256, &b, &e), 0);
    CHECK_INT(sscanf(b.data, "%d %llu %d", &mpid, &start, &child), 3);
    buf_fini(&b);
    CHECK_INT(kill(mpid, SIGKILL), 0);
    CHECK_INT(wait_end(d, "orph", &st), 0);
    CHECK_STR(drv_phase_name(st.phase), "error");
    CHECK_INT(kill(child, 0), 0); /* still running, unmonitored */
    CHECK_INT(drv_forget(d, "orph", &e), 0);
    for (int i = 0; i < 300 && !gone; i++) {
        char stat[256] = "";
        FILE *f;

        snprintf(path, sizeof(path), "/proc/%d/stat", child);
        if (!(f = fopen(path, "r"))) {
            gone = 1;
            break;
        }
        if (fgets(stat, sizeof(stat), f) && strstr(stat, ") Z "))
            gone = 1;
        fclose(f);
        sleep_ms(10);
    }
    CHECK(gone);
    CHECK_INT(drv_delete(d, "orph", 100, &e), 0);
    drv_free(d);
    return TAP_PASS;
}

static int
test_bad_input(void)
{
    static const char *const rel[] = { "sh", NULL };
    static const char *const ok[] = { "/bin/true", NULL };
    struct drv *d = new_drv();
    struct drv_status st;
    struct err e;

    CHECK_INT(drv_create(d, "../x", NULL, ok, NULL, &e), -EINVAL);
    CHECK_INT(drv_create(d, ".hidden", NULL, ok, NULL, &e), -EINVAL);
    CHECK_INT(drv_create(d, "", NULL, ok, NULL, &e), -EINVAL);
    CHECK_INT(drv_create(d, "rel", NULL, rel, NULL, &e), -EINVAL);
    CHECK_CONTAINS(e.msg, "absolute path");
    CHECK_INT(drv_get(d, "nope", &st, &e), -ENOENT);
    CHECK_INT(drv_delete(d, "nope", 10, &e), -ENOENT);
    drv_free(d);
    return TAP_PASS;
}

static int
test_cleanup(void)
{
    CHECK_INT(rmdir(dir), 0);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_lifecycle), TAP_TEST(test_exit_status), TAP_TEST(test_stop_escalates),
         TAP_TEST(test_monitor_lost), TAP_TEST(test_signal_forget), TAP_TEST(test_forget_orphan),
         TAP_TEST(test_bad_input), TAP_TEST(test_cleanup))
