/*
 * tar_bench.c: drive src/tar.c for bench/tar (which times it against GNU tar).
 *
 *   tar_bench create DIR NAME OUT   tar of DIR/NAME into OUT
 *   tar_bench extract ARCHIVE DEST  extract ARCHIVE into the directory DEST
 *
 * Prints "files bytes" of the run on stdout; errors on stderr, exit 1.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tar.h"

int
main(int argc, char **argv)
{
    struct tar_stats st = { 0 };
    struct tar_opts o = { .keep_mode = true, .create_stats = &st };
    struct err e;
    int rc;

    if (argc == 5 && !strcmp(argv[1], "create")) {
        int dfd = open(argv[2], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        int out = open(argv[4], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

        if (dfd < 0 || out < 0) {
            perror("open");
            return 1;
        }
        rc = tar_create(out, dfd, argv[3], NULL, &o, &e);
    } else if (argc == 4 && !strcmp(argv[1], "extract")) {
        int in = open(argv[2], O_RDONLY | O_CLOEXEC);
        int dfd = open(argv[3], O_RDONLY | O_DIRECTORY | O_CLOEXEC);

        if (dfd < 0 || in < 0) {
            perror("open");
            return 1;
        }
        rc = tar_extract(in, dfd, &o, &st, &e);
    } else {
        fprintf(stderr, "usage: tar_bench create DIR NAME OUT | extract ARCHIVE DEST\n");
        return 2;
    }
    if (rc < 0) {
        fprintf(stderr, "%s\n", err_str(&e, rc));
        return 1;
    }
    printf("%" PRIu64 " %" PRIu64 "\n", st.files, st.bytes);
    return 0;
}
