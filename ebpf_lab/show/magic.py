"""``%%ebpf``: write BPF C in a notebook cell, run it for a bounded time, get its maps as frames.

Load it with ``%load_ext ebpf_lab``. Then::

    %%ebpf --tracepoint syscalls:sys_enter_execve count -d 3 --workload "lambda: execs({1000: 5})"
    BPF_HASH(counts, u32, u64);
    int count(void *ctx)
    {
        u32 uid = bpf_get_current_uid_gid();
        counts.atomic_increment(uid);
        return 0;
    }

The cell body is BPF C (BCC's dialect). The magic

1. checks its options (a bad option is a ``UsageError`` and nothing loads);
2. compiles the C and runs the verifier on every function it will attach, without attaching
   (:func:`ebpf_lab.core.verdict.check`, as :func:`ebpf_lab.verify` does). A compile or verifier
   error is shown with the *cell's* line numbers (the ``%%ebpf`` line is line 1, as Jupyter
   numbers them) and nothing stays loaded;
3. runs the program through the lab's bounded-run core for ``--duration`` seconds (and until the
   ``--workload`` is done), with the progress bar and Stop button, and detaches on every exit path;
4. returns the program's maps as DataFrames (:func:`ebpf_lab.show.frames.table_frame`): a dict
   ``{map_name: frame}``, or the frame itself when there is one map. Perf and ring buffers are
   event streams, not tables, and are skipped.

Attach points: one option per kind of attach point the core knows
(:data:`ebpf_lab.core.attach.CELL_KINDS`), each taking the target and the C function to run
there; repeat an option for several: ``--tracepoint CATEGORY:EVENT FN``,
``--raw-tracepoint NAME FN``, ``--uprobe LIBRARY:SYMBOL FN``, ``--uretprobe LIBRARY:SYMBOL FN``,
``--perf-event software:cpu-clock FN`` (with ``--freq``), ``--kprobe FUNCTION FN`` and
``--kretprobe FUNCTION FN`` (only on kernels with kprobes). Functions written with BCC's own
macros (``TRACEPOINT_PROBE(syscalls, sys_enter_execve) { ... }``) attach by themselves.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from ebpf_lab.core import kernelfs as kernel
from ebpf_lab.core.attach import CELL_KINDS, KPROBE_KINDS, TARGET_FORMS, Probe, check_target
from ebpf_lab.core.attach import prog_type as probe_prog_type
from ebpf_lab.core.collectors import MapReader
from ebpf_lab.core.errors import ProgramError, UnsupportedFeature
from ebpf_lab.core.guards import check_duration, require_bcc
from ebpf_lab.core.run import Alternative, bounded_run
from ebpf_lab.core.verdict import Verdict, autoloaded, check
from ebpf_lab.show.frames import table_frame

try:  # IPython is a dependency of the lab (Jupyter), but keep the module importable without it
    from IPython.core import magic_arguments
    from IPython.core.error import UsageError
    from IPython.core.magic import Magics, cell_magic, magics_class
except ImportError:  # pragma: no cover
    magic_arguments = None  # type: ignore[assignment]


#: what the first line of the cell adds: the C starts on line 2 of the cell
LINE_OFFSET = 1


class CellError(ProgramError):
    """The cell's C did not compile or the verifier rejected it. Nothing was left loaded.

    Attributes:
        stage: ``"compile"`` or ``"verifier"``.
        log: the compiler's diagnostics or the verifier's log.
        result: the verifier's whole verdict (:class:`ebpf_lab.core.verdict.Verdict`: ``.rows``
            is the log read line by line against the cell's lines).
        lines: the cell line numbers the error is about.
    """

    def __init__(self, result: Verdict, readable: str) -> None:
        super().__init__(result.stage, readable, "")
        self.log = result.log
        self.result = result
        self.lines = list(result.error_lines)
        self.readable = readable

    def _render_traceback_(self) -> list[str]:  # IPython shows this instead of a traceback
        return [f"ProgramError ({self.stage}): " + self.readable]


def _readable(result: Verdict, cell_lines: list[str]) -> str:
    """The error in a few lines, naming the cell's own line numbers."""

    def show(n: int) -> str:
        text = cell_lines[n - 1] if 0 < n <= len(cell_lines) else ""
        return f"  line {n:>3} | {text.rstrip()}"

    out: list[str] = []
    if result.stage == "compile":
        out.append("%%ebpf: the C in this cell did not compile (nothing was loaded):")
        for row in result.rows:
            if row["kind"] != "error":
                continue
            diag = row["text"].split(": error: ", 1)[-1]
            if row["c_line"] is not None:
                out.append(show(int(row["c_line"])))
            out.append(f"           error: {diag}")
        if len(out) == 1:
            out.append(result.message)
    else:
        where = f" at line {result.error_lines[0]}" if result.error_lines else ""
        out.append(
            f"%%ebpf: the verifier rejected {result.failed_fn}(){where} (nothing was loaded):"
        )
        for n in result.error_lines:
            out.append(show(n))
        errors = result.errors or [result.message]
        out.extend(f"  verifier: {text}" for text in errors)
        out.extend(f"  {r['text']}" for r in result.rows if r["text"].startswith("HINT: "))
        out.append("The verifier's whole log: the exception's .log (or .result.rows).")
    return "\n".join(out)


