"""The `sentiment-lab` command line: parses arguments, calls one public function per command, prints results.

Each concern has its own module here (`core`, ...) with `add_parsers(sub)` and its command functions.

User mistakes (SentimentLabError) end with one `error:` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sentiment_lab.errors import SentimentLabError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the function that runs a sub-command."""

    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain aligned text table."""

    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def metrics_table(metrics: dict[str, Any]) -> str:
    """Test (and validation) metrics of a run next to its baselines."""
    rows = []
    for split in ("val", "test"):
        if split in metrics:
            m = metrics[split]
            rows.append(
                [metrics.get("model", "model"), split, m["accuracy"], m["f1"], m["precision"], m["recall"], m["n"]]
            )
    for name, b in (metrics.get("baselines") or {}).items():
        m = b["test"]
        rows.append([name, "test", m["accuracy"], m["f1"], m["precision"], m["recall"], m["n"]])
    return format_table(rows, ["model", "split", "accuracy", "f1", "precision", "recall", "n"])


def add_config_args(p: argparse.ArgumentParser, config_required: bool = True) -> None:
    if config_required:
        p.add_argument("config", help="experiment YAML (e.g. configs/quickstart.yaml)")
    else:
        p.add_argument("config", nargs="?", help="experiment YAML (default: built-in defaults, IMDb)")
    add_override_args(p)


def add_override_args(p: argparse.ArgumentParser, scope: str = "") -> None:
    """--set KEY=VALUE (repeatable) and --data PATH; scope words the help (e.g. "in every run")."""
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a config value{scope}, e.g. --set training.learning_rate=3e-5 (repeatable)",
    )
    p.add_argument("--data", help="data folder or file (replaces data.path; e.g. ../shared/data/imdb)")


def add_allow_pickle_arg(p: argparse.ArgumentParser) -> None:
    """--allow-pickle for commands that load a model folder."""
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="load .bin pickle weights when the folder has no safetensors (pickles can run code: trusted sources only)",
    )


def add_precision_arg(p: argparse.ArgumentParser) -> None:
    """--precision of the torch backend."""
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="torch backend compute precision (auto: bf16 on CPUs with native bf16 and on CUDA, else fp32)",
    )


def add_predictor_args(p: argparse.ArgumentParser) -> None:
    """How `predict` and `serve` load and run a model: backend, batch, long texts, review threshold."""
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="runtime (onnx needs `export`)")
    p.add_argument("--int8", action="store_true", help="with --backend onnx: the INT8 model (model.int8.onnx)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--long-text",
        choices=("truncate", "chunk"),
        default="truncate",
        help="truncate as in training, or average the logits of overlapping windows over the whole review",
    )
    p.add_argument("--stride", type=int, help="chunk mode: tokens shared by neighbouring windows (default: 1/4)")
    p.add_argument(
        "--review-threshold",
        type=float,
        help="needs_review below this confidence (default: the model's calibrated threshold, else 0.70)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch backend: torch.compile with frozen weights (faster single reviews; tens of seconds at start)",
    )
    add_allow_pickle_arg(p)
    add_precision_arg(p)


SECTIONS = ("core", "deploy", "experiments", "analysis", "serve")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    import importlib

    parser = argparse.ArgumentParser(
        prog="sentiment-lab",
        description="Fine-tune, evaluate, analyse and serve transformer sentiment classifiers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for section in SECTIONS:
        importlib.import_module(f"sentiment_lab.cli.{section}").add_parsers(sub)
    return parser


# glibc malloc settings for CPU training: keep freed activation buffers mapped instead of returning them to the
# kernel after every step. Opt-in (SENTIMENT_LAB_ALLOCATOR=tuned): measured +6% to +11% samples/s in real
# quick-start training for +3% to +9% peak RSS (docs/performance.md). glibc reads them only at process start, so
# the command re-executes itself once with them.
TUNED_ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(2**32), "MALLOC_TRIM_THRESHOLD_": str(2**36)}
ALLOCATOR_SWITCH = "SENTIMENT_LAB_ALLOCATOR"  # tuned: TUNED_ALLOCATOR_ENV for training commands; else glibc's own
TRAINING_COMMANDS = ("train", "tune", "sweep")


def wants_tuned_allocator(command: str, environ: Mapping[str, str]) -> bool:
    """Whether a command should re-execute with TUNED_ALLOCATOR_ENV: asked for, training, on glibc, not yet set."""
    return (
        environ.get(ALLOCATOR_SWITCH) == "tuned"
        and command in TRAINING_COMMANDS
        and sys.platform == "linux"
        and platform.libc_ver()[0] == "glibc"
        and not any(key in environ for key in TUNED_ALLOCATOR_ENV)
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentiment-lab` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and wants_tuned_allocator(args.command, os.environ):  # the real command line only, not tests
        os.environ.update(TUNED_ALLOCATOR_ENV)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "sentiment_lab", *sys.argv[1:]])
    # Our own progress at INFO; libraries (ONNX exporter passes, onnxruntime, torch) only from WARNING unless -v.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("sentiment_lab").setLevel(logging.INFO)
    if not args.verbose:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
        import warnings

        warnings.filterwarnings("ignore")
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    try:
        return COMMANDS[args.command](args)
    except SentimentLabError as exc:
        if args.verbose:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; checkpoints written so far are kept (resume with --set training.resume=true)", file=sys.stderr
        )
        return 130
