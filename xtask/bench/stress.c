/* Stress: THREADS threads hammering a fixed set of syscalls for SECONDS seconds while the
 * main thread forks PROCS short-lived processes. The set of syscalls does not depend on the
 * counts, so a small run under strace -f gives the ground truth for a big one.
 * Usage: stress THREADS PROCS SECONDS */
#include <pthread.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

static pthread_barrier_t start;
static double seconds;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *hammer(void *arg) {
    (void)arg;
    pthread_barrier_wait(&start);
    double end = now() + seconds;
    struct utsname u;
    do {
        for (int i = 0; i < 1000; i++) {
            syscall(SYS_getppid);
            syscall(SYS_getuid);
            syscall(SYS_gettid);
            uname(&u);
            sched_yield();
        }
    } while (now() < end);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) return 2;
    int threads = atoi(argv[1]), procs = atoi(argv[2]);
    seconds = atof(argv[3]);
    pthread_t *t = calloc(threads, sizeof *t);
    /* The barrier makes every thread wait on a futex, whatever the timing. */
    pthread_barrier_init(&start, NULL, threads + 1);
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, hammer, NULL);
    pthread_barrier_wait(&start);
    for (int i = 0; i < procs; i++) {
        pid_t p = fork();
        if (p == 0) {
            syscall(SYS_getppid);
            _exit(0);
        }
        waitpid(p, NULL, 0);
    }
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    return 0;
}
