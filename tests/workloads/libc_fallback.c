/* Test workload for newer-sibling syscalls.
 *   old PATH    : access() and fstatat(): what an older libc (or program) uses.
 *   new PATH    : faccessat(AT_EACCESS), for which glibc tries faccessat2 first and falls
 *                 back to its own emulation on ENOSYS; then statx() directly, printing the
 *                 errno it gets.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    const char *path = argv[2];
    struct stat st;
    if (strcmp(argv[1], "old") == 0) {
        if (access(path, R_OK) != 0) { perror("access"); return 1; }
        if (fstatat(AT_FDCWD, path, &st, 0) != 0) { perror("fstatat"); return 1; }
        printf("old ok\n");
        return 0;
    }
    if (faccessat(AT_FDCWD, path, R_OK, AT_EACCESS) != 0) { perror("faccessat"); return 1; }
    struct statx stx;
    long r = syscall(SYS_statx, AT_FDCWD, path, 0, STATX_BASIC_STATS, &stx);
    printf("faccessat ok, statx %s errno %d\n", r == 0 ? "ok" : "failed", r == 0 ? 0 : errno);
    return 0;
}
