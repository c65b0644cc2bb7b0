/* Execs that a check by the path asked for gets wrong.
 *
 * Usage: exec_variants thread PATH   exec PATH from a second thread (after the exec,
 *                                    de_thread() gives that thread the leader's id)
 *        exec_variants memfd SRC     copy SRC into a memfd and execveat(fd, "", AT_EMPTY_PATH)
 * Prints "exec failed" and exits 127 if the exec itself fails. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static char *target;

static void *run(void *arg) {
    (void)arg;
    char *args[] = {target, NULL};
    execv(target, args);
    printf("exec failed\n");
    fflush(stdout);
    _exit(127);
}

int main(int argc, char **argv) {
    if (argc != 3)
        return 2;
    target = argv[2];
    if (strcmp(argv[1], "thread") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, run, NULL);
        pthread_join(t, NULL);
        return 3;
    }
    int src = open(argv[2], O_RDONLY);
    int fd = memfd_create("copy", MFD_CLOEXEC);
    char buf[65536];
    ssize_t n;
    while ((n = read(src, buf, sizeof buf)) > 0)
        if (write(fd, buf, n) != n)
            return 4;
    char *args[] = {argv[2], NULL};
    char *env[] = {NULL};
    syscall(SYS_execveat, fd, "", args, env, AT_EMPTY_PATH);
    printf("exec failed\n");
    return 127;
}
