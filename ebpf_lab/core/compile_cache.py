"""Compiled programs kept in memory, so running the same C again skips clang.

BCC compiles the C with clang every time a ``BPF(text=...)`` is made: about 0.4 s here, a third
of it BCC re-reading ``/proc/kallsyms``. It cannot load prebuilt bytecode (iovisor/bcc#534). Yet
for one text, one set of ``cflags`` and one running kernel, clang makes the same instructions
every time. So after BCC's first compile of a text, this module keeps **bytes, not kernel
objects**:

- each function's instructions, and where they name a map (a ``ld_imm64`` with
  ``BPF_PSEUDO_MAP_FD``: the map's file descriptor is written into the instruction);
- each map's definition (type, sizes, entries, flags) and its key/value C types, as BCC
  describes them;
- the licence and kernel version BCC loads programs with.

A later :func:`ebpf_lab.core.loader.compile_program` of the same text and cflags gets a
:class:`CachedBPF`: it creates fresh maps, writes their fds into a copy of the instructions and
loads them (the verifier checks them again, as for any load). Everything a run creates is freed
by :func:`ebpf_lab.core.loader.release` exactly as for a BCC-compiled object: nothing of a cached
program stays in the kernel between runs.

Programs the cache does not take (they are simply compiled by BCC every time): ones with
functions BCC attaches while compiling (``TRACEPOINT_PROBE``, ``KFUNC_PROBE``, ``LSM_PROBE``...),
maps other than hash, array, per-CPU, LRU, stack-trace, perf and ring buffers, instructions that
refer to anything but a map's fd, and event structs BCC cannot describe.

>>> from ebpf_lab.core import compile_cache
>>> compile_cache.clear()
>>> compile_cache.info()["entries"]
0
"""

from __future__ import annotations

import contextlib
import ctypes as ct
import io
import json
import re
import struct
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

#: how many compiled programs are kept (least recently used are dropped first)
MAX_ENTRIES = 64

# enum bpf_map_type values (uapi/linux/bpf.h) the cache can recreate, with BCC's table class
_MAP_CLASSES = {
    1: "HashTable",  # BPF_MAP_TYPE_HASH
    2: "Array",  # BPF_MAP_TYPE_ARRAY
    4: "PerfEventArray",  # BPF_MAP_TYPE_PERF_EVENT_ARRAY
    5: "PerCpuHash",  # BPF_MAP_TYPE_PERCPU_HASH
    6: "PerCpuArray",  # BPF_MAP_TYPE_PERCPU_ARRAY
    7: "StackTrace",  # BPF_MAP_TYPE_STACK_TRACE
    9: "LruHash",  # BPF_MAP_TYPE_LRU_HASH
    10: "LruPerCpuHash",  # BPF_MAP_TYPE_LRU_PERCPU_HASH
    27: "RingBuf",  # BPF_MAP_TYPE_RINGBUF
}
_EVENT_MAPS = {4, 27}  # tables whose .event() decodes a record with a class BCC derives

# enum bpf_prog_type values a cached program may be loaded as: the ones that need nothing but
# the instructions (tracing programs that attach to a BTF id need BCC's module to find it)
_PLAIN_PROG_TYPES = {
    1,  # SOCKET_FILTER
    2,  # KPROBE (also uprobes)
    3,  # SCHED_CLS
    4,  # SCHED_ACT
    5,  # TRACEPOINT
    6,  # XDP
    7,  # PERF_EVENT
    17,  # RAW_TRACEPOINT
}

# function names BCC loads and attaches while it compiles (BPF._trace_autoload and friends)
_AUTOLOAD = re.compile(
    rb"^(kprobe|kretprobe|tracepoint|raw_tracepoint|kfunc|kretfunc|lsm|kmod_ret)__"
)

_LD_IMM64 = 0x18  # BPF_LD | BPF_IMM | BPF_DW: a 64-bit immediate, two instruction slots
_PSEUDO_MAP_FD = 1  # src_reg of a ld_imm64 whose immediate is a map's fd


