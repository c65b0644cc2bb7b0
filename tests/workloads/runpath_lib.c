/* A library found only through its program's DT_RUNPATH ($ORIGIN/lib): what it imports
 * (getsid, behind an argument no test passes) is what the program can do. */
#include <unistd.h>

int session_of(int pid, int ask) {
    return ask ? (int)getsid(pid) : 0;
}
