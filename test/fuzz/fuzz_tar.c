/*
 * fuzz_tar.c: libFuzzer target for tar_extract() (src/tar.c).
 *
 * Each input is an archive, extracted into a fresh directory under a private
 * temporary root with limits and keep_mode on, then the directory is removed.
 * Any crash, sanitizer report or write outside that directory is a bug.
 * Built by `make B=DIR fuzz` like the policy targets: the fuzz rule links
 * buf/err/xfuncs/log, and the tar module is compiled into this file.
 * test/unit/test_tar.c replays test/fuzz/corpus_tar/ on every `make check`.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Headers need not carry a valid checksum here (see checksum_ok). */
#define TAR_FUZZING 1
#include "../../src/tar.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char root[64];

static int
rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)ftw;
    if (flag == FTW_DP)
        return rmdir(path) < 0 && errno != ENOENT ? -1 : 0;
    return unlink(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int
chmod_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)ftw;
    if (flag == FTW_D || flag == FTW_DNR)
        chmod(path, (sb->st_mode & 07777) | 0700);
    return 0;
}

/* At exit: the (emptied) destination and the private root go too. */
static void
remove_root(void)
{
    char dest[96];

    snprintf(dest, sizeof(dest), "%s/x", root);
    rmdir(dest);
    rmdir(root);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tar_opts o = { .max_total = 1 << 20, .max_entries = 1000, .keep_mode = true };
    struct tar_stats st;
    struct err e;
    char dest[96];
    int fd, dfd;

    if (!root[0]) {
        snprintf(root, sizeof(root), "/tmp/fuzz_tar.XXXXXX");
        if (!mkdtemp(root))
            abort();
        atexit(remove_root);
    }
    snprintf(dest, sizeof(dest), "%s/x", root);
    if (mkdir(dest, 0700) < 0 && errno != EEXIST)
        abort();
    fd = memfd_create("tar", MFD_CLOEXEC);
    if (fd < 0 || write_full(fd, data, size) < 0 || lseek(fd, 0, SEEK_SET) != 0)
        abort();
    dfd = open(dest, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        abort();
    (void)tar_extract(fd, dfd, &o, &st, &e);
    close(dfd);
    close(fd);
    /* Directories may have been left 0000 (keep_mode): open them up first. */
    nftw(dest, chmod_one, 16, FTW_PHYS);
    if (nftw(dest, rm_one, 16, FTW_DEPTH | FTW_PHYS) < 0)
        abort();
    return 0;
}
