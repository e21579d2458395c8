"""precision.resolve: the hardware decision for each device, tested with faked CPU flags and CUDA capabilities."""

from __future__ import annotations

import pytest
import torch

from sentiment_lab import precision
from sentiment_lab.errors import ConfigError
from sentiment_lab.precision import resolve


@pytest.fixture
def cpu_bf16(monkeypatch: pytest.MonkeyPatch):
    def fake(native: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)

    return fake


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch):
    def fake(capability: tuple[int, int]) -> None:
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        # What a T4 answers too: it counts emulation, so resolve must not ask it.
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    return fake


def test_cpu_with_native_bf16(cpu_bf16) -> None:
    cpu_bf16(True)
    assert precision.cpu_has_native_bf16()
    r = resolve("auto", "cpu")
    assert (r.name, r.dtype, r.mode, r.device, r.note) == ("bf16", torch.bfloat16, "native", "cpu", None)
    assert r.autocast_dtype is torch.bfloat16
    assert resolve("bf16", "cpu").mode == "native"


def test_cpu_without_native_bf16_falls_back_to_fp32_and_says_so(cpu_bf16) -> None:
    cpu_bf16(False)
    assert resolve("auto", "cpu").name == "fp32" and resolve("auto", "cpu").autocast_dtype is None
    r = resolve("bf16", "cpu", purpose="training")
    assert (r.name, r.mode) == ("fp32", "fallback")
    assert r.note == "bf16 needs a CPU with AVX-512-bf16 or AMX; training in fp32 on cpu instead of bf16"


def test_fp16_on_a_cpu_falls_back_with_the_purpose_in_the_message(cpu_bf16) -> None:
    cpu_bf16(True)
    r = resolve("fp16", "cpu", purpose="predicting")
    assert (r.name, r.mode) == ("fp32", "fallback")
    assert r.note == "fp16 needs a CUDA GPU; predicting in fp32 on cpu instead of fp16"


@pytest.mark.parametrize(
    ("capability", "requested", "expected", "mode"),
    [
        ((7, 5), "auto", "fp16", "native"),  # T4: bf16 only emulated
        ((7, 5), "bf16", "fp16", "fallback"),
        ((7, 5), "fp16", "fp16", "native"),
        ((8, 0), "auto", "bf16", "native"),  # A100
        ((9, 0), "bf16", "bf16", "native"),  # H100/H200
        ((8, 6), "fp16", "fp16", "native"),
        ((7, 0), "fp32", "fp32", "full"),
    ],
)
def test_cuda_uses_bf16_only_from_compute_capability_8(gpu, capability, requested, expected, mode) -> None:
    gpu(capability)
    r = resolve(requested, "cuda")
    assert (r.name, r.mode, r.device) == (expected, mode, "cuda")
    assert (r.note is not None) == (mode == "fallback")


def test_the_device_decides_not_whether_cuda_exists(gpu, cpu_bf16) -> None:
    gpu((7, 5))
    cpu_bf16(True)
    assert resolve("auto", "cuda").name == "fp16" and resolve("auto", "cpu").name == "bf16"


def test_unknown_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown precision 'int4'; use one of auto, fp32, bf16, fp16"):
        resolve("int4", "cpu")


def test_bounding_the_onednn_cache_keeps_a_value_the_user_set(monkeypatch) -> None:
    monkeypatch.delenv(precision.ONEDNN_CACHE_ENV, raising=False)
    assert precision.bound_onednn_cache() == precision.ONEDNN_CACHE_CAPACITY == "0"
    monkeypatch.setenv(precision.ONEDNN_CACHE_ENV, "256")
    assert precision.bound_onednn_cache() == "256"  # the user's value wins


def test_batches_pad_to_a_multiple_of_16_only_where_max_length_allows_it() -> None:
    assert precision.pad_multiple(384, True) == precision.pad_multiple(128, True) == precision.PAD_MULTIPLE == 16
    assert precision.pad_multiple(100, True) is None  # 100 -> 112 would pass the positions the text was truncated for
    assert precision.pad_multiple(384, False) is None  # fp32 does not go through oneDNN's cache: nothing to bound
    reduced = {name: precision.ResolvedPrecision(name, "native", "cpu").reduced for name in ("fp32", "bf16", "fp16")}
    assert reduced == {"fp32": False, "bf16": True, "fp16": True}


def test_releasing_freed_memory_calls_glibc_and_is_silent_elsewhere(monkeypatch) -> None:
    import ctypes

    assert precision.release_freed_memory() in (0, 1)  # glibc: 1 when pages went back, 0 when there were none

    def no_glibc(name: str, *args: object, **kwargs: object) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_glibc)
    assert precision.release_freed_memory() is None  # macOS, Windows, musl: nothing to call
