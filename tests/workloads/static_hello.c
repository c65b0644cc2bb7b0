/* Built with gcc -static: a program without an import table, whose syscalls no table names. */
#include <stdio.h>

int main(void) {
    printf("static hello\n");
    return 0;
}
