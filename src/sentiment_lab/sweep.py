"""Sweeps: one YAML file names a base config, variants (or a grid) and seeds; every variant x seed is a run folder.

A sweep folder holds one run folder per run (`<variant>-seed<seed>/`), `sweep.json` (the index: every run, its
status, its `sentiment-lab train` command and headline metrics, and a per-variant summary over seeds), `sweep.md`
(the same tables in Markdown) and `comparison.html` when `sentiment_lab.compare` is available.

Re-running a sweep skips finished runs and resumes unfinished ones from their last complete checkpoint, so an
interrupted sweep loses at most the work since that checkpoint. A finished run whose recorded config no longer
matches the sweep file is refused rather than silently reused.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sentiment_lab.compare import compare_runs
from sentiment_lab.config import (
    ExperimentConfig,
    config_to_dict,
    load_config,
    override_value,
    read_yaml,
    validation_problems,
)
from sentiment_lab.data import prepare_data
from sentiment_lab.errors import ConfigError, SentimentLabError
from sentiment_lab.io import json_safe, write_json_atomic, write_text_atomic
from sentiment_lab.rundir import is_finished
from sentiment_lab.tracking import TrackingGroup
from sentiment_lab.training import train

log = logging.getLogger("sentiment_lab")

SWEEP_INDEX = "sweep.json"
SWEEP_TABLE = "sweep.md"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=+-]+")


class SweepError(SentimentLabError):
    """A sweep file is invalid, or a sweep folder does not match its sweep file."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Variant(_Strict):
    """One named set of overrides, optionally on its own base config."""

    name: str = Field(min_length=1)
    base: str | None = None  # relative to the sweep file; default: the sweep's base
    set: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _safe(cls, v: str) -> str:
        if _SAFE_NAME.search(v):
            raise ValueError(f"variant name {v!r} may contain only letters, digits and . _ = + -")
        return v


class QuickOverlay(_Strict):
    """A file of quick-mode settings that several sweeps share (`quick: {include: quick.yaml}`)."""

    set: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = None


class QuickMode(QuickOverlay):
    """The `--quick` version of a sweep: small model and data so it finishes on a laptop CPU in minutes.

    include: a QuickOverlay file, relative to the sweep file; this section's own `set` keys and `seeds` win.
    """

    include: str | None = None
    base: str | None = None


class SweepSpec(_Strict):
    """A sweep file: base config + variants or grid + seeds (+ a quick mode)."""

    name: str = Field(min_length=1)
    description: str = ""
    base: str
    set: dict[str, Any] = Field(default_factory=dict)  # applied to every run, before the variant's own
    variants: list[Variant] = Field(default_factory=list)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    quick: QuickMode | None = None

    @model_validator(mode="after")
    def _variants_or_grid(self) -> SweepSpec:
        if self.variants and self.grid:
            raise ValueError("give either `variants:` or `grid:`, not both")
        if not self.variants and not self.grid:
            raise ValueError("give `variants:` (a list of named overrides) or `grid:` (key: [values])")
        for key, values in self.grid.items():
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be unique, got {self.seeds}")
        return self


@dataclass
class PlannedRun:
    """One variant x seed of a sweep, with its validated config and where it lives."""

    name: str
    variant: str
    seed: int
    base: Path
    overrides: list[str]
    config: ExperimentConfig
    run_dir: Path
    status: str = "pending"  # pending | finished | unfinished, then trained | resumed | skipped | failed
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def command(self, data_path: str | None = None) -> str:
        """The equivalent `sentiment-lab train` command line."""
        parts = ["sentiment-lab", "train", str(self.base)]
        for item in self.overrides:
            parts += ["--set", item]
        if data_path:
            parts += ["--data", data_path]
        parts += ["--out", str(self.run_dir)]
        return shlex.join(parts)


def load_sweep(path: str | Path) -> SweepSpec:
    """Read and validate a sweep YAML file, with its `quick: {include: ...}` file merged in."""
    raw = read_yaml(path)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as err:
        raise SweepError(f"invalid sweep file {path}:\n  " + "\n  ".join(validation_problems(err))) from None
    if spec.quick and spec.quick.include:
        spec.quick = _include_quick(spec.quick, Path(path))
    return spec


