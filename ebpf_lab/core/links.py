"""The core's own attachments beside BCC's records: the lab cable, its xdp and tc programs.

:func:`ebpf_lab.core.attach.attach_probe` hands ``xdp`` and ``tc`` probes to :func:`attach_xdp`
and :func:`attach_tc`: the first of a run builds the lab's private cable (:class:`CableLink`: two
network namespaces and a veth pair, :class:`~.netns.LabCable`), each attaches its program to one
end (:class:`XdpLink`, :class:`TcLink`) and checks with ``ip link`` / ``tc filter`` that the
kernel shows it. Every link is kept in :func:`links` so that
:func:`ebpf_lab.core.attach.detach_all` removes it, newest first, the cable last. A lesson finds
its cable with :func:`xdp_link` or :func:`tc_link`.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from ebpf_lab.core import netns


class CableLink:
    """The lab cable built for a run's xdp and tc probes (``cable``: the
    :class:`~.netns.LabCable`; ``pair``: the :class:`~.netns.VethPair`); detaching deletes it."""

    kind = "cable"

    def __init__(self, cable: netns.LabCable, stack: contextlib.ExitStack, pair: netns.VethPair):
        self.cable = cable
        self.stack = stack
        self.pair = pair

    def detach(self) -> None:
        """Delete both namespaces, and with them the veth pair and whatever is attached to it."""
        self.stack.close()


class XdpLink:
    """An XDP program the core attached to one end of the lab cable.

    Attributes:
        pair: the cable (:class:`ebpf_lab.core.netns.VethPair`), for the lesson's traffic.
        device: the end the program is attached to; ``namespace`` holds it.
        prog_id: the kernel's id of the attached program; ``mode``: as ``ip link`` shows it.
    """

    kind = "xdp"

    def __init__(self, bcc: Any, pair: netns.VethPair, dev: str):
        self.bcc = bcc
        self.pair = pair
        self.device = dev
        self.namespace = pair.ns_b if dev == pair.dev_b else pair.ns_a
        self.flags = int(bcc.BPF.XDP_FLAGS_SKB_MODE)
        self.attached = False
        self.prog_id: int | None = None
        self.mode = "?"

    def attrs(self) -> dict[str, Any]:
        """What a lesson's frame says about the cable and the program (``df.attrs``)."""
        p = self.pair
        return {
            "netns": [p.ns_a, p.ns_b],
            "devices": [p.dev_a, p.dev_b],
            "addresses": [p.ip_a, p.ip_b],
            "xdp_device": f"{self.device} in {self.namespace}",
            "xdp_mode": self.mode,
            "xdp_prog_id": self.prog_id,
        }

    def detach(self) -> None:
        """Remove the program from the device (the cable goes after it: :class:`CableLink`)."""
        if self.attached:
            from ebpf_lab.core.loader import capture_stderr_fd

            def remove() -> None:
                with capture_stderr_fd():
                    self.bcc.BPF.remove_xdp(self.device.encode(), self.flags)

            with contextlib.suppress(Exception):
                netns.run_in_netns(self.namespace, remove, timeout=10.0)
            self.attached = False


class TcLink:
    """A tc classifier (``SCHED_CLS``) the core attached to an end of the lab cable (``pair``):
    on ``device``'s (in ``namespace``) ``clsact`` qdisc, in ``direction``; ``prog_id``: its id."""

    kind = "tc"

    def __init__(self, pair: netns.VethPair, dev: str, direction: str):
        self.pair = pair
        self.device = dev
        self.direction = direction
        self.namespace = pair.ns_b if dev == pair.dev_b else pair.ns_a
        self.attached = False
        self.prog_id: int | None = None

    def attrs(self) -> dict[str, Any]:
        """What a lesson's frame says about the program (``df.attrs``)."""
        return {
            "tc_device": f"{self.device} in {self.namespace}",
            "tc_direction": self.direction,
            "tc_prog_id": self.prog_id,
        }

    def detach(self) -> None:
        """Delete the device's ``clsact`` qdisc, and the filter on it (the cable goes after)."""
        if self.attached:
            netns.tc_detach(self.namespace, self.device)
            self.attached = False


def links(bpf: Any) -> list[Any]:
    """What the core attached to ``bpf`` besides BCC's own records (e.g. :class:`XdpLink`)."""
    if not hasattr(bpf, "_ebpf_lab_links"):
        bpf._ebpf_lab_links = []
    return bpf._ebpf_lab_links


