"""Reading the compiler's and the verifier's logs against the learner's own C lines.

A :class:`~ebpf_lab.core.errors.ProgramError` carries the log as text; these functions turn a log
into rows (one dict per line: ``text``, ``kind``, ``insn``, ``c_line``) and name the learner's
line an error is about. The verifier lesson (``ebpf_lab.verify``) and the ``%%ebpf`` magic read
logs this way, through :func:`ebpf_lab.core.verdict.check`.

The verifier annotates its log with source lines (``; *count += 1; @ main.c:17``). Those numbers
count lines of the C *as BCC rewrote it* (a preamble, an extra line per function): a
:class:`LineMap` maps them back to the learner's lines. Older kernels (6.1 among them) give the
source text only (``; *count += 1;``); the text finds the line then.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

#: what each log line is: the verifier's instruction, register state, source annotation, its
#: verdict (``error``), statistics, BCC's own remarks, anything else
LOG_KINDS = ("insn", "state", "source", "error", "stats", "bcc", "other")

_INSN_RE = re.compile(r"^(\d+): \(([0-9a-f]{2})\)")
_STATE_RE = re.compile(r"^(\d+): (R\d+|frame\d+)")
_SOURCE_RE = re.compile(r"^; (.*?)(?: @ main\.c:(\d+))?$")
_STATS_RE = re.compile(r"^processed (\d+) insns")
_CLANG_RE = re.compile(r"^/virtual/main\.c:(\d+):\d+: (error|warning|note)")
_DIAG_RE = re.compile(r"^/virtual/main\.c:(\d+):(\d+):", re.M)
_OTHER_RE = re.compile(
    r"^(func#\d+ @\d+|Live regs before insn:|\s+\d+\s+\d+: |SCC |from \d+ to \d+|"
    r"last_idx |frame\d+: |mark_precise|regs=|parent |Validating |Func#|"
    r"verification time|stack depth|\d+: safe$|propagating |\(\d+\) )"
)


class LineMap(dict):  # type: ignore[type-arg]
    """Rewritten main.c line -> learner line, plus ``by_text``: a source line's text (stripped)
    -> the learner lines it may be (for logs that give the text without a line number)."""

    def __init__(self, mapping: dict[int, int], by_text: dict[str, list[int]]) -> None:
        super().__init__(mapping)
        self.by_text = by_text


def line_map(rewritten: list[str] | None, learner: list[str]) -> LineMap:
    """Map 1-based lines of BCC's rewritten main.c to the learner's 1-based lines."""
    by_text: dict[str, list[int]] = {}
    for j, line in enumerate(learner, 1):
        by_text.setdefault(line.strip(), []).append(j)
    if not rewritten:
        return LineMap({}, by_text)
    a = [line.strip() for line in rewritten]
    b = [line.strip() for line in learner]
    mapping: dict[int, int] = {}
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            for k in range(i2 - i1):
                mapping[i1 + k + 1] = j1 + k + 1
        elif tag == "replace":  # BCC rewrote a macro over different lines: map to the first
            for k in range(i2 - i1):
                mapping[i1 + k + 1] = j1 + min(k, j2 - j1 - 1) + 1
    for i, text in enumerate(a, 1):  # BCC's rewritten text of a line names the learner's line too
        if i in mapping and mapping[i] not in by_text.setdefault(text, []):
            by_text[text].append(mapping[i])
    return LineMap(mapping, by_text)


def verifier_rows(lines: list[str], lines_of: LineMap) -> list[dict[str, Any]]:
    """Label each line of one function's verifier log: ``text``, ``kind``, ``insn``, ``c_line``.

    The last lines after the final instruction or state line that are not statistics or BCC's
    remarks are the verifier's verdict (``kind="error"``).
    """
    rows: list[dict[str, Any]] = []
    last_code = -1
    last_c_line = 0
    for i, text in enumerate(lines):
        if _INSN_RE.match(text) or _STATE_RE.match(text):
            last_code = i
    for i, text in enumerate(lines):
        insn = c_line = None
        m = _INSN_RE.match(text)
        if m:
            kind, insn = "insn", int(m.group(1))
        elif _STATE_RE.match(text):
            kind, insn = "state", int(text.split(":", 1)[0])
        elif text.startswith("; "):
            kind = "source"
            sm = _SOURCE_RE.match(text)
            if sm and sm.group(2):
                c_line = lines_of.get(int(sm.group(2)))
            elif sm and sm.group(1).strip() and lines_of.by_text.get(sm.group(1).strip()):
                # no "@ main.c:N" (older kernels): the line's text says which line it is
                found = sorted(set(lines_of.by_text[sm.group(1).strip()]))
                c_line = next((n for n in found if n >= last_c_line), found[0])
            if c_line is not None:
                last_c_line = c_line
        elif _STATS_RE.match(text):
            kind = "stats"
        elif text.startswith(("bpf: ", "HINT: ")):
            kind = "bcc"
        elif _OTHER_RE.match(text) or not text.strip():
            kind = "other"
        elif i > last_code:
            kind = "error"
        else:
            kind = "other"
        rows.append({"text": text, "kind": kind, "insn": insn, "c_line": c_line})
    return rows


def compile_rows(log: str) -> list[dict[str, Any]]:
    """Label each line of clang's diagnostics; ``c_line`` is the line clang names (as given)."""
    rows = []
    for text in log.splitlines():
        m = _CLANG_RE.match(text)
        kind = "other"
        c_line = None
        if m:
            c_line = int(m.group(1))
            kind = "error" if m.group(2) == "error" else m.group(2)
        rows.append({"fn": None, "text": text, "kind": kind, "insn": None, "c_line": c_line})
    return rows


def compile_error_lines(log: str) -> list[int]:
    """Line numbers (1-based, of the C text as given) that clang complained about."""
    return sorted({int(m.group(1)) for m in _DIAG_RE.finditer(log)})


def verifier_verdict(
    rows: list[dict[str, Any]], fn: str, learner: list[str], failure: str
) -> tuple[str, list[int]]:
    """One sentence for a refused function, and the learner's line it is about (if known).

    The line is that of the last source annotation before the verdict: the C line of the
    instruction the verifier refused.
    """
    errors = [r["text"] for r in rows if r["kind"] == "error"]
    sources = [r["c_line"] for r in rows if r["kind"] == "source" and r["c_line"] is not None]
    line = sources[-1] if sources else None
    what = errors[0] if errors else failure
    if line is not None and 0 < line <= len(learner):
        msg = (
            f"the verifier rejected {fn}() at line {line}: {learner[line - 1].strip()}\n  -> {what}"
        )
        return msg, [line]
    return f"the verifier rejected {fn}(): {what}", []
