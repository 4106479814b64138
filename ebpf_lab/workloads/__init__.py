"""Known workloads: things to do while a program is attached, that say exactly what they did.

A lesson's count is only convincing next to the truth. These helpers perform a known amount of
work and return a record of it, so a notebook (or a test) can compare what the kernel saw with
what really happened::

    done = {}
    df = ebpf_lab.exec_counts(duration=3, workload=lambda: done.update(plan=execs({1000: 5})))

Long workloads check :func:`ebpf_lab.core.run.stop_requested` between steps, so Stop and
interrupts end them promptly. Bad arguments raise ValueError before anything is started.

May import: :mod:`ebpf_lab.core`, :mod:`ebpf_lab.kernel`, :mod:`ebpf_lab.show` (frame schemas).

Processes and execs (:mod:`.processes`):
    :func:`execs` (programs run as chosen UIDs), :func:`unused_uid` (a UID nobody uses),
    :func:`thread_comm` (the calling thread's comm), :func:`on_cpu` (work pinned to a CPU).

File I/O (:mod:`.fileio`):
    :func:`writes`, :func:`reads` (calls of chosen sizes, as a UID, on a CPU),
    :func:`opens_child` (known open() calls; :class:`OpensChild`, :func:`opens_argv`),
    :func:`read_stream_child` (dd: one-byte reads, fast).

CPU load and system-call loops (:mod:`.cpu`):
    :func:`getppid_child`, :func:`spin_child`, :func:`mixed_cpu_child` (a user-space and a
    kernel tower), :func:`busy_children` (children competing for CPUs).

Gated children (:mod:`.gated`):
    :class:`GatedChild` (stopped before its work, so probes can aim at its pid),
    :class:`ReportingChild`, :func:`run_together` (several released at once).

The C helpers (:mod:`.c_helpers`, built by :mod:`.native`):
    :func:`fast_execs`, :func:`getppid_loop` (several CPUs at once), :func:`read_loop_child`
    (threaded one-byte reads; :class:`ReadLoopChild`).

Limits and checks (:mod:`.checks`): ``MAX_*``, :func:`check_cpus`, :func:`check_threads`.
"""

from ebpf_lab.workloads.c_helpers import (
    ReadLoopChild,
    fast_execs,
    getppid_loop,
    read_loop_child,
)
from ebpf_lab.workloads.checks import (
    MAX_BUSY_CHILDREN,
    MAX_CALLS,
    MAX_EXECS,
    MAX_GETPPID_CALLS,
    MAX_IO_SIZE,
    MAX_LOOP_CPUS,
    MAX_OPENS,
    MAX_READ_THREADS,
    MAX_SPIN_SECONDS,
    MAX_STREAM_READS,
    check_cpus,
    check_threads,
)
from ebpf_lab.workloads.cpu import busy_children, getppid_child, mixed_cpu_child, spin_child
from ebpf_lab.workloads.fileio import (
    OpensChild,
    opens_argv,
    opens_child,
    read_stream_child,
    reads,
    writes,
)
from ebpf_lab.workloads.gated import GatedChild, ReportingChild, run_together
from ebpf_lab.workloads.processes import execs, on_cpu, thread_comm, unused_uid

__all__ = [
    "MAX_BUSY_CHILDREN",
    "MAX_CALLS",
    "MAX_EXECS",
    "MAX_GETPPID_CALLS",
    "MAX_IO_SIZE",
    "MAX_LOOP_CPUS",
    "MAX_OPENS",
    "MAX_READ_THREADS",
    "MAX_SPIN_SECONDS",
    "MAX_STREAM_READS",
    "GatedChild",
    "OpensChild",
    "ReadLoopChild",
    "ReportingChild",
    "busy_children",
    "check_cpus",
    "check_threads",
    "execs",
    "fast_execs",
    "getppid_child",
    "getppid_loop",
    "mixed_cpu_child",
    "on_cpu",
    "opens_argv",
    "opens_child",
    "read_loop_child",
    "read_stream_child",
    "reads",
    "run_together",
    "spin_child",
    "thread_comm",
    "unused_uid",
    "writes",
]
