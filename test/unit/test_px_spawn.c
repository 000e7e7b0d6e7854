/* Unit tests for src/px_spawn.c: the control-channel lines the supervisor
 * writes to its proxy (credentials document, agent pid). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "px_spawn.h"
#include "tap.h"
#include "xfuncs.h"

/* Everything written to the pipe so far (nonblocking read). */
static size_t
drain(int fd, char *out, size_t size)
{
    ssize_t n = read(fd, out, size - 1);

    out[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

static int
test_credentials_line(void)
{
    struct px_spawn ps = { 0, -1 };
    struct err e;
    char got[256];
    int p[2];

    CHECK(pipe2(p, O_CLOEXEC | O_NONBLOCK) == 0);
    ps.control_fd = p[1];
    err_clear(&e);
    CHECK_INT(px_spawn_send_credentials(&ps, "{\"revision\":3,\"environment\":{}}", &e), 0);
    drain(p[0], got, sizeof(got));
    CHECK_STR(got, "{\"type\":\"credentials\",\"doc\":{\"revision\":3,\"environment\":{}}}\n");
    /* One line per message: a newline inside would split it. */
    CHECK_INT(px_spawn_send_credentials(&ps, "{\"a\":\n1}", &e), -EINVAL);
    CHECK_INT(px_spawn_send_credentials(&ps, "", &e), -EINVAL);
    CHECK_INT((int)drain(p[0], got, sizeof(got)), 0);
    /* The agent line still reads the same after it. */
    CHECK_INT(px_spawn_announce(&ps, 42), 0);
    drain(p[0], got, sizeof(got));
    CHECK_STR(got, "agent 42\n");
    px_spawn_fini(&ps);
    CHECK_INT(ps.control_fd, -1);
    CHECK_INT(px_spawn_send_credentials(&ps, "{}", &e), -EBADF);
    close(p[0]);
    return TAP_PASS;
}

static int
test_credentials_closed_pipe(void)
{
    struct px_spawn ps = { 0, -1 };
    struct err e;
    int p[2];

    CHECK(pipe2(p, O_CLOEXEC) == 0);
    close(p[0]);
    ps.control_fd = p[1];
    err_clear(&e);
    /* The proxy is gone: an error, not a crash (SIGPIPE is ignored here). */
    signal(SIGPIPE, SIG_IGN);
    CHECK_INT(px_spawn_send_credentials(&ps, "{}", &e), -EPIPE);
    CHECK(strstr(e.msg, "credentials") != NULL);
    px_spawn_fini(&ps);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_credentials_line), TAP_TEST(test_credentials_closed_pipe))
