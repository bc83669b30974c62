"""The report as one self-contained HTML page: the summary, charts of the error per layer and
tensor kind, the codes and scales, the evaluation when there is one, and every tensor.

The page is read offline and passed around as a single file, so it asks for nothing over the
network: the styles are inline, the charts are inline SVG drawn here, and the only script (a
few lines that sort the table) is optional; without it the page reads the same. Everything the
report says comes from its JSON (:func:`ryzq.report.report_dict`), which may come from another
version of ryzq or be edited by hand, so every value is read defensively and every string is
escaped.
"""

from __future__ import annotations

import html
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import ryzq
from ryzq.report import _size as report_size

__all__ = ["KINDS", "load_report", "render_html", "tensor_kind", "write_html"]

#: Tensor kinds, in the order charts and legends show them.
KINDS = ("q", "k", "v", "o", "gate", "up", "down", "other")

# Name segments that say a tensor's kind: Hugging Face's, GGUF's and Meta's original names.
_KIND_OF_SEGMENT = {
    "q_proj": "q",
    "k_proj": "k",
    "v_proj": "v",
    "o_proj": "o",
    "out_proj": "o",
    "gate_proj": "gate",
    "up_proj": "up",
    "down_proj": "down",
    "attn_q": "q",
    "attn_k": "k",
    "attn_v": "v",
    "attn_output": "o",
    "ffn_gate": "gate",
    "ffn_up": "up",
    "ffn_down": "down",
    "wq": "q",
    "wk": "k",
    "wv": "v",
    "wo": "o",
    "w1": "gate",
    "w3": "up",
    "w2": "down",
}

# Okabe and Ito's colours, told apart by most colour-blind readers.
_KIND_COLOURS = {
    "q": "#0072b2",
    "k": "#e69f00",
    "v": "#009e73",
    "o": "#cc79a7",
    "gate": "#d55e00",
    "up": "#56b4e9",
    "down": "#6a3d9a",
    "other": "#707070",
}
_CODE_COLOURS = {"-1": "#2166ac", "0": "#bdbdbd", "1": "#b2182b"}
_CODE_LABELS = {"-1": "\u22121", "0": "0", "1": "+1"}


def tensor_kind(name: str) -> str:
    """The kind of a linear weight from its name: ``q``, ``k``, ``v``, ``o``, ``gate``, ``up``,
    ``down``, or ``other``. ``model.layers.3.self_attn.q_proj.weight`` and
    ``blk.3.attn_q.weight`` are both ``q``."""
    for segment in reversed(name.split(".")):
        kind = _KIND_OF_SEGMENT.get(segment)
        if kind is not None:
            return kind
    return "other"


def load_report(path: str | Path) -> dict[str, Any]:
    """The report ``ryzq quantize --report`` wrote at ``path``; a :class:`ryzq.RyzqError` naming
    the file when it is missing, unreadable, not JSON or not a report."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ryzq.RyzqError(f"{path}: no such file") from None
    except OSError as err:
        raise ryzq.RyzqError(f"{path}: cannot be read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ryzq.RyzqError(f"{path}: not JSON (not UTF-8 text: {err.reason})") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as err:
        raise ryzq.RyzqError(f"{path}: not JSON ({err})") from None
    if not (_is_report(report) or _is_evaluation(report)):
        raise ryzq.RyzqError(
            f"{path}: not a ryzq report (it needs a 'summary' and a list of 'tensors'; "
            "ryzq quantize --report writes one) nor an evaluation (ryzq eval --json writes one)"
        )
    return report


def _is_report(d: Any) -> bool:
    return (
        isinstance(d, dict)
        and isinstance(d.get("tensors"), list)
        and isinstance(d.get("summary"), dict)
    )


def _is_evaluation(d: Any) -> bool:
    """An evaluation alone, as ``ryzq eval --json`` writes it."""
    return (
        isinstance(d, dict)
        and isinstance(d.get("positions"), dict)
        and isinstance(d.get("summary"), dict)
        and "tensors" not in d
    )


def write_html(report: dict[str, Any] | str | Path, path: str | Path) -> Path:
    """Writes the page of ``report`` (the report's dict, or the path of its JSON; or an
    evaluation alone, as :meth:`EvalReport.to_dict` gives it) to ``path``."""
    if not isinstance(report, dict):
        report = load_report(report)
    path = Path(path)
    page = render_eval_html(report) if _is_evaluation(report) else render_html(report)
    path.write_text(page, encoding="utf-8")
    return path


# --- values ---------------------------------------------------------------------------------


def _float(x: Any) -> float | None:
    """``x`` as a finite float, or None: JSON's null, NaN, infinities and non-numbers alike
    have no place on an axis."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _int(x: Any) -> int | None:
    return x if isinstance(x, int) and not isinstance(x, bool) else None