def _include_quick(quick: QuickMode, sweep_path: Path) -> QuickMode:
    """The quick section with its included file underneath: the file's `set`, then the section's own keys."""
    path = Path(quick.include).expanduser()
    path = path if path.is_absolute() else sweep_path.parent / path
    if not path.is_file():
        raise SweepError(
            f"sweep file {sweep_path}: quick include {quick.include!r} not found (looked at {path}); paths in a "
            "sweep file are relative to the sweep file"
        )
    try:
        shared = QuickOverlay.model_validate(read_yaml(path))
    except ValidationError as err:
        raise SweepError(f"invalid quick file {path}:\n  " + "\n  ".join(validation_problems(err))) from None
    return quick.model_copy(
        update={
            "set": {**shared.set, **quick.set},
            "seeds": quick.seeds if quick.seeds is not None else shared.seeds,
        }
    )


def _override_items(values: dict[str, Any]) -> list[str]:
    return [f"{key}={override_value(value)}" for key, value in values.items()]


def _format_value(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def grid_variants(grid: dict[str, list[Any]]) -> list[Variant]:
    """Expand `{key: [values]}` into one variant per combination, named `leaf=value` joined by `_`."""
    keys = list(grid)
    leaves = [k.rsplit(".", 1)[-1] for k in keys]
    # Two grid keys with the same leaf (model.dropout, x.dropout) keep their full dotted names.
    labels = [k if leaves.count(leaf) > 1 else leaf for k, leaf in zip(keys, leaves, strict=True)]
    variants = []
    for combo in itertools.product(*(grid[k] for k in keys)):
        name = "_".join(f"{label}={_format_value(v)}" for label, v in zip(labels, combo, strict=True))
        variants.append(Variant(name=_SAFE_NAME.sub("-", name), set=dict(zip(keys, combo, strict=True))))
    return variants


def _resolve_base(sweep_dir: Path, base: str) -> Path:
    path = Path(base).expanduser()
    path = path if path.is_absolute() else (sweep_dir / path)
    if not path.is_file():
        raise SweepError(
            f"base config {base!r} not found (looked at {path}); paths in a sweep file are relative to the sweep file"
        )
    return path.resolve()


def plan_sweep(
    sweep_file: str | Path,
    out_dir: str | Path | None = None,
    quick: bool = False,
    overrides: list[str] | None = None,
    data_path: str | None = None,
) -> tuple[SweepSpec, Path, list[PlannedRun]]:
    """Validate every run of a sweep (configs built, folders checked) before any training starts.

    Order of overrides for each run: base config < sweep `set` < quick `set` (its included file's, then its
    own) < variant `set` < `overrides` (the command line) < the seed.
    """
    sweep_path = Path(sweep_file)
    spec = load_sweep(sweep_path)
    if quick and spec.quick is None:
        raise SweepError(f"sweep file {sweep_path} has no `quick:` section; run it without --quick")
    out = Path(out_dir) if out_dir else Path("runs") / "sweeps" / (spec.name + ("-quick" if quick else ""))
    variants = spec.variants or grid_variants(spec.grid)
    seeds = (spec.quick.seeds if quick and spec.quick and spec.quick.seeds else None) or spec.seeds
    quick_set = spec.quick.set if quick and spec.quick else {}
    quick_base = spec.quick.base if quick and spec.quick else None
    runs = []
    for variant in variants:
        base = _resolve_base(sweep_path.parent, variant.base or quick_base or spec.base)
        for seed in seeds:
            items = [
                *_override_items(spec.set),
                *_override_items(quick_set),
                *_override_items(variant.set),
                *(overrides or []),
                f"training.seed={seed}",
            ]
            name = f"{variant.name}-seed{seed}"
            try:
                cfg = load_config(base, items, data_path)
            except ConfigError as exc:
                raise SweepError(f"sweep {spec.name}, run {name}: {exc}") from None
            cfg.name = f"{spec.name}/{name}"
            runs.append(PlannedRun(name, variant.name, seed, base, items, cfg, out / name))
    for run in runs:
        _classify(run)
    return spec, out, runs


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    config = {k: v for k, v in config.items() if k != "resolved"}
    config.get("training", {}).pop("resume", None)  # the sweep sets it for unfinished runs
    return config


def _classify(run: PlannedRun) -> None:
    """Mark a run finished/unfinished/pending; refuse a folder whose config differs from the sweep's."""
    recorded = run.run_dir / "config.yaml"
    if not run.run_dir.is_dir() or not any(run.run_dir.iterdir()):
        run.status = "pending"
        return
    if recorded.is_file():
        old = _comparable(yaml.safe_load(recorded.read_text(encoding="utf-8")) or {})
        new = _comparable(config_to_dict(run.config))
        if old != new:
            diffs = _diff_keys(old, new)
            raise SweepError(
                f"run folder {run.run_dir} was made with a different config ({', '.join(diffs[:5])} differ) than "
                "the sweep file now gives; restore the sweep file, delete that run folder, or pass --out to "
                "start a new sweep folder"
            )
    run.status = "finished" if is_finished(run.run_dir) else "unfinished"


def _diff_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _diff_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def _run_summary(run: PlannedRun) -> dict[str, Any]:
    """Headline numbers of a finished run (validation and test), read from its run folder."""
    metrics = json.loads((run.run_dir / "metrics.json").read_text(encoding="utf-8"))
    config = yaml.safe_load((run.run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    params = (config.get("resolved") or {}).get("parameters") or {}
    out = {
        "val_accuracy": (metrics.get("val") or {}).get("accuracy"),  # None: no validation split
        "val_f1": (metrics.get("val") or {}).get("f1"),
        "test_accuracy": metrics["test"]["accuracy"],
        "test_f1": metrics["test"]["f1"],
        "test_n": metrics["test"]["n"],
        "train_n": metrics["data"]["train"],
        "train_runtime_s": metrics.get("train_runtime_s"),
        "global_step": metrics.get("global_step"),
        "params_total": params.get("total"),
        "params_trainable": params.get("trainable"),
    }
    tfidf = (metrics.get("baselines") or {}).get("tfidf_logreg")
    if tfidf:
        out["tfidf_test_accuracy"] = tfidf["test"]["accuracy"]
    return out


def summarize(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-variant mean and sample standard deviation over seeds of the finished runs."""
    rows = [{"variant": r["variant"], "seed": r["seed"], **r["metrics"]} for r in records if r.get("metrics")]
    if not rows:
        return []
    frame = pd.DataFrame(rows)
    order = list(dict.fromkeys(frame["variant"]))
    out = []
    for variant in order:
        g = frame[frame["variant"] == variant]
        row: dict[str, Any] = {"variant": variant, "seeds": len(g)}
        for col in ("val_f1", "test_accuracy", "test_f1", "train_runtime_s", "tfidf_test_accuracy"):
            values = g[col] if col in g else pd.Series(dtype=float)
            row[f"{col}_mean"] = json_safe(values.mean())
            row[f"{col}_std"] = json_safe(values.std(ddof=1)) if len(values) > 1 else None
        for col in ("params_trainable", "params_total", "train_n", "test_n"):
            row[col] = json_safe(g[col].dropna().iloc[0]) if col in g and g[col].notna().any() else None
        out.append(row)
    return out


def _pm(mean: float | None, std: float | None, scale: float = 100.0, digits: int = 2) -> str:
    if mean is None:
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text + (f" ± {std * scale:.{digits}f}" if std is not None else "")


def markdown_tables(index: dict[str, Any]) -> str:
    """The per-variant summary and the per-run table of a sweep index, in Markdown."""
    lines = [f"### Sweep `{index['name']}`{' (quick)' if index['quick'] else ''}", ""]
    lines += [
        "| variant | seeds | val F1 % | test accuracy % | test F1 % | TF-IDF test acc % | trainable params | train s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in index["summary"]:
        params = f"{s['params_trainable']:,}" if s.get("params_trainable") is not None else "-"
        lines.append(
            f"| {s['variant']} | {s['seeds']} | {_pm(s['val_f1_mean'], s['val_f1_std'])} | "
            f"{_pm(s['test_accuracy_mean'], s['test_accuracy_std'])} | {_pm(s['test_f1_mean'], s['test_f1_std'])} | "
            f"{_pm(s['tfidf_test_accuracy_mean'], None)} | {params} | "
            f"{_pm(s['train_runtime_s_mean'], s['train_runtime_s_std'], 1.0, 0)} |"
        )
    lines += ["", "| run | status | val F1 % | test accuracy % | test F1 % | steps |", "|---|---|---|---|---|---|"]
    for r in index["runs"]:
        m = r.get("metrics") or {}
        lines.append(
            f"| {r['name']} | {r['status']} | {_pm(m.get('val_f1'), None)} | {_pm(m.get('test_accuracy'), None)} | "
            f"{_pm(m.get('test_f1'), None)} | {m.get('global_step', '-')} |"
        )
    return "\n".join(lines) + "\n"


def _index(
    spec: SweepSpec, sweep_file: Path, out: Path, runs: list[PlannedRun], quick: bool, data_path: str | None
) -> dict[str, Any]:
    records = []
    for run in runs:
        record: dict[str, Any] = {
            "name": run.name,
            "variant": run.variant,
            "seed": run.seed,
            "status": run.status,
            "run_dir": run.name,
            "base": str(run.base),
            "overrides": run.overrides,
            "command": run.command(data_path),
        }
        if run.error:
            record["error"] = run.error
        if is_finished(run.run_dir):
            record["metrics"] = _run_summary(run)
        records.append(record)
    return {
        "name": spec.name,
        "description": spec.description,
        "sweep_file": str(sweep_file.resolve()),
        "quick": quick,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": records,
        "summary": summarize(records),
        "comparison": None,
    }


def _write_index(index: dict[str, Any], out: Path) -> None:
    write_json_atomic(out / SWEEP_INDEX, index)
    write_text_atomic(out / SWEEP_TABLE, markdown_tables(index))


def _write_comparison(out: Path, runs: list[PlannedRun], index: dict[str, Any]) -> None:
    """comparison.html (+ comparison.json) from the `compare` stage over the finished runs."""
    finished = [r.run_dir for r in runs if is_finished(r.run_dir)]
    if len(finished) < 2:
        return
    try:
        compare_runs(finished, out)
    except SentimentLabError as exc:  # e.g. variants that change the test set cannot be paired; the runs stand
        log.warning("sweep %s: no comparison.html: %s", index["name"], exc)
        index["comparison_error"] = str(exc)
        return
    index["comparison"] = "comparison.html"


def _tracking_group(out: Path, spec: SweepSpec, run: PlannedRun) -> TrackingGroup:
    """One MLflow experiment per sweep folder (re-running a sweep adds to it); variant and seed as tags."""
    return TrackingGroup(
        experiment=f"sweep {out.name}",
        tags={
            "sentiment_lab.sweep": spec.name,
            "sentiment_lab.variant": run.variant,
            "sentiment_lab.seed": str(run.seed),
        },
    )


def run_sweep(
    sweep_file: str | Path,
    out_dir: str | Path | None = None,
    quick: bool = False,
    overrides: list[str] | None = None,
    data_path: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Train every run of a sweep that is not finished yet; returns the `sweep.json` index.

    quick: use the sweep file's `quick:` section (small model and data). overrides: `key=value` applied to
    every run. dry_run: only validate and return the plan (nothing is trained or written).
    """

    sweep_path = Path(sweep_file)
    spec, out, runs = plan_sweep(sweep_path, out_dir, quick, overrides, data_path)
    index = _index(spec, sweep_path, out, runs, quick, data_path)
    if dry_run:
        return index
    out.mkdir(parents=True, exist_ok=True)
    splits_cache: tuple[str, Any] | None = None
    try:
        for i, run in enumerate(runs, 1):
            if run.status == "finished":
                run.status = "skipped"
                log.info("sweep %s: [%d/%d] %s already finished, skipped", spec.name, i, len(runs), run.name)
                continue
            resume = run.status == "unfinished"
            if resume:
                run.config.training.resume = True
            log.info("sweep %s: [%d/%d] %s (%s)", spec.name, i, len(runs), run.name, "resume" if resume else "new")
            # Variants usually share the data config: load and split the reviews once.
            data_key = json.dumps(run.config.data.model_dump(mode="json"), sort_keys=True)
            if splits_cache is None or splits_cache[0] != data_key:
                splits_cache = (data_key, prepare_data(run.config.data))
            try:
                train(run.config, run.run_dir, splits=splits_cache[1], tracking=_tracking_group(out, spec, run))
            except KeyboardInterrupt:
                run.status = "interrupted"
                raise
            except SentimentLabError:
                raise  # a user mistake stops the sweep with its own message
            except Exception as exc:  # one crashed run (e.g. out of memory) must not lose the others
                log.exception("sweep %s: run %s failed", spec.name, run.name)
                run.status, run.error = "failed", f"{type(exc).__name__}: {exc}"
                continue
            run.status = "resumed" if resume else "trained"
    finally:
        index = _index(spec, sweep_path, out, runs, quick, data_path)
        _write_index(index, out)
    _write_comparison(out, runs, index)
    _write_index(index, out)
    return index
