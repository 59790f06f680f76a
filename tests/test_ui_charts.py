"""The UI's SVG charts and request parsing, without a server."""

from __future__ import annotations

import pytest

from pgtrail.ui import charts
from pgtrail.ui.charts import Point
from pgtrail.ui.http import Request


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (0.7, 1), (1, 1), (1.2, 2), (3, 5), (7, 10), (120, 200), (0.031, 0.05)],
)
def test_the_value_axis_ends_at_a_round_number_at_or_above_the_largest_value(
    value: float, top: float
) -> None:
    assert charts.nice_max(value) == pytest.approx(top)


def test_stacked_bars_stack_each_series_to_the_category_total() -> None:
    days = ["2026-12-01", "2026-12-02"]
    chart = charts.stacked_bars(
        "cost",
        "USD",
        days,
        [Point(days[0], "a", 1.0), Point(days[0], "b", 4.0), Point(days[1], "a", 2.0)],
    )

    first = [b for b in chart.bars if b.title.startswith(days[0])]
    scale = (chart.plot_bottom - chart.plot_top) / 5.0  # the axis ends at 5
    assert sum(b.height for b in first) == pytest.approx(5.0 * scale)
    assert [e.label for e in chart.legend] == ["b", "a"]  # largest total first
    assert chart.y_ticks[-1].label == "$5.00" and chart.time_axis
    assert [t.label for t in chart.x_ticks] == days


def test_series_past_the_palette_are_summed_as_other() -> None:
    points = [Point("d", f"agent-{i}", float(20 - i)) for i in range(12)]

    chart = charts.stacked_bars("cost", "USD", ["d"], points)

    labels = [e.label for e in chart.legend]
    assert len(labels) == charts.MAX_SERIES and labels[-1] == "other"
    other = next(b for b in chart.bars if "other" in b.title)
    assert other.title == "d · other: $55.00"  # 13 + 12 + 11 + 10 + 9: the five smallest


def test_an_empty_chart_says_so_and_long_labels_are_cut() -> None:
    assert charts.lines("latency", "ms", ["d"], []).empty
    chart = charts.stacked_bars("x", "calls", ["a" * 200], [Point("a" * 200, "s", 1)])
    assert chart.x_ticks[0].label.endswith("…") and len(chart.x_ticks[0].label) < 200
    assert chart.bars[0].title.startswith("a" * 200)


def test_a_path_segment_keeps_an_encoded_slash_and_the_suffix_asks_for_a_twin() -> None:
    request = Request.from_scope(
        {
            "method": "get",
            "raw_path": b"/users/a%2Fb%3Fc.json",
            "query_string": b"since=7d&since=30d&empty=",
            "headers": [(b"Accept", b"text/html")],
        }
    )

    assert request.segments == ("users", "a/b?c") and request.suffix == "json"
    assert request.query == {"since": "30d"} and request.method == "GET"
    assert request.wants_json


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [
        ("application/json", True),
        ("text/html,application/json", False),
        ("application/json, text/html", True),
        ("*/*", False),
    ],
)
def test_accept_chooses_the_json_twin_only_when_json_comes_first(accept: str, wanted: bool) -> None:
    request = Request.from_scope(
        {
            "method": "GET",
            "raw_path": b"/",
            "query_string": b"",
            "headers": [(b"accept", accept.encode())],
        }
    )

    assert request.wants_json is wanted


def test_a_month_of_days_is_labelled_by_month_and_day() -> None:
    days = [f"2026-11-{d:02d}" for d in range(1, 31)]

    chart = charts.stacked_bars("cost", "USD", days, [Point(d, "a", 1.0) for d in days])

    assert [t.label for t in chart.x_ticks][:3] == ["11-01", "11-04", "11-07"]
    assert len(chart.bars) == 30 and chart.bars[0].title.startswith("2026-11-01")