class NotCacheable(Exception):
    """Why a compiled program is not kept (it is compiled by BCC every time instead)."""


@dataclass(frozen=True)
class MapSpec:
    """What is needed to make a map again: its definition and BCC's description of its types."""

    name: bytes
    map_id: int
    map_type: int
    flags: int
    max_entries: int
    key_size: int
    leaf_size: int
    key_desc: str
    leaf_desc: str
    event_class: Any = None


@dataclass(frozen=True)
class FunctionSpec:
    """A function's instructions and the byte offsets of the map fds written into them."""

    name: bytes
    insns: bytes
    relocations: tuple[tuple[int, int], ...]  # (offset of the ld_imm64, index into maps)


@dataclass
class Snapshot:
    """One compiled program: functions, maps, licence and kernel version."""

    functions: dict[bytes, FunctionSpec]
    maps: list[MapSpec]
    license: bytes
    kern_version: int
    attributes: dict[str, Any] = field(default_factory=dict)
    hits: int = 0


_LOCK = threading.Lock()
_CACHE: OrderedDict[tuple[str, tuple[str, ...]], Snapshot] = OrderedDict()
_STATS = {"hits": 0, "misses": 0, "not_cacheable": 0}
_REASONS: OrderedDict[str, str] = OrderedDict()  # name -> why it was not kept (latest few)
_CLASS: Any = None
_LIB: Any = None


def _lib() -> Any:
    """libbcc with the two plain loaders BCC's Python does not declare (our own handle)."""
    global _LIB
    if _LIB is None:
        from bcc.libbcc import lib

        own = ct.CDLL(lib._name, use_errno=True)
        i, u, s, p, size, ull = (
            ct.c_int,
            ct.c_uint,
            ct.c_char_p,
            ct.c_void_p,
            ct.c_size_t,
            ct.c_ulonglong,
        )
        signatures = {
            # int bcc_create_map(type, name, key_size, value_size, max_entries, map_flags)
            "bcc_create_map": (i, [i, s, i, i, i, i]),
            # int bcc_prog_load(type, name, insns, prog_len (bytes), license, kern_version,
            #                   log_level, log_buf, log_buf_size)
            "bcc_prog_load": (i, [i, s, p, i, s, u, i, s, u]),
            # Every libbcc call on this handle is declared: an undeclared pointer argument is
            # passed as a C int (cut to 32 bits), which crashed when a run compiled in a thread
            # whose heap lives above 4 GiB (two runs in two threads).
            "bpf_num_tables": (size, [p]),
            "bpf_table_type_id": (i, [p, ull]),
            "bpf_table_fd_id": (i, [p, ull]),
            "bpf_table_flags_id": (i, [p, ull]),
            "bpf_table_max_entries_id": (size, [p, ull]),
            "bpf_perf_event_fields": (size, [p, s]),
            "bpf_num_functions": (size, [p]),
            "bpf_function_name": (s, [p, ull]),
            "bpf_function_start": (p, [p, s]),
            "bpf_function_size": (size, [p, s]),
            "bpf_module_license": (s, [p]),
            "bpf_module_kern_version": (u, [p]),
            "bpf_table_name": (s, [p, ull]),
            "bpf_table_key_desc_id": (s, [p, ull]),
            "bpf_table_leaf_desc_id": (s, [p, ull]),
            "bpf_table_key_size_id": (size, [p, ull]),
            "bpf_table_leaf_size_id": (size, [p, ull]),
        }
        for fn, (restype, argtypes) in signatures.items():
            getattr(own, fn).restype = restype
            getattr(own, fn).argtypes = argtypes
        _LIB = own
    return _LIB


