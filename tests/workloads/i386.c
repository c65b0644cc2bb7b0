/* Test workload built with gcc -m32 -static (and -mx32): reads a file, opens an AF_INET
 * socket, with a third argument tries mkdir and prints the errno, and with a fourth execs
 * that program (the rest of the arguments are its argv). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    int fd = open(argv[1], O_RDONLY);
    char buf[256];
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s >= 0) close(s);
    printf("read %s, socket %s\n", n > 0 ? "ok" : "failed", s >= 0 ? "ok" : "failed");
    if (argc > 2) printf("mkdir errno %d\n", mkdir(argv[2], 0755) == 0 ? 0 : errno);
    if (argc > 3) {
        fflush(stdout);
        execv(argv[3], &argv[3]);
        return 127;
    }
    return 0;
}
