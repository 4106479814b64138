"""The Stop button in a real Jupyter kernel: a click reaches the kernel while the cell runs.

A widget click travels as a comm message on the kernel's shell channel, which is busy while a
cell executes. The lab pumps those messages between polls (jupyter_ui_poll). This test starts
the `ebpf-lab` kernel, runs a long bounded run in a cell, finds the Stop button's comm in the
kernel's output, sends exactly the message a browser sends on click, and checks that the cell
returns early with the partial frame.
"""

from __future__ import annotations

import os
import queue
import time

import pytest
from conftest import REPO, needs_root

pytestmark = needs_root

CELL = """
import ebpf_lab
from ebpf_lab.workloads import execs
done = {{}}
df = ebpf_lab.exec_counts(duration=120, interval=0.5,
    workload=lambda: done.update(runs=execs({{{uid}: 100000}}, per_second=40)))
ours = int(df[df.uid == {uid}].execs.sum())
print("RESULT", df.attrs["stopped_by"], df.attrs["interrupted"], ours == len(done["runs"]) > 0)
"""


def _start_kernel():
    from jupyter_client import KernelManager

    os.environ["JUPYTER_PATH"] = str(REPO / ".venv" / "share" / "jupyter")
    km = KernelManager(kernel_name="ebpf-lab")
    km.start_kernel(cwd=str(REPO / "notebooks"))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    return km, kc


def test_stop_button_click_ends_a_running_cell(fresh_uids):
    (uid,) = fresh_uids(1)
    km, kc = _start_kernel()
    try:
        msg_id = kc.execute(CELL.format(uid=uid))
        stop_comm = None
        stop_state = {}  # the Stop button's widget state, as the browser would have it
        clicked_at = None
        output = ""
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                msg = kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                msg = None
            if msg is not None and msg["parent_header"].get("msg_id") == msg_id:
                kind, content = msg["msg_type"], msg["content"]
                if kind == "comm_open":
                    state = content.get("data", {}).get("state", {})
                    if (
                        state.get("_model_name") == "ButtonModel"
                        and state.get("description") == "Stop"
                    ):
                        stop_comm = content["comm_id"]
                        stop_state = dict(state)
                        opened_at = time.monotonic()
                elif kind == "comm_msg" and content.get("comm_id") == stop_comm:
                    if content["data"].get("method") == "update":
                        stop_state.update(content["data"].get("state", {}))
                elif kind == "stream":
                    output += content["text"]
                elif kind == "error":
                    pytest.fail("\n".join(content["traceback"]))
                elif kind == "status" and content["execution_state"] == "idle":
                    break
            if stop_comm and clicked_at is None and time.monotonic() - opened_at > 2.0:
                click = kc.session.msg(
                    "comm_msg",
                    {
                        "comm_id": stop_comm,
                        "data": {"method": "custom", "content": {"event": "click"}},
                    },
                )
                kc.shell_channel.send(click)
                clicked_at = time.monotonic()
        assert stop_comm, "the run showed no Stop button"
        assert clicked_at, "never clicked"
        assert "RESULT stop button True True" in output, output
        # the cell ended soon after the click, not after 120 s
        assert time.monotonic() - clicked_at < 30
        # the run is over: the button is off and grey, and says so
        assert stop_state.get("disabled") is True, stop_state
        assert stop_state.get("description") == "Stopped", stop_state
        assert stop_state.get("button_style") == "", stop_state
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
