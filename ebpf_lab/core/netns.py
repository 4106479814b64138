"""Throw-away network namespaces: attach XDP and tc programs without touching the host.

A network namespace is a private copy of the network stack: its own interfaces (at first only a
``lo`` that is down), routes and sockets. Attaching XDP to the ``lo`` of a fresh namespace cannot
disturb the machine's real traffic, and deleting the namespace takes everything in it away.

The pieces:

- :func:`temporary_netns`: a context manager that creates a named namespace with
  ``ip netns add`` (by default bringing its ``lo`` up) and always deletes it on exit.
- :func:`run_in_netns`: runs a callable in a worker thread that has entered the namespace with
  ``setns(2)``. Only that thread switches; the rest of the process (a Jupyter kernel, say) stays
  in its own namespace. Sockets and netlink calls made by the callable live in the namespace.
- :func:`socket_in`: a socket created inside a namespace. A socket belongs to the namespace it
  was created in for its whole life, so any thread may use it afterwards.
- :func:`veth_pair`: two throw-away namespaces joined by a veth pair (a virtual cable), with
  addresses from a reserved test range, IPv6 off and static neighbour entries, so the only
  packets on the cable are the ones a lesson sends. Deleted afterwards, always.
- :class:`LabCable`: the cable an ``xdp`` or ``tc`` probe asks the core for (namespaces named
  after the process, so the next run removes a killed run's); :func:`xdp_on`: what ``ip link``
  says is attached to a device by XDP.
- :func:`tc_attach` / :func:`tc_detach`: a BPF classifier (``BPF_PROG_TYPE_SCHED_CLS``) on a
  device's ``clsact`` qdisc, in one direction (``ingress`` or ``egress``), given the loaded
  program's file descriptor (rtnetlink, as ``tc filter add ... bpf da`` does: no pinned file);
  :func:`tc_on`: what ``tc filter show`` says is attached.

Example (as root)::

    from ebpf_lab.core import netns

    with netns.temporary_netns("ebpf-lab-demo") as name:
        print(netns.run_in_netns(name, lambda: open("/proc/net/dev").read()))
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import ipaddress
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")

#: where ``ip netns add`` bind-mounts named namespaces
NETNS_DIR = Path("/run/netns")
#: ``setns(2)`` flag for a network namespace
CLONE_NEWNET = 0x40000000

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_libc: Any = None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(
            f"bad network namespace name {name!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name


def _iproute2(tool: str, *args: str) -> str:
    """Run iproute2's ``tool ARGS`` (``ip``, ``tc``) and return its stdout; raise RuntimeError
    with the tool's own message."""
    path = shutil.which(tool) or f"/usr/sbin/{tool}"
    try:
        proc = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
    except FileNotFoundError:
        raise RuntimeError(
            f"the `{tool}` command (iproute2) is not installed: `sudo apt-get install iproute2`"
        ) from None
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        raise RuntimeError(f"`{tool} {' '.join(args)}` failed: {message}")
    return proc.stdout


def _ip(*args: str) -> str:
    """Run ``ip ARGS`` and return its stdout; raise RuntimeError with ip's own message."""
    return _iproute2("ip", *args)


def list_netns() -> list[str]:
    """Names of the named network namespaces (those ``ip netns list`` shows)."""
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def exists(name: str) -> bool:
    """Whether a named network namespace ``name`` exists."""
    return (NETNS_DIR / _check_name(name)).exists()


def create(name: str, *, loopback_up: bool = True) -> None:
    """Create the named network namespace ``name`` (``ip netns add``), optionally with ``lo`` up."""
    _ip("netns", "add", _check_name(name))
    if loopback_up:
        try:
            _ip("-n", name, "link", "set", "lo", "up")
        except Exception:
            with contextlib.suppress(Exception):
                delete(name)
            raise


def delete(name: str) -> None:
    """Delete the named network namespace ``name`` (``ip netns del``); no error if it is gone."""
    if exists(name):
        _ip("netns", "del", name)


@contextlib.contextmanager
def temporary_netns(name: str, *, loopback_up: bool = True) -> Iterator[str]:
    """Create network namespace ``name`` for the ``with`` block and always delete it afterwards.

    Args:
        name: the namespace's name; it must not exist yet (put your pid in it to stay unique).
        loopback_up: bring the namespace's ``lo`` up, so 127.0.0.1 works inside it.

    Yields:
        ``name``, for :func:`run_in_netns`.
    """
    if exists(name):
        raise RuntimeError(
            f"network namespace {name!r} already exists; delete it with `sudo ip netns del {name}`"
        )
    create(name, loopback_up=loopback_up)
    try:
        yield name
    finally:
        delete(name)


