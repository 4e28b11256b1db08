"""``edgemed report``: trends and regressions from the history store, as text or one HTML file.

A regression is judged against the stored baseline (the first run of the same model, artifact,
backend, precision, device and scenario): latency p50 up by more than the threshold, or drift
that no longer meets the bundle's budget. The HTML is self-contained (inline SVG and PNG) so it
can be attached to a release ticket or opened on an offline machine. It shows what a person would
rather look at than read: the accuracy (or Dice, or mAP) each artifact buys against its latency,
latency over the stored history, per-class sensitivity with its intervals, FROC for detectors,
beat figures against a record's annotations for ECG, per-case drift, the worst cases as images, and for bundles
converted with ``--explain`` the cases whose saliency maps moved most, FP32's map beside the artifact's.
"""

from __future__ import annotations

import html
import math
from collections import defaultdict

from edgemed.errors import EdgemedError

from . import charts

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
        # Drift: the bench judged each artifact on this device with the rule it was gated with (edgemed.gate.verdict).
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


def _name(key: tuple) -> str:
    """model backend/precision (scenario, device): how a series is named in the charts."""
    return f"{key[2]}/{key[3]} ({key[5]}, {key[4]})"


def _by_model(latest: dict[tuple, dict]) -> dict[str, list[tuple[tuple, dict]]]:
    groups: dict[str, list[tuple[tuple, dict]]] = defaultdict(list)
    for key, run in latest.items():
        groups[key[0]].append((key, run))
    return groups


def _history(runs: list[dict]) -> str:
    """p50 end to end over every stored run, one line per series, one chart per model."""
    out = []
    by_model: dict[str, dict[tuple, list]] = defaultdict(dict)
    for key, items in series(runs).items():
        pts = [(float(r["id"]), _p50(r), f"{r['created']}: p50 {_p50(r):.3f} ms ({workload(r)})") for r in items
               if _p50(r)]
        if pts:
            by_model[key[0]][key] = pts
    for model, lines in by_model.items():
        named = [(_name(k) + (f" [{k[6][:24]}]" if len({x[6] for x in lines}) > 1 else ""), pts)
                 for k, pts in lines.items()]
        out.append(f"<h3>{html.escape(model)}</h3>" + charts.line_chart(
            named, "stored run (oldest to newest)", "end-to-end p50 (ms)", f"latency history of {model}", xint=True))
    return "".join(out) or "<p>no latency stored</p>"


def _quality(record: dict) -> tuple[str, dict] | None:
    """The figure a user trades against latency: vs ground truth where the bench had labels, else agreement with
    FP32 on the bench data. (label, {value, low, high, cases})."""
    acc = record.get("accuracy")
    if acc:
        if "accuracy_interval" in acc:
            return "accuracy vs ground truth", acc["accuracy_interval"]
        if "sensitivity" in acc and isinstance(acc["sensitivity"], dict):
            if acc.get("map50_interval"):
                return "mAP@0.5 vs ground truth", acc["map50_interval"]
            return "lesion sensitivity vs ground truth", acc["sensitivity"]
        per = acc.get("per_class", {})
        first = next(iter(per.values()), None)
        if first and first.get("dice_interval"):
            return f"Dice vs ground truth ({next(iter(per))})", first["dice_interval"]
    metrics = (record.get("drift_on_data") or {}).get("metrics", {})
    for name in ("agreement", "case_dice", "lesion_agreement"):
        if name in metrics and metrics[name].get("value") is not None:
            return f"{name} with FP32 (no ground truth)", metrics[name]
    return None


