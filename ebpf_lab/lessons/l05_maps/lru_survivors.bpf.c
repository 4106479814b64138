// lru_survivors.bpf.c: what a full map does with a new key. A plain hash refuses it; an LRU
// hash makes room by evicting the entry used least recently.
//
// Both maps have room for MAX_ENTRIES keys and see the same write() calls, keyed by size.
// The value remembers how many calls used the key and the number of the last event that did,
// so user space can see which keys were used recently.
// FILTER_UID (optional): count only calls made by one user ID, the one the lab writes into the
// map filter_uid before attaching (a map, not a number in the text: the text stays the same
// whatever the UID, and compiles once).

#ifdef FILTER_UID
BPF_ARRAY(filter_uid, u32, 1);
#endif

struct use_t {
    u64 calls;         // calls with this size since the key was (last) inserted
    u64 last_event;    // number of the last event that used this key (1, 2, 3, ...)
};

BPF_HASH(plain, u64, struct use_t, MAX_ENTRIES);              // full: new keys are refused
BPF_TABLE("lru_hash", u64, struct use_t, lru, MAX_ENTRIES);   // full: the oldest key goes

BPF_ARRAY(stats, u64, 2);     // [0] events seen, [1] inserts the plain hash refused

int remember_write(struct tracepoint__syscalls__sys_enter_write *args)
{
#ifdef FILTER_UID
    int zero = 0;
    u32 *uid = filter_uid.lookup(&zero);
    if (uid == NULL || (u32)bpf_get_current_uid_gid() != *uid)
        return 0;
#endif
    u64 size = args->count;
    int idx = 0;
    u64 *events = stats.lookup(&idx);
    if (!events)
        return 0;
    u64 event = __sync_fetch_and_add(events, 1) + 1;

    // LRU hash: a lookup marks the entry as recently used; an update of a new key may evict.
    struct use_t *u = lru.lookup(&size);
    if (u) {
        __sync_fetch_and_add(&u->calls, 1);
        u->last_event = event;
    } else {
        struct use_t first = {.calls = 1, .last_event = event};
        lru.update(&size, &first);
    }

    // Plain hash: same code, but when it is full update() fails with -E2BIG.
    u = plain.lookup(&size);
    if (u) {
        __sync_fetch_and_add(&u->calls, 1);
        u->last_event = event;
    } else {
        struct use_t first = {.calls = 1, .last_event = event};
        if (plain.update(&size, &first) != 0) {
            idx = 1;
            u64 *refused = stats.lookup(&idx);
            if (refused)
                __sync_fetch_and_add(refused, 1);
        }
    }
    return 0;
}
