// lab.h: what the lab's C helpers share (included by each; part of every helper's cache key).
//
// clock_ns(): a clock's time in nanoseconds. parse_ulong(): a whole decimal number no larger
// than a maximum, or -1. become_uid(): drop supplementary groups and switch to UID and GID UID
// (no account needed: the kernel only deals in numbers), or -1.

#ifndef EBPF_LAB_H
#define EBPF_LAB_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <grp.h>
#include <limits.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define LAB_MAX_UID 4294967294UL

static inline long long clock_ns(clockid_t clock)
{
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static inline int parse_ulong(const char *text, unsigned long max, unsigned long *out)
{
    char *end;
    if (*text < '0' || *text > '9')
        return -1;
    unsigned long value = strtoul(text, &end, 10);
    if (*end || value > max)
        return -1;
    *out = value;
    return 0;
}

static inline int become_uid(unsigned long uid)
{
    if (setgroups(0, NULL) != 0 || setresgid(uid, uid, uid) != 0 || setresuid(uid, uid, uid) != 0)
        return -1;
    return 0;
}

#endif
