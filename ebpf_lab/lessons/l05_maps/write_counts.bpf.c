// write_counts.bpf.c: count write() calls by their size, in the kind of map you choose.
//
// The same counting, four maps (the lab sets MAP_KIND when it compiles this file):
//
//   MAP_KIND 1  BPF_HASH           key -> value; an entry exists once someone inserts it
//   MAP_KIND 2  BPF_ARRAY          MAX_ENTRIES slots 0..MAX_ENTRIES-1, all there from the start
//   MAP_KIND 3  BPF_PERCPU_HASH    a hash whose every entry holds one value per CPU
//   MAP_KIND 4  BPF_PERCPU_ARRAY   an array whose every slot holds one value per CPU
//
// Key: the byte count the caller asked write() to write. Value: how many such calls.
// FILTER_UID (optional): count only calls made by one user ID, the one the lab writes into the
// map filter_uid before attaching (a map, not a number in the text: the text stays the same
// whatever the UID, and compiles once).

#ifdef FILTER_UID
BPF_ARRAY(filter_uid, u32, 1);
#endif

#define KIND_HASH 1
#define KIND_ARRAY 2
#define KIND_PERCPU_HASH 3
#define KIND_PERCPU_ARRAY 4

#if MAP_KIND == KIND_HASH
BPF_HASH(counts, u64, u64, MAX_ENTRIES);
#elif MAP_KIND == KIND_ARRAY
BPF_ARRAY(counts, u64, MAX_ENTRIES);          // array keys are always u32 slot numbers
#elif MAP_KIND == KIND_PERCPU_HASH
BPF_PERCPU_HASH(counts, u64, u64, MAX_ENTRIES);
#else
BPF_PERCPU_ARRAY(counts, u64, MAX_ENTRIES);
#endif

// Calls that found no place: arrays have no slot for a size >= MAX_ENTRIES; a hash that is
// full refuses a new key.
BPF_ARRAY(no_slot, u64, 1);

#if MAP_KIND == KIND_PERCPU_HASH || MAP_KIND == KIND_PERCPU_ARRAY
// Each CPU has its own copy of the value: no other CPU touches it, a plain add is enough.
#define ADD_ONE(p) (*(p) += 1)
#else
// One value shared by all CPUs: two CPUs may add at the same moment, so add atomically.
#define ADD_ONE(p) __sync_fetch_and_add((p), 1)
#endif

static __always_inline void count_no_slot(void)
{
    int zero = 0;
    u64 *n = no_slot.lookup(&zero);
    if (n)
        __sync_fetch_and_add(n, 1);
}

int count_write(struct tracepoint__syscalls__sys_enter_write *args)
{
#ifdef FILTER_UID
    int zero = 0;
    u32 *uid = filter_uid.lookup(&zero);
    if (uid == NULL || (u32)bpf_get_current_uid_gid() != *uid)   // low 32 bits: the UID
        return 0;
#endif
    u64 size = args->count;

#if MAP_KIND == KIND_ARRAY || MAP_KIND == KIND_PERCPU_ARRAY
    if (size >= MAX_ENTRIES) {            // there is no such slot: lookup would return NULL
        count_no_slot();
        return 0;
    }
    u32 slot = size;
    u64 *n = counts.lookup(&slot);        // never NULL for 0 <= slot < MAX_ENTRIES
    if (n)                                // ...but the verifier insists we check
        ADD_ONE(n);
#else
    u64 *n = counts.lookup(&size);
    if (n) {
        ADD_ONE(n);
        return 0;
    }
    // First call of this size: insert a 1. insert() fails if another CPU inserted the same key
    // a moment ago (then add to its entry) or if the map is full (count the refusal).
    u64 one = 1;
    if (counts.insert(&size, &one) != 0) {
        n = counts.lookup(&size);
        if (n)
            ADD_ONE(n);
        else
            count_no_slot();
    }
#endif
    return 0;
}
