"""Charts drawn on the server as SVG: stacked bars and lines, with axes, units and legends.

Why SVG from the server, not a plotting library: the pages hold no script (their
Content-Security-Policy forbids it), nothing may come from a CDN, and a chart is a few
dozen rectangles that a template writes in well under a millisecond. Every label goes
through the template's escaping like any other value. The shapes are computed here as plain
numbers; ``templates/_charts.html`` writes them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal

WIDTH = 720
"""Width of the drawing, in SVG units (the page scales it)."""
HEIGHT = 240
"""Height of the drawing, in SVG units."""
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 12, 26, 36
PALETTE = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#76b7b2",
    "#edc948",
    "#b07aa1",
    "#9c755f",
)
"""Series colours, distinguishable for the common colour-vision deficiencies."""
OTHER_COLOUR = "#bab0ac"
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
MAX_SERIES = len(PALETTE)
"""Series drawn in their own colour; the rest are summed as ``other``."""


@dataclass(frozen=True)
class Tick:
    """One labelled value on an axis.

    Attributes:
        at: its position along the axis, in SVG units.
        label: its text.
    """

    at: float
    label: str


@dataclass(frozen=True)
class Rect:
    """One bar segment.

    Attributes:
        x: left edge.
        y: top edge.
        width: width.
        height: height.
        colour: fill colour.
        title: the tooltip (category, series and value).
    """

    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Line:
    """One series of a line chart.

    Attributes:
        points: the ``x,y`` pairs of its polyline, as SVG text.
        colour: stroke colour.
        marks: its points with their tooltips.
    """

    points: str
    colour: str
    marks: tuple[Rect, ...]


@dataclass(frozen=True)
class LegendEntry:
    """One entry of a legend.

    Attributes:
        label: the series name.
        colour: its colour.
    """

    label: str
    colour: str


@dataclass(frozen=True)
class Chart:
    """A chart ready to draw.

    Attributes:
        title: what it shows, with the unit and the time zone.
        unit: the unit of the value axis.
        width: drawing width.
        height: drawing height.
        plot_left: left edge of the plot area.
        plot_right: right edge of the plot area.
        plot_top: top edge of the plot area.
        plot_bottom: bottom edge of the plot area (the x axis).
        y_ticks: the value axis labels, ``at`` being a y coordinate.
        x_ticks: the category labels, ``at`` being an x coordinate.
        bars: bar segments (stacked bar charts).
        lines: series (line charts).
        legend: the legend.
        empty: whether there is nothing to draw.
        time_axis: whether the categories are UTC times (the chart then says so).
    """

    title: str
    unit: str
    width: int
    height: int
    plot_left: float
    plot_right: float
    plot_top: float
    plot_bottom: float
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    bars: tuple[Rect, ...] = ()
    lines: tuple[Line, ...] = ()
    legend: tuple[LegendEntry, ...] = ()
    empty: bool = False
    time_axis: bool = True


@dataclass(frozen=True)
class Point:
    """One value of a series at a category.

    Attributes:
        category: the category (a day, as text).
        series: the series name.
        value: the value, in the chart's unit.
    """

    category: str
    series: str
    value: float


def nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (1 for nothing).

    Args:
        value: the largest value to fit.
    """
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value * (1 - 1e-12):
            return float(step * power)
    return float(10 * power)


def format_value(value: float, unit: str) -> str:
    """A value as an axis or tooltip label, with its unit.

    Args:
        value: the value.
        unit: ``USD``, ``ms``, ``%``, a count's noun (``calls``), or empty for a plain number.
    """
    if unit == "":
        return f"{value:,.3g}"
    if unit == "USD":
        return f"${value:,.4f}" if 0 < abs(value) < 1 else f"${value:,.2f}"
    if unit == "%":
        return f"{value:.1f}%"
    if unit == "ms":
        return f"{value:,.0f} ms"
    return f"{value:,.0f} {unit}".rstrip()


def _frame(
    title: str, unit: str, categories: Sequence[str], top: float
) -> tuple[Chart, float, float]:
    """The empty chart with its axes, and the slot width and value scale of its plot."""
    plot_w = WIDTH - _LEFT - _RIGHT
    plot_h = HEIGHT - _TOP - _BOTTOM
    slot = plot_w / max(len(categories), 1)
    every = max(1, math.ceil(len(categories) / 12))
    x_ticks = tuple(
        Tick(_LEFT + slot * (i + 0.5), _short(c, slot * every))
        for i, c in enumerate(categories)
        if i % every == 0
    )
    y_ticks = tuple(
        Tick(HEIGHT - _BOTTOM - plot_h * i / 4, format_value(top * i / 4, unit)) for i in range(5)
    )
    chart = Chart(
        title=title,
        unit=unit,
        width=WIDTH,
        height=HEIGHT,
        plot_left=_LEFT,
        plot_right=WIDTH - _RIGHT,
        plot_top=_TOP,
        plot_bottom=HEIGHT - _BOTTOM,
        y_ticks=y_ticks,
        x_ticks=x_ticks,
    )
    return chart, slot, plot_h / top


