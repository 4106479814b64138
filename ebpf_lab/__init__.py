"""ebpf-lab: eBPF explained cell by cell, on the kernel in front of you.

Every lesson function loads a real BPF program with BCC, runs it for a bounded time, always
detaches it, and returns a pandas DataFrame. Start with ``ebpf_lab.doctor()``: what this kernel
can and cannot do.

Lessons: :func:`hello` (trace buffer), :func:`exec_counts` (a BPF hash map),
:func:`counter_race` (counters that several CPUs update at once), :func:`exec_events` (perf
and ring buffers), :func:`core_exec_events` (the same events from a CO-RE object that libbpf
loads). Known workloads: :mod:`ebpf_lab.workloads`.
"""

from ebpf_lab import workloads as workload
from ebpf_lab.classroom import recordings
from ebpf_lab.classroom.checks import CheckResult, check
from ebpf_lab.classroom.recordings import load, record, replay, save
from ebpf_lab.core.errors import BccMissing, ProgramError, UnsupportedFeature
from ebpf_lab.core.loader import program_source, show_source
from ebpf_lab.core.run import stop_requested
from ebpf_lab.kernel.doctor import doctor, supports
from ebpf_lab.lessons.l01_hello.hello import hello
from ebpf_lab.lessons.l02_maps.counter_race import counter_race
from ebpf_lab.lessons.l02_maps.exec_counts import exec_counts
from ebpf_lab.lessons.l03_perf_buffer.exec_events import exec_events
from ebpf_lab.lessons.l04_verifier.verifier import VerifyResult, disassemble, program_facts, verify
from ebpf_lab.lessons.l05_maps.maps import (
    lru_survivors,
    map_counts,
    size_histogram,
    user_space_updates,
)
from ebpf_lab.lessons.l06_helpers.helper_calls import helper_calls, helper_support
from ebpf_lab.lessons.l07_attach_points.attach_points import attach_points, count_at
from ebpf_lab.lessons.l08_data_transfer.transfer import (
    buffer_comparison,
    stream_events,
    transfer_rates,
    transfer_summary,
)
from ebpf_lab.lessons.l09_tracing.syscall_latency import (
    open_latency,
    tracing_cost,
)
from ebpf_lab.lessons.l10_networking.tc_egress import tc_egress
from ebpf_lab.lessons.l10_networking.xdp_firewall import (
    firewall_traffic,
    xdp_firewall,
)
from ebpf_lab.lessons.l11_security.exec_watch import exec_deny, exec_watch, lsm_status
from ebpf_lab.lessons.l12_performance.profile import (
    cpu_profile,
    run_queue_latency,
    top_functions,
)
from ebpf_lab.lessons.l15_core_libbpf.core_events import core_exec_events, core_relocations
from ebpf_lab.show.plots import (
    plot_counter_race,
    plot_exec_rates,
    plot_firewall,
    plot_flame,
    plot_latency_histogram,
    plot_log2_histogram,
    plot_tracing_cost,
)

__all__ = [
    "BccMissing",
    "CheckResult",
    "ProgramError",
    "UnsupportedFeature",
    "VerifyResult",
    "attach_points",
    "buffer_comparison",
    "check",
    "core_exec_events",
    "core_relocations",
    "count_at",
    "counter_race",
    "cpu_profile",
    "disassemble",
    "doctor",
    "exec_counts",
    "exec_deny",
    "exec_events",
    "exec_watch",
    "firewall_traffic",
    "hello",
    "helper_calls",
    "helper_support",
    "load",
    "lru_survivors",
    "lsm_status",
    "map_counts",
    "open_latency",
    "plot_counter_race",
    "plot_exec_rates",
    "plot_firewall",
    "plot_flame",
    "plot_latency_histogram",
    "plot_log2_histogram",
    "plot_tracing_cost",
    "program_facts",
    "program_source",
    "record",
    "recordings",
    "replay",
    "run_queue_latency",
    "save",
    "show_source",
    "size_histogram",
    "stop_requested",
    "stream_events",
    "supports",
    "tc_egress",
    "top_functions",
    "tracing_cost",
    "transfer_rates",
    "transfer_summary",
    "user_space_updates",
    "verify",
    "workload",
    "xdp_firewall",
]
__version__ = "0.1.0"


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext ebpf_lab``: register the ``%%ebpf`` cell magic (:mod:`ebpf_lab.show.magic`)."""
    from ebpf_lab.show.magic import load_ipython_extension as load

    load(ipython)
