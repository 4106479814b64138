"""The lab as a learner meets it: `scripts/lab.sh`, a real Chromium, JupyterLab, notebook 02.

Starts the lab the way the README says (``PORT=<port> bash scripts/lab.sh``), opens
``02-maps-exec-per-uid.ipynb`` in Debian's Chromium driven by Playwright, runs all cells from the
Run menu and checks what the page shows: no error output, the progress widget finished ("done"),
the exec-rate plot is an image, and the DataFrame shows the workload's UIDs 4242 and 4243. Then it
adds two cells, a 120-second run and a print of how it ended, clicks the widget's Stop button and
checks that the partial result ("stop button") appears within seconds. Screenshots go to
``test-artifacts/browser/``.

The notebook on disk is never changed: the lab runs with its own JupyterLab settings directory
(autosave off, no news fetching) and workspace directory, and the test checks the file after.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from labserver import REPO, STOP_TIMEOUT, Lab, free_port

NOTEBOOK = "02-maps-exec-per-uid.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts" / "browser"
RUN_ALL_TIMEOUT = 240_000  # ms: the notebook's bounded runs take ~10 s; the kernel starts first
STOP_WITHIN = 15.0  # s from the click on Stop to the printed partial result

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="scripts/lab.sh runs JupyterLab as root (the lab loads eBPF)"
)


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return "Debian's chromium is not installed (/usr/bin/chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    return None


@pytest.fixture(scope="module")
def browser_tools() -> None:
    missing = _missing()
    if missing is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{missing}: scripts/setup.sh installs it, so in CI it must be there")
    pytest.skip(f"{missing}: run `sudo make setup` (it installs chromium and playwright)")


def _lab_settings(root: Path) -> dict[str, str]:
    """A private JupyterLab settings and workspaces directory: autosave off (the test must not
    write the notebook), no news or update checks (no network), nothing left in ~/.jupyter."""
    settings = root / "settings"
    for plugin, values in {
        "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        "@jupyterlab/apputils-extension/notification": {
            "fetchNews": "false",
            "checkForUpdates": False,
        },
    }.items():
        path = settings / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    (root / "workspaces").mkdir()
    return {
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
    }


def _shut_down(lab: Lab) -> None:
    """Ctrl-C for the lab: SIGINT to its process group, then whatever is left is killed."""
    try:
        if lab.proc.poll() is None:
            os.killpg(lab.proc.pid, signal.SIGINT)
            try:
                lab.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
    except ProcessLookupError:
        pass
    finally:
        lab.stop()


def _wait_all_ran(page, timeout_ms: int) -> None:
    """Until every code cell shows an execution count and none is queued or running."""
    page.wait_for_function(
        """() => {
            const prompts = [...document.querySelectorAll(
                '.jp-NotebookPanel .jp-CodeCell .jp-InputArea-prompt')];
            return prompts.length > 0 && prompts.every(p => /\\[\\d+\\]/.test(p.textContent));
        }""",
        timeout=timeout_ms,
    )


def test_notebook_02_in_a_real_browser(browser_tools, fresh_uids) -> None:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = REPO / "notebooks" / NOTEBOOK
    before = path.read_bytes()
    (stop_uid,) = fresh_uids(1)
    tmp = Path(tempfile.mkdtemp(prefix="ebpf-lab-browser-"))
    lab = Lab(free_port(), **_lab_settings(tmp))
    try:
        lab.wait_ready()
        token = lab.token()
        with sync_playwright() as p:
            # Playwright gives every launch a fresh, temporary profile (--user-data-dir)
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                _run_all_and_check(page, lab.port, token)
                _stop_a_long_run(page, stop_uid)
            finally:
                browser.close()
    finally:
        _shut_down(lab)
        shutil.rmtree(tmp, ignore_errors=True)
        after = path.read_bytes()
        if after != before:
            path.write_bytes(before)
            pytest.fail(f"the browser session changed {path} (restored it)")


def _run_all_and_check(page, port: int, token: str) -> None:
    page.goto(f"http://127.0.0.1:{port}/lab/tree/{NOTEBOOK}?token={token}")
    panel = page.locator(".jp-NotebookPanel")
    panel.wait_for(timeout=120_000)
    # the notebook's kernelspec: the lab's own kernel, not a "Select Kernel" dialog
    page.locator(".jp-NotebookPanel-toolbar .jp-KernelName").filter(
        has_text="Python 3 (ebpf-lab)"
    ).wait_for(timeout=120_000)
    assert page.locator(".jp-Dialog").count() == 0, page.locator(".jp-Dialog").inner_text()
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=120_000)

    # Run -> Run All Cells, as a learner does
    page.locator(".lm-MenuBar-item", has_text=re.compile(r"^Run$")).click()
    page.locator(
        "li.lm-Menu-item .lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")
    ).click()
    _wait_all_ran(page, RUN_ALL_TIMEOUT)
    page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").wait_for(timeout=60_000)

    # no error output anywhere
    # (text_content, not inner_text: cells scrolled out of view are not rendered, and their
    # innerText is empty)
    stderr = page.locator(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
    ).all_text_contents()
    errors = [t for t in stderr if re.search(r"Traceback|Error", t)]
    assert not errors, errors

    # the progress widget appeared and finished
    labels = page.locator(".jp-OutputArea-output .widget-label").all_text_contents()
    assert any(t.startswith("done:") for t in labels), labels
    assert page.locator(".jp-OutputArea-output .widget-hprogress").count() >= 1
    # every run has ended: its Stop button is off, grey, and says "Done"
    runs = _run_buttons(page.locator(".jp-OutputArea-output"))
    assert runs, "no run button on the page"
    assert all(b == {"text": "Done", "disabled": True, "red": False} for b in runs), runs

    # the exec-rate plot is an image that loaded
    images = page.locator(".jp-OutputArea-output img")
    assert images.count() >= 1
    widths = images.evaluate_all("imgs => imgs.map(i => i.naturalWidth)")
    assert any(w > 100 for w in widths), widths

    # the DataFrame shows the workload's UIDs
    cells = page.locator(".jp-OutputArea-output table.dataframe td").all_text_contents()
    assert "4242" in cells and "4243" in cells, cells

    plot = images.last
    plot.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "02-run-all.png"))
    plot.screenshot(path=str(ARTIFACTS / "02-plot.png"))


LONG_RUN = (
    "long_run = ebpf_lab.exec_counts(duration=120, interval=0.5, "
    "workload=lambda: execs({{{uid}: 100000}}, per_second=40))"
)
SHOW_END = 'print("stopped_by:", long_run.attrs["stopped_by"], long_run.attrs["interrupted"])'


def _run_buttons(where) -> list[dict]:
    """The bounded runs' buttons under ``where``: text, disabled, red ("danger" style)."""
    found = where.locator("button.widget-button").evaluate_all(
        "bs => bs.map(b => ({text: b.textContent.trim(), disabled: b.disabled,"
        " red: b.classList.contains('mod-danger')}))"
    )
    return [b for b in found if b["text"] in ("Stop", "Stopped", "Done", "Failed")]


