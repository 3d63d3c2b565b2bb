"""Small inline SVG figures for the run reports: bar chart, line chart, histogram and the footprint map.

Hand-made SVG keeps the page self-contained and tiny (no plotting library, no fonts or scripts fetched),
and it stays crisp at any zoom. Every chart labels its axes and states its unit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape

from rrsis.report.run import SceneFacts

W, H = 460, 220  # chart size, px
LEFT, RIGHT, TOP, BOTTOM = 90, 20, 28, 42  # plot margins, px
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def nice_ticks(vmax: float, count: int = 5, integer: bool = False) -> list[float]:
    """0 .. >= vmax in 1/2/5 x 10^k steps (steps of at least 1 for counts)."""
    if vmax <= 0 or not math.isfinite(vmax):
        return [0.0, 1.0]
    raw = max(vmax / count, 1.0) if integer else vmax / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    n = math.ceil(vmax / step - 1e-9)
    return [i * step for i in range(n + 1)]


def fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:,.0f}"
    if abs(v) >= 1:
        return f"{v:.3g}"
    return f"{v:.2g}"


def _frame(title: str, body: list[str], xlabel: str, ylabel: str, height: float = H) -> str:
    parts = [
        f'<svg class="chart" width="{W}" height="{height:.0f}" viewBox="0 0 {W} {height:.0f}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{W / 2}" y="16" text-anchor="middle" class="title">{escape(title)}</text>',
        *body,
        f'<text x="{LEFT + (W - LEFT - RIGHT) / 2}" y="{height - 6:.0f}" text-anchor="middle">{escape(xlabel)}</text>',
    ]
    if ylabel:
        parts.append(
            f'<text transform="translate(14 {TOP + (height - TOP - BOTTOM) / 2:.0f}) rotate(-90)" '
            f'text-anchor="middle">{escape(ylabel)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _x_axis(ticks: Sequence[float], sx: float, x0: float, y: float) -> list[str]:
    out = [f'<line x1="{x0}" y1="{y}" x2="{x0 + sx * ticks[-1]:.1f}" y2="{y}" class="axis"/>']
    for t in ticks:
        x = x0 + sx * t
        out.append(f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + 4}" class="axis"/>')
        out.append(f'<text x="{x:.1f}" y="{y + 15}" text-anchor="middle">{fmt(t)}</text>')
    return out


def _y_axis(ticks: Sequence[float], sy: float, x: float, y0: float, width: float) -> list[str]:
    out = [f'<line x1="{x}" y1="{y0}" x2="{x}" y2="{y0 - sy * ticks[-1]:.1f}" class="axis"/>']
    for t in ticks:
        y = y0 - sy * t
        out.append(f'<line x1="{x}" y1="{y:.1f}" x2="{x + width:.1f}" y2="{y:.1f}" class="grid"/>')
        out.append(f'<text x="{x - 5}" y="{y + 4:.1f}" text-anchor="end">{fmt(t)}</text>')
    return out


def bar_chart(values: dict[str, float], title: str, xlabel: str) -> str:
    """Horizontal bars, one per key, value written at the bar's end."""
    if not values:
        return ""
    ticks = nice_ticks(max(values.values()))
    plot_w = W - LEFT - RIGHT - 40
    sx = plot_w / ticks[-1]
    row = min(24.0, (H - TOP - BOTTOM) / len(values))
    body = []
    for i, (name, v) in enumerate(values.items()):
        y = TOP + i * row
        body.append(f'<text x="{LEFT - 6}" y="{y + row * 0.65:.1f}" text-anchor="end">{escape(name)}</text>')
        body.append(
            f'<rect x="{LEFT}" y="{y + 2:.1f}" width="{max(sx * v, 0.5):.1f}" height="{row - 4:.1f}" '
            f'fill="{PALETTE[i % len(PALETTE)]}"><title>{escape(name)}: {v:.3f}</title></rect>'
        )
        body.append(f'<text x="{LEFT + sx * v + 4:.1f}" y="{y + row * 0.65:.1f}">{fmt(v)}</text>')
    axis_y = TOP + len(values) * row + 2
    body += _x_axis(ticks, sx, LEFT, axis_y)
    return _frame(title, body, xlabel, "", height=min(H, axis_y + BOTTOM))


