"""Small line charts as inline SVG, drawn on the server: no JavaScript, no library, nothing fetched.

A chart is a fixed number of buckets (one x position each) and one or more
lines with a value or None per bucket; None leaves a gap, because "nothing was
measured" is not zero. Colours come from CSS classes the page styles with the
admin's variables, so the charts follow its light and dark themes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from django.utils.safestring import SafeString, mark_safe

# About the size a chart is shown at (three side by side), so its 11px labels stay 11px on screen.
WIDTH = 320
HEIGHT = 130
LEFT, RIGHT, TOP, BOTTOM = 42, 10, 10, 22
STEPS = (1.0, 2.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Line:
    """One series: a value (or None) per bucket, drawn with the CSS class `chart-line-<style>`."""

    label: str
    values: Sequence[float | None]
    style: str = "main"


@dataclass(frozen=True)
class Scale:
    """The y axis: from 0 to `maximum`, with a gridline at each tick."""

    maximum: float
    ticks: tuple[float, ...]


def nice_scale(peak: float, *, minimum: float = 1.0, intervals: int = 4, integer: bool = False) -> Scale:
    """0 to a round number ≥ `peak` (at least `minimum`), in at most `intervals` equal steps
    of 1, 2, 2.5 or 5 × 10^k.

    `integer` keeps steps whole, for counts: a queue of 3 is not drawn against 0.75 ticks.
    """
    peak = max(peak if math.isfinite(peak) else 0.0, minimum)
    raw = peak / intervals
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in STEPS if factor * magnitude >= raw * (1 - 1e-9))
    if integer:
        step = max(1.0, math.ceil(step))
    count = math.ceil(peak / step - 1e-9)
    step = float(step)
    ticks = tuple(round(step * index, 10) for index in range(count + 1))
    return Scale(maximum=ticks[-1], ticks=ticks)


def _runs(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """The stretches of consecutive measured buckets, as (index, value) lists."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for index, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((index, value))
    if current:
        runs.append(current)
    return runs


def line_chart(
    *,
    title: str,
    lines: Sequence[Line],
    starts: Sequence[datetime],
    value_format: Callable[[float], str],
    time_format: str,
    minimum: float = 1.0,
    integer: bool = False,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """An SVG line chart of `lines` over the buckets beginning at `starts`.

    Each measured bucket is a point centred in its slot, with a tooltip
    (<title>); a lone point between gaps is drawn as a dot. With nothing
    measured at all the axes stay and say so, so the page layout never jumps.
    """
    buckets = len(starts)
    plot_width, plot_height = width - LEFT - RIGHT, height - TOP - BOTTOM
    measured = [value for line in lines for value in line.values if value is not None]
    scale = nice_scale(max(measured, default=0.0), minimum=minimum, integer=integer)

    def x(index: int) -> float:
        return LEFT + plot_width * (index + 0.5) / max(buckets, 1)

    def y(value: float) -> float:
        return TOP + plot_height * (1 - min(value, scale.maximum) / scale.maximum)

    # Numbers are formatted here; the only text (labels, times, values) goes through escape().
    times = [escape(start.strftime(time_format)) for start in starts]
    parts: list[str] = []
    for tick in scale.ticks:
        parts.append(
            f'<line class="chart-grid" x1="{LEFT}" x2="{width - RIGHT}"'
            f' y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
            f'<text class="chart-label" x="{LEFT - 6}" y="{y(tick) + 3.5:.1f}" text-anchor="end">'
            f"{escape(value_format(tick))}</text>"
        )
    for index in sorted({0, buckets // 2, buckets - 1}) if buckets else []:
        if buckets > 1 and index == 0:
            anchor, at = "start", float(LEFT)
        elif buckets > 1 and index == buckets - 1:
            anchor, at = "end", float(width - RIGHT)
        else:
            anchor, at = "middle", x(index)
        parts.append(
            f'<text class="chart-label" x="{at:.1f}" y="{height - 6}" text-anchor="{anchor}">'
            f"{times[index]}</text>"
        )
    for position, line in enumerate(lines):
        style, label = escape(line.style), escape(line.label)
        for run in _runs(line.values):
            points = " ".join(f"{x(index):.1f},{y(value):.1f}" for index, value in run)
            if len(run) > 1:
                if position == 0:
                    # The first line gets a faint area under it: the eye finds the main series first.
                    bottom = TOP + plot_height
                    parts.append(
                        f'<polygon class="chart-area chart-area-{style}"'
                        f' points="{x(run[0][0]):.1f},{bottom} {points} {x(run[-1][0]):.1f},{bottom}"/>'
                    )
                parts.append(f'<polyline class="chart-line chart-line-{style}" points="{points}"/>')
            for index, value in run:
                alone = len(run) == 1
                parts.append(
                    f'<circle class="chart-dot chart-dot-{style}{" chart-dot-alone" if alone else ""}"'
                    f' cx="{x(index):.1f}" cy="{y(value):.1f}" r="{3 if alone else 2}">'
                    f"<title>{times[index]} {label}:"
                    f" {escape(value_format(value))}</title></circle>"
                )
    if not measured:
        parts.append(
            f'<text class="chart-empty" x="{LEFT + plot_width / 2:.1f}" y="{TOP + plot_height / 2 + 4:.1f}"'
            ' text-anchor="middle">No data in this period</text>'
        )
    summary = (
        f"{title}: "
        + ", ".join(
            f"{line.label} peak {value_format(max(known))}"
            for line in lines
            if (known := [value for value in line.values if value is not None])
        )
        if measured
        else f"{title}: no data"
    )
    return mark_safe(  # noqa: S308 - numbers, and text through escape() only.
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}"'
        f' role="img" data-buckets="{buckets}" data-points="{len(measured)}">'
        f"<title>{escape(summary)}</title>{''.join(parts)}</svg>"
    )


# --- value formats ------------------------------------------------------------------------------------


def format_count(value: float) -> str:
    return f"{round(value):,}"


def format_percent(fraction: float) -> str:
    percent = fraction * 100
    if percent == 0 or percent >= 10:
        return f"{percent:.0f}%"
    return f"{percent:.1f}%".replace(".0%", "%")


def format_seconds(seconds: float) -> str:
    """A duration as an operator reads it: 0.35 s, 12 s, 4.5 min, 2 h."""
    if seconds == 0:
        return "0"
    if seconds < 10:
        return f"{seconds:.2g} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    return f"{seconds / 3600:.3g} h"