def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
    """Move the calling *thread* into the namespace open at ``fd`` (libc ``setns(2)``).

    Python 3.12 has ``os.setns``; this works on older Pythons too.
    """
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def run_in_netns(
    name: str, fn: Callable[..., T], *args: Any, timeout: float = 30.0, **kwargs: Any
) -> T:
    """Call ``fn(*args, **kwargs)`` in a worker thread inside network namespace ``name``.

    Only the worker thread enters the namespace (with ``setns``); it returns to the process's
    namespace before it ends. ``fn``'s return value is returned, and its exception re-raised here.

    Raises:
        TimeoutError: ``fn`` did not finish within ``timeout`` seconds (the thread is abandoned).
    """
    path = NETNS_DIR / _check_name(name)
    outcome: dict[str, Any] = {}

    def worker() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    setns(target)
                finally:
                    os.close(target)
                try:
                    outcome["result"] = fn(*args, **kwargs)
                finally:
                    setns(own)
            finally:
                os.close(own)
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name=f"netns-{name}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"the call inside network namespace {name!r} took over {timeout} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def socket_in(
    name: str, family: int = socket.AF_INET, type: int = socket.SOCK_STREAM, proto: int = 0
) -> socket.socket:
    """A new socket that lives in network namespace ``name`` (created there by a worker thread).

    A socket stays in the namespace it was created in, whichever thread uses it later: bind,
    connect, send and receive all happen in ``name``. Close it as usual.
    """
    return run_in_netns(name, socket.socket, family, type, proto, timeout=10.0)


#: address ranges reserved for documentation and benchmarking (RFC 5737, RFC 2544): never routed
#: on the internet, so a test that uses them cannot reach a real host by mistake
TEST_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("198.18.0.0/15", "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
)

_DEV_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


@dataclass(frozen=True)
class VethPair:
    """Two network namespaces joined by a veth pair: ``dev_a`` (in ``ns_a``) <-> ``dev_b``.

    Attributes:
        ns_a, ns_b: the namespaces' names (for :func:`run_in_netns`, :func:`socket_in`,
            ``ip -n``).
        dev_a, dev_b: the two ends of the cable, one in each namespace.
        ip_a, ip_b: their IPv4 addresses (without the prefix length).
        mac_a, mac_b: their MAC addresses.
        prefix_len: the subnet's prefix length (e.g. 30).
    """

    ns_a: str
    ns_b: str
    dev_a: str
    dev_b: str
    ip_a: str
    ip_b: str
    mac_a: str
    mac_b: str
    prefix_len: int


def _check_test_addresses(address_a: str, address_b: str) -> tuple[ipaddress.IPv4Interface, ...]:
    try:
        a = ipaddress.IPv4Interface(address_a)
        b = ipaddress.IPv4Interface(address_b)
    except (ipaddress.AddressValueError, ipaddress.NetmaskValueError, ValueError) as exc:
        raise ValueError(
            f"veth addresses must be IPv4 'address/prefix', e.g. '198.18.0.1/30': {exc}"
        ) from None
    for iface in (a, b):
        if not any(iface.network.subnet_of(net) for net in TEST_NETWORKS):
            raise ValueError(
                f"{iface} is not inside a reserved test range "
                f"({', '.join(map(str, TEST_NETWORKS))}); the lab only uses those"
            )
    if a.network != b.network or a.ip == b.ip:
        raise ValueError(f"{a} and {b} must be two different addresses in one subnet")
    return a, b


def _write_sysctl(path: str, value: str) -> bool:
    """Write a /proc/sys file as seen from the calling thread's namespace; False if absent."""
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        return False
    return True


def _ipv6_off() -> None:
    """Switch IPv6 off in the calling thread's (fresh) namespace.

    ``/proc/sys/net`` shows the namespace of the thread that opens it. As a guard against ever
    changing the host's settings, this refuses unless the namespace it sees is a fresh one (no
    interface but ``lo`` yet).
    """
    conf = "/proc/sys/net/ipv6/conf"
    try:
        names = set(os.listdir(conf))
    except FileNotFoundError:
        return  # a kernel without IPv6: nothing to switch off
    if names - {"all", "default", "lo"}:
        raise RuntimeError(
            f"refusing to change IPv6 settings: {conf} lists {sorted(names)}, "
            "not a fresh namespace with only lo"
        )
    for scope in ("all", "default"):
        _write_sysctl(f"{conf}/{scope}/disable_ipv6", "1")


