"""The lab's exceptions. Each message says what to do next.

- ``ValueError``: a bad argument (duration, interval, attach type...), raised before loading.
- ``PermissionError``: not root. eBPF tracing needs CAP_BPF + CAP_PERFMON; the lab runs as root.
- :class:`BccMissing`: the BCC Python bindings do not import.
- :class:`UnsupportedFeature`: the running kernel lacks what was asked; names the alternative.
- :class:`ProgramError`: the C did not compile or the verifier rejected it; carries the log.
- :class:`HelperBuildError`: a user-space C helper (a workload) could not be built with gcc.
"""

from __future__ import annotations

ROOT_HINT = (
    "eBPF programs need root. Start the lab as root: `sudo make lab` "
    "(or run this script with sudo)."
)

BCC_HINT = (
    "BCC's Python bindings are not importable. Install them with "
    "`sudo apt-get install python3-bpfcc` (Debian/Ubuntu) and use the lab's venv "
    "(`sudo make lab` creates it with --system-site-packages so it sees bcc). "
    "Do not `pip install bcc`: that PyPI package is unrelated."
)


class BccMissing(ImportError):
    """BCC (the ``bcc`` Python module from python3-bpfcc) cannot be imported."""

    def __init__(self, detail: str = "") -> None:
        msg = BCC_HINT if not detail else f"{BCC_HINT} (import error: {detail})"
        super().__init__(msg)


class UnsupportedFeature(RuntimeError):
    """The running kernel cannot do what was asked.

    Attributes:
        feature: the doctor() feature name that is missing (e.g. ``"kprobe"``).
        alternative: what to use instead, when there is one.
    """

    def __init__(self, feature: str, reason: str, alternative: str | None = None) -> None:
        self.feature = feature
        self.reason = reason
        self.alternative = alternative
        msg = f"this kernel does not support {feature}: {reason}"
        if alternative:
            msg += f". Use {alternative} instead"
        super().__init__(msg)


class ProgramError(RuntimeError):
    """A BPF program failed to compile or to pass the verifier. Nothing was left loaded.

    Attributes:
        stage: ``"compile"`` or ``"verifier"`` (or ``"attach"``).
        log: the compiler's or verifier's own output, as text.
    """

    def __init__(self, stage: str, message: str, log: str = "") -> None:
        self.stage = stage
        self.log = log
        text = message
        if log.strip():
            text += "\n--- " + stage + " log ---\n" + log.rstrip()
        super().__init__(text)


class HelperBuildError(RuntimeError):
    """A user-space C helper program (``ebpf_lab/workloads/c/*.c``) could not be built.

    Attributes:
        log: the compiler's own output, as text (empty when no compiler was found).
    """

    def __init__(self, message: str, log: str = "") -> None:
        self.log = log
        text = message
        if log.strip():
            text += "\n--- compiler log ---\n" + log.rstrip()
        super().__init__(text)
