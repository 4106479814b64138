"""What a learner sees while a bounded run is going: a progress bar, a Stop button, a live plot.

In Jupyter every bounded run shows a progress bar and a Stop button (ipywidgets). The run's loop
keeps the notebook responsive by processing widget events between polls (``jupyter_ui_poll``),
so a click on Stop reaches the kernel while the cell is still running. Stop ends the run early
and the call returns what was gathered so far, with ``df.attrs["interrupted"] = True``.
However the run ends (its time is up, Stop, Ctrl-C, an error), the button then turns grey and
disabled, and says how: "Done", "Stopped" or "Failed".

Outside Jupyter (scripts, tests, the CLI) the same calls work and show nothing.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any


def in_jupyter() -> bool:
    """True inside a Jupyter kernel (where widgets can be displayed)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Live:
    """The run's view: a no-op outside Jupyter. ``stop`` is set by the Stop button (or by code)."""

    def __init__(self, title: str, duration: float) -> None:
        self.title = title
        self.duration = duration
        self.stop = threading.Event()
        #: set by the core once the run's probes are attached and it polls (past its compile)
        self.attached = threading.Event()

    def request_stop(self) -> None:
        """End the run early, as the Stop button does."""
        self.stop.set()

    def open(self) -> None:
        """Show the view (called once probes are attached)."""

    def update(self, elapsed: float, note: str = "") -> None:
        """Advance the progress bar to ``elapsed`` seconds."""

    def pump(self) -> None:
        """Let the notebook deliver widget events (clicks) to the kernel."""

    def show_figure(self, fig: Any) -> None:
        """Replace the live plot with ``fig`` (a matplotlib Figure)."""

    def close(self, status: str) -> None:
        """Finish the view with a final status line; the run has ended (on every exit path)."""


class WidgetLive(Live):
    """Progress bar, status text and a Stop button, for Jupyter."""

    def __init__(self, title: str, duration: float) -> None:
        super().__init__(title, duration)
        import ipywidgets as w

        self._w = w
        self.bar = w.FloatProgress(
            value=0.0,
            min=0.0,
            max=duration,
            description=title[:24],
            bar_style="info",
            layout=w.Layout(width="45%"),
        )
        self.label = w.Label(value="attaching...")
        self.button = w.Button(
            description="Stop",
            button_style="danger",
            icon="stop",
            tooltip="End this run now and keep what was gathered",
        )
        self.button.on_click(lambda _b: self.request_stop())
        self.plot = w.Output()
        self.box = w.VBox([w.HBox([self.bar, self.label, self.button]), self.plot])
        self._poller: Any = None
        self._ui: Any = None

    def open(self) -> None:
        from IPython.display import display

        display(self.box)
        try:
            from jupyter_ui_poll import ui_events

            self._ui = ui_events()
            self._poller = self._ui.__enter__()
        except Exception:  # no frontend event pumping available: Stop works on next cell
            self._ui = None
            self._poller = None

    def update(self, elapsed: float, note: str = "") -> None:
        self.bar.value = min(elapsed, self.duration)
        text = f"{elapsed:5.1f} / {self.duration:g} s"
        self.label.value = f"{text}  {note}".rstrip()

    def pump(self) -> None:
        if self._poller is not None:
            with contextlib.suppress(Exception):
                self._poller(5)

    def show_figure(self, fig: Any) -> None:
        from IPython.display import display

        with self.plot:
            self.plot.clear_output(wait=True)
            display(fig)

    def close(self, status: str) -> None:
        """Stop pumping events; show ``status``; the Stop button becomes a grey, disabled
        "Stopped" (stopped, interrupted), "Failed" (an error) or "Done" (it ran to the end)."""
        if self._ui is not None:
            with contextlib.suppress(Exception):
                self._ui.__exit__(None, None, None)
            self._ui = None
            self._poller = None
        if "fail" in status:
            ending, bar_style = "Failed", "danger"
        elif "stopped" in status or "interrupt" in status:
            ending, bar_style = "Stopped", "warning"
        else:
            ending, bar_style = "Done", "success"
        with self.button.hold_sync():  # one update: never a disabled red button in between
            self.button.disabled = True
            self.button.button_style = ""
            self.button.icon = ""
            self.button.description = ending
            self.button.tooltip = "This run has ended"
        self.bar.bar_style = bar_style
        self.label.value = status


def make_live(title: str, duration: float, live: bool | None = None) -> Live:
    """A widget view in Jupyter (unless ``live=False``), a silent one elsewhere."""
    if live is False or (live is None and not in_jupyter()):
        return Live(title, duration)
    try:
        return WidgetLive(title, duration)
    except ImportError:
        return Live(title, duration)
