"""Small inline-SVG charts for the HTML benchmark report: lines, scatter with intervals, interval bars.

The report must open on an offline machine and travel as one file attached to a release ticket,
so no charting library or CDN: each chart is a few dozen SVG elements written here. Every mark
carries a ``<title>`` (the browser shows it on hover) with its exact figures, so nothing is read
off a pixel grid.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f",
           "#bcbd22")


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _ticks(lo: float, hi: float, log: bool, integer: bool = False) -> list[float]:
    if log:
        out = [m * 10 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in (1, 2, 5)]
        return [t for t in out if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / 5
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


@dataclass
class Plot:
    """One chart: data ranges, axes and the marks added to it; ``svg()`` draws it."""

    x: tuple[float, float]
    y: tuple[float, float]
    xlabel: str
    ylabel: str
    xlog: bool = False
    xint: bool = False  # the x axis counts things (runs): whole-number ticks
    width: int = 720
    height: int = 300
    left: int = 64
    right: int = 240  # room for the legend
    top: int = 16
    bottom: int = 44
    marks: list[str] = field(default_factory=list)
    legend: list[tuple[str, str, bool]] = field(default_factory=list)  # (name, colour, hollow)

    def __post_init__(self) -> None:
        lo, hi = self.x
        if self.xlog:
            lo, hi = max(lo, 1e-6), max(hi, lo * 10)
        elif hi <= lo:
            lo, hi = lo - 1, hi + 1
        ylo, yhi = self.y
        if yhi <= ylo:
            ylo, yhi = ylo - 0.5, yhi + 0.5
        self.x, self.y = (lo, hi), (ylo, yhi)

    def px(self, v: float) -> float:
        lo, hi = self.x
        if self.xlog:
            v, lo, hi = math.log10(max(v, lo)), math.log10(lo), math.log10(hi)
        return self.left + (v - lo) / (hi - lo) * (self.width - self.left - self.right)

    def py(self, v: float) -> float:
        lo, hi = self.y
        return self.height - self.bottom - (v - lo) / (hi - lo) * (self.height - self.top - self.bottom)

    def svg(self, label: str) -> str:
        w, h, b = self.width, self.height, self.bottom
        parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_esc(label)}" '
                 f'width="{w}" height="{h}" font-family="sans-serif" font-size="11">']
        for t in _ticks(*self.x, self.xlog, self.xint):
            x = self.px(t)
            parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{self.top}" y2="{h - b}" stroke="#eee"/>'
                         f'<text x="{x:.1f}" y="{h - b + 14}" text-anchor="middle">{t:.4g}</text>')
        for t in _ticks(*self.y, False):
            y = self.py(t)
            parts.append(f'<line x1="{self.left}" x2="{w - self.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>'
                         f'<text x="{self.left - 4}" y="{y + 4:.1f}" text-anchor="end">{t:.4g}</text>')
        parts.append(f'<rect x="{self.left}" y="{self.top}" width="{w - self.left - self.right}" '
                     f'height="{h - self.top - b}" fill="none" stroke="#888"/>')
        parts.append(f'<text x="{(self.left + w - self.right) / 2:.0f}" y="{h - 8}" text-anchor="middle">'
                     f'{_esc(self.xlabel)}</text>')
        parts.append(f'<text transform="translate(14,{(self.top + h - b) / 2:.0f}) rotate(-90)" '
                     f'text-anchor="middle">{_esc(self.ylabel)}</text>')
        parts += self.marks
        for i, (name, c, hollow) in enumerate(self.legend):
            y = self.top + 8 + 16 * i
            x = w - self.right + 10
            fill = "white" if hollow else c
            parts.append(f'<circle cx="{x}" cy="{y}" r="4" fill="{fill}" stroke="{c}" stroke-width="2"/>'
                         f'<text x="{x + 8}" y="{y + 4}">{_esc(name[:38])}</text>')
        return "".join(parts) + "</svg>"


def line_chart(series: Sequence[tuple[str, Sequence[tuple[float, float, str]]]], xlabel: str, ylabel: str,
               label: str, xlog: bool = False, xint: bool = False,
               intervals: dict[str, Sequence[tuple[float, float] | None]] | None = None) -> str:
    """One line per series of (x, y, hover text) points; ``intervals`` adds a whisker (low, high) per point."""
    xs = [p[0] for _, pts in series for p in pts]
    ys = [p[1] for _, pts in series for p in pts]
    for spans in (intervals or {}).values():
        ys += [v for s in spans if s for v in s]
    if not xs:
        return ""
    pad = max((max(ys) - min(ys)) * 0.08, 0.05 * abs(max(ys)), 1e-3)
    lo, hi = min(xs), max(xs)
    if xlog:  # room for the end points' marks
        lo, hi = lo / 1.3, hi * 1.3
    else:
        lo, hi = lo - max((hi - lo) * 0.04, 0.5 if xint else 0.0), hi + max((hi - lo) * 0.04, 0.5 if xint else 0.0)
    plot = Plot((lo, hi), (min(ys) - pad, max(ys) + pad), xlabel, ylabel, xlog, xint)
    for i, (name, pts) in enumerate(series):
        c = colour(i)
        path = " ".join(f"{plot.px(x):.1f},{plot.py(y):.1f}" for x, y, _ in pts)
        plot.marks.append(f'<polyline points="{path}" fill="none" stroke="{c}" stroke-width="2"/>')
        for k, (x, y, text) in enumerate(pts):
            span = (intervals or {}).get(name, [None] * len(pts))[k]
            if span:
                plot.marks.append(f'<line x1="{plot.px(x):.1f}" x2="{plot.px(x):.1f}" y1="{plot.py(span[0]):.1f}" '
                                  f'y2="{plot.py(span[1]):.1f}" stroke="{c}"/>')
            plot.marks.append(f'<circle cx="{plot.px(x):.1f}" cy="{plot.py(y):.1f}" r="3.5" fill="{c}">'
                              f'<title>{_esc(text)}</title></circle>')
        plot.legend.append((name, c, False))
    return plot.svg(label)


def scatter(points: Sequence[dict], xlabel: str, ylabel: str, label: str) -> str:
    """Points {name, x, y, low, high, hollow, text}: a whisker from low to high, hollow for what is not selectable."""
    if not points:
        return ""
    xs = [p["x"] for p in points]
    ys = [v for p in points for v in (p["y"], p.get("low"), p.get("high")) if v is not None]
    pad = max((max(ys) - min(ys)) * 0.1, 0.02)
    xpad = (max(xs) - min(xs)) * 0.1 or max(xs) * 0.1 or 1.0
    plot = Plot((max(0.0, min(xs) - xpad), max(xs) + xpad), (min(ys) - pad, max(ys) + pad), xlabel, ylabel)
    for i, p in enumerate(points):
        c = colour(i)
        x, y = plot.px(p["x"]), plot.py(p["y"])
        if p.get("low") is not None and p.get("high") is not None:
            plot.marks.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{plot.py(p["low"]):.1f}" '
                              f'y2="{plot.py(p["high"]):.1f}" stroke="{c}" stroke-width="1.5"/>')
        fill = "white" if p.get("hollow") else c
        plot.marks.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{fill}" stroke="{c}" '
                          f'stroke-width="2"><title>{_esc(p.get("text", p["name"]))}</title></circle>')
        plot.legend.append((p["name"], c, bool(p.get("hollow"))))
    return plot.svg(label)


def interval_bars(rows: Sequence[dict], xlabel: str, label: str, lo: float = 0.0, hi: float = 1.0) -> str:
    """Horizontal bars {name, value, low, high, group}: the value as a bar, its interval as a whisker."""
    if not rows:
        return ""
    row_h, left, width, right = 20, 230, 680, 100
    height = 30 + row_h * len(rows)
    plot = Plot((lo, hi), (0, 1), xlabel, "", width=width, height=height, left=left, right=right, top=6, bottom=30)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{_esc(label)}" '
             f'width="{width}" height="{height}" font-family="sans-serif" font-size="11">']
    for t in _ticks(lo, hi, False):
        x = plot.px(t)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="6" y2="{height - 30}" stroke="#eee"/>'
                     f'<text x="{x:.1f}" y="{height - 16}" text-anchor="middle">{t:.4g}</text>')
    for i, r in enumerate(rows):
        y = 8 + i * row_h
        c = colour(r.get("group", i))
        parts.append(f'<text x="{left - 6}" y="{y + 12}" text-anchor="end">{_esc(r["name"][:40])}</text>')
        if r.get("value") is None:
            parts.append(f'<text x="{left + 4}" y="{y + 12}" fill="#888">no cases</text>')
            continue
        x0, x1 = plot.px(lo), plot.px(r["value"])
        text = f"{r['name']}: {r['value']:.3f}" + (f" [{r['low']:.3f}, {r['high']:.3f}]" if r.get("low") is not None
                                                   else "") + (f", n={r['cases']}" if r.get("cases") else "")
        parts.append(f'<rect class="bar" x="{x0:.1f}" y="{y + 3}" width="{max(1.0, x1 - x0):.1f}" height="12" '
                     f'fill="{c}" fill-opacity="0.55"><title>{_esc(text)}</title></rect>')
        if r.get("low") is not None and r.get("high") is not None:
            a, b = plot.px(r["low"]), plot.px(r["high"])
            parts.append(f'<line x1="{a:.1f}" x2="{b:.1f}" y1="{y + 9}" y2="{y + 9}" stroke="#222"/>'
                         f'<line x1="{a:.1f}" x2="{a:.1f}" y1="{y + 4}" y2="{y + 14}" stroke="#222"/>'
                         f'<line x1="{b:.1f}" x2="{b:.1f}" y1="{y + 4}" y2="{y + 14}" stroke="#222"/>')
        parts.append(f'<text x="{width - right + 6}" y="{y + 12}">{r["value"]:.3f}'
                     + (f' n={r["cases"]}' if r.get("cases") else "") + "</text>")
    parts.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 2}" text-anchor="middle">{_esc(xlabel)}'
                 "</text>")
    return "".join(parts) + "</svg>"


def trace(values: Sequence[float], width: int = 192, height: int = 96) -> str:
    """A beat window as a small line (what a worst-case ECG beat looks like)."""
    if not values:
        return ""
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    step = width / max(1, len(values) - 1)
    path = " ".join(f"{i * step:.1f},{height - 4 - (v - lo) / span * (height - 8):.1f}" for i, v in enumerate(values))
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="trace" width="{width}" height="{height}">'
            f'<rect width="{width}" height="{height}" fill="#fff" stroke="#ccc"/>'
            f'<polyline points="{path}" fill="none" stroke="#222" stroke-width="1.2"/></svg>')
