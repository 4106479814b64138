// loop_cost.bpf.c: the same loop written twice, for the verifier to count its work.
//
// sum_with_for_loop: a bounded C loop. The verifier walks its body once per round, so the
// instructions it processes grow with LOOPS.
// sum_with_bpf_loop: the bpf_loop() helper (Linux 5.17+) calls add_random_bit() LOOPS times.
// The verifier checks the callback once, whatever LOOPS is.
//
// Each round does the same work: add a random bit to out[0].
#ifndef LOOPS
#define LOOPS 8
#endif

BPF_ARRAY(out, u64, 1);

static long add_random_bit(u32 index, void *unused);

int sum_with_for_loop(void *ctx)
{
#pragma clang loop unroll(disable)
    for (u32 i = 0; i < LOOPS; i++) {
        int zero = 0;
        u64 *sum = out.lookup(&zero);
        if (sum)
            *sum += bpf_get_prandom_u32() & 1;
    }
    return 0;
}

int sum_with_bpf_loop(void *ctx)
{
    bpf_loop(LOOPS, add_random_bit, NULL, 0);
    return 0;
}

// The callback lives in sum_with_bpf_loop's own section (BCC names it .bpf.fn.<function>), right
// after it, so that the lab can link the two: BCC does not (linking.py says how).
__attribute__((section(".bpf.fn.sum_with_bpf_loop"), __noinline__))
static long add_random_bit(u32 index, void *unused)
{
    int zero = 0;
    u64 *sum = out.lookup(&zero);
    if (sum)
        *sum += bpf_get_prandom_u32() & 1;
    return 0;   // 0: go on with the next round, 1: stop early
}
