// array_constant_key.bpf.c: an array lookup with a constant key, used WITHOUT a NULL check
// (chapter 04). Whether the verifier accepts it depends on the kernel's version.
//
// At run time, a lookup in a BPF_ARRAY with an index below its size never returns NULL: every
// slot of an array exists. Until Linux 6.14 the verifier did not use that: lookup() returned
// "map_value_or_null" whatever the key, and reading through it unchecked was refused, exactly as
// for a hash map. Linux 6.14 (commit d2102f2f5d75, "bpf: verifier: Support eliding map lookup
// nullness") drops the "or null" for BPF_ARRAY and BPF_PERCPU_ARRAY when the verifier knows the
// key and it is in range: can_elide_value_nullness() and get_constant_map_key() in
// kernel/bpf/verifier.c. It knows the key when the key's bytes on the stack are zeros it saw
// being written, or a constant stored from a register at the start of an 8-byte stack slot.
//
// -DKEY=N picks the index (0..3); -DALIGNED puts the 4-byte key at the start of an 8-byte slot
// (without it, clang places it at fp-4, in the middle of one).

BPF_ARRAY(scratch, u64, 4);

int bump(void *ctx)
{
#ifdef ALIGNED
    u32 key __attribute__((aligned(8))) = KEY;
#else
    u32 key = KEY;
#endif
    u64 *value = scratch.lookup(&key);
    *value += 1;                          // no NULL check: only a verifier that knows the key allows it
    return 0;
}