def _probes_from(args: Any) -> list[Probe]:
    """The probes the options name, one kind after the other (:data:`CELL_KINDS`)."""
    probes: list[Probe] = []
    for kind in CELL_KINDS:
        # argparse keeps --raw-tracepoint as args.raw_tracepoint: the kind's own name
        for target, fn in getattr(args, kind, None) or []:
            try:
                check_target(kind, target)
            except ValueError as exc:
                raise UsageError(f"--{kind.replace('_', '-')}: {exc}") from None
            freq = 0
            if kind == "perf_event":
                if args.freq <= 0:
                    raise UsageError(
                        f"--freq must be a positive number of samples per second, got {args.freq}"
                    )
                freq = args.freq
            probes.append(Probe(kind, target, fn, pid=args.pid, sample_freq=freq))
    for probe in probes:
        if not probe.fn.isidentifier():
            raise UsageError(f"{probe.describe()}: {probe.fn!r} is not a C function name")
    return probes


def _require_kprobes(what: str) -> None:
    have, why = kernel.kprobes_available()
    if not have:
        raise UnsupportedFeature(
            "kprobe",
            f"{what}: {why}",
            "--tracepoint syscalls:sys_enter_NAME FN (or --raw-tracepoint NAME FN)",
        )


def run_cell(line: str, cell: str, user_ns: dict[str, Any], args: Any) -> Any:
    """The work of ``%%ebpf`` once its options are parsed (see the module docstring)."""
    if not cell.strip():
        raise UsageError("%%ebpf: the cell is empty; write BPF C below the %%ebpf line")
    try:
        duration = check_duration(args.duration, "--duration")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.out is not None and not args.out.isidentifier():
        raise UsageError(f"--out wants a Python variable name, got {args.out!r}")
    cflags = []
    for define in args.define or []:
        if not re.match(r"^[A-Za-z_]\w*(=.*)?$", define):
            raise UsageError(f"-D wants NAME or NAME=VALUE, got {define!r}")
        cflags.append(f"-D{define}")
    probes = _probes_from(args)
    workload = None
    if args.workload is not None:
        try:
            workload = eval(args.workload, user_ns)  # noqa: S307 - the learner's own expression
        except Exception as exc:
            raise UsageError(
                f"--workload {args.workload!r} could not be evaluated: {type(exc).__name__}: {exc}"
            ) from None
        if not callable(workload):
            raise UsageError(
                f"--workload must give a callable taking no arguments, e.g. "
                f'--workload "lambda: execs({{1000: 5}})"; {args.workload!r} '
                f"is of type {type(workload).__name__}"
            )
    for probe in probes:
        if probe.kind in KPROBE_KINDS:
            _require_kprobes(f"--{probe.kind} {probe.target} {probe.fn}")
    bcc = require_bcc()

    source = "\n" * LINE_OFFSET + cell  # so that line numbers are the cell's own
    types = {p.fn: probe_prog_type(bcc, p) for p in probes}
    try:
        result = check(source, types, None, cflags, 1, label="cell")
    except ValueError as exc:  # e.g. an option names a function the cell does not define
        raise UsageError(f"%%ebpf: {exc}") from None
    if not result.ok:
        raise CellError(result, _readable(result, ("%%ebpf " + line + "\n" + cell).splitlines()))
    auto = [fn for fn in result.functions if autoloaded(fn)]
    if any(fn.startswith(("kprobe__", "kretprobe__")) for fn in auto):
        _require_kprobes("the cell defines kprobe__ functions, which BCC attaches as kprobes")
    if not probes and not auto:
        raise UsageError(
            "%%ebpf: say where to attach, e.g. --tracepoint syscalls:sys_enter_execve FN "
            "(or use BCC's TRACEPOINT_PROBE(category, event) macro in the cell)"
        )
    # BCC attaches these while it compiles; the core checks that it did (its autoload kind)
    label = ", ".join([p.describe() for p in probes] + [f"auto {fn}" for fn in auto])
    probes = [*probes, *(Probe("autoload", fn, fn) for fn in auto)]
    reader = MapReader(each=table_frame)  # every key/value map, read once at the end
    summary = bounded_run(
        name="%%ebpf",
        source=source,
        alternatives=[Alternative(label, probes, "%%ebpf options")],
        collector=reader,
        duration=duration,
        workload=workload,
        cflags=cflags,
    )
    run_attrs = {k: v for k, v in summary.attrs.items() if k != "program"}
    frames = {}
    for name, frame in reader.frames.items():
        frame.attrs.update(run_attrs)
        frame.attrs["skipped_maps"] = dict(reader.skipped)
        frames[name] = frame
    out: Any = next(iter(frames.values())) if len(frames) == 1 else frames
    if args.out is not None:
        user_ns[args.out] = out
    return out


