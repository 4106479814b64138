// reject_out_of_bounds.bpf.c: an array index the verifier cannot prove in bounds (chapter 04).
//
// A map value is a fixed number of bytes (here SLOTS counters of 8 bytes). Every access to it
// must be provably inside those bytes, for every value the index could have. The verifier tracks
// the range of each register: `pid & 0xff` is somewhere in 0..255, so `slots[slot]` could be up
// to 255 * 8 bytes into a 128-byte value, and the program is rejected with
// "invalid access to map value, value_size=128 off=2040 size=8".
//
// Compiled as is, this is the learner's bug: the mask and the array size disagree.
// Compiled with -DFIXED, a bounds check tells the verifier that slot < SLOTS.

#define SLOTS 16

struct histogram {
    u64 slots[SLOTS];                     // SLOTS counters: the map value is SLOTS * 8 = 128 bytes
};

BPF_ARRAY(hist, struct histogram, 1);     // one histogram, at index 0

int count_by_pid(void *ctx)
{
    int zero = 0;
    struct histogram *h = hist.lookup(&zero);
    if (!h)                               // (never NULL at run time, but before Linux 6.14
        return 0;                         // the verifier insists on the check: chapter 04)
    u32 slot = bpf_get_current_pid_tgid() & 0xff;   // BUG: 256 possible values, 16 slots
#ifdef FIXED
    if (slot >= SLOTS)                    // FIX: from here on the verifier knows slot is 0..15
        return 0;
#endif
    h->slots[slot] += 1;
    return 0;
}
