"""``edgemed report``: trends and regressions from the history store, as text or one HTML file.

A regression is judged against the stored baseline (the first run of the same model, artifact,
backend, precision, device and scenario): latency p50 up by more than the threshold, or drift
that no longer meets the bundle's budget. The HTML is self-contained (inline SVG and PNG) so it
can be attached to a release ticket or opened on an offline machine.
"""

from __future__ import annotations

import html
from collections import defaultdict

from edgemed.errors import EdgemedError

GROUP = ("model", "artifact", "backend", "precision", "device", "scenario")


def workload(run: dict) -> str:
    """What a run measured: its data, threads and stream rate. Runs are only compared within one workload."""
    w = run["record"].get("workload") or {}
    return ", ".join(f"{k} {w[k]}" for k in sorted(w)) or "workload not recorded"


def series(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs grouped by what they measured: model, artifact, backend, precision, device, scenario, workload."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in runs:
        groups[tuple(r[k] for k in GROUP) + (workload(r),)].append(r)
    return groups


def describe(finding: dict) -> str:
    """One line for a regression, the same in the text and the HTML report."""
    where = (f"{finding['model']} {finding['backend']}/{finding['precision']} on {finding['device']} "
             f"({finding['scenario']}; {finding['workload']})")
    if finding["kind"] == "latency":
        return (f"{where}: p50 {finding['baseline_p50_ms']:.2f} -> {finding['latest_p50_ms']:.2f} ms "
                f"(+{finding['change'] * 100:.0f}%)")
    return f"{where}: {finding['detail']}"


def _p50(run: dict) -> float | None:
    lat = run["record"].get("latency", {}).get("end_to_end", {})
    return lat.get("p50_ms")


def regressions(runs: list[dict], latency_threshold: float = 0.10) -> list[dict]:
    if not latency_threshold > 0:
        raise EdgemedError(f"regression threshold {latency_threshold!r} must be above 0",
                           "use e.g. 0.10 for 10% slower than the baseline")
    found = []
    for key, items in series(runs).items():
        base, last = items[0], items[-1]
        label = dict(zip((*GROUP, "workload"), key))
        if last is not base and _p50(base) and _p50(last) and _p50(last) > _p50(base) * (1 + latency_threshold):
            found.append({**label, "kind": "latency", "baseline_p50_ms": _p50(base), "latest_p50_ms": _p50(last),
                          "change": _p50(last) / _p50(base) - 1})
        # Drift: the bench judged each artifact on this device with the rule it was gated with (edgemed.gate).
        for part, where in (("drift_reference", "the bundle's reference probes"), ("drift_on_data", "the bench data")):
            drift = last["record"].get(part, {})
            if drift.get("verdict") == "failed":
                found.append({**label, "kind": "drift",
                              "detail": f"misses its budget on {where}: {'; '.join(drift.get('missed', []))}"})
    return found


def text_report(runs: list[dict], found: list[dict]) -> str:
    from edgemed.table import format_table

    rows = []
    for key, items in series(runs).items():
        p50s = [x for x in (_p50(r) for r in items) if x]
        rows.append(list(key) + [len(items), f"{p50s[0]:.2f}" if p50s else "-", f"{p50s[-1]:.2f}" if p50s else "-"])
    out = format_table(["model", "artifact", "backend", "precision", "device", "scenario", "workload", "runs",
                        "baseline p50 ms", "latest p50 ms"], rows)
    if found:
        out += "\n\nREGRESSIONS:\n" + "\n".join(f"- {describe(f)}" for f in found)
    else:
        out += "\n\nno regressions against the stored baselines"
    return out


# --- HTML -----------------------------------------------------------------------------------------

def _svg_latency(items: list[tuple[str, dict]]) -> str:
    """Horizontal box plots (min, p50, p90, p99, max) per artifact, from the latest run of each."""
    if not items:
        return "<p>no latency data</p>"
    top = max(s["max_ms"] for _, s in items) * 1.05
    width, row_h, left = 760, 34, 260
    scale = (width - left - 120) / top  # room on the right for the p50 label
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row_h * len(items) + 30}">']
    for i, (name, s) in enumerate(items):
        y = 10 + i * row_h
        x = {k: left + s[k] * scale for k in ("min_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")}
        parts += [
            f'<text x="4" y="{y + 16}" font-size="12">{html.escape(name)}</text>',
            f'<line x1="{x["min_ms"]:.1f}" x2="{x["max_ms"]:.1f}" y1="{y + 12}" y2="{y + 12}" stroke="#888"/>',
            f'<rect x="{x["p50_ms"]:.1f}" y="{y + 2}" width="{max(1, x["p99_ms"] - x["p50_ms"]):.1f}" height="20" '
            f'fill="#8fb8de" stroke="#345"/>',
            f'<line x1="{x["p90_ms"]:.1f}" x2="{x["p90_ms"]:.1f}" y1="{y + 2}" y2="{y + 22}" stroke="#345"/>',
            f'<text x="{x["max_ms"] + 4:.1f}" y="{y + 16}" font-size="11">p50 {s["p50_ms"]:.2f} ms</text>',
        ]
    parts.append(f'<text x="{left}" y="{row_h * len(items) + 25}" font-size="11">0 … {top:.1f} ms '
                 "(line: min–max, box: p50–p99, tick: p90)</text></svg>")
    return "".join(parts)


