"""Rendering helpers (figures saved atomically and closed, PNGs embedded, template filters) and `io.json_safe`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from sentiment_lab.io import json_safe
from sentiment_lab.rendering import embed_png, pyplot, ratio_ticks, save_figure, template_environment

PNG = b"\x89PNG\r\n\x1a\n"


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path: Path) -> None:
    plt = pyplot()
    assert plt.get_backend().lower() == "agg"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    target = tmp_path / "figs" / "line.png"
    assert save_figure(fig, target) == target
    assert target.read_bytes()[:8] == PNG
    assert not plt.fignum_exists(fig.number)
    assert [p.name for p in target.parent.iterdir()] == ["line.png"]  # no temp file left beside it


def test_save_figure_failure_keeps_the_old_file_and_closes_the_figure(tmp_path: Path) -> None:
    target = tmp_path / "plot.png"
    target.write_bytes(b"old")
    fig, _ = pyplot().subplots()

    def broken(*_: object, **__: object) -> None:
        raise RuntimeError("renderer failed")

    fig.savefig = broken
    with pytest.raises(RuntimeError, match="renderer failed"):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]
    assert not pyplot().fignum_exists(fig.number)


def test_embed_png_round_trips(tmp_path: Path) -> None:
    png = tmp_path / "x.png"
    png.write_bytes(PNG + b"payload")
    uri = embed_png(png)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1]) == PNG + b"payload"


def test_template_filters_and_autoescape() -> None:
    template = template_environment().from_string("{{ a|pct }} {{ b|pct(2) }} {{ c|num }} {{ d|num(1) }} {{ t }}")
    text = template.render(a=0.9731, b=None, c=float("nan"), d=np.float64(2.25), t="<b>")
    assert text == "97.3% - - 2.2 &lt;b&gt;"


def test_json_safe_gives_strict_json() -> None:
    data = {
        1: np.int64(3),
        "f": np.float32(0.5),
        "nan": float("nan"),
        "inf": np.float64("-inf"),
        "flag": np.bool_(True),
        "arr": np.array([[1.0, np.nan], [2.0, 3.0]]),
        "tuple": (np.int32(1), "a"),
        "path": Path("runs") / "a",
        "nested": [{"x": np.float64(np.inf)}],
    }
    safe = json_safe(data)
    assert safe == {
        "1": 3,
        "f": 0.5,
        "nan": None,
        "inf": None,
        "flag": True,
        "arr": [[1.0, None], [2.0, 3.0]],
        "tuple": [1, "a"],
        "path": str(Path("runs") / "a"),
        "nested": [{"x": None}],
    }
    assert type(safe["1"]) is int and type(safe["flag"]) is bool and type(safe["f"]) is float
    json.dumps(safe, allow_nan=False)  # raises on NaN/inf or a numpy value
    assert data["nan"] != data["nan"]  # the input is not modified


def test_ratio_ticks_name_readable_ratios_inside_the_range() -> None:
    assert ratio_ticks(0.28, 1.05) == [0.3, 0.4, 0.5, 0.6, 0.8, 1.0]  # under a decade: several ticks, not 4x10^-1
    assert ratio_ticks(0.1, 3) == [0.1, 0.2, 0.5, 1.0, 2.0]  # too many: 1-2-5 only
    assert ratio_ticks(0.01, 100) == [0.01, 0.1, 1.0, 10.0, 100.0]
    assert ratio_ticks(0.31, 0.33) == [0.31, 0.33]  # none of the steps inside: the ends
    with pytest.raises(ValueError, match="0 < low <= high"):
        ratio_ticks(0, 1)


def test_pareto_figure_labels_its_latency_axis_as_ratios(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sentiment_lab import report

    rows = [
        {"name": "teacher", "accuracy": 0.913, "ci_low": 0.905, "ci_high": 0.921, "p50_ratio": 0.61},
        {"name": "student", "accuracy": 0.907, "ci_low": 0.899, "ci_high": 0.915, "p50_ratio": 0.32},
    ]
    labels: list[str] = []

    def keep_labels(fig, path):
        labels.extend(t.get_text() for t in fig.axes[0].get_xticklabels())
        return save_figure(fig, path)

    monkeypatch.setattr(report, "save_figure", keep_labels)
    out = report.pareto_figure(rows, tmp_path / "pareto.png")
    assert out.read_bytes().startswith(PNG) and pyplot().get_fignums() == []
    assert labels == ["0.3x", "0.4x", "0.5x", "0.6x"]
