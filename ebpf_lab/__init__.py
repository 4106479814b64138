"""ebpf-lab: eBPF explained cell by cell, on the kernel in front of you.

Every lesson function loads a real BPF program with BCC, runs it for a bounded time, always
detaches it, and returns a pandas DataFrame. Start with ``ebpf_lab.doctor()``: what this kernel
can and cannot do.

Lessons: :func:`hello` (trace buffer), :func:`exec_counts` (a BPF hash map),
:func:`counter_race` (counters that several CPUs update at once), :func:`exec_events` (perf
and ring buffers). Known workloads: :mod:`ebpf_lab.workload`.
"""

from . import recordings, workload
from .attach_points import attach_points, count_at
from .checks import CheckResult, check
from .counter_race import counter_race
from .doctor import doctor, supports
from .errors import BccMissing, ProgramError, UnsupportedFeature
from .exec_counts import exec_counts
from .exec_events import exec_events
from .exec_watch import exec_deny, exec_watch, lsm_status
from .hello import hello
from .helper_calls import helper_calls, helper_support
from .loader import program_source, show_source
from .maps import (
    lru_survivors,
    map_counts,
    plot_log2_histogram,
    size_histogram,
    user_space_updates,
)
from .plots import plot_counter_race, plot_exec_rates
from .profile import cpu_profile, plot_flame, run_queue_latency, top_functions
from .recordings import load, record, replay, save
from .run import stop_requested
from .syscall_latency import (
    open_latency,
    plot_latency_histogram,
    plot_tracing_cost,
    tracing_cost,
)
from .transfer import buffer_comparison, stream_events, transfer_rates, transfer_summary
from .verifier import VerifyResult, disassemble, program_facts, verify
from .xdp_firewall import firewall_traffic, plot_firewall, xdp_firewall

__all__ = [
    "BccMissing",
    "CheckResult",
    "ProgramError",
    "UnsupportedFeature",
    "VerifyResult",
    "attach_points",
    "buffer_comparison",
    "check",
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
    """``%load_ext ebpf_lab``: register the ``%%ebpf`` cell magic (see :mod:`ebpf_lab.magic`)."""
    from .magic import load_ipython_extension as load

    load(ipython)
