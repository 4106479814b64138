// exec_loop.c: a known, fast loop of execs as one UID, for the exec-overhead benchmarks.
//
//     exec_loop COUNT UID
//
// Drops supplementary groups, switches to UID and GID UID (no account needed: the kernel only
// deals in numbers), then COUNT times: vfork(), execve("/bin/true") in the child, wait for it.
// So exactly COUNT execve() calls are made by UID, one after the other, and none by anyone else
// (this program's own exec, by its parent, happens as the parent's user, before the switch).
//
// Python's subprocess cannot do this fast: to switch UID in the child it forks the whole lab
// process (hundreds of MB of page tables to copy) instead of using vfork, ~20 ms per exec. Here
// an exec costs what fork/exec/exit of a tiny program costs.
//
// Prints one line on stdout: "<loop_ns>", the wall time of the loop (CLOCK_MONOTONIC).
// Exit codes: 0 done; 2 bad arguments or the switch failed (before any exec); 3 an exec failed
// or /bin/true did not exit 0.

#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

int main(int argc, char **argv)
{
    if (argc != 3)
        return 2;
    unsigned long count, uid;
    if (parse_ulong(argv[1], ULONG_MAX, &count) || parse_ulong(argv[2], LAB_MAX_UID, &uid))
        return 2;
    if (become_uid(uid))
        return 2;

    char *const args[] = {"/bin/true", NULL};
    char *const env[] = {NULL};
    long long t0 = clock_ns(CLOCK_MONOTONIC);
    for (unsigned long i = 0; i < count; i++) {
        pid_t pid = vfork();
        if (pid < 0)
            return 3;
        if (pid == 0) {
            execve(args[0], args, env);
            _exit(127);
        }
        int status;
        if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
            return 3;
    }
    printf("%lld\n", clock_ns(CLOCK_MONOTONIC) - t0);
    return 0;
}
