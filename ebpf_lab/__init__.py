"""ebpf-lab: eBPF explained cell by cell, on the kernel in front of you.

Every lesson function loads a real BPF program with BCC, runs it for a bounded time, always
detaches it, and returns a pandas DataFrame. Start with ``ebpf_lab.doctor()``: what this kernel
can and cannot do.

Lessons: :func:`hello` (trace buffer), :func:`exec_counts` (a BPF hash map),
:func:`exec_events` (perf and ring buffers). Known workloads: :mod:`ebpf_lab.workload`.
"""

from . import workload
from .doctor import doctor, supports
from .errors import BccMissing, ProgramError, UnsupportedFeature
from .exec_counts import exec_counts
from .exec_events import exec_events
from .hello import hello
from .loader import program_source, show_source
from .plots import plot_exec_rates
from .run import stop_requested

__all__ = [
    "BccMissing",
    "ProgramError",
    "UnsupportedFeature",
    "doctor",
    "exec_counts",
    "exec_events",
    "hello",
    "plot_exec_rates",
    "program_source",
    "show_source",
    "stop_requested",
    "supports",
    "workload",
]
__version__ = "0.1.0"
