"""Which device and precision a run picks, and the reason it gives, with the hardware mocked."""

from __future__ import annotations

import pytest
import torch

from shortcut_models import devices
from shortcut_models.errors import UsageError


@pytest.fixture
def gpus(monkeypatch):
    """Set which GPUs the process sees: gpus(cuda=..., mps=...)."""

    def set_available(cuda: bool = False, mps: bool = False) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Mock GPU")
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)

    return set_available


def test_auto_prefers_cuda_then_mps_then_cpu(gpus):
    gpus(cuda=True, mps=True)
    assert devices.choose_device("auto").value == "cuda"
    assert "Mock GPU" in devices.choose_device("auto").reason
    gpus(cuda=False, mps=True)
    assert devices.resolve_device("auto") == torch.device("mps")
    assert devices.choose_device("auto").reason == "Apple's GPU (no CUDA GPU here)"
    gpus(cuda=False, mps=False)
    assert devices.resolve_device("auto") == torch.device("cpu")
    assert "no CUDA or Apple GPU" in devices.choose_device("auto").reason


def test_an_unavailable_device_is_a_usage_error(gpus):
    gpus(cuda=False, mps=False)
    with pytest.raises(UsageError, match="'mps' was asked for but Apple's GPU"):
        devices.resolve_device("mps")
    with pytest.raises(UsageError, match="no CUDA GPU is available"):
        devices.resolve_device("cuda:0")
    with pytest.raises(UsageError, match="unknown device 'gpu0'"):
        devices.resolve_device("gpu0")
    gpus(cuda=False, mps=True)
    assert devices.resolve_device("mps") == torch.device("mps")


@pytest.fixture
def cpu(monkeypatch):
    """Set what the CPU has: cpu(amx=..., avx512_bf16=..., capability=..., isa=...)."""

    def set_cpu(amx=False, avx512_bf16=False, capability="AVX512", isa=None) -> None:
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
        if isa is None:
            monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
        else:
            monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)

    return set_cpu


def test_bf16_if_native_follows_the_hardware(cpu):
    here = torch.device("cpu")
    cpu(amx=False, avx512_bf16=False, capability="AVX2")  # a laptop or an EPYC with AVX2 only
    chosen = devices.choose_precision("bf16-if-native", here)
    assert chosen.value == "fp32" and "only by emulation" in chosen.reason
    assert devices.resolve_precision("bf16-if-native", here) is None
    cpu(amx=True)
    chosen = devices.choose_precision("bf16-if-native", here)
    assert chosen == devices.Decision("bf16", "this CPU computes bf16 in hardware (AMX)")
    assert devices.resolve_precision("bf16-if-native", here) is torch.bfloat16
    cpu(avx512_bf16=True)
    assert "AVX512-BF16" in devices.choose_precision("bf16-if-native", here).reason
    assert devices.resolve_precision("auto", here) is None  # auto on a CPU stays fp32
    assert devices.choose_precision("bf16", here).value == "bf16"  # asked for: obeyed
    with pytest.raises(UsageError, match="bf16-if-native"):
        devices.resolve_precision("fp8", here)


@pytest.mark.parametrize(
    ("capability", "isa", "native"),
    [
        ("AVX2", None, False),  # ATEN_CPU_CAPABILITY=avx2: the emulated AVX2-only machine
        ("AVX512", "AVX2", False),  # ONEDNN_MAX_CPU_ISA=AVX2
        ("AVX512", "avx512_core", False),
        ("AVX512", "AVX512_CORE_AMX", True),
        ("AVX512", "ALL", True),
        ("AVX512", None, True),
    ],
)
def test_an_amx_cpu_limited_to_avx2_is_not_native(cpu, capability, isa, native):
    """The CPUID bits say AMX, but torch was told to compute as an older CPU: bf16 is emulated
    there, so `bf16-if-native` must pick fp32 (it picked bf16 and trained at 19 images/s)."""
    cpu(amx=True, avx512_bf16=True, capability=capability, isa=isa)
    assert devices.bf16_hardware(torch.device("cpu")).value == ("yes" if native else "no")
    chosen = devices.choose_precision("bf16-if-native", torch.device("cpu"))
    assert chosen.value == ("bf16" if native else "fp32")
    if not native:
        assert "where bf16 is emulated" in chosen.reason


def test_the_gpus_precision_reasons(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    chosen = devices.choose_precision("bf16-if-native", torch.device("cuda"))
    assert chosen == devices.Decision("fp32", "this GPU has no bf16")
    assert devices.choose_precision("auto", torch.device("mps")).value == "fp32"
    chosen = devices.choose_precision("bf16-if-native", torch.device("mps"))
    assert chosen.value == "fp32" and "mps" in chosen.reason


def test_channels_last_where_asked_or_in_fp32_on_a_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.channels_last("auto", cpu, None)
    assert not devices.channels_last("auto", cpu, torch.bfloat16)  # AMX bf16: slower so
    assert not devices.channels_last("auto", cuda, None)  # not measured on a GPU
    assert devices.channels_last("channels-last", cuda, torch.bfloat16)
    assert not devices.channels_last("contiguous", cpu, None)
    with pytest.raises(UsageError, match="memory format must be one of"):
        devices.channels_last("nhwc", cpu, None)


def test_a_channels_last_unet_trains_saves_and_resumes_as_one_run(tmp_path):
    """The layout changes where numbers live, not what a run is: the weights are stored
    contiguous, and a run resumed in the other layout continues from them."""
    from helpers import tiny_config, tiny_trainer

    from shortcut_models.checkpoint import load_checkpoint

    config = tiny_config(
        data="mnist", backbone="unet", backbone_options={"channels": [8, 16]}, steps=3, batch_size=8
    )
    trainer = tiny_trainer(tmp_path / "run", config, memory_format="auto", precision="fp32")
    convs = [p for p in trainer.model.parameters() if p.dim() == 4]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert all(
        p.is_contiguous(memory_format=torch.channels_last)
        for p in trainer.ema.parameters()
        if p.dim() == 4
    )
    trainer.run()
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert saved.step == 3
    more = config.overlay({"training": {"steps": 5}})
    resumed = tiny_trainer(tmp_path / "run", more, resume=True, memory_format="contiguous")
    assert all(p.is_contiguous() for p in resumed.model.parameters())
    assert resumed.run().step == 5
