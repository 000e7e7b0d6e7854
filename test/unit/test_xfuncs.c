/* Unit tests for src/xfuncs.c: allocation helpers, scope cleanup, full I/O. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"
#include "xfuncs.h"

static int
test_strings(void)
{
    AUTOFREE char *a = xstrdup("abc");
    AUTOFREE char *b = xstrndup("abcdef", 3);
    AUTOFREE char *c = xasprintf("%s-%d", "x", 7);
    AUTOFREE char *d = xstrndup("ab", 10);

    CHECK_STR(a, "abc");
    CHECK_STR(b, "abc");
    CHECK_STR(c, "x-7");
    CHECK_STR(d, "ab");
    return TAP_PASS;
}

static int close_counter_fd = -1;

static int
test_autoclose_and_steal(void)
{
    int kept;

    {
        AUTOCLOSE int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        CHECK(fd >= 0);
        close_counter_fd = fd;
    }
    /* Closed at scope exit. */
    CHECK(fcntl(close_counter_fd, F_GETFD) < 0 && errno == EBADF);
    {
        AUTOCLOSE int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        kept = steal_fd(&fd);
        CHECK_INT(fd, -1);
    }
    CHECK(fcntl(kept, F_GETFD) >= 0);
    close(kept);
    {
        AUTOFREE char *p = xstrdup("owned");
        char *q = steal_ptr(&p);
        CHECK(p == NULL);
        free(q);
    }
    return TAP_PASS;
}

static int
test_full_io(void)
{
    int p[2];
    char big[200000], back[200000];
    pid_t pid;
    int status;

    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)(i * 7);
    CHECK(pipe(p) == 0);
    /* A pipe holds 64 KiB: the writer must loop over short writes. */
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        _exit(write_full(p[1], big, sizeof(big)) == 0 ? 0 : 1);
    }
    close(p[1]);
    CHECK_INT(read_full(p[0], back, sizeof(back)), sizeof(back));
    CHECK_INT(read_full(p[0], back, 10), 0); /* end of file */
    close(p[0]);
    CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
    CHECK(memcmp(big, back, sizeof(big)) == 0);
    CHECK_INT(write_full(-1, "x", 1), -EBADF);
    return TAP_PASS;
}

static int
test_bug_aborts(void)
{
    pid_t pid = fork();
    int status;

    CHECK(pid >= 0);
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
        dup2(devnull, 2);
        BUG_ON(1 + 1 == 2);
        _exit(0);
    }
    CHECK(waitpid(pid, &status, 0) == pid);
    CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_strings), TAP_TEST(test_autoclose_and_steal), TAP_TEST(test_full_io),
         TAP_TEST(test_bug_aborts))
