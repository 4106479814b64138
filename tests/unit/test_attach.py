"""The attach kinds' pure parts (no root, no kernel): argument checks, BCC's autoload records,
and the order and completeness of :func:`ebpf_lab.core.attach.detach_all`."""

from __future__ import annotations

import pytest

from ebpf_lab.core import attach, netns
from ebpf_lab.core.attach import Probe


class FakeBcc:
    """The program-type constants of ``bcc.BPF`` the core asks for."""

    class BPF:
        KPROBE, TRACEPOINT, XDP, PERF_EVENT, RAW_TRACEPOINT, TRACING, LSM = 2, 5, 6, 7, 17, 26, 29


class FakeBPF:
    """BCC's attach records, as ``bcc.BPF`` keeps them, and what detaching removed."""

    def __init__(self, **records):
        self.kprobe_fds = records.get("kprobe_fds", {})
        self.uprobe_fds = {}
        self.tracepoint_fds = records.get("tracepoint_fds", {})
        self.raw_tracepoint_fds = {}
        self.kfunc_entry_fds = records.get("kfunc_entry_fds", {})
        self.kfunc_exit_fds = {}
        self.lsm_fds = records.get("lsm_fds", {})
        self.open_perf_events = {}
        self.log = []

    def detach_tracepoint(self, tp):
        self.log.append(("tracepoint", tp))
        raise Exception("refused (simulated)")  # bcc raises bare Exception

    def detach_lsm(self, fn):
        self.log.append(("lsm", fn))
        del self.lsm_fds[fn]


def test_lsm_probe_runs_the_function_lsm_probe_names():
    probe = Probe("lsm", "bprm_check_security", "lsm__bprm_check_security")
    assert attach.prog_type(FakeBcc, probe) == FakeBcc.BPF.LSM
    with pytest.raises(ValueError, match="lsm__bprm_check_security"):
        Probe("lsm", "bprm_check_security", "deny")


@pytest.mark.parametrize(
    "fn,kind",
    [
        ("tracepoint__sched__sched_process_exec", "TRACEPOINT"),
        ("raw_tracepoint__sched_switch", "RAW_TRACEPOINT"),
        ("kprobe__vfs_read", "KPROBE"),
        ("kfunc__vmlinux__vfs_read", "TRACING"),
        ("lsm__file_open", "LSM"),
    ],
)
def test_autoload_probe_is_loaded_as_bcc_loads_it(fn, kind):
    assert attach.prog_type(FakeBcc, Probe("autoload", "x", fn)) == getattr(FakeBcc.BPF, kind)


def test_autoload_probe_needs_a_name_bcc_attaches():
    with pytest.raises(ValueError, match="on_exec"):
        Probe("autoload", "execve", "on_exec")


def test_xdp_probe_goes_on_the_lab_cable():
    probe = Probe("xdp", "veth-b", "xdp_firewall")
    assert probe.cable == netns.LabCable()
    assert probe.cable.names(42) == ("ebpf-lab-fwa-42", "ebpf-lab-fwb-42")
    with pytest.raises(ValueError, match="eth0"):
        Probe("xdp", "eth0", "xdp_firewall")
    with pytest.raises(ValueError, match="LabCable"):
        Probe("xdp", "veth-b", "xdp_firewall", cable="ebpf-lab-fwb-42")


def test_bcc_records_say_what_it_attached_while_compiling():
    bpf = FakeBPF(
        lsm_fds={b"lsm__bprm_check_security": 7},
        tracepoint_fds={b"sched:sched_process_exec": 8},
        kprobe_fds={b"p___x64_sys_execve": {b"kprobe__sys_execve": 9}},
        kfunc_entry_fds={b"kfunc__vmlinux__vfs_read": 10},
    )
    for fn in (
        "lsm__bprm_check_security",
        "tracepoint__sched__sched_process_exec",
        "kprobe__sys_execve",
        "kfunc__vmlinux__vfs_read",
    ):
        assert attach._bcc_attached(bpf, fn), fn
    for fn in ("lsm__file_open", "tracepoint__sched__sched_switch", "kprobe__vfs_read"):
        assert not attach._bcc_attached(bpf, fn), fn


def test_detach_all_runs_every_step_newest_link_first_and_raises_the_first_failure():
    bpf = FakeBPF(tracepoint_fds={b"sched:sched_switch": 3}, lsm_fds={b"lsm__file_open": 4})

    class Link:
        def __init__(self, name):
            self.name = name

        def detach(self):
            bpf.log.append(("link", self.name))

    attach.links(bpf).extend([Link("older"), Link("newer")])
    with pytest.raises(Exception, match="simulated"):
        attach.detach_all(bpf)
    assert bpf.log == [
        ("link", "newer"),
        ("link", "older"),
        ("tracepoint", b"sched:sched_switch"),
        ("lsm", b"lsm__file_open"),  # still detached after the tracepoint's failure
    ]
    assert attach.links(bpf) == [] and bpf.lsm_fds == {}


def test_one_probe_and_sys_enter_build_the_single_alternative():
    (alt,) = attach.sys_enter("getppid", "count_getppid")
    assert alt == attach.Alternative(
        "tracepoint",
        [Probe("tracepoint", "syscalls:sys_enter_getppid", "count_getppid")],
        "getppid() calls: the syscalls:sys_enter_getppid tracepoint",
    )
    (up,) = attach.one_probe("uprobe", "c:getpid", "on_getpid", "mine", pid=42, label="u")
    assert (up.label, up.reason, up.probes) == (
        "u",
        "mine",
        [Probe("uprobe", "c:getpid", "on_getpid", pid=42)],
    )
    with pytest.raises(ValueError, match="probe kind"):
        attach.one_probe("kprobes", "vfs_read", "fn")


def test_uid_filter_fills_the_map_not_the_text():
    from ebpf_lab.core.collectors import uid_filter

    assert uid_filter(None) == ([], {})
    assert uid_filter(1234) == (["-DFILTER_UID"], {"filter_uid": {0: 1234}})
    with pytest.raises(ValueError, match="a UID must be a whole number"):
        uid_filter(-1)


def test_the_shared_argument_checks_say_what_to_give():
    from ebpf_lab.core.guards import check_required_int, check_whole

    assert check_whole(0, "missing", 0, 5) == 0
    for bad in (-1, 6, True, 2.0, "3"):
        with pytest.raises(
            ValueError, match=f"missing must be a whole number from 0 to 5, got {bad!r}"
        ):
            check_whole(bad, "missing", 0, 5)
    assert check_required_int(7, "calls", 10, 3) == 7
    with pytest.raises(ValueError, match="calls must be a positive whole number, e.g. 3, got None"):
        check_required_int(None, "calls", 10, 3)
    with pytest.raises(ValueError, match="calls=11 is more than the limit of 10"):
        check_required_int(11, "calls", 10, 3)
    with pytest.raises(ValueError, match="calls must be a positive whole number, e.g. 3, got 0"):
        check_required_int(0, "calls", 10, 3)
