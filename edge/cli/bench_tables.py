"""The tables and lines ``edgemed bench`` prints from its report (the JSON report is the stable interface;
these are for people)."""

from __future__ import annotations


def artifact_name(a: dict) -> str:
    """backend/precision, or for an ensemble's configuration its name (members may differ in backend)."""
    if a.get("configuration") == "member":
        return f"member {a['file'].rsplit('/', 1)[0]} ({a['backend']}/{a['precision']})"
    return a.get("configuration") or f"{a['backend']}/{a['precision']}"


ENSEMBLE_HEADERS = ["configuration", "runs/frame", "e2e p50", "e2e p99", "cost", "vs ground truth",
                    "vs best member, paired (95% interval)"]


def ensemble_table(report: dict) -> str:
    """The ensemble, each member alone and the ensemble without flips, timed side by side; paired with the best
    member on the same cases where there are labels."""
    from ..table import format_table

    e = report["ensemble"]
    rows = []
    for a in report["artifacts"]:
        lat = a["latency"]["end_to_end"]
        vs = a.get("vs_best_member")
        paired = "" if vs is None else (f"{vs['gain']:+.4f} [{vs['low']:+.4f}, {vs['high']:+.4f}] n={vs['cases']}"
                                        + (f", McNemar p={vs['p_mcnemar']:.3f}" if "p_mcnemar" in vs else ""))
        rows.append([artifact_name(a) + ("" if a.get("selectable", True) else " (comparison only)"),
                     a["runs_per_frame"], f"{lat['p50_ms']:.3f}", f"{lat['p99_ms']:.3f}", f"x{a['cost_vs_member']:.2f}",
                     truth_text(report, a), paired])
    gate = e.get("combination_gate")
    lines = [f"ensemble: {len(e['members'])} member(s), combined by {e['combine']}, flips: "
             f"{', '.join(e['tta']) or 'none'}; combination gate: "
             + (f"{gate['verdict']} ({', '.join(gate['served'])} on {gate['device']})" if gate else "none"),
             format_table(ENSEMBLE_HEADERS, rows)]
    drift = report["artifacts"][0].get("drift_on_data")
    if drift is not None:
        import msgspec

        from ..gate.verdict import summary
        from ..manifest import DriftRecord

        lines.append(f"combination on the bench data against the FP32 combination: "
                     f"{summary(msgspec.convert(drift, DriftRecord))}")
    lines.append(f"cost: p50 over {e['cost_reference']}'s"
                 + (" (the best member on these labels)" if e.get("best_member") else " (no labels: the first member)")
                 + f"; {report['artifacts'][0]['latency']['method']}")
    return "\n".join(lines)


BENCH_HEADERS = ["artifact", "MB", "gate", "e2e p50", "e2e p90", "e2e p99", "infer p50", "raw ORT p50",
                 "drift on data", "vs ground truth"]


def bench_row(report: dict, a: dict) -> list:
    import msgspec

    from ..gate.verdict import summary
    from ..manifest import DriftRecord

    head = [f"{a['backend']}/{a['precision']}", f"{a['bytes'] / 1e6:.2f}",
            a["verdict"] if a.get("selectable", True) else f"{a['verdict']}, not selectable"]
    if "latency" not in a:
        return head + ["-"] * 7
    e2e, inf = a["latency"]["end_to_end"], a["latency"]["infer"]
    raw = a["latency"].get("raw_onnxruntime", {}).get("p50_ms")
    drift = summary(msgspec.convert(a["drift_on_data"], DriftRecord))
    return head + [f"{e2e['p50_ms']:.2f}", f"{e2e['p90_ms']:.2f}", f"{e2e['p99_ms']:.2f}", f"{inf['p50_ms']:.2f}",
                   f"{raw:.2f}" if raw else "-", drift, truth_text(report, a)]


def truth_text(report: dict, a: dict) -> str:
    """Accuracy, Dice or lesion sensitivity vs ground truth, each with its 95% bounds and case count (the task's
    words)."""
    from ..tasks import task_named

    acc = a.get("accuracy")
    return "- (no labels)" if acc is None else task_named(report["task"]).truth_summary(acc)


def record_line(a: dict) -> str:
    r = a["record"]
    line = (f"record {a['backend']}/{a['precision']}: {r['beats']} beats in {r['duration_s']:.0f} s of signal, "
            f"{r['realtime_factor']:.0f}x real time, {r['compute_per_beat_ms']:.3f} ms compute per beat, each beat "
            f"reported within {r['report_delay_bound_s']:g} s + compute; {len(r['gaps'])} gap(s)")
    vs = r.get("against_annotations")
    if vs and vs.get("annotated_beats"):
        det = vs["detected"]
        classes = ", ".join(f"{k} Se {v['sensitivity']['value']:.3f} (n={v['sensitivity']['cases']})"
                            for k, v in vs["per_class"].items() if v["sensitivity"]["cases"])
        line += (f"; vs annotations: {det['value']:.4f} of {det['cases']} beats detected (>= {det['low']:.4f}); "
                 f"{classes}")
    return line