def _wait_operstate_up(links: list[tuple[str, str]], timeout: float = 3.0) -> None:
    """Wait (at most ``timeout`` s) until each ``(namespace, device)`` reports operstate UP.

    The kernel marks a link's carrier UP a moment after ``ip link set up`` (its link watch runs
    asynchronously); waiting makes what ``ip`` shows right after creation match what is true.
    """
    deadline = time.monotonic() + timeout
    pending = list(links)
    while pending and time.monotonic() < deadline:
        ns, dev = pending[0]
        info = json.loads(_ip("-n", ns, "-j", "link", "show", "dev", dev) or "[]")
        if info and info[0].get("operstate") == "UP":
            pending.pop(0)
        else:
            time.sleep(0.02)


@contextlib.contextmanager
def veth_pair(
    ns_a: str,
    ns_b: str,
    *,
    dev_a: str = "veth-a",
    dev_b: str = "veth-b",
    address_a: str = "198.18.0.1/30",
    address_b: str = "198.18.0.2/30",
    mac_a: str = "02:00:c6:12:00:01",
    mac_b: str = "02:00:c6:12:00:02",
    static_neighbours: bool = True,
    ipv6: bool = False,
) -> Iterator[VethPair]:
    """Two fresh namespaces joined by a veth pair, for the ``with`` block; always deleted after.

    Nothing touches the host's interfaces: the pair is created inside ``ns_a`` with its peer
    moved straight into ``ns_b`` (``ip -n ns_a link add ... peer ... netns ns_b``), and deleting
    the namespaces takes the cable with them. The cable carries only what the caller sends:

    * IPv6 is switched off in both namespaces (no router solicitations, no duplicate address
      detection, no multicast listener reports);
    * with ``static_neighbours`` each side knows the other's MAC address in advance
      (``nud permanent``), so no ARP requests are needed either.

    Args:
        ns_a, ns_b: names of the two namespaces; neither may exist yet.
        dev_a, dev_b: interface names of the two ends (at most 15 characters).
        address_a, address_b: IPv4 ``address/prefix`` for each end, in one subnet inside a
            reserved test range (:data:`TEST_NETWORKS`).
        mac_a, mac_b: the ends' MAC addresses (locally administered by default).
        static_neighbours: pre-fill each side's neighbour (ARP) table with the other.
        ipv6: leave IPv6 on (it then adds its own packets to the cable).

    Yields:
        A :class:`VethPair` describing both ends.

    Raises:
        ValueError: a bad name or address (before anything is created).
        RuntimeError: an ``ip`` command failed (everything created so far is deleted).
    """
    _check_name(ns_a)
    _check_name(ns_b)
    if ns_a == ns_b:
        raise ValueError("the two ends need two different namespaces")
    for dev in (dev_a, dev_b):
        if not isinstance(dev, str) or not _DEV_RE.match(dev):
            raise ValueError(f"bad interface name {dev!r}: 1-15 letters, digits, '.', '_', '-'")
    a, b = _check_test_addresses(address_a, address_b)
    with contextlib.ExitStack() as stack:
        stack.enter_context(temporary_netns(ns_a))
        stack.enter_context(temporary_netns(ns_b))
        if not ipv6:
            run_in_netns(ns_a, _ipv6_off, timeout=10.0)
            run_in_netns(ns_b, _ipv6_off, timeout=10.0)
        _ip(
            "-n", ns_a, "link", "add", dev_a, "address", mac_a,
            "type", "veth", "peer", "name", dev_b, "address", mac_b, "netns", ns_b,
        )  # fmt: skip
        _ip("-n", ns_a, "addr", "add", str(a), "dev", dev_a)
        _ip("-n", ns_b, "addr", "add", str(b), "dev", dev_b)
        if static_neighbours:
            _ip("-n", ns_a, "neigh", "add", str(b.ip), "lladdr", mac_b, "dev", dev_a,
                "nud", "permanent")  # fmt: skip
            _ip("-n", ns_b, "neigh", "add", str(a.ip), "lladdr", mac_a, "dev", dev_b,
                "nud", "permanent")  # fmt: skip
        _ip("-n", ns_a, "link", "set", dev_a, "up")
        _ip("-n", ns_b, "link", "set", dev_b, "up")
        _wait_operstate_up([(ns_a, dev_a), (ns_b, dev_b)])
        yield VethPair(
            ns_a, ns_b, dev_a, dev_b, str(a.ip), str(b.ip), mac_a, mac_b, a.network.prefixlen
        )


