"""Command line: ``python -m ebpf_lab doctor`` prints what this kernel can do for eBPF.

Run it as root with the lab's venv (which sees Debian's bcc)::

    sudo .venv/bin/python -m ebpf_lab doctor
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pandas as pd


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ebpf_lab",
        description="ebpf-lab: eBPF explained cell by cell, on the kernel in front of you.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "doctor",
        help="probe this kernel by loading tiny BPF programs and print what it supports",
        description="Probe this kernel by loading tiny BPF programs; print one row per feature.",
    )
    return parser


def format_table(frame: pd.DataFrame) -> str:
    """The doctor's table as plain text, text columns left-aligned, without the index."""
    formatters = {}
    for column in frame.columns:
        width = max([len(column), *(len(str(v)) for v in frame[column])])
        formatters[column] = lambda value, width=width: f"{value!s:<{width}}"
    text = frame.to_string(index=False, justify="left", formatters=formatters)
    return "\n".join(line.rstrip() for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 2 usage error)."""
    args = _parser().parse_args(argv)  # exits 2 with the usage on an unknown command
    if args.command == "doctor":
        from ebpf_lab.kernel.doctor import doctor

        print(format_table(doctor()))
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands first


if __name__ == "__main__":
    sys.exit(main())
