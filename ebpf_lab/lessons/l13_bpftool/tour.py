"""Lesson 13: bpftool on the lab's own program, while a bounded run holds it loaded.

:func:`bpftool_tour` loads ``bpftool_subject.bpf.c`` (two programs on the execve tracepoint),
runs a known workload, and, still attached, finds its programs by id
(:func:`ebpf_lab.kernel.bpftool.prog_ids`) and asks bpftool about them: ``prog show``,
``prog dump xlated``, ``prog dump jited``, ``map show`` + ``map dump``, ``btf dump``,
``feature probe`` and ``net``. Each answer becomes a frame (schemas below); a subcommand that
fails on this kernel or with this bpftool says so in the summary instead of raising.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ebpf_lab.core.attach import Alternative, Probe
from ebpf_lab.core.collectors import fill_maps
from ebpf_lab.core.guards import check_duration, check_positive_int, check_uid
from ebpf_lab.core.loader import program_source
from ebpf_lab.core.run import Collector, RunContext, bounded_run
from ebpf_lab.kernel import bpftool
from ebpf_lab.show.frames import Schema
from ebpf_lab.workloads import MAX_EXECS, execs, unused_uid

#: the tour's BPF program (``bpftool_subject.bpf.c``) and its two functions
PROGRAM = "bpftool_subject"
FUNCTIONS = ("count_light", "count_heavy")
#: the tracepoint both functions are attached to
TRACEPOINT = "syscalls:sys_enter_execve"
#: the subcommands the tour runs, in order
SUBCOMMANDS = ("prog", "xlated", "jited", "map", "btf", "feature", "net")
#: how often a map is read again when it changed between BCC's read and bpftool's
STABLE_TRIES = 50

#: ``prog show``: one row per program
PROGS = Schema(
    id="int64",
    name="string",
    type="category",
    tag="string",
    run_cnt="int64",
    run_time_ns="int64",
    ns_per_run="float64",
    bytes_xlated="Int64",
    bytes_jited="Int64",
    map_ids=None,
    btf_id="Int64",
    loaded_at="Int64",
    verified_insns="Int64",
)
#: ``prog dump xlated``: one row per instruction after the verifier
XLATED = Schema(insn="int64", disasm="string", src="string", proto="string")
#: ``prog dump jited``: one row per machine instruction
JITED = Schema(function="string", pc="string", operation="string", operands="string")
#: ``map show`` + ``map dump``: one row per entry of each of the program's maps
MAP_ENTRIES = Schema(map_id="int64", map="category", map_type="category", key=None, value=None)
#: ``btf dump``: one row per type of the program's BTF
BTF_TYPES = Schema(
    id="int64", kind="category", name="string", size="Int64", type_id="Int64", vlen="Int64",
    members="string",
)  # fmt: skip
#: ``feature probe kernel``: one row per fact
FEATURES = Schema(section="category", feature="string", value="string")
#: ``net``: one row per program attached to a network device
NET = Schema(
    kind="category", devname="string", ifindex="Int64", id="Int64", name="string", attach="string"
)
#: the tour's summary: one row per subcommand
SUMMARY = Schema(subcommand="category", command="string", ok="bool", rows="int64", error="string")
#: each subcommand's schema
SCHEMAS = {
    "prog": PROGS,
    "xlated": XLATED,
    "jited": JITED,
    "map": MAP_ENTRIES,
    "btf": BTF_TYPES,
    "feature": FEATURES,
    "net": NET,
}


class SubjectCollector(Collector):
    """A collector of the subject programs: writes the workload's UID into ``target_uid``
    after the compile, before anything is attached."""

    def __init__(self, uid: int) -> None:
        self.uid = uid

    def prepare(self, bpf: Any) -> None:
        fill_maps(bpf, {"target_uid": {0: self.uid}})


def run_subject(
    name: str,
    collector: SubjectCollector,
    *,
    uid: int,
    execs_count: int,
    duration: float,
    live: bool | None,
    attrs: dict[str, Any],
) -> pd.DataFrame:
    """Both subject programs attached while ``execs_count`` execs run as ``uid`` (which the
    collector writes into the ``target_uid`` map, so every run shares one compile)."""
    return bounded_run(
        name=name,
        source=program_source(PROGRAM),
        alternatives=subject_alternatives(),
        collector=collector,
        duration=duration,
        workload=lambda: execs({uid: execs_count}),
        live=live,
        attrs={"uid": uid, "execs": execs_count, **attrs},
    )


def subject_alternatives(functions: Sequence[str] = FUNCTIONS) -> list[Alternative]:
    """Both functions on the execve tracepoint (present wherever the lesson runs)."""
    probes = [Probe("tracepoint", TRACEPOINT, fn) for fn in functions]
    return [Alternative("tracepoint", probes, "the stable execve tracepoint")]


def bcc_contents(ctx: RunContext, name: str) -> dict[int, int]:
    """A map of integers as ``{key: value}``, read through BCC."""
    return {int(k.value): int(v.value) for k, v in ctx.table(name).items()}


@dataclass
class Quiet:
    """A bpftool answer taken while nothing but bpftool's own exec ran the programs.

    bpftool is a program: starting it is an execve, which runs both lab programs once before
    bpftool reads anything. ``runs_before`` and ``runs_after`` are the programs' own run counts
    (the ``runs`` map, through BCC) just before and just after bpftool; ``quiet`` is True when
    they differ by exactly that one exec, so bpftool saw exactly ``runs_after``.
    """

    answer: bpftool.Answer
    runs_before: dict[int, int]
    runs_after: dict[int, int]
    quiet: bool
    tries: int


def quiet_call(ctx: RunContext, *args: str | int) -> Quiet:
    """``bpftool -j <args>`` repeated (up to :data:`STABLE_TRIES` times) until no exec but its own
    ran the programs meanwhile (other processes on the machine exec too)."""
    tries = 0
    while True:
        tries += 1
        before = bcc_contents(ctx, "runs")
        answer = bpftool.run(*args)
        after = bcc_contents(ctx, "runs")
        quiet = after == {k: v + 1 for k, v in before.items()}
        if quiet or not answer.ok or tries >= STABLE_TRIES:
            return Quiet(answer, before, after, quiet, tries)


def _map_rows(ctx: RunContext, map_id: int) -> tuple[list[dict[str, Any]], Quiet]:
    """One map's entries through bpftool (``map show`` for its name and type, ``map dump``)."""
    shown = bpftool.run("map", "show", "id", map_id)
    info = shown.data if shown.ok and isinstance(shown.data, dict) else {}
    dump = quiet_call(ctx, "map", "dump", "id", map_id)
    rows = [
        {"map_id": map_id, "map": info.get("name", ""), "map_type": info.get("type", ""), **row}
        for row in bpftool.map_records(dump.answer.data)
    ]
    return rows, dump


