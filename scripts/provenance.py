"""What the training scripts record about how their weights were made."""

from __future__ import annotations

import sys


def command(script: str) -> str:
    """The command line that made these weights, without --data and --out (where things are, not what)."""
    args, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a in ("--data", "--out"):
            skip = True
        elif not a.startswith(("--data=", "--out=")):
            args.append(a)
    return " ".join(["python", script, *args])
