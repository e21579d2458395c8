"""The `sentiment-lab` command line: parses arguments, calls one public function per command, prints results.

`parsers` defines every command's arguments without importing the library, so --help and argument mistakes
answer at once. The command functions live in one module per concern (`core`, `deploy`, `experiments`,
`analysis`, `serve`), which import the library at their top; `main` imports only the module of the command it
runs (`parsers.SECTION_OF`). `common` holds what several commands share, `allocator` the opt-in allocator.

User mistakes (SentimentLabError) end with one `error:` line and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from collections.abc import Callable, Sequence

from sentiment_lab.cli.allocator import reexec_with_tuned_allocator
from sentiment_lab.cli.parsers import SECTION_OF, add_all_parsers
from sentiment_lab.errors import SentimentLabError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
# Libraries whose warnings are notices about their own internals (deprecations, exporter passes), hidden unless -v.
# Our own warnings, and those of any other code, stay visible.
QUIET_LIBRARIES = (
    r"(torch|transformers|onnx|onnxruntime|onnxscript|datasets|accelerate|captum|sklearn|optuna|ray|mlflow)(\.|$)"
)


def command(name: str) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    """Register the function that runs a sub-command."""

    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn

    return register


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(
        prog="sentiment-lab",
        description="Fine-tune, evaluate, analyse and serve transformer sentiment classifiers.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    add_all_parsers(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    return parser


def command_function(name: str) -> Callable[[argparse.Namespace], int]:
    """The function that runs a command: its module is imported now (it loads the library) and registers it."""
    importlib.import_module(f"sentiment_lab.cli.{SECTION_OF[name]}")
    return COMMANDS[name]


def quiet_libraries() -> None:
    """Library notices only from WARNING (logging) and no library Python warnings; ours stay at INFO."""
    from transformers.utils import logging as hf_logging  # heavy (about 1 s): only once a command runs

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # e.g. "torchvision is not installed"
    warnings.filterwarnings("ignore", module=QUIET_LIBRARIES)
    warnings.filterwarnings("ignore", category=FutureWarning)  # libraries' deprecations, raised at our call sites
    hf_logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sentiment-lab` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    reexec_with_tuned_allocator(args.command, argv)
    # Our own progress at INFO; libraries (ONNX exporter passes, onnxruntime, torch) only from WARNING unless -v.
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("sentiment_lab").setLevel(logging.INFO)
    if not args.verbose:
        quiet_libraries()
    try:
        return command_function(args.command)(args)
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
