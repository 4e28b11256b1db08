"""Model versions: dotted integers ("1", "2.0", "1.4.12"), compared numerically.

A scanner must know whether a target is newer than what it serves, on its own, without trusting the
server's ordering: a version is therefore something a machine can compare without interpretation.
Pre-release tags and the like are refused at publish rather than ordered by guesswork.
"""

from __future__ import annotations

import re

from ..errors import OptionError

_VERSION = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,3}$")


def parse_version(text: str) -> tuple[int, ...]:
    """'1.10.2' -> (1, 10, 2); trailing zeros do not count ('1.0' == '1')."""
    if not isinstance(text, str) or not _VERSION.match(text):
        raise OptionError(f"version {text!r} is not a dotted number such as 1, 1.2 or 1.2.3",
                          "give --version as up to four dot-separated integers")
    parts = [int(p) for p in text.split(".")]
    while len(parts) > 1 and parts[-1] == 0:
        parts.pop()
    return tuple(parts)


def newer(a: str, b: str | None) -> bool:
    """Whether version ``a`` is above ``b`` (anything is above no version)."""
    return b is None or parse_version(a) > parse_version(b)
