// getppid_loop.c: one known load on several CPUs at the same time, for lesson 02's counter race.
//
//     getppid_loop CALLS UID CPU [CPU...]
//
// Drops supplementary groups and switches to UID and GID UID (no account needed: the kernel only
// deals in numbers), then starts one thread per CPU given. Each thread pins itself to its CPU
// (sched_setaffinity), waits until all are pinned (then spins at a start line, so that all start
// within a fraction of a microsecond), and then makes exactly CALLS getppid() system calls as
// fast as it can. So UID makes exactly CALLS x (number of CPUs)
// getppid() calls, the CPUs all at the same time, and none are made by anyone else (this
// program's own start happens as its parent's user, before the switch, and makes no getppid()).
// A BPF program counting getppid() calls by UID into one map entry has CPUs updating that entry
// at the same moment: what lesson 02 needs to show whether a counter loses counts.
//
// Prints one line per thread, in the order of the CPUs given:
//     "<cpu> <calls> <start_ns> <end_ns>"
// start and end of that thread's loop, CLOCK_MONOTONIC (Python's time.monotonic_ns()), so the
// lab can tell how long the loops really ran side by side.
// Exit codes: 0 done; 2 bad arguments or a setup step failed (switch, pin, thread: before any
// getppid()); 3 a thread was not on its CPU after its loop.

#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define MAX_CPUS 64

struct worker {
    pthread_t thread;
    int cpu;
    unsigned long calls;
    long long start_ns, end_ns;
    int failed;                       // 2: could not pin; 3: not on its CPU afterwards
};

static pthread_barrier_t pinned;
static int waiting;                   // threads not yet at the start line (a spin barrier)

static void *work(void *arg)
{
    struct worker *w = arg;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(w->cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0)   // 0: this thread
        w->failed = 2;
    pthread_barrier_wait(&pinned);
    // The start line: spin until every thread is here, so the first calls on the CPUs come
    // within a fraction of a microsecond of each other (a futex wake-up takes microseconds).
    __atomic_sub_fetch(&waiting, 1, __ATOMIC_SEQ_CST);
    while (__atomic_load_n(&waiting, __ATOMIC_SEQ_CST) > 0)
        ;
    if (w->failed)
        return NULL;
    w->start_ns = clock_ns(CLOCK_MONOTONIC);
    for (unsigned long i = 0; i < w->calls; i++)
        syscall(SYS_getppid);         // exactly one getppid system call each time
    w->end_ns = clock_ns(CLOCK_MONOTONIC);
    if (sched_getcpu() != w->cpu)
        w->failed = 3;
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc - 3 > MAX_CPUS)
        return 2;
    unsigned long calls, uid;
    if (parse_ulong(argv[1], ULONG_MAX, &calls) || parse_ulong(argv[2], LAB_MAX_UID, &uid))
        return 2;
    int n = argc - 3;
    struct worker workers[MAX_CPUS] = {0};
    for (int i = 0; i < n; i++) {
        unsigned long cpu;
        if (parse_ulong(argv[3 + i], CPU_SETSIZE - 1, &cpu))
            return 2;
        workers[i].cpu = (int)cpu;
        workers[i].calls = calls;
    }
    if (become_uid(uid))
        return 2;
    if (pthread_barrier_init(&pinned, NULL, (unsigned)n) != 0)
        return 2;
    waiting = n;
    for (int i = 0; i < n; i++)
        if (pthread_create(&workers[i].thread, NULL, work, &workers[i]) != 0)
            return 2;                 // (exiting ends the threads already started)
    int status = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(workers[i].thread, NULL);
        if (workers[i].failed > status)
            status = workers[i].failed;
    }
    if (status)
        return status;
    for (int i = 0; i < n; i++)
        printf("%d %lu %lld %lld\n", workers[i].cpu, workers[i].calls, workers[i].start_ns,
               workers[i].end_ns);
    return 0;
}
