"""Exercises that check themselves: ``ebpf_lab.check("02.1", my_answer)``.

A learner writes an answer (BPF C as text, a prediction, or a function of a frame) and asks the
lab whether it is right. The check runs the answer where the truth is known: C is compiled and
attached through the bounded-run core while a known workload runs, and its map is compared with
what the workload did (:func:`run_answer`, :func:`judge_maps`); a prediction is compared with
what the lesson's own program measures while the check runs the workload the exercise names; a
function is applied to recorded frames whose answer is known. The result says in words what is
right or wrong::

    >>> ebpf_lab.check("08.3", {16: 256, 12: 341, 40: 102})
    ✗ 08.3 How many events fit?: 16 bytes: you said 256, the ring kept 170; ...

Adding exercises: a lesson's checks live in its folder, ``ebpf_lab/lessons/lNN_name/exercises.py``,
which ``ebpf_lab/lessons/__init__.py`` imports (so importing ``ebpf_lab`` registers every check).
Register each check with the :func:`exercise` decorator; return a sentence (or :class:`Right`)
when the answer is right and raise :class:`Wrong` with a sentence when it is not::

    from ebpf_lab.classroom.checks import Right, Wrong, exercise, frame_function

    @exercise("05.1", title="Busiest CPU", asks="a function of the frame giving the CPU number")
    def _(answer):
        got = frame_function(answer)(FIXTURE)
        if got != 3:
            raise Wrong(f"the busiest CPU in the recorded frame is 3, your answer says {got}")
        return "right: CPU 3 handled the most events"

Exceptions the learner's own code raises become a failed check that names them; ``ProgramError``
(C that does not compile or that the verifier rejects) becomes a failed check with the log.
Solutions live outside the notebooks, in ``instructor/solutions/<id>.*``; ``tests/test_checks.py``
proves each passes its check and that a typical wrong answer fails it with a useful message.
"""

from __future__ import annotations

import os
import re
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core import replay
from ebpf_lab.core.attach import Probe
from ebpf_lab.core.collectors import MapReader
from ebpf_lab.core.errors import BccMissing, ProgramError, UnsupportedFeature
from ebpf_lab.core.run import Alternative, bounded_run
from ebpf_lab.show.frames import table_frame

_ID_RE = re.compile(r"^\d\d\.\d+$")
_MISSING: Any = object()


@dataclass
class CheckResult:
    """What a check found.

    Attributes:
        exercise: the exercise id, e.g. ``"02.1"``.
        ok: True when the answer is right.
        message: what is right or wrong, in a sentence or two.
        details: what the check compared (expected and measured values, logs...).
        title: the exercise's title.
        checked: False when the answer could not be checked at all (e.g. no root for a check
            that runs C in the kernel); ``ok`` is then False too.
    """

    exercise: str
    ok: bool
    message: str
    details: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    checked: bool = True

    @property
    def mark(self) -> str:
        return "✓" if self.ok else ("✗" if self.checked else "?")

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        title = f" {self.title}" if self.title else ""
        text = f"{self.mark} {self.exercise}{title}: {self.message}"
        log = str(self.details.get("log") or "").strip()
        return f"{text}\n{log}" if log else text

    def __repr__(self) -> str:
        return str(self)

    def _repr_markdown_(self) -> str:
        color = "#1a7f37" if self.ok else ("#b22222" if self.checked else "#9a6700")
        verdict = "right" if self.ok else ("not yet" if self.checked else "not checked")
        title = f" — {self.title}" if self.title else ""
        body = self.message.replace("\n", "  \n")
        log = str(self.details.get("log") or "").strip()
        if log:
            body += "\n\n```\n" + log.replace("```", "`\u200b``") + "\n```"
        return (
            f'<span style="color:{color};font-weight:bold">{self.mark} {self.exercise}{title}: '
            f"{verdict}</span>\n\n{body}"
        )


@dataclass
class Right:
    """What an exercise check returns when the answer is right (a plain string also works)."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def __init__(self, message: str, **details: Any) -> None:
        self.message = message
        self.details = details


class Wrong(Exception):
    """Raised by an exercise check: the answer is wrong, and ``message`` says how."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass(frozen=True)
class Exercise:
    """A registered exercise: its id (``"NN.k"``: lesson NN, exercise k), what it asks for."""

    id: str
    title: str
    asks: str
    needs_kernel: bool
    fn: Callable[..., Any]

    @property
    def lesson(self) -> str:
        return self.id.split(".")[0]


_REGISTRY: dict[str, Exercise] = {}