def key(text: str, cflags: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """The cache key: the C text and the cflags, as given."""
    return (text, tuple(cflags))


def lookup(cache_key: tuple[str, tuple[str, ...]]) -> Snapshot | None:
    """The snapshot kept for this text and cflags, or None (counted as a hit or a miss)."""
    with _LOCK:
        snap = _CACHE.get(cache_key)
        if snap is None:
            _STATS["misses"] += 1
            return None
        _CACHE.move_to_end(cache_key)
        _STATS["hits"] += 1
        snap.hits += 1
        return snap


def remember(cache_key: tuple[str, tuple[str, ...]], bpf: Any, *, name: str = "program") -> bool:
    """Keep a snapshot of a freshly compiled BCC object (before any function is loaded).

    Returns True if it was kept; False (with the reason in :func:`info`) if the program is one
    the cache does not take. Never raises: the object itself is left as it was.
    """
    try:
        snap = snapshot(bpf)
    except NotCacheable as why:
        with _LOCK:
            _STATS["not_cacheable"] += 1
            _REASONS[name] = str(why)
            _REASONS.move_to_end(name)
            while len(_REASONS) > 16:
                _REASONS.popitem(last=False)
        return False
    with _LOCK:
        _CACHE[cache_key] = snap
        _CACHE.move_to_end(cache_key)
        while len(_CACHE) > MAX_ENTRIES:
            _CACHE.popitem(last=False)
    return True


def discard(cache_key: tuple[str, tuple[str, ...]]) -> None:
    """Forget one program (its next compile is BCC's again)."""
    with _LOCK:
        _CACHE.pop(cache_key, None)


def clear() -> None:
    """Forget every compiled program (the next run of each compiles with clang again)."""
    with _LOCK:
        _CACHE.clear()
        _REASONS.clear()
        for k in _STATS:
            _STATS[k] = 0


def info() -> dict[str, Any]:
    """Entries, hits, misses, programs not taken (and why): for a notebook or a benchmark."""
    with _LOCK:
        return {
            "entries": len(_CACHE),
            "max_entries": MAX_ENTRIES,
            **_STATS,
            "not_cacheable_reasons": dict(_REASONS),
        }


def _relocations(insns: bytes, fd_to_map: dict[int, int], fn: bytes) -> tuple[tuple[int, int], ...]:
    found = []
    for off in range(0, len(insns) - 7, 8):
        code, regs = insns[off], insns[off + 1]
        if code != _LD_IMM64:
            continue
        src = regs >> 4
        if src == 0:
            continue  # a plain 64-bit constant
        if src != _PSEUDO_MAP_FD:
            raise NotCacheable(f"{fn.decode()}: ld_imm64 with src_reg {src} (not a map fd)")
        (imm,) = struct.unpack_from("<i", insns, off + 4)
        if imm not in fd_to_map:
            raise NotCacheable(f"{fn.decode()}: refers to fd {imm}, not one of its maps")
        found.append((off, fd_to_map[imm]))
    return tuple(found)


def snapshot(bpf: Any) -> Snapshot:
    """Read a compiled BCC object's functions and maps into bytes (raises :class:`NotCacheable`)."""
    import bcc
    from bcc import table as bcc_table

    lib = _lib()
    module = bpf.module
    if not module:
        raise NotCacheable("no compiled module")
    if getattr(bpf, "funcs", None):
        raise NotCacheable(f"{b', '.join(bpf.funcs).decode()}() attached by BCC while it compiles")
    maps: list[MapSpec] = []
    fd_to_map: dict[int, int] = {}
    for map_id in range(max(lib.bpf_num_tables(module), 0)):
        name = lib.bpf_table_name(module, map_id)
        map_type = lib.bpf_table_type_id(module, map_id)
        if map_type not in _MAP_CLASSES:
            raise NotCacheable(f"map {name!r} has type {map_type}")
        fd = lib.bpf_table_fd_id(module, map_id)
        if fd < 0:
            raise NotCacheable(f"map {name!r} has no fd (extern or shared?)")
        event_class = None
        if map_type in _EVENT_MAPS and lib.bpf_perf_event_fields(module, name) > 0:
            # BCC derives .event()'s class from the module; derive it now, while there is one
            try:
                with contextlib.redirect_stderr(io.StringIO()):
                    event_class = bcc_table._get_event_class(bpf[name])
            except (Exception, SystemExit) as exc:  # BCC calls sys.exit() on unknown types
                raise NotCacheable(f"map {name!r}: event type not decodable ({exc})") from None
        fd_to_map[fd] = len(maps)
        maps.append(
            MapSpec(
                name=name,
                map_id=map_id,
                map_type=map_type,
                flags=lib.bpf_table_flags_id(module, map_id),
                max_entries=int(lib.bpf_table_max_entries_id(module, map_id)),
                key_size=int(lib.bpf_table_key_size_id(module, map_id)),
                leaf_size=int(lib.bpf_table_leaf_size_id(module, map_id)),
                key_desc=(lib.bpf_table_key_desc_id(module, map_id) or b"").decode(),
                leaf_desc=(lib.bpf_table_leaf_desc_id(module, map_id) or b"").decode(),
                event_class=event_class,
            )
        )
    functions: dict[bytes, FunctionSpec] = {}
    for i in range(lib.bpf_num_functions(module)):
        fn = bcc.lib.bpf_function_name(module, i)
        if _AUTOLOAD.match(fn):
            raise NotCacheable(f"{fn.decode()}() is attached by BCC while it compiles")
        start = bcc.lib.bpf_function_start(module, fn)
        size = bcc.lib.bpf_function_size(module, fn)
        insns = ct.string_at(start, size)
        functions[fn] = FunctionSpec(fn, insns, _relocations(insns, fd_to_map, fn))
    # The attributes BCC's constructor sets, as they are before anything is loaded (so a cached
    # object starts out exactly like a compiled one, whatever this BCC version keeps).
    attributes = {}
    for attr, value in vars(bpf).items():
        if attr in ("module", "tables", "funcs"):
            continue
        if isinstance(value, dict):
            if value:
                raise NotCacheable(f"BPF.{attr} is not empty after compiling")
            attributes[attr] = dict
        elif value is None or isinstance(value, (int, str, bytes, bool)):
            attributes[attr] = value
        else:
            raise NotCacheable(f"BPF.{attr} holds a {type(value).__name__}")
    return Snapshot(
        functions=functions,
        maps=maps,
        license=bcc.lib.bpf_module_license(module),
        kern_version=int(bcc.lib.bpf_module_kern_version(module)),
        attributes=attributes,
    )


def _cached_class() -> Any:
    """``bcc.BPF`` made from a :class:`Snapshot` instead of a compile (made on first use)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import atexit
    import errno
    import os

    import bcc
    from bcc import table as bcc_table

    class CachedBPF(bcc.BPF):  # type: ignore[misc, valid-type]
        """A BCC ``BPF`` object rebuilt from kept bytes: fresh maps, the same instructions.

        It has no BCC module (``self.module`` is None): functions and tables come from the
        snapshot. Attaching, polling buffers and :func:`ebpf_lab.core.loader.release` work as with
        a compiled object.
        """

        def __init__(self, snap: Snapshot) -> None:  # noqa: D107 - BPF's own init is skipped
            for attr, value in snap.attributes.items():
                setattr(self, attr, value() if value is dict else value)
            self.module = None
            self.funcs = {}
            self.tables = {}
            self._snapshot = snap
            self._map_fds: list[int] = []
            lib = _lib()
            try:
                for spec in snap.maps:
                    fd = lib.bcc_create_map(
                        spec.map_type,
                        spec.name,
                        spec.key_size,
                        spec.leaf_size,
                        spec.max_entries,
                        spec.flags,
                    )
                    if fd < 0:
                        err = ct.get_errno()
                        raise OSError(err, f"creating map {spec.name.decode()}: {os.strerror(err)}")
                    self._map_fds.append(fd)
            except BaseException:
                self._close_maps()
                raise
            atexit.register(self.cleanup)

        def _close_maps(self) -> None:
            fds, self._map_fds = self._map_fds, []
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

        def table_names(self) -> list[bytes]:
            """Names of the program's maps, in BCC's order."""
            return [m.name for m in self._snapshot.maps]

        def function_names(self) -> list[bytes]:
            """Names of the program's functions."""
            return list(self._snapshot.functions)

        def dump_func(self, func_name: Any) -> bytes:
            """The function's instructions, with this object's map fds written in."""
            name = bcc._assert_is_bytes(func_name)
            spec = self._snapshot.functions.get(name)
            if spec is None:
                raise Exception(f"Unknown program {name!r}")
            insns = bytearray(spec.insns)
            for off, index in spec.relocations:
                struct.pack_into("<i", insns, off + 4, self._map_fds[index])
            return bytes(insns)

        def load_funcs(self, prog_type: int = bcc.BPF.KPROBE) -> list[Any]:
            return [self.load_func(fn, prog_type) for fn in self._snapshot.functions]

        def load_func(
            self, func_name: Any, prog_type: int, device: Any = None, attach_type: int = -1
        ) -> Any:
            name = bcc._assert_is_bytes(func_name)
            if name in self.funcs:
                return self.funcs[name]
            if device is not None or attach_type not in (-1, None):
                raise Exception(
                    f"the lab's compile cache cannot load {name.decode()} for a device or an "
                    "attach type; call ebpf_lab.core.compile_cache.clear() and compile it again"
                )
            if prog_type not in _PLAIN_PROG_TYPES:
                raise Exception(
                    f"the lab's compile cache cannot load {name.decode()} as program type "
                    f"{prog_type} (it needs BCC's module); compile with cache=False"
                )
            insns = self.dump_func(name)
            buf = ct.create_string_buffer(insns, len(insns))
            log_level = 0
            if self.debug & bcc.DEBUG_BPF_REGISTER_STATE:
                log_level = 2
            elif self.debug & bcc.DEBUG_BPF:
                log_level = 1
            fd = _lib().bcc_prog_load(
                prog_type,
                name,
                ct.cast(buf, ct.c_void_p),
                len(insns),
                self._snapshot.license,
                self._snapshot.kern_version,
                log_level,
                None,
                0,
            )
            if fd < 0:
                err = ct.get_errno()
                if err == errno.EPERM:
                    raise Exception("Need super-user privileges to run")
                raise Exception(f"Failed to load BPF program {name!r}: {os.strerror(err)}")
            fn = bcc.BPF.Function(self, name, fd)
            self.funcs[name] = fn
            return fn

        def get_table(
            self, name: Any, keytype: Any = None, leaftype: Any = None, reducer: Any = None
        ) -> Any:
            name = bcc._assert_is_bytes(name)
            maps = self._snapshot.maps
            index = next((i for i, m in enumerate(maps) if m.name == name), None)
            if index is None:
                raise KeyError(name)
            spec = maps[index]
            key_t = keytype or bcc.BPF._decode_table_type(json.loads(spec.key_desc))
            leaf_t = leaftype or bcc.BPF._decode_table_type(json.loads(spec.leaf_desc))
            cls = getattr(bcc_table, _MAP_CLASSES[spec.map_type])
            fd = self._map_fds[index]
            if spec.map_type in _EVENT_MAPS:
                t = cls(self, spec.map_id, fd, key_t, leaf_t, name)
            elif spec.map_type in (5, 6, 10) and reducer is not None:
                t = cls(self, spec.map_id, fd, key_t, leaf_t, reducer=reducer)
            else:
                t = cls(self, spec.map_id, fd, key_t, leaf_t)
            # What TableBase reads from BCC's module (None here) comes from the snapshot.
            t.ttype = spec.map_type
            t.flags = spec.flags
            t.max_entries = spec.max_entries
            if spec.event_class is not None:
                t._event_class = spec.event_class
            return t

        def cleanup(self) -> None:
            super().cleanup()
            self._close_maps()

    _CLASS = CachedBPF
    return _CLASS


def restore(snap: Snapshot, cache_key: tuple[str, tuple[str, ...]] | None = None) -> Any:
    """A new :class:`CachedBPF` for a snapshot: its maps are created now, nothing is loaded."""
    bpf = _cached_class()(snap)
    bpf.cache_key = cache_key
    return bpf