@dataclass(frozen=True)
class LabCable:
    """The lab's private cable for one run: two namespaces named ``<prefix><pid>`` and a veth
    pair between them (see :func:`veth_pair`). The core builds it when it attaches an ``xdp``
    or ``tc`` probe and deletes it when it detaches (:mod:`ebpf_lab.core.attach`).

    The names end in the process id, so a killed run's namespaces are recognised and removed by
    the next run (:data:`ebpf_lab.core.leftovers.NETNS_RE`).
    """

    prefix_a: str = "ebpf-lab-fwa-"
    prefix_b: str = "ebpf-lab-fwb-"
    address_a: str = "198.18.0.1/30"
    address_b: str = "198.18.0.2/30"
    static_neighbours: bool = True

    def names(self, pid: int | None = None) -> tuple[str, str]:
        """The two namespaces' names for process ``pid`` (default: this one)."""
        pid = os.getpid() if pid is None else pid
        return f"{self.prefix_a}{pid}", f"{self.prefix_b}{pid}"

    @contextlib.contextmanager
    def build(self) -> Iterator[VethPair]:
        """The cable for the ``with`` block (this process's names); always deleted after.

        Namespaces of the same names left by an earlier crashed run of this process go first.
        """
        ns_a, ns_b = self.names()
        for name in (ns_a, ns_b):
            delete(name)
        with veth_pair(
            ns_a,
            ns_b,
            address_a=self.address_a,
            address_b=self.address_b,
            static_neighbours=self.static_neighbours,
        ) as pair:
            yield pair


_XDP_MODES = {1: "native", 2: "generic (SKB)", 3: "offload", 4: "multi"}


def xdp_on(ns: str, dev: str) -> dict[str, Any]:
    """What ``ip -n ns -d -j link show dev`` says is attached to ``dev`` by XDP: ``mode`` and
    ``prog_id`` (empty if nothing is)."""
    out = _ip("-n", ns, "-d", "-j", "link", "show", "dev", dev)
    info = json.loads(out or "[]")
    xdp = info[0].get("xdp", {}) if info else {}
    if not xdp:
        return {}
    return {
        "mode": _XDP_MODES.get(xdp.get("mode"), str(xdp.get("mode"))),
        "prog_id": xdp.get("prog", {}).get("id"),
    }


# ------------------------------------------------------------------ tc: BPF on a clsact qdisc

#: the directions of a ``clsact`` qdisc, and the minor number of each in a filter's parent
TC_DIRECTIONS = {"ingress": 0xFFF2, "egress": 0xFFF3}
_TC_H_CLSACT = 0xFFFFFFF1  # the clsact (and ingress) qdisc's parent, TC_H_CLSACT
_TC_H_CLSACT_HANDLE = 0xFFFF0000
_RTM_NEWQDISC, _RTM_DELQDISC, _RTM_NEWTFILTER = 36, 37, 44
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_EXCL, _NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
_NLMSG_ERROR = 2
_TCA_KIND, _TCA_OPTIONS = 1, 2
_TCA_BPF_FD, _TCA_BPF_NAME, _TCA_BPF_FLAGS = 6, 7, 8
_TCA_BPF_FLAG_ACT_DIRECT = 1  # "da": the program's return value is the verdict (TC_ACT_*)
_ETH_P_ALL = 0x0003
#: the filter's priority (``pref``) and handle, as ``tc filter show`` lists them
TC_PRIORITY = 1
TC_HANDLE = 1


def _nlattr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute: length, type, payload, padded to 4 bytes."""
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _tc_request(
    ns: str, msg_type: int, flags: int, dev: str, handle: int, parent: int, info: int,
    attrs: bytes = b"",
) -> None:  # fmt: skip
    """Send one rtnetlink traffic-control message (``struct tcmsg`` + ``attrs``) about ``dev``
    inside namespace ``ns`` and wait for the kernel's answer; raise OSError if it refuses."""
    try:
        ifindex = run_in_netns(ns, socket.if_nametoindex, dev, timeout=10.0)
    except OSError:
        raise OSError(errno.ENODEV, f"no device {dev!r} in network namespace {ns}") from None
    body = struct.pack("=BxxxiIII", socket.AF_UNSPEC, ifindex, handle, parent, info) + attrs
    header = struct.pack("=IHHII", 16 + len(body), msg_type, _NLM_F_REQUEST | _NLM_F_ACK | flags,
                         1, 0)  # fmt: skip
    sock = socket_in(ns, socket.AF_NETLINK, socket.SOCK_RAW, 0)  # 0: NETLINK_ROUTE
    with sock:
        sock.settimeout(5.0)
        sock.bind((0, 0))
        sock.send(header + body)
        reply = sock.recv(65536)
    _length, kind = struct.unpack_from("=IH", reply)
    if kind == _NLMSG_ERROR:
        (error,) = struct.unpack_from("=i", reply, 16)
        if error:
            raise OSError(-error, f"{os.strerror(-error)} (rtnetlink, {dev} in {ns})")