def exercise(
    exercise_id: str, *, title: str, asks: str, needs_kernel: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a check for exercise ``exercise_id`` (``"NN.k"``: lesson NN, exercise number k).

    Args:
        exercise_id: e.g. ``"05.1"``.
        title: a few words naming the exercise.
        asks: what the learner passes as the answer (shown when no answer is given).
        needs_kernel: the check loads the answer into the kernel (needs root and eBPF); it then
            always runs live, also while a recording is replayed.

    The decorated function takes the answer (and any keyword options given to :func:`check`)
    and returns a sentence or :class:`Right` when it is right; it raises :class:`Wrong` when it
    is not.
    """
    if not isinstance(exercise_id, str) or not _ID_RE.match(exercise_id):
        raise ValueError(f"exercise ids look like '05.1' (lesson.number), got {exercise_id!r}")

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        old = _REGISTRY.get(exercise_id)
        if old is not None and (old.fn.__module__, old.fn.__qualname__) != (
            fn.__module__,
            fn.__qualname__,
        ):
            raise ValueError(
                f"exercise {exercise_id} is already registered by {old.fn.__module__}; "
                "choose another number"
            )
        _REGISTRY[exercise_id] = Exercise(exercise_id, title, asks, needs_kernel, fn)
        return fn

    return register


def exercises(lesson: str | None = None) -> pd.DataFrame:
    """The checkable exercises: ``id``, ``lesson``, ``title``, ``asks``, ``needs_kernel``."""
    rows = [
        {
            "id": ex.id,
            "lesson": ex.lesson,
            "title": ex.title,
            "asks": ex.asks,
            "needs_kernel": ex.needs_kernel,
        }
        for ex in sorted(_REGISTRY.values(), key=lambda e: tuple(int(p) for p in e.id.split(".")))
        if lesson is None or ex.lesson == lesson
    ]
    return pd.DataFrame(rows, columns=["id", "lesson", "title", "asks", "needs_kernel"])


def check(exercise_id: str, answer: Any = _MISSING, **options: Any) -> CheckResult:
    """Check an answer to exercise ``exercise_id`` and say what is right or wrong.

    Args:
        exercise_id: e.g. ``"02.1"`` (lesson 02, exercise 1);
            ``ebpf_lab.classroom.checks.exercises()`` lists them.
        answer: the answer; what it is depends on the exercise (BPF C as a string, or a
            function of a DataFrame). Without it, the result says what the exercise asks for.
        **options: passed to the exercise's check (e.g. ``fn="count"`` to name the C function
            to attach).

    Returns:
        A :class:`CheckResult`; it shows as "✓ ..." or "✗ ..." with the reason, and is truthy
        when the answer is right.

    Example::

        my_answer = '''
        struct key_t { char comm[16]; };
        BPF_HASH(counts, struct key_t, u64);
        int count(void *ctx) { ... }
        '''
        ebpf_lab.check("02.1", my_answer)
    """
    ex = _REGISTRY.get(exercise_id) if isinstance(exercise_id, str) else None
    if ex is None:
        known = ", ".join(exercises()["id"]) or "none"
        raise ValueError(f"no exercise {exercise_id!r}; the checkable exercises are: {known}")
    if answer is _MISSING or answer is None:
        return CheckResult(
            ex.id, False, f"no answer yet. This exercise asks for {ex.asks}.", {}, ex.title, False
        )
    try:
        if ex.needs_kernel:
            with replay.bypass():
                outcome = ex.fn(answer, **options)
        else:
            outcome = ex.fn(answer, **options)
    except Wrong as w:
        return CheckResult(ex.id, False, w.message, w.details, ex.title)
    except ProgramError as err:
        if err.stage == "compile":
            what = "your C did not compile; nothing was loaded. The compiler's own words:"
        else:
            what = "the verifier rejected your program; nothing was loaded. Its own words:"
        return CheckResult(ex.id, False, what, {"stage": err.stage, "log": err.log}, ex.title)
    except (PermissionError, BccMissing, UnsupportedFeature) as err:
        return CheckResult(
            ex.id,
            False,
            f"this check runs your program in the kernel, which is not possible here: {err}",
            {"error": repr(err)},
            ex.title,
            False,
        )
    except AnswerError as err:
        return CheckResult(ex.id, False, str(err), {"traceback": err.tb}, ex.title)
    if isinstance(outcome, CheckResult):
        return outcome
    if isinstance(outcome, Right):
        return CheckResult(ex.id, True, outcome.message, outcome.details, ex.title)
    return CheckResult(ex.id, True, str(outcome or "right."), {}, ex.title)


# ---------------------------------------------------------------- helpers for checks


class AnswerError(Exception):
    """The learner's own code raised an exception (raised by :func:`frame_function`)."""

    def __init__(self, message: str, tb: str) -> None:
        super().__init__(message)
        self.tb = tb


