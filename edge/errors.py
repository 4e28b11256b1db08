"""One exception family whose message is the whole story: what is wrong and how to fix it.

The CLI prints ``str(error)`` as a single line and exits non-zero, so every message raised
here must name the offending thing and the fix, never just re-raise a backend's traceback.
Each condition a caller may want to handle on its own has its own type; all of them are
:class:`EdgemedError`.
"""

from __future__ import annotations


class EdgemedError(Exception):
    """A user-facing failure: bad input, a refused bundle, a backend that cannot serve."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = one_line(problem)
        self.fix = one_line(fix) if fix else fix
        super().__init__(f"{self.problem}; {self.fix}" if self.fix else self.problem)


# Every character str.splitlines() breaks a line at, written as an escape: a message names the user's own
# values (a file name may hold a newline), and it must stay one line wherever it is shown.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


def one_line(text: str) -> str:
    return str(text).translate(_LINE_BREAKS)


class BundleError(EdgemedError):
    """The bundle is missing, malformed, tampered with or truncated."""


class InputError(EdgemedError):
    """An image, array or signal that cannot be processed as given."""


class SignalQualityError(InputError):
    """A stretch of signal with nothing to analyse: NaN/Inf samples (a dropout) or a flat lead (electrode off)."""


class OptionError(InputError):
    """An option (CLI flag or API argument) with a value edgemed cannot use."""


class ConversionError(EdgemedError):
    """A model that cannot be exported, or whose export fails verification."""


class BackendUnavailable(EdgemedError):
    """A backend asked for that is not installed here or cannot run the artifact."""


class DeviceNotFound(BackendUnavailable):
    """A device asked for that this machine does not have (or a device word edgemed does not know)."""


class NoEligibleArtifact(BackendUnavailable):
    """The bundle holds no artifact that may serve the request (none matches, or none is certified)."""


class PipelineClosed(EdgemedError):
    """A pipeline (or stream) used after ``close()``."""


def error_line(exc: BaseException, limit: int = 300) -> str:
    """The line of a long framework message that says what went wrong.

    PyTorch's TorchScript interpreter and exporters wrap the real error ("Given groups=1, weight of
    size [16, 1, 3, 3], expected input[1, 3, 28, 28] to have 1 channels ...") in a first line that
    says only "The following operation failed in the TorchScript interpreter"; the last line of the
    form ``SomeError: text`` is the one that names the problem.
    """
    import re

    for line in reversed(str(exc).splitlines()):
        m = re.match(r"^\s*(?:[\w.]*(?:Error|Exception)):\s*(\S.*)$", line)
        if m:
            return m.group(1).strip()[:limit]
    return first_line(exc, limit)


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first non-empty line of an exception's message, for one-line errors.

    Backends raise exceptions with long C++ traces, or with no message at all; both must
    still become one readable line (an empty message gives the exception's type name).
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(exc).__name__