def _stop_a_long_run(page, uid: int) -> None:
    cells = page.locator(".jp-NotebookPanel .jp-Cell")
    count = cells.count()
    cells.last.locator(".jp-InputArea-prompt").click()  # select the last cell (command mode)
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below
    page.keyboard.press("Enter")  # edit it
    page.keyboard.insert_text(LONG_RUN.format(uid=uid))
    page.keyboard.press("Shift+Enter")  # run it; a new cell below is made and edited
    page.wait_for_function(
        f"() => document.querySelectorAll('.jp-NotebookPanel .jp-Cell').length >= {count + 2}"
    )
    page.keyboard.insert_text(SHOW_END)
    page.keyboard.press("Shift+Enter")  # queued until the long run ends

    run_cell = page.locator(".jp-NotebookPanel .jp-Cell").nth(count)
    show_cell = page.locator(".jp-NotebookPanel .jp-Cell").nth(count + 1)
    stop = run_cell.get_by_role("button", name="Stop")
    stop.wait_for(timeout=120_000)
    time.sleep(2.0)  # let it gather something
    assert run_cell.locator(".jp-InputArea-prompt").text_content().strip() == "[*]:"
    stop.scroll_into_view_if_needed()
    clicked = time.monotonic()
    stop.click()
    show_cell.locator(".jp-OutputArea-output", has_text="stopped_by:").wait_for(
        timeout=STOP_WITHIN * 1000
    )
    took = time.monotonic() - clicked
    text = show_cell.locator(".jp-OutputArea-output").text_content()
    assert "stopped_by: stop button True" in text, text
    assert took < STOP_WITHIN, took
    label = run_cell.locator("div.widget-label").text_content()
    assert label.startswith("stopped (stop button)"), label
    run_cell.locator("button.widget-button:disabled").wait_for(timeout=10_000)
    buttons = _run_buttons(run_cell)
    assert buttons == [{"text": "Stopped", "disabled": True, "red": False}], buttons
    show_cell.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "02-stopped.png"))
