"""Numeric precision: one list of names, one map to dtypes, one decision that knows the device it is made for.

Training (the Trainer's autocast), test scoring (`runners.score_split`, used by `train` and `evaluate`), the
Predictor (weights cast to the dtype), export and the benchmarks all call `resolve`, so `precision: auto` means the
same thing everywhere. Reduced precision is chosen only where the hardware computes it natively: on CUDA, bf16
needs compute capability 8.0 (Ampere) or newer, since `torch.cuda.is_bf16_supported()` also answers True where
bf16 is only emulated (a T4, compute 7.5), and fp16 is used there instead; on a CPU, bf16 needs AVX-512-bf16 or
AMX (elsewhere it is emulated and slower than fp32) and fp16 is never used.
"""

from __future__ import annotations

import ctypes
import gc
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, get_args

from sentiment_lab.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the names below are what configs and the CLI validate against, and the
# CLI must parse arguments (and answer --help) without loading torch, which takes about 2 s.
PrecisionName = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(PrecisionName)
DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}  # precision name -> torch dtype name
REDUCED_PRECISIONS = ("bf16", "fp16")  # computed in 16 bits: autocast on CUDA, oneDNN on a CPU
MIN_CUDA_BF16_CAPABILITY = (8, 0)
# bf16 on a CPU runs its matrix products through oneDNN, which caches one primitive per input shape (up to 1,024),
# each holding its own packed copy of the layer's weights. With dynamic padding nearly every batch is a new shape:
# scoring 8,000 IMDb test reviews in windows grew to 3.6 GB resident with the default cache and stayed at 1.4 GB
# without it, no slower. Training is another matter: without the cache every step re-creates its backward
# primitives, 4x slower (measured, docs/performance.md, P1), and batch-1 serving latency without it was not measured
# (a serving process grew only 0.22 GiB more with the cache than without over 250 calls of 1-32 texts, measured).
# So only bulk scoring of a test split (`evaluation.evaluate_model`: `sentiment-lab evaluate`) turns it off. oneDNN
# reads the variable when it creates its first primitive, so in a process that trained first it changes nothing; a
# value the user set wins.
ONEDNN_CACHE_ENV = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"
ONEDNN_CACHE_CAPACITY = "0"
# Where the cache stays on (training, and scoring in a process that trained, predict, serve), the number of shapes is
# what bounds it: in reduced precision every batch is padded up to a multiple of 16 tokens, so a run sees at most
# max_length / 16 sequence lengths (24 at 384) instead of one per batch, and the cache stops growing. 16 is also a
# multiple of what GPU tensor cores want (8). fp32 is left padded to the longest of the batch: its matrix products do
# not go through oneDNN's cache, so the extra tokens would buy nothing. Nor is a max_length that is not a multiple of
# 16 rounded up: the padded length must never pass it (the model's position embeddings may end there).
PAD_MULTIPLE = 16


def pad_multiple(max_length: int, reduced: bool) -> int | None:
    """The multiple to pad a batch's sequence length to, for texts truncated at `max_length` and computed in reduced
    precision (`reduced`: bf16 or fp16) or not; None: pad to the longest of the batch."""
    return PAD_MULTIPLE if reduced and max_length % PAD_MULTIPLE == 0 else None


def release_freed_memory() -> int | None:
    """Give the heap pages a finished phase freed back to the operating system; 1 if glibc released some, 0 if none,
    None where the C library is not glibc.

    glibc keeps freed blocks mapped for reuse, so after training the process stays as large as the training step's
    activations were even though the scoring that follows needs a fraction of them. `malloc_trim(0)` returns them;
    no library wraps it (psutil reads memory, it does not release it), hence ctypes. On macOS, Windows or musl the
    allocator returns memory on its own terms and there is nothing to call."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    return int(trim(0)) if trim is not None else None


def bound_onednn_cache() -> str:
    """Turn oneDNN's primitive cache off for a scoring process (see above) unless the user set it; the value now."""
    return os.environ.setdefault(ONEDNN_CACHE_ENV, ONEDNN_CACHE_CAPACITY)


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype of a precision name (fp32, bf16, fp16)."""
    import torch  # lazy: see above

    return getattr(torch, DTYPE_NAMES[name])


@dataclass(frozen=True)
class ResolvedPrecision:
    """What a run actually computes in on one device.

    mode: `full` (fp32), `native` (bf16/fp16 the hardware computes itself), or `fallback` (the request could not
    be honoured on this device; `note` says what was used instead and why).
    """

    name: str
    mode: str
    device: str
    note: str | None = None

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of `name`."""
        return dtype_of(self.name)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype for `torch.autocast`, or None for fp32 (no autocast)."""
        return None if self.name == "fp32" else self.dtype

    @property
    def reduced(self) -> bool:
        """True when computed in 16 bits (bf16/fp16): then batches are padded to `pad_multiple`."""
        return self.name in REDUCED_PRECISIONS


def cpu_has_native_bf16() -> bool:
    """True on CPUs with AVX-512-bf16 or AMX: there bf16 autocast runs about 2x fp32; elsewhere it is emulated."""
    import torch  # lazy: see above

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cuda_has_native_bf16(device: torch.device) -> bool:
    """True on CUDA GPUs of compute capability 8.0 or newer (Ampere, Hopper, ...), which have bf16 tensor cores."""
    import torch  # lazy: see above

    return tuple(torch.cuda.get_device_capability(device)) >= MIN_CUDA_BF16_CAPABILITY


def default_device() -> torch.device:
    """The device a model runs on when none is named: the first CUDA GPU when there is one, else the CPU."""
    import torch  # lazy: see above

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve(requested: str, device: str | torch.device | None = None, purpose: str = "running") -> ResolvedPrecision:
    """The precision used for `requested` on `device` (default: `default_device()`).

    `auto`: bf16 where the device computes it natively, else fp16 on CUDA, else fp32. An explicit bf16 or fp16 the
    device lacks falls back (bf16 -> fp16 on an older CUDA GPU, anything -> fp32 on a CPU) with a `note` for the
    user, worded with `purpose` ("training", "prediction", ...); the caller shows it where the user will look.
    """
    import torch  # lazy: see above

    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; use one of {', '.join(PRECISIONS)}")
    dev = torch.device(device) if device is not None else default_device()
    if dev.type == "cuda":
        bf16 = cuda_has_native_bf16(dev)
        native = {"fp32", "fp16", "bf16"} if bf16 else {"fp32", "fp16"}
        best, substitute = ("bf16" if bf16 else "fp16"), "fp16"
        lacking = "bf16 needs a GPU of compute capability 8.0 or newer (this one emulates it)"
    elif dev.type == "cpu":
        bf16 = cpu_has_native_bf16()
        native = {"fp32", "bf16"} if bf16 else {"fp32"}
        best, substitute = ("bf16" if bf16 else "fp32"), "fp32"
        lacking = "fp16 needs a CUDA GPU" if requested == "fp16" else "bf16 needs a CPU with AVX-512-bf16 or AMX"
    else:  # mps, xpu, ...: no knowledge of their hardware here; explicit requests are honoured as given
        native, best, substitute, lacking = set(DTYPE_NAMES), "fp32", "fp32", ""
    if requested == "auto":
        name, mode, note = best, "full" if best == "fp32" else "native", None
    elif requested in native:
        name, mode, note = requested, "full" if requested == "fp32" else "native", None
    else:
        name, mode = substitute, "fallback"
        note = f"{lacking}; {purpose} in {name} on {dev.type} instead of {requested}"
    return ResolvedPrecision(name, mode, dev.type, note)
