"""`shortcut sample` as a library call: draw samples of a trained run at several step budgets
(the same noise for each) and write them as image files, grids and arrays, or as point arrays
and a scatter plot."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shortcut_models.data import DataSpec
from shortcut_models.data.images import to_uint8
from shortcut_models.distributed import SINGLE, Dist
from shortcut_models.errors import UsageError
from shortcut_models.evaluation.generation import SamplingPlan, generate
from shortcut_models.factory import LoadedRun
from shortcut_models.files import prepare_out_dir, save_arrays
from shortcut_models.guidance import GuidanceSchedule, guides
from shortcut_models.image_io import save_grid, save_npz, save_png
from shortcut_models.plots import scatter_panels
from shortcut_models.sampling import check_steps
from shortcut_models.vae import decode_batched, decoder_for


@dataclass
class SampleOptions(SamplingPlan):
    classes: Sequence[int] | None = None  # labels to cycle (None: all classes in turn)
    vae: str | Path | None = None  # latent runs: the decoder (None: the one they were encoded with)
    npz: bool = False  # images: also a uint8 .npz per budget


def class_labels(
    num_classes: int, num: int, classes: Sequence[int] | None, cfg: GuidanceSchedule
) -> torch.Tensor | None:
    """Labels for conditional models: `classes` cycled, else 0, 1, ..., cycled."""
    if num_classes == 0:
        if classes or guides(cfg):
            raise UsageError("this model is unconditional: --class and --cfg do not apply")
        return None
    classes = list(classes or range(num_classes))
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"--class must be in 0..{num_classes - 1}, got {bad[0]}")
    return torch.tensor(classes).repeat(num // len(classes) + 1)[:num]


def check_memory(count: int, spec: DataSpec, decoded: bool) -> None:
    """Refuse a sample count whose float32 arrays alone would not fit in this machine's memory
    (they are kept until written), before any sampling."""
    shape = list(spec.shape)
    if decoded:  # a VAE decodes to 3 channels at 8x the latent side
        shape = [3, shape[1] * 8, shape[2] * 8]
    need = count * math.prod(shape) * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total:
        raise UsageError(
            f"{count} samples of {tuple(shape)} need {need / 2**30:.1f} GiB, more than this "
            f"machine's {total / 2**30:.1f} GiB: sample fewer (--num) or fewer budgets per call"
        )


def sample_run(
    run: LoadedRun, out: Path, options: SampleOptions, dist: Dist = SINGLE
) -> dict[int, torch.Tensor]:
    """Sample every budget (every process takes part under torchrun); the main process writes
    them into `out`. Everything is checked before the first sample is drawn."""
    spec, device = run.spec, next(run.model.parameters()).device
    for n in options.steps:
        check_steps(n, run.objective.sampling_rule())
    if options.vae is not None and spec.kind != "latent":
        raise UsageError("--vae applies only to models trained on latents")
    codec = decoder_for(spec, options.vae, device) if spec.kind == "latent" else None
    check_memory(options.num * len(options.steps), spec, codec is not None)
    labels = class_labels(spec.num_classes, options.num, options.classes, options.cfg)
    out = prepare_out_dir(out)
    if spec.kind != "vector":
        for n in options.steps:
            if (out / f"steps_{n:03d}").exists() and not (out / f"steps_{n:03d}").is_dir():
                raise UsageError(f"{out / f'steps_{n:03d}'} is a file; choose another --out")
    samples = {}
    for n in options.steps:
        x = generate(
            run.model,
            run.objective,
            spec.shape,
            options.num,
            n,
            seed=options.seed,
            batch_size=options.batch,
            labels=labels,
            cfg_scale=options.scale(n),
            dist=dist,
        )
        samples[n] = x if codec is None else decode_batched(codec, x, min(options.batch, 64))
    if dist.is_main:
        if spec.kind == "vector":
            write_points(samples, out)
        else:
            write_images(samples, out, options.npz)
    return samples


def write_images(samples: dict[int, torch.Tensor], out: Path, npz: bool) -> None:
    for n, x in samples.items():
        images = to_uint8(x)
        folder = out / f"steps_{n:03d}"
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(images):
            save_png(image.permute(1, 2, 0).numpy(), folder / f"{i:06d}.png")
        save_grid(images[:100], out / f"grid_steps_{n:03d}.png")
        if npz:
            save_npz(images, out / f"samples_steps_{n:03d}.npz")
    print(f"wrote {len(samples)} step budget(s) of images to {out}")


def write_points(samples: dict[int, torch.Tensor], out: Path) -> None:
    arrays = {f"steps_{n}": x.numpy() for n, x in samples.items()}
    save_arrays(arrays, out / "samples.npz")
    scatter_panels(
        {f"{n} step{'s' if n > 1 else ''}": x for n, x in samples.items()}, out / "samples.png"
    )
    print(f"wrote {out / 'samples.npz'} and {out / 'samples.png'}")
