"""Reflow stage 1 (`shortcut pairs`): couple seeded noise x0 with a trained flow's samples x1.

A teacher maps x0 to x1 in `steps` Euler steps; chunks are written atomically with `meta.json`
last, so an interrupted run resumes at the first missing chunk and a finished folder is reused as
is. The objective `reflow` (objectives/reflow.py) trains on the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from shortcut_models.errors import UsageError
from shortcut_models.factory import load_run
from shortcut_models.files import atomic_write, atomic_write_text, prepare_out_dir
from shortcut_models.locking import FolderLock
from shortcut_models.objectives.reflow import PAIRS_FORMAT
from shortcut_models.progress import progress_bar
from shortcut_models.sampling import sample
from shortcut_models.seeding import derive_seed


def generate_pairs(
    teacher: str | Path,
    out: Path,
    *,
    num: int,
    steps: int = 32,
    seed: int = 0,
    chunk: int = 1024,
    cfg: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write `num` (noise, sample, label) triples from `teacher` into `out`; returns the meta."""
    lock = FolderLock(prepare_out_dir(out), "shortcut pairs")  # a second writer is refused
    with lock:
        return _generate(teacher, Path(out), num, steps, seed, chunk, cfg, device, progress)


def _generate(
    teacher: str | Path,
    out: Path,
    num: int,
    steps: int,
    seed: int,
    chunk: int,
    cfg: float,
    device: torch.device | str,
    progress: bool,
) -> dict[str, Any]:
    if num < 1 or chunk < 1:
        raise UsageError("number of pairs and chunk size must be positive")
    run = load_run(teacher, "ema", device)
    model, objective, spec = run.model, run.objective, run.spec
    plan = {
        "format": PAIRS_FORMAT,
        "teacher": str(Path(teacher).resolve()),
        "num": num,
        "steps": steps,
        "seed": seed,
        "chunk": chunk,
        "cfg": cfg,
        "shape": list(spec.shape),
        "num_classes": spec.num_classes,
        "teacher_step": run.checkpoint.step,
    }
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        existing = json.loads(meta_path.read_text())
        if existing != plan:
            raise UsageError(f"{out} holds other pairs (meta.json differs); choose another --out")
        return existing
    device = next(model.parameters()).device
    chunks = (num + chunk - 1) // chunk
    for k in progress_bar(chunks, "reflow pairs", iterable=range(chunks), enabled=progress):
        path = out / f"pairs_{k:05d}.safetensors"
        if path.exists():
            continue
        size = min(chunk, num - k * chunk)
        generator = torch.Generator().manual_seed(derive_seed(seed, k))
        x0 = torch.randn((size, *spec.shape), generator=generator)
        y = None
        if spec.num_classes:
            y = (torch.arange(k * chunk, k * chunk + size) % spec.num_classes).to(device)
        x1 = sample(
            model,
            x0.to(device),
            steps,
            objective.sampling_rule(),
            y=y,
            cfg_scale=cfg,
            null_class=objective.null_class,
        )
        tensors = {"x0": x0.contiguous(), "x1": x1.float().cpu().contiguous()}
        if y is not None:
            tensors["y"] = y.cpu()
        atomic_write(path, lambda tmp, t=tensors: save_file(t, str(tmp)))
    atomic_write_text(meta_path, json.dumps(plan, indent=2, sort_keys=True))
    return plan