def _probe_options(func: Any) -> Any:
    """One ``--KIND TARGET FN`` option per attach kind of the core (:data:`TARGET_FORMS`)."""
    for kind in reversed(CELL_KINDS):  # the parser lists decorators' options bottom-up
        metavar, example, what = TARGET_FORMS[kind]
        func = magic_arguments.argument(
            f"--{kind.replace('_', '-')}",
            nargs=2,
            action="append",
            metavar=(metavar, "FN"),
            help=f"{what}, e.g. {example}",
        )(func)
    return func


if magic_arguments is not None:

    @magics_class
    class EbpfMagics(Magics):
        """The lab's cell magics: ``%%ebpf``."""

        @magic_arguments.magic_arguments()
        @magic_arguments.argument(
            "-d",
            "--duration",
            type=float,
            default=5.0,
            help="seconds to stay attached (default 5); the run also waits for --workload",
        )
        @_probe_options
        @magic_arguments.argument(
            "--freq", type=int, default=99, help="samples per second per CPU for --perf-event (99)"
        )
        @magic_arguments.argument(
            "--pid", type=int, default=-1, help="only this process, for uprobes and perf events"
        )
        @magic_arguments.argument(
            "-D",
            "--define",
            action="append",
            metavar="NAME[=VALUE]",
            help="a C macro for the program, e.g. -D WATCH_UID=1000",
        )
        @magic_arguments.argument(
            "--workload",
            metavar="EXPR",
            help="a Python expression giving a callable to run once "
            'attached, e.g. "lambda: execs({1000: 5})"',
        )
        @magic_arguments.argument(
            "--out", metavar="NAME", help="also store the result in this variable"
        )
        @cell_magic
        def ebpf(self, line: str, cell: str) -> Any:
            """Compile, verify and run the BPF C in this cell; return its maps as DataFrames."""
            try:  # shell-like quoting: --workload "lambda: execs({1000: 5})"
                argv = shlex.split(line)
            except ValueError as exc:
                raise UsageError(f"%%ebpf options: {exc} in {line!r}") from None
            args = self.ebpf.parser.parse_args(argv)
            return run_cell(line, cell, self.shell.user_ns, args)


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext ebpf_lab`` (or ``ebpf_lab.show.magic``): register ``%%ebpf``."""
    ipython.register_magics(EbpfMagics)
