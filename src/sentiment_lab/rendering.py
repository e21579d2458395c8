"""Pages and figures: Jinja2 templates shipped in `sentiment_lab/templates`, PNGs embedded as data: URIs, and
matplotlib figures drawn off-screen and saved atomically. Used by the report, compare and explain.
"""

from __future__ import annotations

import base64
import math
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

from sentiment_lab.io import atomic_path

FIGURE_DPI = 110


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


@lru_cache(maxsize=1)
def template_environment() -> jinja2.Environment:
    """The Jinja2 environment of sentiment_lab/templates: autoescaped, strict about undefined names.

    Filters: `pct` (0.973 -> "97.3%") and `num` (four decimals); both print "-" for None and NaN.
    """
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sentiment_lab", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v, d=1: "-" if _missing(v) else f"{100 * v:.{d}f}%"
    env.filters["num"] = lambda v, d=4: "-" if _missing(v) else f"{v:.{d}f}"
    return env


def render_template(name: str, **context: Any) -> str:
    """Render a template shipped in sentiment_lab/templates (see `template_environment` for its filters)."""
    return template_environment().get_template(name).render(**context)


def embed_png(path: str | Path) -> str:
    """A data: URI of a PNG so the page needs no other file."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def pyplot() -> Any:
    """matplotlib.pyplot with the off-screen Agg backend (no display needed, same PNGs everywhere)."""
    import matplotlib  # lazy: pyplot takes about half a second to import and only code that draws needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # after use("Agg"), so pyplot never starts a GUI backend

    return plt


def ratio_ticks(low: float, high: float, most: int = 8) -> list[float]:
    """Tick positions for a log-scaled axis of ratios from low to high: the values 1, 1.5, 2, 2.5, 3, 4, 5, 6, 8 of
    each decade that fall inside, or only 1, 2, 5 (then 1) when those would be more than `most`.

    Written here because matplotlib's LogLocator gives an axis spanning less than a decade one or two ticks, labelled
    4x10^-1, which is unreadable for ratios like 0.4x."""
    if not 0 < low <= high:
        raise ValueError(f"ratio ticks need 0 < low <= high, got {low}, {high}")
    decades = range(math.floor(math.log10(low)), math.floor(math.log10(high)) + 1)
    inside: list[float] = []
    for steps in ((1, 1.5, 2, 2.5, 3, 4, 5, 6, 8), (1, 2, 5), (1,)):
        inside = [t for d in decades for s in steps if low <= (t := round(s * 10.0**d, 6)) <= high]
        if len(inside) <= most:
            break
    return inside or [round(low, 6), round(high, 6)]


def set_ratio_xaxis(ax: Any, values: Any, margin: float = 1.15) -> None:
    """A log-scaled x axis for ratios (values with a margin either side), ticked "0.3x", "0.4x", ... "1x"."""
    low, high = float(min(values)) / margin, float(max(values)) * margin
    ticks = ratio_ticks(low, high)
    ax.set_xscale("log")
    ax.set_xlim(low, high)
    ax.set_xticks(ticks, [f"{t:g}x" for t in ticks])
    ax.minorticks_off()


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write a figure as PNG atomically (cropped to its content), close it, and return the path."""
    out = Path(path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=FIGURE_DPI, bbox_inches="tight")
    finally:
        pyplot().close(fig)  # figures stay in pyplot's registry (and memory) until closed
    return out
