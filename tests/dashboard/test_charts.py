"""The SVG charts: scales, gaps, empty and single-point series, escaping. No database."""

import math
import re
from datetime import UTC, datetime, timedelta

import pytest

from dashboard.charts import (
    BOTTOM,
    HEIGHT,
    TOP,
    Line,
    format_count,
    format_percent,
    format_seconds,
    line_chart,
    nice_scale,
)

STARTS = [datetime(2026, 11, 29, tzinfo=UTC) + timedelta(hours=hour) for hour in range(24)]


def chart(*lines: Line, **options: object) -> str:
    options.setdefault("value_format", format_count)
    options.setdefault("time_format", "%H:%M")
    return str(line_chart(title="Queue", lines=lines, starts=STARTS, **options))


def polylines(svg: str) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in points.split()]
        for points in re.findall(r'<polyline [^>]*points="([^"]+)"', svg)
    ]


@pytest.mark.parametrize(
    ("peak", "options", "maximum", "ticks"),
    [
        (0, {}, 1.0, (0.0, 0.25, 0.5, 0.75, 1.0)),
        (3, {"integer": True, "minimum": 1}, 3.0, (0.0, 1.0, 2.0, 3.0)),
        (7, {"integer": True}, 8.0, (0.0, 2.0, 4.0, 6.0, 8.0)),
        (0.23, {"minimum": 0.1}, 0.3, (0.0, 0.1, 0.2, 0.3)),
        (100, {}, 100.0, (0.0, 25.0, 50.0, 75.0, 100.0)),
        (101, {}, 150.0, (0.0, 50.0, 100.0, 150.0)),
        (1234, {"integer": True}, 1500.0, (0.0, 500.0, 1000.0, 1500.0)),
        (2, {"integer": True, "minimum": 4}, 4.0, (0.0, 1.0, 2.0, 3.0, 4.0)),
        # Not a number (a broken measurement) draws as nothing measured, not as a broken axis.
        (float("nan"), {"minimum": 5}, 6.0, (0.0, 2.0, 4.0, 6.0)),
    ],
)
def test_nice_scale_rounds_up_to_few_round_ticks(peak, options, maximum, ticks) -> None:
    scale = nice_scale(peak, **options)
    assert scale.maximum == maximum
    assert scale.ticks == ticks
    assert scale.maximum >= (0 if math.isnan(peak) else peak)


def test_empty_series_keeps_the_axes_and_says_no_data() -> None:
    svg = chart(Line("queued", [None] * 24))
    assert 'data-points="0"' in svg
    assert "No data in this period" in svg
    assert "<polyline" not in svg
    assert "<circle" not in svg
    assert "<title>Queue: no data</title>" in svg
    # The time axis is still labelled: first, middle and last bucket.
    assert [label for label in ("00:00", "12:00", "23:00") if f">{label}</text>" in svg] == [
        "00:00",
        "12:00",
        "23:00",
    ]


def test_single_point_is_a_dot_not_a_line() -> None:
    svg = chart(Line("queued", [None] * 10 + [5] + [None] * 13))
    assert "<polyline" not in svg
    assert svg.count("chart-dot-alone") == 1
    assert "<title>10:00 queued: 5</title>" in svg


def test_gap_splits_the_line_and_points_scale_to_the_axis() -> None:
    values = [1, 2, 3, None, None, 4, 5] + [None] * 17
    svg = chart(Line("queued", values), integer=True)
    first, second = polylines(svg)
    assert len(first) == 3
    assert len(second) == 2
    # A peak of 5 gets the axis 0, 2, 4, 6: it is drawn at 5/6 of the plot's height.
    assert second[-1][1] == pytest.approx(TOP + (HEIGHT - TOP - BOTTOM) * (1 - 5 / 6), abs=0.05)
    # Points are centred in their bucket and move right with time.
    assert first[0][0] < first[1][0] < first[2][0] < second[0][0]
    assert 'data-points="5"' in svg


def test_points_sit_on_their_value() -> None:
    svg = chart(Line("queued", [0.0, 4.0] + [None] * 22), integer=True, minimum=4)
    ((zero, four),) = polylines(svg)
    assert zero[1] == pytest.approx(HEIGHT - BOTTOM)
    assert four[1] == pytest.approx(TOP)


def test_several_lines_share_one_scale() -> None:
    svg = chart(Line("p95", [10.0, 20.0] + [None] * 22), Line("p50", [1.0, 2.0] + [None] * 22, "second"))
    main, second = polylines(svg)
    assert main[1][1] == pytest.approx(TOP)  # 20 is the scale's top
    assert second[1][1] > main[1][1]
    assert "chart-line-second" in svg
    assert "<title>Queue: p95 peak 20, p50 peak 2</title>" in svg


def test_labels_are_escaped() -> None:
    svg = str(
        line_chart(
            title="<script>alert(1)</script>",
            lines=[Line("<b>x</b>", [1.0] + [None] * 23, "main")],
            starts=STARTS,
            value_format=format_count,
            time_format="%H:%M",
        )
    )
    assert "<script>" not in svg
    assert "<b>" not in svg
    assert "&lt;script&gt;" in svg
    assert "&lt;b&gt;x&lt;/b&gt;" in svg


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0"), (0.35, "0.35 s"), (1.5, "1.5 s"), (12, "12 s"), (300, "5 min"), (9000, "2.5 h")],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(("fraction", "text"), [(0, "0%"), (0.005, "0.5%"), (0.05, "5%"), (0.123, "12%")])
def test_format_percent(fraction: float, text: str) -> None:
    assert format_percent(fraction) == text