def _dict(x: Any) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _list(x: Any) -> list[Any]:
    return x if isinstance(x, list) else []


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(x: Any, spec: str = ".4g", missing: str = "\u2013") -> str:
    """A number for reading; a dash for what is missing, and NaN or inf said as such."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return missing
    if not math.isfinite(x):
        return str(x)
    return format(x, spec)


def _pct(x: Any) -> str:
    return _fmt(x * 100 if _float(x) is not None else None, ".1f") + (
        "%" if _float(x) is not None else ""
    )


def _size(nbytes: Any) -> str:
    n = _float(nbytes)
    return "\u2013" if n is None else report_size(n)


# --- charts ---------------------------------------------------------------------------------


def _nice_range(lo: float, hi: float, ticks: int = 5) -> tuple[float, float, float]:
    """A range covering [lo, hi] that starts and ends on round ticks, and the tick step."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        pad = abs(lo) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / ticks
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step, step


def _ticks(lo: float, hi: float, step: float) -> list[tuple[float, str]]:
    big = max(abs(lo), abs(hi))
    if big >= 1e5 or big < 1e-3:
        spec = ".3g"
    else:
        # As many decimals as the step has (0.0025 needs 4), so that no two ticks read alike.
        decimals = next(d for d in range(12) if abs(step * 10**d - round(step * 10**d)) < 1e-6)
        spec = f".{decimals}f"
    n = round((hi - lo) / step)
    return [(lo + i * step, format(lo + i * step, spec)) for i in range(n + 1)]


