"""The run folder: the contract between stages. Checks before a run starts, a pid lock, checkpoint discovery.

A run is finished when `metrics.json` exists (it is written last, atomically).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sentiment_lab.errors import RunDirError

FINISHED_MARKER = "metrics.json"
LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"
MIN_FREE_BYTES = 500 * 1024 * 1024
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def is_finished(run_dir: str | Path) -> bool:
    """True when the folder holds a completed run."""
    return (Path(run_dir) / FINISHED_MARKER).is_file()


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoints that were fully written (trainer_state.json is saved last), oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CHECKPOINT_RE.match(p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint, or None; incomplete ones are ignored."""
    ckpts = complete_checkpoints(run_dir)
    return ckpts[-1] if ckpts else None


def check_run_dir(run_dir: str | Path, overwrite: bool = False, resume: bool = False) -> None:
    """Refuse a finished or foreign run folder before any work starts (nothing is deleted here)."""
    run = Path(run_dir)
    if run.exists() and not run.is_dir():
        raise RunDirError(f"run folder {run} exists and is a file; choose another --out")
    owner = live_lock_owner(run)
    if owner:  # first: --overwrite must never empty a folder another process is training into
        raise _in_use(run, owner)
    if is_finished(run) and not overwrite:
        raise RunDirError(
            f"run folder {run} already holds a finished run (metrics.json); pass --overwrite to replace it "
            "or --out to write elsewhere"
        )
    if run.is_dir() and any(run.iterdir()) and not (overwrite or resume or is_finished(run)):
        raise RunDirError(
            f"run folder {run} holds an unfinished run; pass --set training.resume=true to continue it "
            "from its last checkpoint, or --overwrite to start again"
        )
    _check_writable(run)


def _check_writable(run: Path) -> None:
    import tempfile

    probe_dir = run if run.exists() else next((p for p in run.parents if p.exists()), Path("."))
    try:  # write a real file: permission bits, read-only mounts and files-in-the-way all fail here
        with tempfile.TemporaryFile(dir=probe_dir):
            pass
    except OSError as exc:
        raise RunDirError(
            f"cannot write the run folder {run}: {probe_dir} is not writable ({exc.strerror or exc}); "
            "choose another --out"
        ) from None
    free = shutil.disk_usage(probe_dir).free
    if free < MIN_FREE_BYTES:
        raise RunDirError(
            f"only {free // (1024 * 1024)} MiB free on the disk of {probe_dir}; a run needs at least "
            f"{MIN_FREE_BYTES // (1024 * 1024)} MiB for checkpoints and the model. Free space or choose another --out"
        )


def reset_run_dir(run_dir: str | Path) -> None:
    """Empty a run folder for --overwrite."""
    run = Path(run_dir)
    if run.is_dir():
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _in_use(run: Path, owner: int) -> RunDirError:
    return RunDirError(
        f"run folder {run} is in use by process {owner} (lock file {run / LOCK_FILE}); wait for it or choose "
        "another --out"
    )


def live_lock_owner(run_dir: str | Path) -> int | None:
    """The pid in RUN_DIR/.lock when that process is alive (and not us); None for no lock or a stale one."""
    try:
        owner = int((Path(run_dir) / LOCK_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return None
    return owner if owner and owner != os.getpid() and _pid_alive(owner) else None


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold `RUN_DIR/.lock` (with our pid) for the duration; a live owner makes a second process refuse."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    lock = run / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            break
        except FileExistsError:
            owner = live_lock_owner(run)
            if owner:
                raise _in_use(run, owner) from None
            lock.unlink(missing_ok=True)  # stale lock from a dead process
    else:
        raise RunDirError(f"cannot take the lock {lock}")
    with os.fdopen(fd, "w") as fh:
        fh.write(str(os.getpid()))
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def environment_info() -> dict[str, str | None]:
    """Library versions and the git commit, recorded in every resolved config."""
    import platform
    import subprocess
    from importlib import metadata

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("sentiment-lab", "torch", "transformers", "datasets", "accelerate", "scikit-learn", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, timeout=5, check=False
        ).stdout.strip()
        versions["git_commit"] = (commit + ("-dirty" if dirty else "")) or None
    except (OSError, subprocess.SubprocessError):
        versions["git_commit"] = None
    versions["platform"] = platform.platform()
    # glibc allocator settings change CPU training speed (SENTIMENT_LAB_ALLOCATOR=tuned sets them; docs/performance.md)
    import os

    malloc = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")]
    versions["malloc_env"] = " ".join(malloc) or None
    return versions
