"""What a replay looks like in Jupyter: every frame, Series and figure shown while a recording is
replayed carries a "REPLAY of a run recorded on <kernel> at <time>" banner.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import html
from typing import Any, Callable

import pandas as pd

from ebpf_lab.core import replay as _replay


def _pretty_time(iso: str | None) -> str:
    if not iso:
        return "an unknown time"
    try:
        t = _dt.datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if t.tzinfo is not None:
        t = t.astimezone(_dt.timezone.utc)
        return t.strftime("%Y-%m-%d %H:%M:%S UTC")
    return t.strftime("%Y-%m-%d %H:%M:%S")


def banner_text(kernel: str | None, recorded_at: str | None) -> str:
    """The line a replayed output shows: ``REPLAY of a run recorded on <kernel> at <time>``."""
    where = kernel or "an unknown kernel"
    return f"REPLAY of a run recorded on {where} at {_pretty_time(recorded_at)}"


_DISPLAY: dict[str, Any] = {}
_FIGURE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "application/pdf")
_STYLE = (
    "background:#b22222;color:#fff;font-weight:bold;padding:3px 8px;margin:2px 0 4px 0;"
    "border-radius:3px;display:inline-block;font-family:sans-serif;font-size:12px"
)


def _banner_for(obj: Any) -> str:
    info = getattr(obj, "attrs", {}).get("replay") if hasattr(obj, "attrs") else None
    if isinstance(info, dict) and info.get("banner"):
        return str(info["banner"])
    session = _replay.installed()
    return session.banner if session is not None else banner_text(None, None)


def _html_banner(text: str) -> str:
    return f'<div class="ebpf-lab-replay" style="{_STYLE}">{html.escape(text)}</div>'


def _frame_html(df: pd.DataFrame) -> str:
    inner = df._repr_html_()
    if inner is None:
        inner = f"<pre>{html.escape(repr(df))}</pre>"
    return _html_banner(_banner_for(df)) + inner


def _series_html(s: pd.Series) -> str:
    return _html_banner(_banner_for(s)) + f"<pre>{html.escape(repr(s))}</pre>"


def _plain(obj: Any, p: Any, cycle: bool) -> None:
    p.text(f"[{_banner_for(obj)}]\n{obj!r}")


def _stamp_figure(fig: Any) -> None:
    text = _banner_for(None)
    if getattr(fig, "_ebpf_lab_replay_banner", None) == text:
        return
    fig.text(
        0.5,
        1.0,
        text,
        ha="center",
        va="bottom",
        fontsize=9,
        fontweight="bold",
        color="white",
        bbox={"facecolor": "#b22222", "edgecolor": "none", "pad": 3},
    )
    fig._ebpf_lab_replay_banner = text


def _figure_printer(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def printer(fig: Any) -> Any:
        _stamp_figure(fig)
        return original(fig)

    printer.__ebpf_lab_banner__ = True  # type: ignore[attr-defined]
    return printer


def _ensure_figure_banner(*_args: Any) -> None:
    """Wrap whatever prints matplotlib figures now (``%matplotlib inline`` may set it later)."""
    import sys

    if "matplotlib.figure" not in sys.modules or "shell" not in _DISPLAY:
        return
    from matplotlib.figure import Figure

    formatters = _DISPLAY["shell"].display_formatter.formatters
    for mime in _FIGURE_MIMES:
        fmt = formatters.get(mime)
        if fmt is None:
            continue
        try:
            current_printer = fmt.lookup_by_type(Figure)
        except KeyError:
            continue
        if getattr(current_printer, "__ebpf_lab_banner__", False):
            continue
        _DISPLAY.setdefault("figure", []).append((mime, current_printer))
        fmt.for_type(Figure, _figure_printer(current_printer))
    plain = formatters["text/plain"]
    if "figure_plain" not in _DISPLAY:
        _DISPLAY["figure_plain"] = plain.for_type(Figure, _plain)


#: a code cell whose first line starts with this runs on a live kernel only: while a recording
#: is replayed it is not run, and says so (cells that use BCC directly, such as the seed's own
#: scripts, have no recorded run to replay)
LIVE_ONLY = "# live only"


def skip_live_only(lines: list[str]) -> list[str]:
    """IPython input transformer: while replaying, a ``# live only`` cell prints why it is not
    run instead of running (a live session runs it unchanged)."""
    if lines and lines[0].lstrip().lower().startswith(LIVE_ONLY) and _replay.replaying():
        why = lines[0].strip()[len(LIVE_ONLY) :].lstrip(" :-")
        text = "REPLAY: this cell runs on a live kernel only" + (f" ({why})" if why else "")
        return [f"print({text!r})\n"]
    return lines


_LIVE_ONLY_BYPASS: list[Any] = []


def _is_live_only(cell: str) -> bool:
    return cell.lstrip().lower().startswith(LIVE_ONLY)


def _pre_run_cell(info: Any) -> None:
    """While recording, a ``# live only`` cell runs outside the recording (its workloads are
    not saved: a replay skips the cell, so it must not expect them)."""
    if _replay.mode() == "record" and _is_live_only(getattr(info, "raw_cell", "") or ""):
        bypass = _replay.bypass()
        bypass.__enter__()
        _LIVE_ONLY_BYPASS.append(bypass)


def _post_run_cell(*_args: Any) -> None:
    while _LIVE_ONLY_BYPASS:
        _LIVE_ONLY_BYPASS.pop().__exit__(None, None, None)


def install_live_only() -> None:
    """Apply the ``# live only`` rule in the running IPython (while a recording is in force)."""
    shell = _shell()
    if shell is None or skip_live_only in shell.input_transformers_post:
        return
    shell.input_transformers_post.append(skip_live_only)
    shell.events.register("pre_run_cell", _pre_run_cell)
    shell.events.register("post_run_cell", _post_run_cell)


