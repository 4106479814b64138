// probe_loop.c: a known number of calls of the lab's own function, with a USDT probe in each.
//
//     probe_loop CALLS
//
// For lesson 07's user-space attach points. Everything that is not the work happens BEFORE the
// gate (the dynamic loader, parsing the arguments); then the process stops itself with SIGSTOP,
// so a uprobe, a uretprobe or a USDT probe can be attached for its pid. After SIGCONT it runs
// its loop: for i = 0 .. CALLS-1 it calls
//
//     unsigned long lab_tick(unsigned long i)     returns 3 * i + 7
//
// (a real function of this binary, never inlined: a uprobe on `lab_tick` fires at its entry,
// where PT_REGS_PARM1 is i, and a uretprobe at its return, where PT_REGS_RC is 3 * i + 7), and
// then fires the USDT probe
//
//     DTRACE_PROBE2(ebpf_lab, tick, i, value)     from <sys/sdt.h> (systemtap-sdt-dev)
//
// with value = what lab_tick returned. A USDT probe costs nothing until a tool attaches to it:
// it is a single `nop` instruction plus a note in the ELF file (.note.stapsdt) saying where the
// nop is and where its two arguments are (registers or memory), which BCC reads to attach a
// uprobe there and to generate bpf_usdt_readarg().
//
// So, exactly: CALLS calls of lab_tick, CALLS firings of ebpf_lab:tick; the arguments sum to
// CALLS*(CALLS-1)/2 and the values to 3*CALLS*(CALLS-1)/2 + 7*CALLS.
//
// Exit codes: 0 done; 2 bad arguments.

#define _GNU_SOURCE
#include <signal.h>
#include <sys/sdt.h>

#include "lab.h"

__attribute__((noinline, used)) unsigned long lab_tick(unsigned long i)
{
    unsigned long value = 3 * i + 7;
    __asm__ volatile("" : "+r"(value));   // the compiler may not fold the calls away
    return value;
}

int main(int argc, char **argv)
{
    unsigned long calls;
    if (argc != 2 || parse_ulong(argv[1], ULONG_MAX, &calls))
        return 2;

    raise(SIGSTOP);                   // the gate: probes are attached for this pid now

    for (unsigned long i = 0; i < calls; i++) {
        unsigned long value = lab_tick(i);
        DTRACE_PROBE2(ebpf_lab, tick, i, value);
    }
    return 0;
}