def histogram(values: Sequence[float], bins: int, vmax: float, title: str, xlabel: str, ylabel: str) -> str:
    """Counts of `values` in `bins` equal bins over [0, vmax]."""
    if not values:
        return ""
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v / vmax * bins)))] += 1
    yt = nice_ticks(max(counts), integer=True)
    plot_w, plot_h = W - LEFT - RIGHT, H - TOP - BOTTOM
    sy, bw = plot_h / yt[-1], plot_w / bins
    y0 = TOP + plot_h
    body = _y_axis(yt, sy, LEFT, y0, plot_w)
    for i, c in enumerate(counts):
        lo, hi = vmax * i / bins, vmax * (i + 1) / bins
        body.append(
            f'<rect x="{LEFT + i * bw + 1:.1f}" y="{y0 - sy * c:.1f}" width="{bw - 2:.1f}" height="{sy * c:.1f}" '
            f'fill="{PALETTE[0]}"><title>{fmt(lo)}-{fmt(hi)}: {c}</title></rect>'
        )
    body += _x_axis(nice_ticks(vmax), plot_w / nice_ticks(vmax)[-1], LEFT, y0)
    return _frame(title, body, xlabel, ylabel)


def footprint_map(scenes: Sequence[SceneFacts], width: int = 600, height: int = 320) -> str:
    """Every scene's footprint on one equirectangular map (lon/lat graticule, x scaled by cos(mid lat)).

    A footprint smaller than a few pixels also gets a dot, so a scene never disappears at world scale.
    Each shape links to the scene's row in the table.
    """
    boxes = [s.bbox for s in scenes if s.bbox]
    if not boxes:
        return ""
    west, south = min(b[0] for b in boxes), min(b[1] for b in boxes)
    east, north = max(b[2] for b in boxes), max(b[3] for b in boxes)
    pad = max(east - west, north - south) * 0.08 + 0.02
    west, east = max(-180.0, west - pad), min(180.0, east + pad)
    south, north = max(-90.0, south - pad), min(90.0, north + pad)
    kx = math.cos(math.radians((south + north) / 2))
    span_x, span_y = (east - west) * kx, north - south
    scale = min((width - 60) / span_x, (height - 40) / span_y)
    height = math.ceil(span_y * scale + 40)  # no empty bands above and below a wide map
    ox, oy = 45 + ((width - 60) - span_x * scale) / 2, 10.0

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return ox + (lon - west) * kx * scale, oy + (north - lat) * scale

    body = [f'<rect x="{ox:.1f}" y="{oy:.1f}" width="{span_x * scale:.1f}" height="{span_y * scale:.1f}" class="sea"/>']
    for lon in nice_range(west, east):
        (x, y1), (_, y2) = xy(lon, north), xy(lon, south)
        body.append(f'<line x1="{x:.1f}" y1="{y1:.1f}" x2="{x:.1f}" y2="{y2:.1f}" class="grid"/>')
        body.append(f'<text x="{x:.1f}" y="{y2 + 13:.1f}" text-anchor="middle">{fmt_deg(lon, "E", "W")}</text>')
    for lat in nice_range(south, north):
        (x1, y), (x2, _) = xy(west, lat), xy(east, lat)
        body.append(f'<line x1="{x1:.1f}" y1="{y:.1f}" x2="{x2:.1f}" y2="{y:.1f}" class="grid"/>')
        body.append(f'<text x="{x1 - 4:.1f}" y="{y + 4:.1f}" text-anchor="end">{fmt_deg(lat, "N", "S")}</text>')
    for s in scenes:
        if not s.ring or not s.bbox:
            continue
        points = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(lon, lat) for lon, lat in s.ring))
        cls = "fp" if s.mapped else "fp failed"
        label = escape(f"{s.scene_id}: {area_label(s)}")
        shape = f'<polygon points="{points}" class="{cls}"/>'
        (x1, y1), (x2, y2) = xy(s.bbox[0], s.bbox[3]), xy(s.bbox[2], s.bbox[1])
        if max(x2 - x1, y2 - y1) < 6:
            shape += f'<circle cx="{(x1 + x2) / 2:.1f}" cy="{(y1 + y2) / 2:.1f}" r="4" class="{cls}"/>'
        body.append(f'<a href="#scene-{escape(s.scene_id)}"><title>{label}</title>{shape}</a>')
    return (
        f'<svg class="map" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="scene footprints, WGS84">\n'
        + "\n".join(body)
        + "\n</svg>"
    )


def nice_range(lo: float, hi: float) -> list[float]:
    """Round graticule values inside [lo, hi], about 4-8 of them."""
    step = nice_ticks(hi - lo, 5)[1]
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def fmt_deg(v: float, pos: str, neg: str) -> str:
    text = f"{abs(v):.6g}"
    return f"{text}°{pos if v > 0 else neg if v < 0 else ''}"


def area_label(s: SceneFacts) -> str:
    if not s.mapped:
        return f"not mapped ({s.failure})"
    p = s.product
    if "water_km2" not in p:
        return f"{p['boxes']} boxes" if "boxes" in p else "mapped"
    return f"{float(p.get('water_km2', 0.0)):.3f} km² ({100 * float(p.get('water_fraction', 0.0)):.1f} %)"


