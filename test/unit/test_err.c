/* Unit tests for src/err.c: codes, errno capture, context wrapping, truncation. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "err.h"
#include "tap.h"
#include "xfuncs.h"

static int
test_set_and_wrap(void)
{
    struct err e;

    err_clear(&e);
    CHECK_INT(err_set(&e, ENOENT, "open %s", "/x"), -ENOENT);
    CHECK_INT(e.code, ENOENT);
    CHECK_STR(e.msg, "open /x");
    CHECK_INT(err_wrap(&e, "loading policy %s", "p.yaml"), -ENOENT);
    CHECK_STR(e.msg, "loading policy p.yaml: open /x");
    CHECK_INT(err_set(&e, -EINVAL, "negative codes normalise"), -EINVAL);
    CHECK_INT(e.code, EINVAL);
    return TAP_PASS;
}

static int
test_errno_capture(void)
{
    struct err e;
    int rc;

    err_clear(&e);
    errno = 0;
    CHECK(open("/nonexistent/openshell-test", O_RDONLY | O_CLOEXEC) < 0);
    rc = err_errno(&e, "open %s", "/nonexistent/openshell-test");
    CHECK_INT(rc, -ENOENT);
    CHECK_INT(errno, ENOENT); /* preserved for the caller */
    CHECK_STR(e.msg, "open /nonexistent/openshell-test: No such file or directory");
    return TAP_PASS;
}

static int
test_null_err(void)
{
    errno = EACCES;
    CHECK_INT(err_errno(NULL, "x"), -EACCES);
    CHECK_INT(err_set(NULL, EPERM, "y"), -EPERM);
    CHECK_INT(err_wrap(NULL, "z"), -EIO);
    CHECK_STR(err_str(NULL, -ENOENT), strerror(ENOENT));
    return TAP_PASS;
}

static int
test_truncation(void)
{
    struct err e;
    char big[3000];

    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    err_set(&e, EIO, "%s", big);
    CHECK_INT(strlen(e.msg), ERR_MSG_MAX - 1);
    CHECK(strcmp(e.msg + ERR_MSG_MAX - 4, "...") == 0);
    err_wrap(&e, "ctx");
    CHECK(strncmp(e.msg, "ctx: aaa", 8) == 0);
    CHECK_INT(strlen(e.msg), ERR_MSG_MAX - 1);
    return TAP_PASS;
}

static int
test_read_file_errors(void)
{
    struct buf b = BUF_INIT;
    struct err e;

    err_clear(&e);
    CHECK_INT(read_file("/nonexistent/x", 100, &b, &e), -ENOENT);
    CHECK_STR(e.msg, "open /nonexistent/x: No such file or directory");
    CHECK_INT(read_file("/proc/self/status", 10, &b, &e), -EFBIG);
    CHECK_CONTAINS(e.msg, "larger than 10 bytes");
    buf_reset(&b);
    CHECK_INT(read_file("/proc/self/status", 1 << 20, &b, &e), 0);
    CHECK_CONTAINS(buf_cstr(&b), "Pid:");
    buf_fini(&b);
    return TAP_PASS;
}

TAP_MAIN(TAP_TEST(test_set_and_wrap), TAP_TEST(test_errno_capture), TAP_TEST(test_null_err),
         TAP_TEST(test_truncation), TAP_TEST(test_read_file_errors))