def xdp_link(bpf: Any) -> XdpLink:
    """The XDP attachment (and cable) of a run: ``xdp_link(ctx.bpf).pair`` is the cable."""
    found = [link for link in links(bpf) if isinstance(link, XdpLink)]
    if not found:
        raise RuntimeError("this run attached no xdp probe")
    return found[0]


def tc_link(bpf: Any, direction: str | None = None) -> TcLink:
    """The (first) tc attachment of a run, in ``direction`` if given; ``.pair`` is the cable."""
    found = [x for x in links(bpf) if isinstance(x, TcLink) and direction in (None, x.direction)]
    if not found:
        raise RuntimeError(
            f"this run attached no tc probe{f' on {direction}' if direction else ''}"
        )
    return found[0]


def _cable(bpf: Any, probe: Any) -> netns.VethPair:
    """The run's cable: built for its first xdp or tc probe, shared by the others."""
    assert probe.cable is not None
    for link in links(bpf):
        if isinstance(link, CableLink):
            if link.cable != probe.cable:
                raise ValueError(
                    f"the probes of one run share one cable; {probe.describe()} names "
                    f"{probe.cable}, another probe {link.cable}"
                )
            return link.pair
    stack = contextlib.ExitStack()
    pair = stack.enter_context(probe.cable.build())
    links(bpf).append(CableLink(probe.cable, stack, pair))  # detach_all deletes it last
    return pair


def programs_held() -> list[int]:
    """The ids of the BPF programs this process holds open (its fds, ``/proc/self/fdinfo``):
    empty once every BPF object of the process has been cleaned up."""
    ids = []
    for entry in os.listdir("/proc/self/fd"):
        prog = _prog_id(int(entry))
        if prog is not None:
            ids.append(prog)
    return sorted(ids)


def _prog_id(fd: int) -> int | None:
    """The kernel's id of the BPF program open at ``fd`` (from ``/proc/self/fdinfo``)."""
    with contextlib.suppress(OSError):
        for line in open(f"/proc/self/fdinfo/{fd}"):
            if line.startswith("prog_id:"):
                return int(line.split()[1])
    return None


def attach_xdp(bcc: Any, bpf: Any, probe: Any) -> None:
    """Build the cable, attach in generic mode inside its namespace, check with ``ip link``."""
    fn = bpf.load_func(probe.fn.encode(), bcc.BPF.XDP)  # loaded already: BCC returns it
    link = XdpLink(bcc, _cable(bpf, probe), probe.target)
    links(bpf).append(link)  # from now on detach_all removes it, whatever happens
    link.prog_id = _prog_id(fn.fd)
    netns.run_in_netns(link.namespace, _xdp_in_netns, bcc, fn, link, timeout=10.0)
    shown = netns.xdp_on(link.namespace, link.device)
    if shown.get("prog_id") != link.prog_id:
        raise RuntimeError(
            f"XDP was attached to {link.device}, but `ip link` shows {shown} "
            f"instead of program id {link.prog_id}"
        )
    link.mode = shown.get("mode", "?")


def _xdp_in_netns(bcc: Any, fn: Any, link: XdpLink) -> None:
    bcc.BPF.attach_xdp(link.device.encode(), fn, link.flags)  # raises bare Exception
    link.attached = True


def attach_tc(bcc: Any, bpf: Any, probe: Any) -> None:
    """Build (or share) the cable, attach to the end's clsact qdisc, check with ``tc filter``."""
    fn = bpf.load_func(probe.fn.encode(), bcc.BPF.SCHED_CLS)  # loaded already: BCC returns it
    dev, _, direction = probe.target.partition(":")
    link = TcLink(_cable(bpf, probe), dev, direction)
    links(bpf).append(link)  # from now on detach_all removes it, whatever happens
    link.prog_id = _prog_id(fn.fd)
    link.attached = True  # the qdisc may exist even if the filter is refused: remove it too
    netns.tc_attach(link.namespace, dev, direction, fn.fd, probe.fn)
    shown = [f["prog_id"] for f in netns.tc_on(link.namespace, dev, direction)]
    if shown != [link.prog_id]:
        raise RuntimeError(
            f"the tc program was attached to {dev} {direction}, but `tc filter show` lists "
            f"program ids {shown} instead of {link.prog_id}"
        )