def uninstall_live_only() -> None:
    shell = _shell()
    if shell is None:
        return
    with contextlib.suppress(ValueError):
        shell.input_transformers_post.remove(skip_live_only)
    for event, fn in (("pre_run_cell", _pre_run_cell), ("post_run_cell", _post_run_cell)):
        with contextlib.suppress(ValueError):
            shell.events.unregister(event, fn)


def _shell() -> Any:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    return get_ipython()


def install_display() -> None:
    """Register the REPLAY banner for frames, Series and figures in the running IPython."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    shell = get_ipython()
    if shell is None or "shell" in _DISPLAY:
        return
    formatters = shell.display_formatter.formatters
    _DISPLAY["shell"] = shell
    _DISPLAY["types"] = []
    for mime, typ, fn in (
        ("text/html", pd.DataFrame, _frame_html),
        ("text/html", pd.Series, _series_html),
        ("text/plain", pd.DataFrame, _plain),
        ("text/plain", pd.Series, _plain),
    ):
        _DISPLAY["types"].append((mime, typ, formatters[mime].for_type(typ, fn)))
    shell.events.register("pre_execute", _ensure_figure_banner)
    _ensure_figure_banner()


def uninstall_display() -> None:
    shell = _DISPLAY.pop("shell", None)
    if shell is None:
        return
    formatters = shell.display_formatter.formatters
    for mime, typ, old in _DISPLAY.pop("types", []):
        _restore(formatters[mime], typ, old)
    if "figure" in _DISPLAY or "figure_plain" in _DISPLAY:
        from matplotlib.figure import Figure

        for mime, old in _DISPLAY.pop("figure", []):
            _restore(formatters[mime], Figure, old)
        if "figure_plain" in _DISPLAY:
            _restore(formatters["text/plain"], Figure, _DISPLAY.pop("figure_plain"))
    with contextlib.suppress(ValueError):
        shell.events.unregister("pre_execute", _ensure_figure_banner)


def _restore(fmt: Any, typ: type, old: Any) -> None:
    if old is None:
        fmt.type_printers.pop(typ, None)
    else:
        fmt.for_type(typ, old)
