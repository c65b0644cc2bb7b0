/* Creates argv[1] with openat2(2) (no libc wrapper on this glibc: the raw syscall), the way
 * newer runtimes and libraries open files. */
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_WRONLY | O_CREAT | O_TRUNC;
    how.mode = 0644;
    long fd = syscall(SYS_openat2, AT_FDCWD, argv[1], &how, sizeof how);
    if (fd < 0) {
        perror("openat2");
        return 1;
    }
    close(fd);
    return 0;
}
