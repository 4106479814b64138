"""The lessons' checkable exercises, one module per lesson (``lesson02.py``...).

Every module in this package is imported the first time :func:`ebpf_lab.check` runs; each
registers its checks with :func:`ebpf_lab.checks.exercise`. To add a lesson's exercises, add a
module here: nothing else needs to change. See :mod:`ebpf_lab.checks` for the protocol.
"""
