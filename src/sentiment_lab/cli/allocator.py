"""The opt-in tuned glibc allocator for training commands (SENTIMENT_LAB_ALLOCATOR=tuned)."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

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


def reexec_with_tuned_allocator(command: str, argv: Sequence[str] | None) -> None:
    """Re-execute this command once with TUNED_ALLOCATOR_ENV when asked for (the real command line only, not tests)."""
    if argv is None and wants_tuned_allocator(command, os.environ):
        os.environ.update(TUNED_ALLOCATOR_ENV)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "sentiment_lab", *sys.argv[1:]])
