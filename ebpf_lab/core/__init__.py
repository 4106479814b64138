"""The core: one bounded run that every lesson goes through.

``run`` (``bounded_run``, ``Collector``, ``Alternative``: load, attach, poll, always detach),
``external`` (a tool that loads its own programs, run in place of BCC's) + ``bpftrace`` (a
bpftrace script as such a tool, its JSON output read back for the lessons' frames),
``attach`` (the kinds of attach point, usdt included) + ``links`` (the lab cable and the xdp
and tc programs the core attaches to it), ``loader`` + ``compile_cache`` (BCC compiles, program
sources, the one ``LabBPF`` class), ``verdict`` (the verifier's verdict on a program loaded
without attaching) + ``program_log`` (its log read against the learner's lines), ``guards``
(argument checks raised before anything loads, the BCC check), ``errors``, ``live`` (a run's
progress and Stop), ``replay`` (the hook through which a recording answers a run instead of the
kernel), ``kernelfs`` (the facts the core reads from /proc and /sys), and every kernel object the
lab creates by name: ``tracefs`` (private trace instances), ``netns`` (lab
namespaces and veth pairs), ``leftovers`` (reaping those of killed processes).

May import: the standard library, bcc, pandas, numpy, IPython/ipywidgets (lazily). Nothing else
of ``ebpf_lab``: every other layer builds on this one.
"""
