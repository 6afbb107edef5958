"""Server-rendered SVG line charts: the geometry only (numbers), the markup is a template.

Nothing user-written goes into coordinates; titles and labels are rendered by
the template engine, which escapes them. No JavaScript and no CDN.
"""
from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 300, 140
LEFT, RIGHT, TOP, BOTTOM = 38, 10, 12, 24


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    generation: int
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    key: str
    dots: list[Dot]
    polyline: str  # "x,y x,y …" through the known values, in generation order
    x_ticks: list[tuple[float, int]]
    y_ticks: list[tuple[float, str]]
    threshold_y: float | None = None
    threshold_label: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    plot_left: int = LEFT
    plot_right: int = WIDTH - RIGHT
    plot_top: int = TOP
    plot_bottom: int = HEIGHT - BOTTOM
    latest: str = ""
    at_risk_generations: list[int] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.dots


def _fmt(value: float, percent: bool) -> str:
    return f"{value:.0%}" if percent else f"{value:.3g}"


def line_chart(*, title: str, key: str, points: list[tuple[int, float | None]], threshold: float | None = None,
               y_min: float | None = 0.0, y_max: float | None = None, percent: bool = False) -> Chart:
    """Lay out one metric across generations: x is the generation number, y its value.

    Missing values (None) leave a gap in the dots but the line joins the known
    ones, so a generation without enough data does not hide the trend. The y
    range spans the values and the threshold, with 0 at the bottom unless a
    value is negative.
    """
    known = [(g, v) for g, v in points if v is not None]
    generations = [g for g, _ in points]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    values = [v for _, v in known] + ([threshold] if threshold is not None else [])
    low = min(values + ([y_min] if y_min is not None else [])) if values else 0.0
    high = max(values + ([y_max] if y_max is not None else [])) if values else 1.0
    if high - low < 1e-9:
        high = low + (abs(low) or 1.0)
    g_low, g_high = (min(generations), max(generations)) if generations else (0, 1)
    span = max(g_high - g_low, 1)

    def x_of(g: int) -> float:
        return round(LEFT + (g - g_low) / span * plot_w, 1) if len(set(generations)) > 1 else LEFT + plot_w / 2

    def y_of(v: float) -> float:
        return round(TOP + (high - v) / (high - low) * plot_h, 1)

    dots = [Dot(x_of(g), y_of(v), g, _fmt(v, percent)) for g, v in known]
    step = max(1, round(span / 8))
    x_ticks = [(x_of(g), g) for g in range(g_low, g_high + 1, step)] if generations else []
    y_ticks = [(y_of(v), _fmt(v, percent)) for v in (low, (low + high) / 2, high)]
    return Chart(
        title=title,
        key=key,
        dots=dots,
        polyline=" ".join(f"{d.x},{d.y}" for d in dots),
        x_ticks=x_ticks,
        y_ticks=y_ticks,
        threshold_y=y_of(threshold) if threshold is not None else None,
        threshold_label=f"gate {_fmt(threshold, percent)}" if threshold is not None else "",
        latest=dots[-1].label if dots else "",
    )
