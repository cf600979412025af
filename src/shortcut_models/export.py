"""`shortcut export`: a trained run as a self-contained n-step generator file.

The Euler loop is unrolled for the chosen number of steps, so a 1-step generator is one network
call: noise (and class labels, for a conditional model) in, samples out — images in [0, 1]
(decoded by the run's VAE first with `decode`), vectors as they are. The CFG scale is fixed at
export time. Formats: ONNX (`torch.onnx.export`, the dynamo exporter; run with onnxruntime) or
a `torch.export` program (`.pt2`, `torch.export.load(path).module()`), the maintained successor
of TorchScript in torch 2.x. After writing, the file is run on seeded noise and compared with the
PyTorch sampler.
"""

from __future__ import annotations

import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shortcut_models import logs
from shortcut_models.errors import Terminated, UsageError
from shortcut_models.factory import LoadedRun, load_run
from shortcut_models.files import atomic_write, temporary_files
from shortcut_models.guidance import check_scale
from shortcut_models.interrupts import SignalHandlers
from shortcut_models.sampling import check_steps, sample, seeded_noise

log = logs.get(__name__)

FORMATS = ("onnx", "pt2")
CHECK_SAMPLES = 4


class UnrolledSampler(nn.Module):
    """noise [B, *shape] (and labels [B]) -> samples, in `steps` Euler steps of the run's model."""

    def __init__(
        self, run: LoadedRun, steps: int, cfg: float = 1.0, decoder: nn.Module | None = None
    ) -> None:
        super().__init__()
        spec = run.objective.sampling_rule()
        check_steps(steps, spec)
        if spec.renoise:
            raise UsageError(
                "this model samples with fresh noise at every step (consistency training's "
                "multistep sampling), which a generator file cannot draw; train it with "
                "--no-renoise-sampling to export it"
            )
        self.model, self.spec, self.steps, self.cfg = run.model, spec, steps, cfg
        self.null_class = run.objective.null_class
        self.images = run.spec.kind != "vector"
        self.decoder = decoder

    def forward(self, noise: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = sample(self.model, noise, self.steps, self.spec, labels, self.cfg, self.null_class)
        if self.decoder is not None:
            x = self.decoder(x)
        return ((x.clamp(-1, 1) + 1) / 2) if self.images else x


@dataclass
class ExportReport:
    path: Path
    inputs: list[str]
    max_difference: float  # against the PyTorch sampler on CHECK_SAMPLES seeded samples


def export_generator(
    ckpt: str | Path,
    out: str | Path,
    *,
    steps: int = 1,
    fmt: str = "onnx",
    cfg: float = 1.0,
    weights: str | None = None,
    decode: bool = False,
    vae: str | Path | None = None,
) -> ExportReport:
    """Write the generator of run `ckpt` to `out` and check it against the PyTorch sampler."""
    if fmt not in FORMATS:
        raise UsageError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    try:  # a NaN scale exports a generator of NaN images
        check_scale(cfg, "cfg")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    run = load_run(ckpt, weights, "cpu")
    if run.spec.num_classes == 0 and cfg != 1.0:
        raise UsageError("this model is unconditional: --cfg does not apply")
    decoder = _decoder(run, decode, vae)
    sampler = UnrolledSampler(run, steps, cfg, decoder).eval()
    noise = seeded_noise((CHECK_SAMPLES, *run.spec.shape), 0)
    args: tuple[torch.Tensor, ...] = (noise,)
    if run.spec.num_classes:
        args += (torch.arange(CHECK_SAMPLES) % run.spec.num_classes,)
    names = ["noise", "labels"][: len(args)]
    with torch.no_grad():
        expected = sampler(*args)
    out = Path(out)
    for stale in temporary_files(out.parent, out.name):  # an earlier export killed with -9
        stale.unlink(missing_ok=True)
    with Signalled() as signalled:

        def write(tmp: Path) -> None:
            _write(sampler, args, names, fmt, tmp)
            signalled.check()  # an exporter that swallowed the interrupt still stops here

        atomic_write(out, write)
    got = run_exported(out, fmt, dict(zip(names, args, strict=True)))
    return ExportReport(out, names, float((got - expected).abs().max()))


class Signalled(SignalHandlers):
    """SIGINT / SIGTERM while an exporter runs: raised where the program is, and remembered, so
    an exporter that catches the interrupt (and falls back, and finishes) does not leave a file
    the user asked to stop."""

    def __init__(self) -> None:
        super().__init__(self._on_signal)
        self.signum: int | None = None

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signum = signum
        self.check()

    def check(self) -> None:
        if self.signum == signal.SIGTERM:
            raise Terminated()
        if self.signum is not None:
            raise KeyboardInterrupt


def run_exported(path: Path, fmt: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run an exported generator file on `inputs` (onnxruntime for ONNX)."""
    if fmt == "onnx":
        session = _onnx_session(path)
        feed = {name: value.numpy() for name, value in inputs.items()}
        return torch.from_numpy(session.run(None, feed)[0])
    program = torch.export.load(str(path))
    with torch.no_grad():
        return program.module()(*inputs.values())


def _write(sampler: UnrolledSampler, args: tuple, names: list[str], fmt: str, tmp: Path) -> None:
    batch = torch.export.Dim("batch")
    dynamic = {name: {0: batch} for name in names}
    try:
        _export(sampler, args, names, fmt, tmp, dynamic)
    except UsageError:
        raise
    except Exception as exc:  # the exporters raise many types; say which step failed
        if logs.debug_requested():
            raise
        log.debug(f"export to {fmt} failed", exc_info=True)  # shown with --verbose
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"export to {fmt} failed: {first}") from None


def _export(
    sampler: UnrolledSampler, args: tuple, names: list[str], fmt: str, tmp: Path, dynamic: dict
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation notes are not the user's
        if fmt == "onnx":
            _require("onnx", "onnxscript")
            torch.onnx.export(
                sampler,
                args,
                str(tmp),
                dynamo=True,
                input_names=names,
                output_names=["samples"],
                dynamic_shapes=dynamic,
                external_data=False,
                verbose=False,
            )
        else:
            program = torch.export.export(sampler, args, dynamic_shapes=dynamic)
            with open(tmp, "wb") as handle:
                torch.export.save(program, handle)


def _decoder(run: LoadedRun, decode: bool, vae: str | Path | None) -> nn.Module | None:
    if not decode:
        if vae is not None:
            raise UsageError("--vae applies with --decode")
        return None
    if run.spec.kind != "latent":
        raise UsageError("--decode applies only to models trained on latents")
    from shortcut_models.vae import decoder_for

    codec = decoder_for(run.spec, vae, "cpu")

    class Decode(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.codec = codec

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return self.codec.decode(z)

    return Decode()


def _onnx_session(path: Path) -> Any:
    _require("onnxruntime")
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f'ONNX export needs {", ".join(missing)}: pip install -e ".[export]"')
