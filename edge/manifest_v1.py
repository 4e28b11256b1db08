"""Reading schema-version-1 manifests (edgemed 0.1.0) as version 2.

Version 1 kept each artifact's drift as a free dict (``passed: bool`` beside the figures) and
its build as a free dict. The migration moves known keys to their typed places and keeps
everything else as descriptive settings. It only reshapes: anything malformed is left where it
is, so the version-2 validation that follows names the field.
"""

from __future__ import annotations

import copy
from typing import Any

# v1 figure keys the gate judges on; the rest of a v1 drift dict is descriptive.
_METRICS = ("agreement", "max_prob_diff", "dice", "iou", "changed_pixels", "max_abs_diff", "mean_abs_diff")
_DRIFT_KEYS = {"cases", "passed", "missed", "budget", "evaluated_on", "parity_tolerance", "reference"}
_BUILD_TYPED = {"seconds", "tool", "excluded_nodes", "quantized_layers", "layer_sqnr_db", "attempts", "static_batch"}


def migrate(manifest: dict) -> dict:
    """A version-2 dict from a version-1 dict (the input is not modified)."""
    m = copy.deepcopy(manifest)
    m["schema_version"] = 2
    provenance = m.get("provenance") if isinstance(m.get("provenance"), dict) else {}
    shape = m.get("input", {}).get("shape") if isinstance(m.get("input"), dict) else None
    for art in m.get("artifacts") or []:
        if not isinstance(art, dict):
            continue
        if isinstance(art.get("drift"), dict):
            art["drift"] = _drift(art["drift"])
        if isinstance(art.get("build"), dict):
            art["build"] = _build(art["build"], art, shape, provenance)
    return m


def _drift(d: dict) -> dict:
    cases = d.get("cases")
    metrics = {k: {"value": d[k], "cases": cases} for k in _METRICS if k in d}
    figures: dict[str, Any] = {}
    for key, value in d.items():
        if key in _DRIFT_KEYS or key in _METRICS:
            continue
        if isinstance(value, dict):  # dice_per_class {"1": 0.99} -> figures["dice_per_class[1]"]
            figures.update({f"{key}[{k}]": v for k, v in value.items()})
        else:
            figures[key] = value
    # Version 1 judged on point estimates from a handful of cases (8 for the shipped models). Its
    # failures stand; its passes, but for the FP32 export's deterministic parity check, are not
    # certificates: they are read as uncertified, and never selected without an explicit accept.
    budget = d.get("budget", "unknown")
    if d.get("passed") is not True:
        verdict = "failed"
    elif budget == "parity":
        verdict = "passed"
    else:
        verdict = "uncertified"
        d = {**d, "missed": [f"{budget} was judged by edgemed 0.1 on {cases} case(s) without confidence bounds: "
                             "convert again to certify it"]}
    out = {"verdict": verdict, "budget": budget, "cases": cases, "metrics": metrics, "figures": figures}
    for old, new in (("evaluated_on", "evaluated_on"), ("missed", "missed"), ("reference", "reference"),
                     ("parity_tolerance", "tolerance")):
        if old in d:
            out[new] = d[old]
    return out


def _build(b: dict, art: dict, shape: Any, provenance: dict) -> dict:
    out = {k: b[k] for k in _BUILD_TYPED if k in b}
    settings = {k: v for k, v in b.items() if k not in _BUILD_TYPED}
    if art.get("backend") == "tensorrt":
        out["tensorrt"] = _tensorrt(b, art, shape, provenance)
        settings.pop("dla_core", None)
    if settings:
        out["settings"] = settings
    return out


def _tensorrt(b: dict, art: dict, shape: Any, provenance: dict) -> Any:
    """Version 1 gated TensorRT engines with batch profile 1..(evaluation images) and --dla-core; those
    options were not recorded as such, but follow from what was."""
    if not isinstance(shape, list) or len(shape) < 3:
        return None
    dims = list(shape[1:])
    count = provenance.get("evaluation_count")
    top = count if isinstance(count, int) and count >= 1 else 1
    return {"precision": art.get("precision"), "min_shape": [1] + dims, "opt_shape": [1] + dims,
            "max_shape": [top] + dims, "dla_core": b.get("dla_core")}