def frame_function(answer: Any, name: str = "df") -> Callable[[pd.DataFrame], Any]:
    """A pandas answer as a function of one frame.

    ``answer`` is a callable taking the frame (``lambda df: df.groupby(...)...``) or a Python
    expression as text in which the frame is called ``df`` (``"df.groupby(...)..."``). Calling
    the returned function runs the learner's code on a copy of the frame; an exception there
    becomes :class:`AnswerError` with a sentence naming it.
    """
    if isinstance(answer, str):
        text = answer.strip()
        try:
            code = compile(text, "<your answer>", "eval")
        except SyntaxError as exc:
            raise Wrong(
                f"your answer is not a Python expression ({exc.msg}): give an expression on "
                f"`{name}`, e.g. \"{name}.groupby('comm').size()\", or a function "
                f"(lambda {name}: ...)"
            ) from None

        def run_text(df: pd.DataFrame) -> Any:
            import numpy as np

            return eval(code, {"pd": pd, "np": np, name: df})  # noqa: S307 - the learner's own

        fn: Callable[[pd.DataFrame], Any] = run_text
    elif callable(answer):
        fn = answer
    else:
        raise Wrong(
            f"give a function of the frame (e.g. lambda {name}: {name}.groupby(...)...) or an "
            f"expression on `{name}` as text, not a {type(answer).__name__}: the check runs it "
            "on a recorded frame whose right answer it knows"
        )

    def call(df: pd.DataFrame) -> Any:
        try:
            return fn(df.copy())
        except Exception as exc:
            raise AnswerError(
                f"your answer raised {type(exc).__name__}: {exc} (when run on the check's "
                f"recorded frame, which has the columns {', '.join(map(str, df.columns))})",
                traceback.format_exc(),
            ) from None

    return call


_FN_RE = re.compile(r"^[ \t]*int[ \t]+([A-Za-z_]\w*)[ \t]*\(([^)]*)\)", re.M)
_TP_MACRO_RE = re.compile(r"\bTRACEPOINT_PROBE\s*\(\s*(\w+)\s*,\s*(\w+)\s*\)")


def c_functions(source: str) -> list[str]:
    """The non-static ``int name(...)`` functions of a C text, in order."""
    return [m.group(1) for m in _FN_RE.finditer(source)]


def tracepoint_macros(source: str) -> list[str]:
    """``category:event`` of every ``TRACEPOINT_PROBE(category, event)`` in a C text."""
    return [f"{m.group(1)}:{m.group(2)}" for m in _TP_MACRO_RE.finditer(source)]


def run_answer(
    source: str,
    *,
    tracepoint: str | None,
    fn: str | None = None,
    workload: Callable[[], Any] | None = None,
    duration: float = 1.0,
    cflags: Sequence[str] = (),
    fill: dict[str, dict[int, int]] | None = None,
    also_source: str = "",
    also_probes: Sequence[Probe] = (),
) -> dict[str, pd.DataFrame]:
    """Compile and attach a learner's C through the bounded-run core; return its maps as frames.

    Functions written with BCC's ``TRACEPOINT_PROBE`` macro attach by themselves. Otherwise
    ``fn`` (or the only non-static ``int`` function of the C) is attached to ``tracepoint``
    (``"category:event"``); ``tracepoint=None`` demands the macro. ``fill`` writes
    ``{map: {key: value}}`` before attaching (e.g. the pid to watch). Ring and perf buffers are
    not read (nobody consumes them). ``also_source`` is the check's own C, compiled after the
    answer's, and ``also_probes`` attach its functions beside the answer's (e.g. a counter of
    the calls the answer should have seen).

    Raises:
        Wrong: no function to attach, or several and no ``fn``.
        ProgramError: the C does not compile, or the verifier rejects it.
    """
    if not isinstance(source, str) or not source.strip():
        raise Wrong("give your BPF C program as a string (the text of the program)")
    probes = []
    if tracepoint_macros(source) and fn is None:
        label = "TRACEPOINT_PROBE: " + ", ".join(tracepoint_macros(source))
        # BCC attaches TRACEPOINT_PROBE functions while it compiles (the core's autoload kind)
        probes = [
            Probe("autoload", tp, "tracepoint__" + tp.replace(":", "__"))
            for tp in tracepoint_macros(source)
        ]
    elif tracepoint is None:
        raise Wrong(
            "say where your program attaches: write its function with BCC's "
            "TRACEPOINT_PROBE(category, event) { ... } macro"
        )
    else:
        names = c_functions(source)
        if fn is None:
            if not names:
                raise Wrong(
                    f"your C has no function to attach to {tracepoint}: write one such as "
                    "`int count(void *ctx) { ... }` (or use TRACEPOINT_PROBE)"
                )
            if len(names) > 1:
                preferred = [n for n in names if "tracepoint" in n]
                if len(preferred) != 1:
                    raise Wrong(
                        f"your C defines several functions ({', '.join(names)}): say which one "
                        f'runs on {tracepoint}, e.g. ebpf_lab.check(..., fn="{names[0]}")'
                    )
                names = preferred
            fn = names[0]
        elif fn not in names:
            raise Wrong(f"your C has no function called {fn}() (it defines: {', '.join(names)})")
        probes = [Probe("tracepoint", tracepoint, fn)]
        label = f"tracepoint {tracepoint}"
    maps = MapReader(each=table_frame, fill=fill)
    bounded_run(
        name="exercise check",
        source=f"{source}\n{also_source}" if also_source else source,
        alternatives=[Alternative(label, [*probes, *also_probes], "exercise check")],
        collector=maps,
        duration=duration,
        workload=workload,
        cflags=cflags,
        live=False,
    )
    return maps.frames


