// 06.1: at every exec, one random number from the kernel's PRNG, modulo 10, into ten buckets.
BPF_HISTOGRAM(dist, int, 10);

int fn(void *ctx)
{
    int bucket = bpf_get_prandom_u32() % 10;

    dist.atomic_increment(bucket);
    return 0;
}
