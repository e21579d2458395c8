"""The architecture rules that import-linter cannot see: where imports sit, and that the CLI parses without torch."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from sentiment_lab.cli import build_parser, command_function
from sentiment_lab.cli.parsers import SECTION_OF

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sentiment_lab"


def _function_imports() -> list[tuple[Path, int, str, bool]]:
    """(file, line, imported module, has a comment) for every import statement inside a function of the package.

    A comment counts when it is on the import's line or on a line just above it (above a block of imports too).
    """
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    module = sub.module if isinstance(sub, ast.ImportFrom) else sub.names[0].name
                    above = sub.lineno - 2
                    while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                        above -= 1
                    commented = "#" in lines[sub.lineno - 1] or (above >= 0 and lines[above].strip().startswith("#"))
                    found.append((path.relative_to(PACKAGE.parent), sub.lineno, module or "", commented))
    return found


def test_no_internal_import_inside_a_function() -> None:
    inside = [f"{f}:{line} imports {m}" for f, line, m, _ in _function_imports() if m.startswith("sentiment_lab")]
    assert inside == [], "internal imports belong at the top of the module (docs/architecture.md)"


def test_every_lazy_import_says_why() -> None:
    silent = [f"{f}:{line} imports {m}" for f, line, m, commented in _function_imports() if not commented]
    assert silent == [], "a lazy third-party import needs a comment saying why it is lazy"


def test_the_command_line_parses_without_loading_torch() -> None:
    code = (
        "import sys\n"
        "from sentiment_lab.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.parse_args(['predict', 'model', 'text', '--precision', 'bf16', '--backend', 'onnx'])\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sklearn', 'optuna') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("command", ["train", "predict", "serve", "bench", "sweep", "report"])
def test_each_command_runs_from_the_module_its_section_names(command: str) -> None:
    build_parser()
    fn = command_function(command)
    assert fn.__module__ == f"sentiment_lab.cli.{SECTION_OF[command]}"


def test_no_script_shadows_an_importable_module() -> None:
    """A script runs with its folder first on sys.path: benchmarks/datasets.py would replace the `datasets` library
    for every import made while it runs (training's Hub loader among them)."""
    repo = Path(__file__).resolve().parents[1]
    roots = (repo / "benchmarks", repo / "tests")
    clashes = [
        str(path.relative_to(repo))
        for root in roots
        for path in sorted(root.glob("*.py"))
        if (spec := importlib.util.find_spec(path.stem)) is not None and not str(spec.origin).startswith(str(root))
    ]
    assert clashes == [], f"rename these scripts: an installed module has their name: {clashes}"
