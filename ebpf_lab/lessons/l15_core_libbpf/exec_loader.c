// exec_loader.c: the user-space half of exec_core.bpf.c, built on libbpf's generated skeleton.
//
// Opens, loads and attaches the object embedded in exec_core.skel.h (`bpftool gen skeleton`),
// prints "ready", then one line per ring buffer record on stdout until SIGINT or SIGTERM:
//
//     E <ktime_ns> <pid> <ppid> <uid> <command> <filename>      (tab-separated)
//
// Strings are escaped (\\, \t, \n and any byte outside printable ASCII as \xHH), so a line is
// always one record. At the end it prints "D <records dropped>". With -v, libbpf's debug
// messages go to stderr: among them the CO-RE relocations it applied.

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include "exec_core.skel.h"

#define FILENAME_LEN 256

struct event {                 // the same layout as in exec_core.bpf.c
    __u64 ktime_ns;
    __u32 pid;
    __u32 ppid;
    __u32 uid;
    char command[16];
    char filename[FILENAME_LEN];
};

static volatile sig_atomic_t stop;
static int verbose;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static int print_libbpf(enum libbpf_print_level level, const char *fmt, va_list args)
{
    if (level == LIBBPF_DEBUG && !verbose)
        return 0;
    return vfprintf(stderr, fmt, args);
}

static void put_escaped(const char *s, size_t max)
{
    for (size_t i = 0; i < max && s[i]; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\\')
            fputs("\\\\", stdout);
        else if (c == '\t')
            fputs("\\t", stdout);
        else if (c == '\n')
            fputs("\\n", stdout);
        else if (c < 0x20 || c > 0x7e)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
}

static int on_event(void *ctx, void *data, size_t size)
{
    const struct event *e = data;
    (void)ctx;
    if (size < sizeof(*e))
        return 0;
    printf("E\t%llu\t%u\t%u\t%u\t", (unsigned long long)e->ktime_ns, e->pid, e->ppid, e->uid);
    put_escaped(e->command, sizeof(e->command));
    putchar('\t');
    put_escaped(e->filename, sizeof(e->filename));
    putchar('\n');
    return 0;
}

int main(int argc, char **argv)
{
    struct exec_core_bpf *skel;
    struct ring_buffer *rb = NULL;
    __u32 zero = 0;
    __u64 dropped = 0;
    int err;

    verbose = argc > 1 && strcmp(argv[1], "-v") == 0;
    libbpf_set_print(print_libbpf);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    skel = exec_core_bpf__open_and_load();  // CO-RE relocations are applied here
    if (!skel) {
        fprintf(stderr, "exec_loader: opening or loading the BPF object failed: %s\n",
                strerror(errno));
        return 1;
    }
    err = exec_core_bpf__attach(skel);
    if (err) {
        fprintf(stderr, "exec_loader: attaching failed: %s\n", strerror(-err));
        goto out;
    }
    rb = ring_buffer__new(bpf_map__fd(skel->maps.events), on_event, NULL, NULL);
    if (!rb) {
        err = -errno;
        fprintf(stderr, "exec_loader: opening the ring buffer failed: %s\n", strerror(errno));
        goto out;
    }
    printf("ready\n");
    fflush(stdout);
    while (!stop) {
        err = ring_buffer__poll(rb, 100);  // milliseconds
        if (err == -EINTR) {
            err = 0;
            break;
        }
        if (err < 0) {
            fprintf(stderr, "exec_loader: polling the ring buffer failed: %s\n", strerror(-err));
            break;
        }
        fflush(stdout);
        err = 0;
    }
    ring_buffer__consume(rb);  // what arrived after the last poll
    bpf_map_lookup_elem(bpf_map__fd(skel->maps.dropped), &zero, &dropped);
    printf("D\t%llu\n", (unsigned long long)dropped);
    fflush(stdout);
out:
    ring_buffer__free(rb);
    exec_core_bpf__destroy(skel);
    return err ? 1 : 0;
}
