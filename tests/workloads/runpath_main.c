/* Links runpath_lib.c's library, found through DT_RUNPATH $ORIGIN/lib. */
#include <stdio.h>

int session_of(int pid, int ask);

int main(int argc, char **argv) {
    (void)argv;
    printf("session %d\n", session_of(0, argc > 5));
    return 0;
}