def _short(label: str, room: float) -> str:
    """``label`` cut to fit ``room`` SVG units at the axis font (the tooltip has it whole);
    a date loses its year first."""
    fits = max(3, int(room / 6.5))
    if len(label) > fits and _DATE.fullmatch(label):
        label = label[5:]
    return label if len(label) <= fits else label[: fits - 1] + "…"


def _series_order(points: Sequence[Point]) -> list[str]:
    """Series names by total, largest first; past :data:`MAX_SERIES` - 1 they become other."""
    totals: dict[str, float] = {}
    for p in points:
        totals[p.series] = totals.get(p.series, 0.0) + p.value
    names = sorted(totals, key=lambda s: (-totals[s], s))
    if len(names) > MAX_SERIES:
        names = [*names[: MAX_SERIES - 1], "other"]
    return names


def stacked_bars(
    title: str,
    unit: str,
    categories: Sequence[str],
    points: Sequence[Point],
    *,
    time_axis: bool = True,
) -> Chart:
    """A stacked bar chart: one bar per category, one segment per series.

    Args:
        title: what it shows (say the unit and time zone).
        unit: the unit of the values.
        categories: the categories in order (days, as ``YYYY-MM-DD``).
        points: the values; a category or series may be missing.
        time_axis: whether the categories are UTC times.
    """
    names = _series_order(points)
    kept = set(names)
    stacks: dict[tuple[str, str], float] = {}
    for p in points:
        series = p.series if p.series in kept else "other"
        stacks[(p.category, series)] = stacks.get((p.category, series), 0.0) + p.value
    heights = {c: sum(stacks.get((c, s), 0.0) for s in names) for c in categories}
    top = nice_max(max(heights.values(), default=0.0))
    chart, slot, scale = _frame(title, unit, categories, top)
    colours = {s: PALETTE[i] if s != "other" else OTHER_COLOUR for i, s in enumerate(names)}
    bars: list[Rect] = []
    for i, category in enumerate(categories):
        y = chart.plot_bottom
        for series in names:
            value = stacks.get((category, series), 0.0)
            if value <= 0:
                continue
            h = value * scale
            y -= h
            bars.append(
                Rect(
                    x=_LEFT + slot * i + slot * 0.15,
                    y=y,
                    width=slot * 0.7,
                    height=h,
                    colour=colours[series],
                    title=f"{category} · {series}: {format_value(value, unit)}",
                )
            )
    legend = tuple(LegendEntry(s, colours[s]) for s in names)
    return replace(chart, bars=tuple(bars), legend=legend, empty=not bars, time_axis=time_axis)


def lines(title: str, unit: str, categories: Sequence[str], points: Sequence[Point]) -> Chart:
    """A line chart: one line per series over the categories.

    Args:
        title: what it shows (say the unit and time zone).
        unit: the unit of the values.
        categories: the categories in order.
        points: the values; a missing one breaks nothing, the line joins its neighbours.
    """
    names = list(dict.fromkeys(p.series for p in points))
    top = nice_max(max((p.value for p in points), default=0.0))
    chart, slot, scale = _frame(title, unit, categories, top)
    index = {c: i for i, c in enumerate(categories)}
    drawn: list[Line] = []
    for n, series in enumerate(names):
        colour = PALETTE[n % len(PALETTE)]
        coords: list[tuple[float, float]] = []
        marks: list[Rect] = []
        for p in points:
            if p.series != series or p.category not in index:
                continue
            x = _LEFT + slot * (index[p.category] + 0.5)
            y = chart.plot_bottom - p.value * scale
            coords.append((x, y))
            title_text = f"{p.category} · {series}: {format_value(p.value, unit)}"
            marks.append(Rect(x - 3, y - 3, 6, 6, colour, title_text))
        text = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        drawn.append(Line(text, colour, tuple(marks)))
    legend = tuple(LegendEntry(s, PALETTE[n % len(PALETTE)]) for n, s in enumerate(names))
    return replace(chart, lines=tuple(drawn), legend=legend, empty=not points)


def as_float(value: object) -> float:
    """A number from the database (Decimal, int, float or None) as a float; None is 0.

    Args:
        value: the value.
    """
    if value is None:
        return 0.0
    if isinstance(value, Decimal | int | float):
        return float(value)
    return 0.0
