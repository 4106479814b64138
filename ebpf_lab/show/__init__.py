"""Showing results: ``frames`` (every frame's schema: column -> dtype), ``plots`` (every
``plot_*`` function and the projector style), ``magic`` (the ``%%ebpf`` cell magic) and the live
widget that a run draws in Jupyter.

May import: :mod:`ebpf_lab.core`, :mod:`ebpf_lab.kernel`.
"""