class _Tour(SubjectCollector):
    """Runs the bpftool subcommands once the workload is done, while the programs are loaded."""

    def __init__(self, subcommands: Sequence[str], uid: int) -> None:
        super().__init__(uid)
        self.subcommands = list(subcommands)
        self.frames: dict[str, pd.DataFrame] = {}
        self.summary: list[dict[str, Any]] = []
        self.bcc_maps: dict[str, dict[int, int]] = {}
        self.quiet: dict[str, bool] = {}
        self.ids: dict[str, int] = {}

    def _note(self, sub: str, answers: list[bpftool.Answer], rows: list[dict[str, Any]]) -> None:
        failed = [a for a in answers if not a.ok]
        frame = SCHEMAS[sub].frame(rows)
        frame.attrs["command"] = "; ".join(a.command_line for a in answers)
        frame.attrs["error"] = "; ".join(a.error for a in failed)
        self.frames[sub] = frame
        self.summary.append(
            {
                "subcommand": sub,
                "command": frame.attrs["command"],
                "ok": not failed,
                "rows": len(frame),
                "error": frame.attrs["error"],
            }
        )

    def finish(self, ctx: RunContext) -> pd.DataFrame:
        # the run is over but nothing is detached yet: the programs are still the kernel's
        self.ids = bpftool.prog_ids(ctx.bpf, FUNCTIONS)
        light = self.ids[FUNCTIONS[0]]
        shows = [bpftool.run("prog", "show", "id", i) for i in self.ids.values()]
        progs = [row for a in shows for row in bpftool.prog_records(a.data)]
        first = progs[0] if progs else {}
        for sub in self.subcommands:
            if sub == "prog":
                self._note(sub, shows, progs)
            elif sub in ("xlated", "jited"):
                answer = bpftool.run("prog", "dump", sub, "id", light)
                read = bpftool.xlated_records if sub == "xlated" else bpftool.jited_records
                self._note(sub, [answer], read(answer.data))
            elif sub == "map":
                rows, answers = [], []
                for map_id in sorted(first.get("map_ids", [])):
                    map_rows, dump = _map_rows(ctx, map_id)
                    rows += map_rows
                    answers.append(dump.answer)
                    if map_rows:  # the same map through BCC, right after bpftool's dump
                        name = str(map_rows[0]["map"])
                        after = dump.runs_after if name == "runs" else bcc_contents(ctx, name)
                        self.bcc_maps[name] = after
                        self.quiet[name] = dump.quiet
                self._note(sub, answers, rows)
            elif sub == "btf":
                answer = bpftool.run("btf", "dump", "id", first.get("btf_id") or 0)
                if first.get("btf_id") is None:
                    answer = bpftool.Answer(answer.command, False, None, "the program has no BTF")
                self._note(sub, [answer], bpftool.btf_records(answer.data))
            elif sub == "feature":
                answer = bpftool.run("feature", "probe", "kernel")
                self._note(sub, [answer], bpftool.feature_records(answer.data))
            elif sub == "net":
                answer = bpftool.run("net")
                self._note(sub, [answer], bpftool.net_records(answer.data))
        # in ctx.attrs, so a recording keeps them with the summary (and a replay gives them back)
        ctx.attrs.update(
            {
                "frames": self.frames,
                "prog_ids": self.ids,
                "bcc_maps": self.bcc_maps,
                "quiet": self.quiet,
            }
        )
        return SUMMARY.frame(self.summary)


