// read_loop.c: a known, fast stream of system calls for lesson 08 and the benchmarks.
//
//     read_loop READS THREADS REPORT
//
// Makes exactly READS one-byte read() calls on file descriptor 0 (/dev/zero), split over
// THREADS threads of one process (one tgid), as fast as it can, and nothing else that is a
// read(). The lab builds it with the system's C compiler on first use (ebpf_lab/workloads/native.py) and
// runs it as a gated child (ebpf_lab.workload.read_loop_child).
//
// Everything that is not the work happens BEFORE the gate: the dynamic loader's reads, opening
// /dev/zero as fd 0 and REPORT for writing, starting the threads (they wait at a barrier). Then
// the process stops itself with SIGSTOP, so a BPF program can be compiled with its pid and
// attached. After SIGCONT the only read() calls the process makes are the READS one-byte reads
// of fd 0: a program that keeps this tgid's read() system calls sees exactly READS events, with
// no need to look at the fd (which is why transfer_batch.bpf.c's raw tracepoint variant filters
// on tgid and syscall number only). What follows the reads is no read either: futex (joins),
// clock_gettime, one write() of the report, exit.
//
// The report is one line: "<loop_ns> <cpu_ns>", the wall time of the reads (CLOCK_MONOTONIC,
// from the barrier to the last join) and the CPU time of the whole process over that span
// (CLOCK_PROCESS_CPUTIME_ID: every thread).
//
// Exit codes: 0 done; 2 bad arguments or setup failure (before the gate); 3 a read() did not
// return exactly one byte.

#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "lab.h"

#define MAX_THREADS 64

static pthread_barrier_t start;

static void read_n(unsigned long n)
{
    char c;
    for (unsigned long i = 0; i < n; i++)
        if (read(0, &c, 1) != 1)
            _exit(3);
}

static void *worker(void *arg)
{
    pthread_barrier_wait(&start);
    read_n((unsigned long)arg);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4)
        return 2;
    unsigned long reads, threads;
    if (parse_ulong(argv[1], ULONG_MAX, &reads) || parse_ulong(argv[2], MAX_THREADS, &threads) ||
        threads < 1)
        return 2;
    int zero = open("/dev/zero", O_RDONLY);
    if (zero < 0 || dup2(zero, 0) != 0)
        return 2;
    if (zero != 0)
        close(zero);
    FILE *report = fopen(argv[3], "w");
    if (!report)
        return 2;

    // thread 0 is this one; thread i makes reads / threads, the first reads % threads one more
    pthread_t tid[MAX_THREADS];
    unsigned long share = reads / threads, extra = reads % threads;
    if (pthread_barrier_init(&start, NULL, (unsigned)threads) != 0)
        return 2;
    for (unsigned long i = 1; i < threads; i++) {
        unsigned long n = share + (i < extra);
        if (pthread_create(&tid[i], NULL, worker, (void *)n) != 0)
            return 2;
    }

    raise(SIGSTOP);                   // the gate: the whole process stops until SIGCONT

    pthread_barrier_wait(&start);
    long long t0 = clock_ns(CLOCK_MONOTONIC), c0 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    read_n(share + (0 < extra));
    for (unsigned long i = 1; i < threads; i++)
        pthread_join(tid[i], NULL);
    long long t1 = clock_ns(CLOCK_MONOTONIC), c1 = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    fprintf(report, "%lld %lld\n", t1 - t0, c1 - c0);
    return fclose(report) == 0 ? 0 : 2;
}
