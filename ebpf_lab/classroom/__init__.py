"""The classroom: ``checks`` (exercises that check themselves), ``recordings`` (record, replay,
save, load: a lesson on a machine that cannot run eBPF) and ``registry`` (every lesson: its
notebook, folder, programs, exercises, solutions and kernel needs).

May import: :mod:`ebpf_lab.core`, :mod:`ebpf_lab.kernel`, :mod:`ebpf_lab.workloads`,
:mod:`ebpf_lab.show`. The lessons build on it (their exercises register with ``checks``).
"""
