/* Syscall-bound loop: N getppid syscalls (default 5,000,000). */
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 5000000;
    for (long i = 0; i < n; i++) syscall(SYS_getppid);
    return 0;
}
