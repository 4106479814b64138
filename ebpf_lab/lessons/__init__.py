"""The lessons, one folder each, named after the notebook: ``l02_maps/`` holds lesson 02's
Python (``exec_counts.py``, ``counter_race.py``), its BPF C (``*.bpf.c``) and its exercise checks
(``exercises.py``). :mod:`ebpf_lab.classroom.registry` lists them; importing this package
registers every lesson's checks.

May import every layer below: core, kernel, workloads, show, classroom. Never another lesson.
"""

from ebpf_lab.lessons.l01_hello import exercises as _e01
from ebpf_lab.lessons.l02_maps import exercises as _e02
from ebpf_lab.lessons.l03_perf_buffer import exercises as _e03
from ebpf_lab.lessons.l04_verifier import exercises as _e04
from ebpf_lab.lessons.l05_maps import exercises as _e05
from ebpf_lab.lessons.l06_helpers import exercises as _e06
from ebpf_lab.lessons.l07_attach_points import exercises as _e07
from ebpf_lab.lessons.l08_data_transfer import exercises as _e08
from ebpf_lab.lessons.l09_tracing import exercises as _e09
from ebpf_lab.lessons.l10_networking import exercises as _e10
from ebpf_lab.lessons.l11_security import exercises as _e11
from ebpf_lab.lessons.l12_performance import exercises as _e12
from ebpf_lab.lessons.l13_bpftool import exercises as _e13
from ebpf_lab.lessons.l15_core_libbpf import exercises as _e15

#: each lesson's checks, registered with :mod:`ebpf_lab.classroom.checks` as they are imported
EXERCISE_MODULES = (
    _e01,
    _e02,
    _e03,
    _e04,
    _e05,
    _e06,
    _e07,
    _e08,
    _e09,
    _e10,
    _e11,
    _e12,
    _e13,
    _e15,
)
