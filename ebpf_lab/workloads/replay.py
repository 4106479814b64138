"""The one place the workloads reach record/replay: :func:`replayable` marks a workload whose
result a recording saves, and returns instead of running when a recording is replayed."""

from ebpf_lab.classroom.recordings import replayable  # noqa: F401  (core.replay hook at merge)