def _tradeoff(latest: dict[tuple, dict]) -> str:
    out = []
    for model, items in _by_model(latest).items():
        by_metric: dict[str, list[dict]] = defaultdict(list)
        for key, run in items:
            rec = run["record"]
            q = _quality(rec)
            p50 = _p50(run)
            if q is None or not p50:
                continue
            label, fig = q
            hollow = rec.get("selectable") is False
            short = f"{key[2]}/{key[3]}" + ("" if key[5] == "latency" else f" {key[5]}")
            by_metric[label].append({
                "name": short + (" (not selectable)" if hollow else ""), "x": p50, "y": fig["value"],
                "low": fig.get("low"), "high": fig.get("high"), "hollow": hollow,
                "text": f"{_name(key)}: p50 {p50:.3f} ms, {label} {fig['value']:.4f}"
                        + (f" [{fig['low']:.4f}, {fig['high']:.4f}]" if fig.get("low") is not None else "")
                        + (f", n={fig['cases']}" if fig.get("cases") else "")
                        + (f"; {rec.get('verdict')}, not selectable" if hollow else "")})
        for label, points in by_metric.items():
            out.append(f"<h3>{html.escape(model)}</h3>" + charts.scatter(
                points, "end-to-end p50 (ms)", label, f"{label} vs latency for {model}"))
    return "".join(out) or "<p>no run with a figure to trade against latency</p>"


def _per_class(latest: dict[tuple, dict]) -> str:
    out = []
    for model, items in _by_model(latest).items():
        rows = []
        for i, (key, run) in enumerate(items):
            per = (run["record"].get("accuracy") or {}).get("per_class", {})
            for cls, fig in per.items():
                interval = fig.get("sensitivity_interval")
                if interval is None:
                    continue
                rows.append({"name": f"{cls} · {key[2]}/{key[3]}", "value": interval.get("value"),
                             "low": interval.get("low"), "high": interval.get("high"),
                             "cases": interval.get("cases"), "group": i})
        if rows:
            out.append(f"<h3>{html.escape(model)}</h3>" + charts.interval_bars(
                rows, "sensitivity (95% interval)", f"per-class sensitivity of {model}"))
    return "".join(out) or "<p>no classifier bench with labels stored</p>"


def _froc(latest: dict[tuple, dict]) -> str:
    out = []
    for model, items in _by_model(latest).items():
        lines, spans = [], {}
        for key, run in items:
            curve = (run["record"].get("accuracy") or {}).get("froc") or {}
            pts = [(float(rate), fig["value"], f"{_name(key)}: {fig['value']:.3f} of {fig['cases']} lesions at "
                    f"{float(rate):g} FP/image") for rate, fig in sorted(curve.items(), key=lambda kv: float(kv[0]))
                   if fig and fig.get("value") is not None and float(rate) > 0]
            if pts:
                lines.append((_name(key), pts))
                spans[_name(key)] = [(fig["low"], fig["high"]) if fig.get("low") is not None else None
                                     for rate, fig in sorted(curve.items(), key=lambda kv: float(kv[0]))
                                     if fig and fig.get("value") is not None and float(rate) > 0]
        if lines:
            out.append(f"<h3>{html.escape(model)}</h3>" + charts.line_chart(
                lines, "false positives per image", "lesion sensitivity", f"FROC of {model}", xlog=True,
                intervals=spans))
    return "".join(out) or "<p>no detector bench with labels stored</p>"


def _beats(latest: dict[tuple, dict]) -> str:
    out = []
    for model, items in _by_model(latest).items():
        rows = []
        for i, (key, run) in enumerate(items):
            vs = (run["record"].get("record") or {}).get("against_annotations") or {}
            if vs.get("detected"):
                d = vs["detected"]
                rows.append({"name": f"detected · {key[2]}/{key[3]}", "value": d["value"], "low": d.get("low"),
                             "high": d.get("high"), "cases": d.get("cases"), "group": i})
            for cls, fig in (vs.get("per_class") or {}).items():
                for what in ("sensitivity", "ppv"):
                    f = fig.get(what) or {}
                    if f.get("cases"):
                        rows.append({"name": f"{cls} {'Se' if what == 'sensitivity' else 'PPV'} · {key[2]}/{key[3]}",
                                     "value": f.get("value"), "low": f.get("low"), "high": f.get("high"),
                                     "cases": f.get("cases"), "group": i})
        if rows:
            out.append(f"<h3>{html.escape(model)}</h3>" + charts.interval_bars(
                rows, "against the record's beat annotations (95% interval)", f"beat figures of {model}"))
    return "".join(out) or "<p>no ECG record bench (bench --record) stored</p>"