def axis_range(lo: float, hi: float, count: int = 5, integer: bool = False) -> tuple[float, float, list[float]]:
    """Round ticks covering [lo, hi] (not forced to start at 0): (low end, high end, ticks)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return 0.0, 1.0, [0.0, 1.0]
    if hi - lo <= 1e-12 * max(1.0, abs(hi)):
        pad = 1.0 if integer else abs(lo) * 0.05 or 0.5
        lo, hi = lo - pad, hi + pad
    step = nice_ticks(hi - lo, count, integer=integer)[1]
    first, last = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    n = round((last - first) / step)
    return first, last, [first + i * step for i in range(n + 1)]


def fmt_tick(v: float, step: float) -> str:
    """A tick label with as many decimals as the step needs, so neighbouring ticks never read the same."""
    if abs(v) >= 1e5 or (0 < abs(v) < 1e-4):
        return f"{v:.3g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{v:,.{decimals}f}"


def line_chart(
    series: Mapping[str, Sequence[tuple[float, float]]],
    title: str,
    xlabel: str,
    ylabel: str,
    mark_x: float | None = None,
    mark_label: str = "",
    integer_x: bool = False,
    dots: bool = True,
    steps: bool = False,
) -> str:
    """One line with dots per series (legend above the plot); `mark_x` draws a dashed vertical marker;
    `steps` draws each series as a step line (counts over time).

    The y axis covers the data's range (not forced to 0), so small changes of a loss stay visible.
    Non-finite values are left out of a line.
    """
    clean = {
        name: [(float(x), float(y)) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
        for name, pts in series.items()
    }
    clean = {k: v for k, v in clean.items() if v}
    if not clean:
        return ""
    xs = [x for pts in clean.values() for x, _ in pts]
    ys = [y for pts in clean.values() for _, y in pts]
    x_lo, x_hi, xt = axis_range(min(xs), max(xs), integer=integer_x)
    y_lo, y_hi, yt = axis_range(min(ys), max(ys))
    ystep = yt[1] - yt[0]
    legend_rows = math.ceil(len(clean) / 3)
    top = TOP + 14 * legend_rows
    plot_w, plot_h = W - LEFT - RIGHT, H - top - BOTTOM
    sx, sy = plot_w / (x_hi - x_lo), plot_h / (y_hi - y_lo)
    y0 = top + plot_h

    def px(x: float, y: float) -> tuple[float, float]:
        return LEFT + sx * (x - x_lo), y0 - sy * (y - y_lo)

    body = []
    for t in yt:
        _, y = px(x_lo, t)
        body.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_w}" y2="{y:.1f}" class="grid"/>')
        body.append(f'<text x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end">{fmt_tick(t, ystep)}</text>')
    body.append(f'<line x1="{LEFT}" y1="{y0}" x2="{LEFT + plot_w}" y2="{y0}" class="axis"/>')
    body.append(f'<line x1="{LEFT}" y1="{y0}" x2="{LEFT}" y2="{top}" class="axis"/>')
    for t in xt:
        x, _ = px(t, y_lo)
        body.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" class="axis"/>')
        body.append(f'<text x="{x:.1f}" y="{y0 + 15}" text-anchor="middle">{fmt(t)}</text>')
    if mark_x is not None and x_lo <= mark_x <= x_hi:
        x, _ = px(mark_x, y_lo)
        body.append(
            f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{top}" stroke="#555" stroke-dasharray="4 3" class="mark">'
            f"<title>{escape(mark_label)}</title></line>"
        )
    for i, (name, pts) in enumerate(clean.items()):
        color = PALETTE[i % len(PALETTE)]
        coords = [px(x, y) for x, y in pts]
        if steps:  # a count holds its value until the next point: horizontal, then vertical
            d = f"M{coords[0][0]:.1f},{coords[0][1]:.1f} " + " ".join(
                f"L{x:.1f},{coords[j][1]:.1f} L{x:.1f},{y:.1f}" for j, (x, y) in enumerate(coords[1:])
            )
        else:
            d = " ".join(f"{'M' if j == 0 else 'L'}{x:.1f},{y:.1f}" for j, (x, y) in enumerate(coords))
        body.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2" class="series"/>')
        for (x, y), (vx, vy) in zip(coords, pts, strict=True) if dots else ():
            body.append(
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}" class="point">'
                f"<title>{escape(name)} at {fmt(vx)}: {vy:.4g}</title></circle>"
            )
        lx, ly = LEFT + (i % 3) * (plot_w / 3), TOP + 14 * (i // 3)
        body.append(f'<rect x="{lx:.1f}" y="{ly - 8}" width="10" height="10" fill="{color}"/>')
        body.append(f'<text x="{lx + 14:.1f}" y="{ly + 1}">{escape(name)}</text>')
    return _frame(title, body, xlabel, ylabel)
