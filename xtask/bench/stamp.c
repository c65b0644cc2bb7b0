/* Start-up probe: prints the wall clock at its first and last instruction (static, so no
 * dynamic loader runs in between). */
#include <stdio.h>
#include <time.h>

int main(void) {
    struct timespec a, b;
    clock_gettime(CLOCK_REALTIME, &a);
    clock_gettime(CLOCK_REALTIME, &b);
    printf("%ld.%09ld %ld.%09ld\n", (long)a.tv_sec, a.tv_nsec, (long)b.tv_sec, b.tv_nsec);
    return 0;
}
