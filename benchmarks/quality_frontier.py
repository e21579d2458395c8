"""Issue 18, Q3: test accuracy against CPU minutes in one figure, every point measured, each with its 95% CI.

Left panel: runs on the full IMDb test set (25,000 reviews), read from their measurement files under
docs/measurements/ (the JSON written beside each preset's `/usr/bin/time -v sentiment-lab train` log: the run's
metrics.json under "metrics" and time's "wall_clock_total"); the TF-IDF baseline each run scored on its own split is
drawn once per distinct accuracy. Right panel: the levers of benchmarks/quality_levers.py (quick-start recipe at
reduced scale, its own test subset), read from that script's JSON. The two panels score different test sets, so
their accuracies are not comparable across panels; within a panel they are.

Full-set CIs are Wilson intervals from accuracy and n (the measurement files keep counts, not predictions); the
levers' are the bootstrap intervals that quality_levers.py computed from the predictions.

    python benchmarks/quality_frontier.py \\
        --full cpu-minilm-full=docs/measurements/cpu-minilm-full-shuffled-buckets.json \\
        --full cpu-best=docs/measurements/cpu-best.json --levers docs/measurements/quality_levers-small.json \\
        --out docs/figures/quality_frontier.png
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from quality_levers import draw_points  # benchmarks/ is sys.path[0] when this script runs

REPO = Path(__file__).resolve().parents[1]


def wall_seconds(text: str) -> float:
    """Seconds of a `/usr/bin/time -v` elapsed time at the start of `text` ("1:10:55 (...)" or "52:03.11")."""
    match = re.match(r"\s*(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)", text)
    if match is None:
        raise ValueError(f"no h:mm:ss wall time at the start of {text!r}")
    hours, minutes, seconds = match.groups()
    return 3600 * int(hours or 0) + 60 * int(minutes) + float(seconds)


def wilson_point(name: str, accuracy: float, n: int, wall_s: float) -> dict[str, Any]:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(round(accuracy * n), n, alpha=0.05, method="wilson")
    return {"name": name, "accuracy": accuracy, "ci_low": float(low), "ci_high": float(high), "n": n, "wall_s": wall_s}


def full_points(sources: list[tuple[str, Path]]) -> list[dict[str, Any]]:
    """One point per measured run plus one per distinct TF-IDF result on the same test set, cheapest first."""
    points: list[dict[str, Any]] = []
    tfidf_seen: set[float] = set()
    for name, path in sources:
        report = json.loads(path.read_text())
        test = report["metrics"]["test"]
        points.append(wilson_point(name, test["accuracy"], test["n"], wall_seconds(report["wall_clock_total"])))
        tfidf = report["metrics"].get("baselines", {}).get("tfidf_logreg")
        if tfidf and tfidf["test"]["accuracy"] not in tfidf_seen:
            tfidf_seen.add(tfidf["test"]["accuracy"])
            # its fit is all of its cost worth counting (tokenizing and scoring take seconds)
            points.append(
                wilson_point("TF-IDF", tfidf["test"]["accuracy"], tfidf["test"]["n"], tfidf["train_runtime_s"])
            )
    return sorted(points, key=lambda point: point["wall_s"])  # by cost: neighbours' labels alternate sides


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="append", default=[], metavar="NAME=JSON", help="a full-test-set run's measurement")
    p.add_argument("--levers", default=str(REPO / "docs" / "measurements" / "quality_levers-small.json"))
    p.add_argument("--out", default=str(REPO / "docs" / "figures" / "quality_frontier.png"))
    args = p.parse_args()
    sources = []
    for item in args.full:  # p.error: one `error:` line, exit status 2
        name, sep, file = item.partition("=")
        if not sep or not Path(file).is_file():
            p.error(f"--full {item!r}: give NAME=FILE with an existing measurement JSON")
        sources.append((name, Path(file)))
    if not sources:
        p.error("give at least one --full NAME=JSON (a full-test-set run's measurement file)")
    if not Path(args.levers).is_file():
        p.error(f"--levers {args.levers}: no such file (benchmarks/quality_levers.py writes it with --out)")

    from sentiment_lab.rendering import pyplot, save_figure

    full = full_points(sources)
    levers = json.loads(Path(args.levers).read_text())
    lever_rows = levers["rows"]
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(12, 4.8))
    draw_points(left, full)
    # the marks: the GPU studies' DistilBERT (93.04%) and Q2's target, 93.5% within 120 minutes
    left.axhline(93.04, color="tab:red", lw=0.8, ls=":", zorder=0, label="DistilBERT on a T4 GPU (study): 93.04%")
    left.axhline(93.5, color="tab:green", lw=0.8, ls="--", zorder=0, label="Q2 target: 93.5%")
    left.axvline(120, color="tab:green", lw=0.8, ls="--", zorder=0)
    left.set_xlim(right=max(left.get_xlim()[1], 130))
    left.legend(loc="lower right", fontsize=8)
    left.set_title(f"full IMDb test set ({full[0]['n']:,} reviews), 2 CPU cores", fontsize=10)
    left.set_ylabel("test accuracy % (95% Wilson CI)")
    left.set_xlabel("wall minutes, every stage counted")
    draw_points(right, lever_rows, next(r["accuracy"] for r in lever_rows if r["name"] == "baseline"))
    params = levers["params"]
    right.set_title(
        f"levers at reduced scale: {Path(params['config']).stem} recipe, {lever_rows[0]['test_n']:,} test reviews\n"
        + " ".join(params["overrides"]),
        fontsize=9,
    )
    right.set_ylabel("test accuracy % (95% bootstrap CI)")
    right.set_xlabel("wall minutes, every stage counted (baseline = quick-start recipe)")
    save_figure(fig, args.out)
    for point in full:
        print(
            f"{point['name']:16s} {100 * point['accuracy']:.2f}% [{100 * point['ci_low']:.2f}, "
            f"{100 * point['ci_high']:.2f}]  {point['wall_s'] / 60:.1f} min"
        )
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