def _agreement_strip(name: str, agree: list[bool]) -> str:
    """One square per case: green where the artifact kept FP32's answer, red where it did not."""
    per_row, size = 60, 9
    rows = max(1, math.ceil(len(agree) / per_row))
    kept = sum(agree)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{per_row * size + 8}" '
             f'height="{rows * size + 22}"><text x="4" y="13" font-size="12">{html.escape(name)}: {kept} of '
             f"{len(agree)} cases keep FP32's answer</text>"]
    for i, ok in enumerate(agree):
        x, y = 4 + (i % per_row) * size, 18 + (i // per_row) * size
        parts.append(f'<rect x="{x}" y="{y}" width="{size - 1}" height="{size - 1}" '
                     f'fill="{"#4a8" if ok else "#c33"}"/>')
    return "".join(parts) + "</svg>"


def _figure(item: dict) -> str:
    caption = html.escape(item["caption"])
    if "trace" in item:
        return f"<figure>{charts.trace(item['trace'])}<figcaption>{caption}</figcaption></figure>"
    pictures = "".join(f'<img src="data:image/png;base64,{item[k]}" width="192" alt="">'
                       for k in ("fp32_png", "png") if k in item)
    return f"<figure>{pictures}<figcaption>{caption}</figcaption></figure>"


def _worst(latest: dict[tuple, dict]) -> str:
    out = []
    for key, r in latest.items():
        rec = r["record"]
        items = list(rec.get("worst_vs_fp32") or []) + list(rec.get("worst_vs_truth") or [])
        w = rec.get("worst_case")
        if not items and w and (r["backend"], r["precision"]) != ("onnxruntime", "fp32"):  # runs stored before
            items = [{"caption": f"{w['name']}, Dice vs FP32 {w['dice_vs_fp32']:.4f} (left FP32, right this artifact)",
                      "fp32_png": w["fp32_overlay_png"], "png": w["overlay_png"]}]
        if items:
            out.append(f"<h3>{html.escape(key[0])} {html.escape(_name(key))}</h3>"
                       + "".join(_figure(i) for i in items))
    return "".join(out) or "<p>none recorded (every artifact agreed with FP32 and with the labels, or no data)</p>"


def _saliency_figures(where: str, metrics: dict, cases: object) -> str:
    """One line of the saliency-drift figures of a drift record (value, 95% bounds)."""
    parts = [f"{name.removeprefix('saliency_')} {fig['value']:.4f} ({fig['low']:.4f}..{fig['high']:.4f})"
             for name in ("saliency_rank", "saliency_overlap", "saliency_pointing")
             if (fig := metrics.get(name)) and fig.get("low") is not None]
    return f"saliency drift, {where} ({cases} cases): " + ", ".join(parts) if parts else ""


def _saliency(latest: dict[tuple, dict]) -> str:
    """Per artifact judged on saliency drift: the gate's figures, the bench data's, and the cases whose maps moved
    most, FP32's map beside the artifact's over the same frame (benchmarks/saliency_cases.py stores them)."""
    out = []
    for key, r in latest.items():
        rec = r["record"]
        if "worst_saliency" not in rec and "explanation_cost" not in rec:
            continue
        gate, on_data, cost = rec.get("gate") or {}, rec.get("saliency_on_data") or {}, rec.get("explanation_cost")
        lines = [_saliency_figures("gate at conversion", gate.get("metrics") or {}, gate.get("cases")),
                 _saliency_figures(f"bench data, {on_data.get('verdict')}", on_data.get("metrics") or {},
                                   on_data.get("cases"))]
        if cost:
            ms = cost["p50_ms"]
            lines.insert(0, f"predict p50 {ms['without explanation']:.3f} ms without the explanation, "
                            f"{ms['with explanation']:.3f} ms with it ({cost['with / without']:.2f}x), "
                            f"{ms['with the map read']:.3f} ms with the map read "
                            f"({cost['with the map read / without']:.2f}x); one engine, side by side")
        figures = "".join(_figure(i).replace("<figure>", '<figure class="saliency">', 1)
                          for i in rec.get("worst_saliency", []))
        if "worst_saliency" in rec and not figures:
            figures = "<p>no case on the bench data where the two maps differ by one drawn pixel</p>"
        out.append(f"<h3>{html.escape(key[0])} {html.escape(_name(key))}</h3>"
                   + "".join(f"<p>{html.escape(line)}</p>" for line in lines if line) + figures)
    if not out:
        return "<p>none recorded (no bundle converted with --explain was benched)</p>"
    return ("<p>Saliency maps (bundles converted with --explain) are explanations for quality assurance, not "
            "findings. Shown: the cases where each artifact's map of FP32's class moved most from FP32's own "
            "(lowest rank correlation first), with the saliency-drift figures (rank correlation, top-10% overlap, "
            "pointing; 95% bounds) the gate measured at conversion and the bench measured on its data, and what the "
            "explanation costs predict.</p>"
            + "".join(out))


def html_report(runs: list[dict], found: list[dict]) -> str:
    latest = {key: items[-1] for key, items in series(runs).items()}
    lat_items = [(f"{k[0]} {k[2]}/{k[3]} ({k[5]})", r["record"]["latency"]["end_to_end"])
                 for k, r in latest.items() if "latency" in r["record"]]
    case_svgs = [_svg_cases(f"{k[0]} {k[2]}/{k[3]}", r["record"]["dice_per_case"])
                 for k, r in latest.items() if r["record"].get("dice_per_case")
                 and (r["backend"], r["precision"]) != ("onnxruntime", "fp32")]  # the reference against itself
    case_svgs += [_agreement_strip(f"{k[0]} {k[2]}/{k[3]}", r["record"]["agreement_per_case"])
                  for k, r in latest.items() if r["record"].get("agreement_per_case")
                  and (r["backend"], r["precision"]) != ("onnxruntime", "fp32")]
    reg = "".join(f'<li class="bad">{html.escape(describe(f))}</li>' for f in found) or \
        "<li>none against the stored baselines</li>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>edgemed benchmark report</title>
<style>body{{font-family:sans-serif;margin:24px;color:#222;max-width:1100px}}h2{{border-bottom:1px solid #ccc}}
h3{{font-size:14px;margin:12px 0 4px}}figure{{display:inline-block;margin:8px;vertical-align:top;max-width:400px}}
figcaption{{font-size:12px}}.bad{{color:#a00}}svg.chart{{display:block;margin:4px 0 12px}}</style></head><body>
<h1>edgemed benchmark report</h1><p>{len(runs)} stored runs, {len(latest)} artifact/device/scenario series.
Hollow points: artifacts that did not pass their gate (measured, never selected). Hover a mark for its figures.</p>
<h2>Regressions</h2><ul class="reg">{reg}</ul>
<h2 id="tradeoff">Accuracy vs latency (latest run per artifact)</h2>{_tradeoff(latest)}
<h2 id="history">Latency over the stored history</h2>{_history(runs)}
<h2 id="per-class">Per-class sensitivity (vs ground truth)</h2>{_per_class(latest)}
<h2 id="froc">FROC (detectors)</h2>{_froc(latest)}
<h2 id="beats">ECG beats against the annotations (bench --record)</h2>{_beats(latest)}
<h2 id="latency">Latency per artifact (latest run, end to end)</h2>{_svg_latency(lat_items)}
<h2 id="drift">Drift per case (vs FP32)</h2>{''.join(case_svgs) or
    '<p>none to show: only the FP32 reference itself was benched on data</p>'}
<h2 id="worst">Worst cases (vs FP32, and vs ground truth where labelled)</h2>{_worst(latest)}
<h2 id="saliency">Saliency drift: worst cases (FP32's map beside each artifact's)</h2>{_saliency(latest)}
</body></html>"""