def text_key_columns(frame: pd.DataFrame) -> list[str]:
    """Key columns of a map frame (:func:`ebpf_lab.show.frames.table_frame`) that hold text."""
    keys = [c for c in frame.columns if c not in value_columns(frame)]
    return [c for c in keys if len(frame) and frame[c].map(lambda v: isinstance(v, str)).all()]


def int_key_columns(frame: pd.DataFrame) -> list[str]:
    """Key columns of a map frame that hold whole numbers."""
    keys = [c for c in frame.columns if c not in value_columns(frame)]
    return [c for c in keys if pd.api.types.is_integer_dtype(frame[c])]


def value_columns(frame: pd.DataFrame) -> list[str]:
    """The value columns of a map frame: ``value``, or ``cpu0, cpu1...`` of a per-CPU map, or
    the fields of a struct value (the columns after the key's)."""
    if "value" in frame.columns:
        return ["value"]
    cpus = [c for c in frame.columns if re.fullmatch(r"cpu\d+", str(c))]
    if cpus:
        return cpus
    return []


def map_counts(frame: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """A map frame as counts per key: the value (summed over CPUs for per-CPU maps; a struct
    value must have one numeric field)."""
    values = value_columns(frame)
    if not values:
        values = [
            c for c in frame.columns if c not in keys and pd.api.types.is_numeric_dtype(frame[c])
        ]
        if len(values) != 1:
            raise Wrong(
                f"your map's value has the fields {', '.join(map(str, values))}; count with one "
                "number, e.g. BPF_HASH(name, struct key_t, u64)"
            )
    counts = frame[values].sum(axis=1)
    index = pd.MultiIndex.from_frame(frame[list(keys)]) if len(keys) > 1 else frame[keys[0]]
    return pd.Series(counts.to_numpy(), index=index).groupby(level=list(range(len(keys)))).sum()


def named_map(maps: dict[str, pd.DataFrame], name: str, declare: str) -> pd.DataFrame:
    """The map ``name`` of a learner's program (:func:`run_answer`'s frames).

    Raises:
        Wrong: the program has no map of that name (the message names ``declare``, the
            declaration the exercise asks for, and the maps the program has).
    """
    frame = maps.get(name)
    if frame is None:
        raise Wrong(
            f"your program has no map called {name} (it has: {', '.join(maps) or 'none'}): "
            f"declare {declare}",
            maps=maps,
        )
    return frame


def prediction(answer: Any, keys: Sequence[Any], what: str) -> dict[Any, int]:
    """A learner's prediction: a dict with exactly ``keys``, each a whole number.

    Args:
        answer: the learner's answer.
        keys: the keys the prediction must have, e.g. event sizes or command names.
        what: what each number counts, for the message, e.g. "lines hello() shows with
            that comm".

    Raises:
        Wrong: not a dict with exactly those keys, or a value that is not a whole number.
    """
    if not isinstance(answer, dict) or set(answer) != set(keys):
        raise Wrong(f"give a dict with exactly the keys {list(keys)}, each a whole number: {what}")
    bad = [k for k in keys if isinstance(answer[k], bool) or not isinstance(answer[k], int)]
    if bad:
        raise Wrong(f"the predictions for {bad} are not whole numbers")
    return {k: answer[k] for k in keys}


def shown_keys(counts: pd.Series, n: int = 5) -> str:
    """The first ``n`` keys of a map's counts, as text for a message ("nothing" when empty)."""
    return ", ".join(str(int(k)) for k in list(counts.index[:n])) or "nothing"


def one_int_key(frame: pd.DataFrame) -> pd.Series | None:
    """Counts per key of a map keyed by one whole number (``None`` for any other map)."""
    ints = int_key_columns(frame)
    return map_counts(frame, ints) if len(ints) == 1 else None


def one_text_key(frame: pd.DataFrame) -> pd.Series | None:
    """Counts per name of a map keyed by text, e.g. ``struct key_t { char comm[16]; }``."""
    texts = text_key_columns(frame)
    return map_counts(frame, texts[:1]) if texts else None


def two_int_keys(frame: pd.DataFrame) -> pd.Series | None:
    """Counts per ``(first, second)`` key field of a map keyed by a struct of two numbers."""
    ints = int_key_columns(frame)
    return map_counts(frame, ints[:2]) if len(ints) == 2 else None


def judge_maps(
    maps: dict[str, pd.DataFrame],
    judge: Callable[[str, pd.Series, pd.DataFrame], Right | str],
    *,
    counts: Callable[[pd.DataFrame], pd.Series | None] = one_int_key,
    declare: str,
    unfit: str | None = None,
    **details: Any,
) -> Right:
    """The verdict on the maps of a learner's program (:func:`run_answer`), one map at a time.

    Each map that ``counts`` can read (default: keyed by one number) is passed to
    ``judge(name, counts, frame)``, which returns :class:`Right` when that map holds the known
    workload's truth, or a sentence saying what is wrong with it. The first right map wins; if
    none is right, the sentence about the first map that could be read is the answer's
    :class:`Wrong` (with ``details``).

    Args:
        maps: the program's maps as frames, as :func:`run_answer` returns them.
        judge: compares one map's counts with what the workload did.
        counts: a map frame as counts per key, or ``None`` when the map has the wrong shape
            (:func:`one_int_key`, :func:`one_text_key`, :func:`two_int_keys`, or your own).
        declare: the declaration the exercise asks for, e.g. ``"BPF_HASH(counts, u32, u64)"``,
            named when no map fits.
        unfit: what to say when no map has a key ``counts`` can read (default: a sentence
            naming ``declare``).

    Raises:
        Wrong: no map, no map of the right shape, or no map holding the truth.
    """
    if not maps:
        raise Wrong(f"your program has no map to read: declare {declare}")
    said = []
    for name, frame in maps.items():
        found = counts(frame)
        if found is None:
            continue
        verdict = judge(name, found, frame)
        if isinstance(verdict, Right):
            return verdict
        said.append(verdict)
    if not said:
        raise Wrong(
            unfit
            or f"no map of yours ({', '.join(maps)}) has the key the exercise asks for: declare "
            f"{declare}",
            maps=maps,
        )
    raise Wrong(said[0], maps=maps, **details)


def named_execs(
    plan: dict[str, int], *, uid: int | None = None, program: str = "/bin/true"
) -> Callable[[], None]:
    """A workload: for each ``comm`` of ``plan``, ``plan[comm]`` execs of ``program``.

    The execs are started from this thread renamed ``comm`` (:func:`set_comm`), so each
    ``execve`` is made by a process called ``comm``, as the UID ``uid`` (default: this
    process's). The thread's name is put back afterwards.
    """
    from ebpf_lab.workloads import execs

    def run() -> None:
        old = set_comm("lab-workload")
        try:
            for comm, n in plan.items():
                set_comm(comm)
                execs({os.geteuid() if uid is None else uid: n}, program=program)
        finally:
            set_comm(old)

    return run


def set_comm(name: str) -> str:
    """Give the calling thread the kernel name (``comm``) ``name``; return the old one.

    Processes this thread starts inherit the name until they exec another program: a workload
    that sets its thread's comm first makes execs with a known, unique comm.
    """
    import threading as _threading

    path = f"/proc/self/task/{_threading.get_native_id()}/comm"
    with open(path) as f:
        old = f.read().rstrip("\n")
    with open(path, "w") as f:
        f.write(name[:15])
    return old
