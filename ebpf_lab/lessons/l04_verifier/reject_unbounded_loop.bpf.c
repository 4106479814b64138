// reject_unbounded_loop.bpf.c: a loop the verifier cannot prove ends (chapter 04).
//
// The verifier must be sure that every BPF program finishes. Since Linux 5.3 it accepts loops,
// but only ones it can *run to the end* in its head: it follows the loop iteration by iteration,
// and if it comes back to the top of the loop in exactly the state it saw before, the loop can
// never end, and the program is rejected with "infinite loop detected at insn N".
//
// Compiled as is, this is the learner's bug: the loop forgets to advance `i`.
// Compiled with -DFIXED, `i` advances and the loop ends after LOOPS rounds.
// -DLOOPS=N changes the bound (default 10): the verifier's work grows with it.

#ifndef LOOPS
#define LOOPS 10
#endif

BPF_ARRAY(result, u64, 1);                // one slot, so the sum is used and not optimised away

int sum_random(void *ctx)
{
    u64 sum = 0;
    u32 i = 0;
#ifndef FIXED
    while (i < LOOPS) {                   // BUG: nothing in the body changes i
        sum += bpf_get_prandom_u32();
    }
#else
#pragma clang loop unroll(disable)        // keep it a real loop in the bytecode (no unrolling)
    while (i < LOOPS) {
        sum += bpf_get_prandom_u32();
        i++;                              // FIX: the loop now makes progress towards its end
    }
#endif
    int zero = 0;
    result.update(&zero, &sum);
    return 0;
}
