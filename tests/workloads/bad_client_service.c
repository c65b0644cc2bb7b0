/* A small TCP service whose error path makes syscalls its normal path never does: a client
 * that sends anything but "hello" gets "bad request", its connection is shut down
 * (shutdown(2)), and the main loop is told with a signal to itself (kill(2)). Trained with
 * good clients only, a recording never sees shutdown or kill; the binary imports both.
 *
 * It also imports ptrace, behind an option no test passes (`--traceme`): an import the
 * profile must not get from --include-imported unless named.
 *
 * Usage: bad_client_service PORT. Prints "ready" once it listens; "quit" stops it, and it
 * then prints how many bad clients it saw. Any failing syscall is reported and ends it
 * (exit 1): a profile that denies the error path shows.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <unistd.h>

static volatile sig_atomic_t bad_clients;

static void on_bad_client(int sig) {
    (void)sig;
    bad_clients++;
}

static void die(const char *what) {
    fprintf(stderr, "%s: %s\n", what, strerror(errno));
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [--traceme]\n", argv[0]);
        return 2;
    }
    if (argc > 2 && strcmp(argv[2], "--traceme") == 0 && ptrace(PTRACE_TRACEME, 0, 0, 0) != 0)
        die("ptrace");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_bad_client;
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        die("sigaction");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    int one = 1;
    if (setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        die("setsockopt");
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(s, (struct sockaddr *)&addr, sizeof addr) != 0)
        die("bind");
    if (listen(s, 8) != 0)
        die("listen");
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0)
            die("accept");
        char buf[64];
        ssize_t n = read(c, buf, sizeof buf - 1);
        if (n < 0)
            die("read");
        buf[n] = 0;
        if (strcmp(buf, "hello\n") == 0) {
            if (write(c, "ok\n", 3) != 3)
                die("write");
        } else if (strcmp(buf, "quit\n") == 0) {
            if (write(c, "bye\n", 4) != 4)
                die("write");
            close(c);
            break;
        } else {
            /* The error path. */
            if (write(c, "bad request\n", 12) != 12)
                die("write");
            if (shutdown(c, SHUT_RDWR) != 0)
                die("shutdown");
            if (kill(getpid(), SIGUSR1) != 0)
                die("kill");
        }
        close(c);
    }
    printf("bad clients: %d\n", (int)bad_clients);
    return 0;
}