def bpftool_tour(
    execs_count: int = 5,
    uid: int | None = None,
    duration: float = 0.5,
    subcommands: Sequence[str] = SUBCOMMANDS,
    *,
    live: bool | None = None,
) -> pd.DataFrame:
    """Ask bpftool about the lab's own program while it runs, and read its JSON into frames.

    Loads ``bpftool_subject.bpf.c`` (``count_light`` and ``count_heavy`` on the execve
    tracepoint), runs ``/bin/true`` ``execs_count`` times as ``uid``, and then, with both programs
    still attached, finds them by id (from ``/proc/self/fdinfo`` of their file descriptors: the
    lab's own programs, not another of the same name) and runs ``bpftool -j`` with each of
    ``subcommands``:

    * ``"prog"``: ``prog show id N`` for both programs (type, tag, sizes, map ids, BTF id);
    * ``"xlated"`` / ``"jited"``: ``prog dump xlated|jited id N`` of ``count_light``: its
      instructions after the verifier, and the machine code the JIT made of them;
    * ``"map"``: ``map show`` + ``map dump`` of each of ``count_light``'s maps: ``execs_by_uid``
      (execs of ``uid`` only: ``{uid: execs_count}``) and ``runs`` (each program's own run
      count, which bpftool's own exec has just raised by one). ``df.attrs["bcc_maps"]`` has the
      same maps read through BCC right after the dump; ``attrs["quiet"]`` says, per map, that
      no other exec ran the programs between the two reads (so they must agree);
    * ``"btf"``: ``btf dump id N``: the types BCC described the program and its maps with;
    * ``"feature"``: ``feature probe kernel``: what this kernel and its configuration allow;
    * ``"net"``: ``net``: programs attached to network devices (XDP, tc) here.

    Args:
        execs_count: execs of ``/bin/true`` as ``uid`` while attached (1..MAX_EXECS).
        uid: the UID they run as; default: a UID nobody uses (:func:`unused_uid`).
        duration: seconds to stay attached at least (the run also waits for the execs).
        subcommands: which of the above to run, in that order.
        live: show the progress bar and Stop button (default: in Jupyter only).

    Returns:
        The summary, one row per subcommand: ``subcommand``, ``command`` (what ran), ``ok``,
        ``rows``, ``error`` (bpftool's reason when it failed, e.g. a bpftool without a
        disassembler for ``jited``). ``df.attrs["frames"]`` holds each subcommand's frame (see
        the schemas of this module); ``attrs["prog_ids"]`` the programs' ids, ``attrs["uid"]``
        and ``attrs["execs"]`` the workload, ``attrs["bpftool"]`` bpftool's version.

    Raises:
        ValueError: a bad count, uid, duration or subcommand (before anything loads).
        PermissionError: not root.
    """
    execs_count = check_positive_int(execs_count, "execs_count", MAX_EXECS)
    duration = check_duration(duration)
    subs = _check_subcommands(subcommands)
    uid = workload_uid(uid)
    collector = _Tour(subs, uid)
    return run_subject(
        "bpftool_tour",
        collector,
        uid=uid,
        execs_count=execs_count,
        duration=duration,
        live=live,
        attrs={"bpftool": bpftool.version()},
    )


def workload_uid(uid: Any) -> int:
    """``uid`` checked, or a UID nobody uses (:func:`unused_uid`) when it is None.

    Raises:
        ValueError: ``uid`` is not a UID.
    """
    if uid is None:
        return unused_uid()
    try:
        return check_uid(uid)
    except ValueError as exc:
        raise ValueError(f"uid: {exc}") from None


def _check_subcommands(subcommands: Any) -> list[str]:
    if isinstance(subcommands, str):
        subcommands = [subcommands]
    subs = list(subcommands)
    unknown = [s for s in subs if s not in SUBCOMMANDS]
    if unknown or not subs:
        raise ValueError(f"subcommands must be some of {list(SUBCOMMANDS)}, got {subcommands!r}")
    return subs


def tour_frame(tour: pd.DataFrame, subcommand: str) -> pd.DataFrame:
    """One subcommand's frame from a :func:`bpftool_tour` result (``tour.attrs["frames"]``).

    Raises:
        ValueError: an unknown subcommand, or one the tour did not run.
    """
    _check_subcommands([subcommand])
    frames = tour.attrs.get("frames", {})
    if subcommand not in frames:
        raise ValueError(f"the tour did not run {subcommand!r}; it ran {list(frames)}")
    return frames[subcommand]
