"""Which device and precision a run uses, and why: the one place that knows about CUDA, Apple's
GPU (`mps`) and what a CPU computes in hardware. Each choice comes with a reason a user can read
(the demo prints it before it trains)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from shortcut_models.errors import UsageError

PRECISIONS = ("auto", "fp32", "bf16", "bf16-if-native")
MEMORY_FORMATS = ("contiguous", "channels-last", "auto")

# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA) under which bf16 convolutions and matmuls still run
# on AMX or AVX512-BF16 instructions; any other limit (AVX2, AVX512_CORE, ...) emulates bf16
_BF16_ISA_WORDS = ("AMX", "BF16", "FP16", "AVX10", "ALL")


@dataclass(frozen=True)
class Decision:
    """A device or precision decided for this machine, and the reason for it."""

    value: str
    reason: str


def mps_available() -> bool:
    """Apple's GPU through Metal (False on builds without the backend)."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def choose_device(name: str) -> Decision:
    """`auto`: a CUDA GPU, then Apple's GPU (`mps`), then the CPU; an explicit name is checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return Decision("cuda", f"a CUDA GPU ({torch.cuda.get_device_name()})")
        if mps_available():
            return Decision("mps", "Apple's GPU (no CUDA GPU here)")
        return Decision("cpu", f"no CUDA or Apple GPU, {torch.get_num_threads()} CPU threads")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but no CUDA GPU is available")
    if device.type == "mps" and not mps_available():
        raise UsageError("device 'mps' was asked for but Apple's GPU (Metal) is not available")
    return Decision(name, "asked for (--device)")


def resolve_device(name: str) -> torch.device:
    return torch.device(choose_device(name).value)


def _cpu_bf16() -> Decision:
    """Whether this CPU computes bf16 in hardware as torch runs here ("yes"/"no"), and why. The
    CPUID bits are not enough: with ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA=AVX2 (how an
    AVX2-only CPU is emulated) torch computes bf16 by emulation on an AMX CPU too."""
    amx, avx512_bf16 = torch.cpu._is_amx_tile_supported(), torch.cpu._is_avx512_bf16_supported()
    if not (amx or avx512_bf16):
        return Decision("no", "this CPU computes bf16 only by emulation (no AMX or AVX512-BF16)")
    capability = torch.backends.cpu.get_cpu_capability()
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if not capability.startswith("AVX512") or (isa and not any(w in isa for w in _BF16_ISA_WORDS)):
        limit = f"{capability}" + (f", oneDNN {isa}" if isa else "")
        return Decision("no", f"torch runs this CPU as {limit}, where bf16 is emulated")
    return Decision(
        "yes", f"this CPU computes bf16 in hardware ({'AMX' if amx else 'AVX512-BF16'})"
    )


def bf16_hardware(device: torch.device) -> Decision:
    """Whether the device computes bf16 in hardware ("yes"/"no"; elsewhere bf16 is slower than
    fp32), and why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Decision("yes", "the GPU computes bf16")
        return Decision("no", "this GPU has no bf16")
    if device.type == "cpu":
        return _cpu_bf16()
    return Decision("no", f"bf16 autocast on {device.type} is not measured by this project")


def choose_precision(name: str, device: torch.device) -> Decision:
    """The precision ("bf16" autocast or "fp32") and why. "bf16-if-native" is bf16 wherever
    `bf16_hardware` says yes; "auto" is bf16 on a CUDA GPU that has it."""
    if name in ("bf16", "fp32"):
        return Decision(name, "set by --precision or the recipe")
    if name == "auto" and device.type != "cuda":
        return Decision("fp32", f"--precision auto uses bf16 on CUDA only ({device.type} here)")
    if name in ("auto", "bf16-if-native"):
        native = bf16_hardware(device)
        return Decision("bf16" if native.value == "yes" else "fp32", native.reason)
    raise UsageError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32 (`choose_precision`)."""
    return torch.bfloat16 if choose_precision(name, device).value == "bf16" else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """The autocast a run computes in (`resolve_precision`'s dtype; None: plain fp32): training
    and sampling enter the same one."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def channels_last(name: str, device: torch.device, autocast: torch.dtype | None) -> bool:
    """Whether a convolutional backbone runs channels-last: asked for, or "auto" in fp32 on a
    CPU (the demo's U-Net: 1.15x the training images/s under AVX2; bf16 on AMX is slower so)."""
    if name not in MEMORY_FORMATS:
        raise UsageError(f"memory format must be one of {', '.join(MEMORY_FORMATS)}, got {name!r}")
    if name == "auto":
        return device.type == "cpu" and autocast is None
    return name == "channels-last"
