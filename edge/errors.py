"""One exception type whose message is the whole story: what is wrong and how to fix it.

The CLI prints ``str(error)`` as a single line and exits non-zero, so every message raised
here must name the offending thing and the fix, never just re-raise a backend's traceback.
"""

from __future__ import annotations


class EdgemedError(Exception):
    """A user-facing failure: bad input, a refused bundle, a backend that cannot serve."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem}; {fix}" if fix else problem)


class BundleError(EdgemedError):
    """The bundle is missing, malformed, tampered with or truncated."""


class InputError(EdgemedError):
    """An image, array or option that cannot be processed as given."""


class ConversionError(EdgemedError):
    """A model that cannot be exported, or whose export fails verification."""


class BackendUnavailable(EdgemedError):
    """A backend or device asked for that this machine or bundle cannot serve."""
