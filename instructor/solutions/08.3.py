"""08.3: how many events of 16, 12 and 40 bytes a one-page BPF ring buffer keeps when nobody
reads it.

Check with: ebpf_lab.check("08.3", answer)

Every record in a BPF ring buffer starts with an 8-byte header (its length and flags, and where
its page is), and the next record starts at a multiple of 8 bytes. So an event of n bytes takes
round_up(n + 8, 8) bytes: 16 -> 24, 12 -> 24 (a 12-byte event is no cheaper than a 16-byte one),
40 -> 48. Nothing is freed until user space consumes, so the ring keeps page // record events
and refuses every later one (ringbuf_reserve() returns NULL).
"""

import os

PAGE = os.sysconf("SC_PAGE_SIZE")  # 4096 on x86-64


def record(n):
    return (n + 8 + 7) // 8 * 8


answer = {n: PAGE // record(n) for n in (16, 12, 40)}
