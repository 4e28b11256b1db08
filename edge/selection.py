"""Choosing which artifact of a bundle serves a request.

Only artifacts that passed the drift gate are eligible; explicit backend/precision requests
narrow the choice, and asking for what the bundle lacks is an error that lists what it has.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import BackendUnavailable


def describe_artifacts(artifacts: Sequence[dict]) -> str:
    return ", ".join(
        f"{a.get('backend')}/{a.get('precision')}{'' if a.get('drift', {}).get('passed') else ' (failed drift gate)'}"
        for a in artifacts
    )


def eligible(artifacts: Sequence[dict], backend: str | None = None, precision: str | None = None) -> list[dict]:
    """Passed artifacts matching the request, in bundle order."""
    chosen = [
        a for a in artifacts
        if a.get("drift", {}).get("passed") is True
        and (backend is None or a.get("backend") == backend)
        and (precision is None or a.get("precision") == precision)
    ]
    if not chosen:
        wanted = "/".join(x for x in (backend, precision) if x) or "any artifact"
        raise BackendUnavailable(
            f"the bundle has no drift-passed artifact for {wanted}",
            f"available: {describe_artifacts(artifacts)}",
        )
    return chosen


def rank(candidates: Sequence[dict], preference: Sequence[tuple[str, str]]) -> list[dict]:
    """Order candidates by a device profile's preference list; unlisted ones go last."""
    order = {tuple(p): i for i, p in enumerate(preference)}
    return sorted(candidates, key=lambda a: order.get((a.get("backend"), a.get("precision")), len(order)))