def _svg_cases(name: str, values: list[float]) -> str:
    width, height = 640, 120
    lo = min(min(values), 0.9)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">',
             f'<text x="4" y="14" font-size="12">{html.escape(name)}: Dice vs FP32 per case (min {min(values):.4f})'
             "</text>"]
    step = (width - 20) / max(1, len(values))
    for i, v in enumerate(values):
        h = (v - lo) / (1 - lo + 1e-9) * (height - 30)
        colour = "#c33" if v < 0.999 else "#4a8"
        parts.append(f'<rect x="{10 + i * step:.1f}" y="{height - h:.1f}" width="{max(1, step - 1):.1f}" '
                     f'height="{h:.1f}" fill="{colour}"/>')
    return "".join(parts) + "</svg>"


def html_report(runs: list[dict], found: list[dict]) -> str:
    latest = {key: items[-1] for key, items in series(runs).items()}
    lat_items = [(f"{k[0]} {k[2]}/{k[3]} ({k[5]})", r["record"]["latency"]["end_to_end"])
                 for k, r in latest.items() if "latency" in r["record"]]
    case_svgs = [_svg_cases(f"{k[0]} {k[2]}/{k[3]}", r["record"]["dice_per_case"])
                 for k, r in latest.items() if r["record"].get("dice_per_case")]
    reg = "".join(f'<li class="bad">{html.escape(describe(f))}</li>' for f in found) or \
        "<li>none against the stored baselines</li>"
    figures = []
    for k, r in latest.items():
        w = r["record"].get("worst_case")
        if not w or (r["backend"], r["precision"]) == ("onnxruntime", "fp32"):
            continue  # the FP32 reference against itself shows nothing
        caption = html.escape(f"{k[0]} {k[2]}/{k[3]}: {w['name']}, Dice vs FP32 {w['dice_vs_fp32']:.4f}")
        figures.append(
            f'<figure><img src="data:image/png;base64,{w["fp32_overlay_png"]}" width="192">'
            f'<img src="data:image/png;base64,{w["overlay_png"]}" width="192"><figcaption>{caption}'
            "</figcaption></figure>")
    imgs = "".join(figures)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgemed benchmark report</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222}}h2{{border-bottom:1px solid #ccc}}
figure{{display:inline-block;margin:8px}}.bad{{color:#a00}}</style></head><body>
<h1>edgemed benchmark report</h1><p>{len(runs)} stored runs, {len(latest)} artifact/device/scenario series.</p>
<h2>Regressions</h2><ul class="reg">{reg}</ul>
<h2>Latency per artifact (latest run, end to end)</h2>{_svg_latency(lat_items)}
<h2>Drift per case</h2>{''.join(case_svgs) or '<p>no per-case drift recorded (classification or no data)</p>'}
<h2>Worst cases: FP32 mask (left) vs quantized mask (right)</h2>{imgs or '<p>none recorded</p>'}
</body></html>"""