def tc_attach(ns: str, dev: str, direction: str, prog_fd: int, name: str) -> None:
    """Attach the loaded BPF classifier ``prog_fd`` to ``dev`` (in namespace ``ns``) in
    ``direction``, in direct-action mode.

    What ``tc qdisc add dev DEV clsact`` then ``tc filter add dev DEV DIRECTION pref 1 handle 1
    bpf da fd PROG_FD`` would do, if ``tc`` could take a file descriptor (it takes an object
    file or a pinned path): a ``clsact`` qdisc (kept if there is one), then the filter. The
    filter holds its own reference to the program; it goes away with :func:`tc_detach`, or with
    the device (deleting the namespace deletes the device).

    Raises:
        ValueError: an unknown direction.
        OSError: the kernel refused (e.g. ``EINVAL`` for a program that is not SCHED_CLS).
    """
    if direction not in TC_DIRECTIONS:
        raise ValueError(f"a tc direction is 'ingress' or 'egress', not {direction!r}")
    qdisc = _nlattr(_TCA_KIND, b"clsact\0")
    try:
        _tc_request(ns, _RTM_NEWQDISC, _NLM_F_CREATE | _NLM_F_EXCL, dev, _TC_H_CLSACT_HANDLE,
                    _TC_H_CLSACT, 0, qdisc)  # fmt: skip
    except FileExistsError:
        pass  # the device has its clsact qdisc already (e.g. for the other direction)
    options = (
        _nlattr(_TCA_BPF_FD, struct.pack("=I", prog_fd))
        + _nlattr(_TCA_BPF_NAME, name.encode() + b"\0")
        + _nlattr(_TCA_BPF_FLAGS, struct.pack("=I", _TCA_BPF_FLAG_ACT_DIRECT))
    )
    parent = (_TC_H_CLSACT & 0xFFFF0000) | TC_DIRECTIONS[direction]
    info = (TC_PRIORITY << 16) | socket.htons(_ETH_P_ALL)
    attrs = _nlattr(_TCA_KIND, b"bpf\0") + _nlattr(_TCA_OPTIONS | 0x8000, options)  # nested
    _tc_request(ns, _RTM_NEWTFILTER, _NLM_F_CREATE | _NLM_F_EXCL, dev, TC_HANDLE, parent, info,
                attrs)  # fmt: skip


def tc_detach(ns: str, dev: str) -> None:
    """Delete ``dev``'s ``clsact`` qdisc (``tc qdisc del dev DEV clsact``), and with it every
    filter on it in both directions; no error if the qdisc, device or namespace is gone."""
    if not exists(ns):
        return
    try:
        _tc_request(ns, _RTM_DELQDISC, 0, dev, _TC_H_CLSACT_HANDLE, _TC_H_CLSACT, 0,
                    _nlattr(_TCA_KIND, b"clsact\0"))  # fmt: skip
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.EINVAL, errno.ENODEV, errno.ENXIO):
            raise  # the others: no qdisc, no device


def tc_on(ns: str, dev: str, direction: str) -> list[dict[str, Any]]:
    """What ``tc -n ns -j filter show dev DEV DIRECTION`` lists: one dict per BPF filter, with
    ``name``, ``prog_id``, ``direct_action`` (empty if there is none, or no clsact qdisc)."""
    if direction not in TC_DIRECTIONS:
        raise ValueError(f"a tc direction is 'ingress' or 'egress', not {direction!r}")
    out = _iproute2("tc", "-n", ns, "-j", "filter", "show", "dev", dev, direction)
    found = []
    for entry in json.loads(out or "[]"):
        options = entry.get("options") or {}
        if entry.get("kind") == "bpf" and "prog" in options:
            found.append(
                {
                    "name": options.get("bpf_name", ""),
                    "prog_id": options["prog"].get("id"),
                    "direct_action": bool(options.get("direct-action", False)),
                }
            )
    return found
