// bpf_to_bpf_call.bpf.c: a BPF function that calls another BPF function (not a helper).
//
// twice() is static and __noinline__: clang keeps it a function of its own and compiles the
// call as `call pc+N` (src_reg 1, BPF_PSEUDO_CALL): a jump to another BPF function, with its own
// stack frame, instead of copying its body into caller().
//
// twice() lives in caller's own section (BCC names it .bpf.fn.<function>), right after it, so
// clang aims the call at it directly; BCC still loads caller() alone (linking.py says more).

BPF_ARRAY(out, u64, 1);

static u64 twice(u64 x);

int caller(void *ctx)
{
    int zero = 0;
    u64 value = twice(bpf_get_prandom_u32());
    out.update(&zero, &value);
    return 0;
}

__attribute__((section(".bpf.fn.caller"), __noinline__))
static u64 twice(u64 x)
{
    return 2 * x + (bpf_get_prandom_u32() & 1);
}