class _Plot:
    """The rectangle a chart draws its data in and the maps from data to pixels."""

    def __init__(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        *,
        width: int = 1100,
        height: int = 300,
        bottom: int = 48,
        top: int = 40,
        left: int = 76,
    ) -> None:
        self.width, self.height = width, height
        self.left, self.right, self.top, self.bottom = left, 16, top, bottom
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range

    def x(self, v: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return self.height - self.bottom - (v - self.y0) / span * self.plot_height

    @property
    def plot_height(self) -> float:
        return self.height - self.top - self.bottom


def _p(v: float) -> str:
    # One decimal of a pixel is invisible; more would only make the file bigger.
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _frame(
    plot: _Plot,
    x_ticks: Sequence[tuple[float, str]],
    y_ticks: Sequence[tuple[float, str]],
    x_label: str,
    y_label: str,
    rotate_x: bool = False,
) -> list[str]:
    """Grid lines, axes, tick labels and axis titles."""
    out = []
    left, right = plot.left, plot.width - plot.right
    base = plot.height - plot.bottom
    for v, label in y_ticks:
        y = _p(plot.y(v))
        out.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{y}" y2="{y}"/>')
        out.append(f'<text class="tick" x="{left - 6}" y="{y}" text-anchor="end" dy="0.32em">')
        out.append(f"{_e(label)}</text>")
    for v, label in x_ticks:
        x = _p(plot.x(v))
        out.append(f'<line class="axis" x1="{x}" x2="{x}" y1="{base}" y2="{base + 4}"/>')
        if rotate_x:
            out.append(
                f'<text class="tick" transform="translate({x},{base + 10}) rotate(-40)" '
                f'text-anchor="end" dy="0.32em">{_e(label)}</text>'
            )
        else:
            out.append(
                f'<text class="tick" x="{x}" y="{base + 16}" text-anchor="middle">'
                f"{_e(label)}</text>"
            )
    out.append(f'<line class="axis" x1="{left}" x2="{right}" y1="{base}" y2="{base}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{plot.top}" y2="{base}"/>')
    out.append(
        f'<text class="label" x="{(left + right) / 2:.0f}" y="{plot.height - 6}" '
        f'text-anchor="middle">{_e(x_label)}</text>'
    )
    mid = plot.top + plot.plot_height / 2
    out.append(
        f'<text class="label" transform="translate(16,{mid:.0f}) rotate(-90)" '
        f'text-anchor="middle">{_e(y_label)}</text>'
    )
    return out


def _legend(plot: _Plot, items: Iterable[tuple[str, str]], line: bool = False) -> list[str]:
    """A row of swatches above the plot (lines for line charts, squares for bars)."""
    out, x = [], plot.left
    for label, colour in items:
        if line:
            out.append(
                f'<line x1="{x}" x2="{x + 18}" y1="14" y2="14" stroke="{colour}" stroke-width="3"/>'
            )
        else:
            out.append(f'<rect x="{x + 4}" y="8" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text class="legend" x="{x + 24}" y="14" dy="0.32em">{_e(label)}</text>')
        x += 34 + 7 * len(label)
    return out


def _svg(plot: _Plot, name: str, title: str, body: Sequence[str]) -> str:
    return (
        f'<svg class="chart" id="{name}" viewBox="0 0 {plot.width} {plot.height}" '
        f'width="{plot.width}" height="{plot.height}" role="img" '
        f'aria-labelledby="{name}-title" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{name}-title">{_e(title)}</title>' + "".join(body) + "</svg>"
    )


def _no_data(name: str, title: str, message: str) -> str:
    """A chart with nothing to draw says why, where the chart would be."""
    plot = _Plot((0, 1), (0, 1), height=90, bottom=10, top=10)
    body = [
        f'<rect class="empty" x="{plot.left}" y="10" width="{plot.width - plot.left - 16}" '
        'height="70"/>',
        f'<text class="label" x="{plot.width / 2:.0f}" y="45" text-anchor="middle" '
        f'dy="0.32em">{_e(message)}</text>',
    ]
    return _svg(plot, name, f"{title}: {message}", body)


def _polyline(plot: _Plot, points: Iterable[tuple[float, float]], colour: str, **attrs: Any) -> str:
    coords = " ".join(f"{_p(plot.x(x))},{_p(plot.y(y))}" for x, y in points)
    extra = "".join(f' {k.replace("_", "-")}="{_e(v)}"' for k, v in attrs.items())
    return f'<polyline fill="none" stroke="{colour}" points="{coords}"{extra}/>'


def _slot_axis(
    labels: Sequence[str], plot_width: int = 1100
) -> tuple[list[tuple[float, str]], bool, int, int]:
    """Tick labels for one slot per layer, thinned so they do not overlap, whether to slant
    them (long block names) and the bottom margin that leaves."""
    longest = max((len(label) for label in labels), default=1)
    rotate = longest > 4
    room = 16 if rotate else max(22, 8 * longest)
    every = max(1, math.ceil(len(labels) * room / (plot_width - 92)))
    ticks = [(float(i), label) for i, label in enumerate(labels) if i % every == 0]
    bottom = 48 + (min(longest, 18) * 5 if rotate else 0)
    # A slanted first label reaches left of its tick, past the y axis's labels.
    left = max(76, min(longest, 18) * 5) if rotate else 76
    return ticks, rotate, bottom, left


# --- the report's parts ---------------------------------------------------------------------


def _slots(report: dict[str, Any]) -> tuple[list[str | None], list[str]]:
    """The layers along a chart's x axis, in the report's order (``layers``, then any block
    only the tensors name), tensors outside numbered blocks last; and their labels: the index
    when there is one tower of blocks, else the block's whole name."""

    def valid(block: Any) -> bool:
        return block is None or isinstance(block, str)

    # Only layers with a quantized tensor: the others have nothing to draw.
    drawn = {t.get("block") for t in _quantized(report) if valid(t.get("block"))}
    order = [_dict(layer).get("block") for layer in _list(report.get("layers"))]
    order += [t.get("block") for t in _quantized(report)]
    blocks = [b for b in dict.fromkeys(b for b in order if valid(b)) if b in drawn]
    if None in blocks:
        blocks.remove(None)
        blocks.append(None)
    towers = list(dict.fromkeys(b.rsplit(".", 1)[0] for b in blocks if b is not None))
    short = _short_names(towers)
    labels = []
    for b in blocks:
        if b is None:
            labels.append("no layer")
            continue
        tower, _, index = b.rpartition(".")
        if len(towers) == 1 and index.isdigit():
            labels.append(index)
        else:
            label = f"{short[tower]}.{index}" if index.isdigit() else b
            labels.append(label if len(label) <= 18 else "\u2026" + label[-17:])
    return blocks, labels


def _short_names(towers: Sequence[str]) -> dict[str, str]:
    """What tells towers of blocks apart: ``model.language_model.layers`` and
    ``model.vision_tower.encoder.layers`` are ``language_model`` and ``vision_tower.encoder``."""
    if len(towers) < 2:
        return {t: t for t in towers}
    parts = [t.split(".") for t in towers]
    head = 0
    while all(len(p) > head + 1 and p[head] == parts[0][head] for p in parts):
        head += 1
    tail = 0
    while all(len(p) > head + tail + 1 and p[-1 - tail] == parts[0][-1 - tail] for p in parts):
        tail += 1
    return {t: ".".join(p[head : len(p) - tail]) for t, p in zip(towers, parts, strict=True)}


def _quantized(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in map(_dict, _list(report.get("tensors"))) if t.get("quantized") is True]


def _per_kind_chart(
    report: dict[str, Any], name: str, title: str, y_label: str, value: Callable[[dict], Any]
) -> tuple[str, int]:
    """One line per tensor kind across the layers, a marker per tensor (its name and value
    in a tooltip); and how many quantized tensors had no value to draw."""
    blocks, labels = _slots(report)
    slot = {b: i for i, b in enumerate(blocks)}
    series: dict[str, list[tuple[int, float, str]]] = {}
    missing = 0
    for t in _quantized(report):
        v = _float(value(t))
        if v is None:
            missing += 1
            continue
        tname = str(t.get("name", ""))
        series.setdefault(tensor_kind(tname), []).append((slot.get(t.get("block"), 0), v, tname))
    if not series:
        return "", missing
    values = [v for points in series.values() for _, v, _ in points]
    y0, y1, step = _nice_range(min(values), max(values))
    ticks, rotate, bottom, left = _slot_axis(labels)
    plot = _Plot(
        (-0.5, max(len(blocks), 1) - 0.5), (y0, y1), bottom=bottom, height=252 + bottom, left=left
    )
    body = _frame(plot, ticks, _ticks(y0, y1, step), "layer", y_label, rotate)
    kinds = [k for k in KINDS if k in series]
    body += _legend(plot, [(k, _KIND_COLOURS[k]) for k in kinds], line=True)
    for kind in kinds:
        colour = _KIND_COLOURS[kind]
        points = series[kind]
        # Where a layer has several tensors of a kind (experts), the line goes through
        # their mean and the markers show each.
        by_slot: dict[int, list[float]] = {}
        for i, v, _ in points:
            by_slot.setdefault(i, []).append(v)
        line = [(i, sum(vs) / len(vs)) for i, vs in sorted(by_slot.items())]
        body.append(f'<g class="series" data-kind="{kind}">')
        if len(line) > 1:
            body.append(_polyline(plot, line, colour, stroke_width=1.5))
        for i, v, tname in points:
            body.append(
                f'<circle cx="{_p(plot.x(i))}" cy="{_p(plot.y(v))}" r="3" fill="{colour}">'
                f"<title>{_e(tname)}: {_fmt(v)}</title></circle>"
            )
        body.append("</g>")
    return _svg(plot, name, title, body), missing


def _codes_chart(report: dict[str, Any]) -> str:
    """The fraction of each code per layer, as stacked bars."""
    blocks, labels = _slots(report)
    counts: dict[str | None, Counter[str]] = {}
    for t in _quantized(report):
        for code in _CODE_COLOURS:
            n = _float(_dict(t.get("counts")).get(code))
            if n is not None:
                counts.setdefault(t.get("block"), Counter())[code] += n
    if not any(sum(c.values()) for c in counts.values()):
        return _no_data("codes", "Codes per layer", "no quantized tensor: no codes to show")
    ticks, rotate, bottom, left = _slot_axis(labels)
    plot = _Plot((-0.5, len(blocks) - 0.5), (0, 1), bottom=bottom, height=252 + bottom, left=left)
    y_ticks = [(i / 4, f"{25 * i}%") for i in range(5)]
    body = _frame(plot, ticks, y_ticks, "layer", "fraction of the codes", rotate)
    body += _legend(plot, [(f"code {_CODE_LABELS[c]}", _CODE_COLOURS[c]) for c in _CODE_COLOURS])
    width = max(1.0, (plot.x(1) - plot.x(0)) * 0.8)
    for i, block in enumerate(blocks):
        c = counts.get(block)
        total = sum(c.values()) if c else 0
        if not total:
            continue
        below = 0.0
        for code in _CODE_COLOURS:
            frac = c[code] / total
            top = plot.y(below + frac)
            body.append(
                f'<rect x="{_p(plot.x(i) - width / 2)}" y="{_p(top)}" width="{_p(width)}" '
                f'height="{_p(plot.y(below) - top)}" fill="{_CODE_COLOURS[code]}">'
                f"<title>{_e(labels[i])}: {_CODE_LABELS[code]} {frac:.1%}</title></rect>"
            )
            below += frac
    return _svg(plot, "codes", "Fraction of each code per layer", body)


def _buckets(xs: Sequence[float], ys: Sequence[float | None], n: int) -> list[tuple]:
    """At most ``n`` points from a long series: per bucket of consecutive positions, its
    middle x, the mean and the max of its finite values. A peak survives in the max."""
    size = max(1, math.ceil(len(xs) / n))
    out = []
    for start in range(0, len(xs), size):
        vals = [v for v in ys[start : start + size] if v is not None]
        if vals:
            mid = (xs[start] + xs[min(start + size, len(xs)) - 1]) / 2
            out.append((mid, sum(vals) / len(vals), max(vals)))
    return out


def _eval_charts(ev: dict[str, Any]) -> list[str]:
    positions = _dict(ev.get("positions"))
    kl = [_float(v) for v in _list(positions.get("kl"))]
    agree = _list(positions.get("top1_agree"))
    index = [_float(v) for v in _list(positions.get("index"))]
    if len(index) != len(kl) or any(v is None for v in index):
        index = [float(i) for i in range(len(kl))]
    charts = []
    kl_points = _buckets(index, kl, 400)
    if kl_points:
        size = max(1, math.ceil(len(kl) / 400))
        x0, x1, xstep = _nice_range(index[0], index[-1])
        _, y1, ystep = _nice_range(0.0, max(p[2] for p in kl_points))
        plot = _Plot((x0, x1), (0.0, y1))
        body = _frame(plot, _ticks(x0, x1, xstep), _ticks(0.0, y1, ystep), "position", "KL")
        what = "per position" if size == 1 else f"per {size} positions"
        legend = [(f"max {what}", "#f4a582"), (f"mean {what}", "#b2182b")]
        body += _legend(plot, legend if size > 1 else legend[1:], line=True)
        if size > 1:
            body.append(_polyline(plot, [(x, m) for x, _, m in kl_points], "#f4a582"))
        body.append(_polyline(plot, [(x, m) for x, m, _ in kl_points], "#b2182b", stroke_width=1.5))
        charts.append(_svg(plot, "eval-kl", "KL divergence per position", body))
    if agree and len(agree) == len(index):
        ys = [1.0 if a is True else 0.0 if a is False else None for a in agree]
        # A rolling mean: single positions agree or not, which reads as noise.
        window = max(1, min(64, len(ys) // 16))
        rolling = []
        for i in range(len(ys)):
            vals = [v for v in ys[max(0, i - window + 1) : i + 1] if v is not None]
            rolling.append(sum(vals) / len(vals) if vals else None)
        points = _buckets(index, rolling, 400)
        if points:
            x0, x1, xstep = _nice_range(index[0], index[-1])
            plot = _Plot((x0, x1), (0.0, 1.0))
            y_ticks = [(i / 4, f"{25 * i}%") for i in range(5)]
            body = _frame(plot, _ticks(x0, x1, xstep), y_ticks, "position", "top-1 agreement")
            body += _legend(plot, [(f"rolling mean over {window} positions", "#2166ac")], True)
            body.append(
                _polyline(plot, [(x, m) for x, m, _ in points], "#2166ac", stroke_width=1.5)
            )
            charts.append(_svg(plot, "eval-top1", "Top-1 agreement per position", body))
    return charts


def _rows(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table; values are HTML already, keys are escaped here."""
    return (
        '<table class="kv">'
        + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs)
        + "</table>"
    )


def _summary(report: dict[str, Any]) -> str:
    s = _dict(report.get("summary"))
    nmse = _dict(s.get("nmse"))
    secs = _dict(s.get("seconds"))
    tensors = _list(report.get("tensors"))
    n_quantized = _int(s.get("quantized_tensors"))
    n_tensors = _int(s.get("tensors"))
    layout = _e(report.get("layout", "\u2013"))
    if report.get("linear_class"):
        layout += f" ({_e(report['linear_class'])})"
    pooled = _float(s.get("pooled_nmse"))
    snr = f", SNR {-10 * math.log10(pooled):.2f} dB" if pooled else ""
    kept = n_tensors - n_quantized if n_tensors is not None and n_quantized is not None else None
    pairs = [
        ("source", _e(report.get("src", "\u2013"))),
        ("output", _e(report.get("dst", "\u2013"))),
        ("layout", layout),
        ("method", _e(report.get("method", "\u2013"))),
        ("granularity", _e(report.get("granularity", "\u2013"))),
        (
            "tensors",
            f"{_fmt(n_tensors, ',')} ({_fmt(n_quantized, ',')} quantized, "
            f"{_fmt(_int(s.get('carried_over_tensors')), ',')} of them carried over; "
            f"{_fmt(kept, ',')} kept)",
        ),
        (
            "parameters",
            f"{_fmt(s.get('parameters'), ',')} ({_fmt(s.get('quantized_parameters'), ',')} "
            "quantized)",
        ),
        ("size", f"{_size(s.get('bytes_in'))} \u2192 {_size(s.get('bytes_out'))}"),
        (
            "compression",
            f"{_fmt(s.get('compression_ratio'), '.2f')}\u00d7 (quantized tensors alone: "
            f"{_fmt(s.get('quantized_compression_ratio'), '.2f')}\u00d7)",
        ),
        (
            "NMSE",
            f"mean {_fmt(nmse.get('mean'))}, min {_fmt(nmse.get('min'))}, max "
            f"{_fmt(nmse.get('max'))}, std {_fmt(nmse.get('std'))}; pooled "
            f"{_fmt(pooled)}{snr}",
        ),
        (
            "time",
            f"{_fmt(secs.get('total'), '.2f')} s (read {_fmt(secs.get('read'), '.2f')}, "
            f"quantize {_fmt(secs.get('quantize'), '.2f')}, write "
            f"{_fmt(secs.get('write'), '.2f')})",
        ),
    ]
    if report.get("threads") is not None:
        pairs.append(("threads", _e(report["threads"])))
    out = [_rows(pairs)]
    warnings = _list(report.get("warnings"))
    if warnings:
        out.append('<div class="warnings"><h3>Warnings</h3><ul>')
        out += [f"<li>{_e(w)}</li>" for w in warnings]
        out.append("</ul></div>")
    skipped = _list(report.get("skipped_files"))
    if skipped:
        out.append("<h3>Files of the model folder left out</h3><ul>")
        out += [
            f"<li><code>{_e(_dict(f).get('path', f))}</code>: {_e(_dict(f).get('why', ''))}</li>"
            for f in skipped
        ]
        out.append("</ul>")
    kept_by: dict[str, list[str]] = {}
    for t in map(_dict, tensors):
        if t.get("quantized") is not True:
            why = str(t.get("kept_because") or "not quantized")
            kept_by.setdefault(why, []).append(str(t.get("name", "")))
    carried = Counter(str(t["carried_over"]) for t in _quantized(report) if t.get("carried_over"))
    if kept_by:
        out.append("<h3>Kept as they are</h3><ul>")
        for why, names in sorted(kept_by.items(), key=lambda kv: -len(kv[1])):
            listed = ", ".join(f"<code>{_e(n)}</code>" for n in names)
            out.append(
                f"<li>{len(names):,} \u00d7 {_e(why)}<details><summary>which</summary>"
                f"{listed}</details></li>"
            )
        out.append("</ul>")
    if carried:
        out.append("<h3>Carried over (codes already ternary)</h3><ul>")
        out += [f"<li>{n:,} \u00d7 {_e(why)}</li>" for why, n in carried.most_common()]
        out.append("</ul>")
    return "".join(out)


def _eval_section(ev: dict[str, Any]) -> str:
    s = _dict(ev.get("summary"))
    runners = _dict(ev.get("runners"))
    source = _dict(ev.get("input"))
    secs = _dict(ev.get("seconds"))

    def runner(which: str) -> str:
        path = _e(ev.get(which, "\u2013"))
        return f"{path} ({_e(runners[which])})" if runners.get(which) else path

    what = _e(source.get("kind", "\u2013"))
    if source.get("source"):
        what += f", {_e(source['source'])}"
    if source.get("seed") is not None:
        what += f", seed {_e(source['seed'])}"
    pairs = [
        ("reference", runner("reference")),
        ("candidate", runner("candidate")),
        ("input", what),
        (
            "tokens",
            f"{_fmt(ev.get('tokens'), ',')} in {_fmt(ev.get('windows'), ',')} windows of "
            f"{_fmt(ev.get('context'), ',')}; {_fmt(ev.get('predictions'), ',')} predictions, "
            f"vocabulary {_fmt(ev.get('vocab_size'), ',')}",
        ),
        (
            "KL",
            f"mean {_fmt(s.get('kl_mean'))}, median {_fmt(s.get('kl_median'))}, p99 "
            f"{_fmt(s.get('kl_p99'))}, max {_fmt(s.get('kl_max'))}",
        ),
        ("top-1 agreement", _pct(s.get("top1_agreement"))),
        (
            "perplexity",
            f"reference {_fmt(s.get('reference_perplexity'), '.3f')}, candidate "
            f"{_fmt(s.get('candidate_perplexity'), '.3f')}",
        ),
        (
            "logit difference",
            f"max {_fmt(s.get('logit_diff_max'))}, mean {_fmt(s.get('logit_diff_mean'))}",
        ),
        (
            "time",
            f"reference {_fmt(secs.get('reference'), '.2f')} s, candidate "
            f"{_fmt(secs.get('candidate'), '.2f')} s",
        ),
    ]
    charts = _eval_charts(ev) or [
        _no_data("eval-kl", "KL divergence per position", "no per-position values")
    ]
    return _rows(pairs) + "".join(f'<div class="figure">{c}</div>' for c in charts)


_COLUMNS = (
    ("tensor", "text"),
    ("kind", "text"),
    ("layer", "num"),
    ("shape", "text"),
    ("dtype", "text"),
    ("what", "text"),
    ("scale", "num"),
    ("NMSE", "num"),
    ("SNR dB", "num"),
    ("max abs err", "num"),
    ("\u22121", "num"),
    ("0", "num"),
    ("+1", "num"),
    ("in", "num"),
    ("out", "num"),
)


def _cell(text: str) -> str:
    return f"<td>{text}</td>"


def _num(text: str, value: Any) -> str:
    """A cell that sorts by ``value``; one without a value sorts last."""
    v = _float(value)
    return f'<td data-v="{"" if v is None else repr(v)}">{text}</td>'


def _table(report: dict[str, Any]) -> str:
    heads = "".join(f'<th data-type="{kind}">{_e(name)}</th>' for name, kind in _COLUMNS)
    rows = []
    for t in map(_dict, _list(report.get("tensors"))):
        name = str(t.get("name", ""))
        shape = t.get("shape")
        shape = "\u00d7".join(map(str, shape)) if isinstance(shape, list) else ""
        counts = _dict(t.get("counts"))
        numel = sum(_float(counts.get(c)) or 0 for c in _CODE_COLOURS)
        fractions = [(_float(counts.get(c)) or 0) / numel if numel else None for c in _CODE_COLOURS]
        if t.get("quantized") is True:
            what = "carried over" if t.get("carried_over") else "quantized"
            title = str(t.get("carried_over") or "")
        else:
            what, title = "kept", str(t.get("kept_because") or "")
        layer = _int(t.get("layer"))
        cells = [
            f"<td><code>{_e(name)}</code></td>",
            _cell(tensor_kind(name) if t.get("quantized") is True else ""),
            _num(_fmt(layer, "d", ""), layer),
            _cell(_e(shape)),
            _cell(_e(t.get("dtype", ""))),
            f'<td title="{_e(title)}">{what}</td>',
            _num(_fmt(t.get("scale"), ".5g", ""), t.get("scale")),
            _num(_fmt(t.get("nmse"), ".4g", ""), t.get("nmse")),
            _num(_fmt(t.get("snr_db"), ".2f", ""), t.get("snr_db")),
            _num(_fmt(t.get("max_abs_error"), ".3g", ""), t.get("max_abs_error")),
            *(_num(_fmt(f if f is None else f * 100, ".1f", ""), f) for f in fractions),
            _num(_size(t.get("bytes_in")), t.get("bytes_in")),
            _num(_size(t.get("bytes_out")), t.get("bytes_out")),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<div class="wide"><table class="tensors sortable" id="tensors"><thead><tr>'
        + heads
        + "</tr></thead><tbody>"
        + "\n".join(rows)
        + "</tbody></table></div>"
    )


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
background:#fff;margin:0 auto;max-width:1200px;padding:16px 24px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
#ddd;padding-bottom:4px}h3{font-size:15px;margin:16px 0 4px}
code{font:12px ui-monospace,SFMono-Regular,Menlo,monospace}
table.kv th{text-align:left;padding:2px 16px 2px 0;vertical-align:top;white-space:nowrap}
table.kv td{padding:2px 0}
.warnings{background:#fff4e5;border-left:4px solid #e69f00;padding:4px 12px;margin:12px 0}
.figure{margin:8px 0 20px;overflow-x:auto}.wide{overflow-x:auto}.note{color:#555;margin:4px 0}
svg.chart{max-width:100%;height:auto;display:block}
svg .grid{stroke:#e6e6e6}svg .axis{stroke:#444}svg .empty{fill:#f6f6f6;stroke:#ccc}
svg text{font:12px system-ui,sans-serif;fill:#333}svg .label{font-size:13px}
table.tensors{border-collapse:collapse;font-size:12px;width:100%}
table.tensors th,table.tensors td{padding:2px 6px;border-bottom:1px solid #eee;text-align:right;
white-space:nowrap}
table.tensors th:nth-child(-n+2),table.tensors td:nth-child(-n+2),table.tensors
td:nth-child(n+4):nth-child(-n+6),table.tensors th:nth-child(n+4):nth-child(-n+6){text-align:left}
table.tensors thead th{position:sticky;top:0;background:#f4f4f4;cursor:pointer}
table.tensors th[aria-sort=ascending]::after{content:" \\25B2"}
table.tensors th[aria-sort=descending]::after{content:" \\25BC"}
table.tensors tbody tr:hover{background:#f7fbff}
footer{color:#777;margin:24px 0 8px;font-size:12px}
"""

# Sorting only: the page reads the same without it. Empty cells sort last either way.
_SCRIPT = """
(function () {
  function key(row, col, num) {
    var cell = row.cells[col], v = cell.getAttribute("data-v");
    if (!num) return cell.textContent;
    v = v === null ? NaN : parseFloat(v);
    return v;
  }
  function sortBy(table, th, col) {
    var num = th.getAttribute("data-type") === "num";
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(th.parentNode.cells, function (c) {
      c.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col, num), y = key(b, col, num);
      if (num) {
        if (isNaN(x) || isNaN(y)) return isNaN(x) - isNaN(y);
        return (x - y) * dir;
      }
      return x.localeCompare(y) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
      th.tabIndex = 0;
      th.title = "sort";
      th.addEventListener("click", function () { sortBy(table, th, col); });
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sortBy(table, th, col); }
      });
    });
    table.setAttribute("data-sortable", "ready");
  });
})();
"""


def _page(title: str, heading: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_STYLE}</style></head><body>"
        f"{heading}{body}<footer>Written by ryzq {_e(ryzq.__version__)}.</footer>"
        f"<script>{_SCRIPT}</script></body></html>\n"
    )


def render_eval_html(evaluation: dict[str, Any]) -> str:
    """The page of an evaluation alone (``ryzq eval --json``, :meth:`EvalReport.to_dict`)."""
    ev = _dict(evaluation)
    ref, cand = ev.get("reference", ""), ev.get("candidate", "")
    heading = (
        f"<h1>ryzq evaluation</h1><p class='note'><code>{_e(ref)}</code> \u2192 "
        f"<code>{_e(cand)}</code></p>"
    )
    return _page(f"ryzq evaluation: {_e(cand)}", heading, f"<h2>Evaluation</h2>{_eval_section(ev)}")


def render_html(report: dict[str, Any]) -> str:
    """The page of ``report`` (a dict as :meth:`QuantizationReport.to_dict` gives it, with
    an optional ``eval`` section), as one self-contained HTML document."""
    report = _dict(report)
    quantized = _quantized(report)
    parts = []
    if quantized:
        nmse_chart, _ = _per_kind_chart(
            report, "nmse", "NMSE per layer and tensor kind", "NMSE", lambda t: t.get("nmse")
        )
        parts.append(
            "<h2>Error per layer</h2><p class='note'>NMSE (MSE / mean(w\u00b2)) of each quantized "
            "tensor, a line per kind of tensor.</p>"
        )
        parts.append(
            f'<div class="figure">{nmse_chart or _no_data("nmse", "NMSE", "no NMSE values")}</div>'
        )
    else:
        parts.append("<h2>Error per layer</h2>")
        parts.append(
            '<div class="figure">'
            + _no_data("nmse", "NMSE per layer", "no quantized tensor: no error to show")
            + "</div>"
        )
    parts.append("<h2>Codes</h2>")
    parts.append(f'<div class="figure">{_codes_chart(report)}</div>')
    parts.append("<h2>Scales</h2>")
    scale_chart, no_scale = _per_kind_chart(
        report,
        "scales",
        "Scale per layer and tensor kind",
        "scale (w \u2248 code \u00d7 scale)",
        lambda t: t.get("scale"),
    )
    granularity = report.get("granularity")
    if no_scale:
        per = f" (granularity {_e(granularity)})" if granularity else ""
        parts.append(
            f"<p class='note'>{no_scale:,} of {len(quantized):,} quantized tensors have no single "
            f"scale{per}: a scale per row or group, not drawn.</p>"
        )
    if scale_chart:
        parts.append(f'<div class="figure">{scale_chart}</div>')
    else:
        why = (
            f"no single scale per tensor{f' with granularity {granularity}' if granularity else ''}"
            if quantized
            else "no quantized tensor: no scales to show"
        )
        parts.append(f'<div class="figure">{_no_data("scales", "Scales", why)}</div>')
    ev = report.get("eval")
    if isinstance(ev, dict):
        parts.append("<h2>Evaluation</h2>")
        parts.append(_eval_section(ev))
    n = len(_list(report.get("tensors")))
    parts.append(
        f"<h2>Tensors</h2><p class='note'>{n:,} tensors; click a column to sort. Code "
        "columns are percentages of the tensor's values.</p>"
    )
    parts.append(_table(report))
    src = report.get("src", "")
    heading = (
        f"<h1>ryzq report</h1><p class='note'><code>{_e(src)}</code> \u2192 "
        f"<code>{_e(report.get('dst', ''))}</code></p>"
    )
    return _page(
        f"ryzq report: {_e(src)}", heading, f"<h2>Summary</h2>{_summary(report)}" + "".join(parts)
    )
