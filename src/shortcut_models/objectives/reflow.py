"""Reflow (Liu et al., 2022) in two stages: couple noise to a trained flow's samples, then
straighten the flow on those couplings.

Stage 1, `generate_pairs` (`shortcut pairs`): a teacher maps seeded noise x0 to samples x1 in
`steps` Euler steps; chunks are written atomically with `meta.json` last, so an interrupted run
resumes at the first missing chunk and a finished folder is reused as is. Stage 2, objective
`reflow`: flow matching on the straight paths x0 -> x1 of random stored pairs (the batch's own
images are not used), starting from the teacher's weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import (
    AttachContext,
    Objective,
    TrainingBatch,
    grid_times,
)
from shortcut_models.objectives.teacher import initialise_student, load_teacher
from shortcut_models.sampling import SamplingSpec
from shortcut_models.seeding import derive_seed

PAIRS_FORMAT = "shortcut-models-pairs/1"


def generate_pairs(
    teacher: str | Path,
    out: Path,
    num: int,
    steps: int = 32,
    seed: int = 0,
    chunk: int = 1024,
    cfg: float = 1.0,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> dict[str, Any]:
    """Write `num` (noise, sample, label) triples from `teacher` into `out`; returns the meta."""
    from shortcut_models.checkpoint import atomic_write, atomic_write_text, load_model
    from shortcut_models.sampling import sample

    if num < 1 or chunk < 1:
        raise UsageError("number of pairs and chunk size must be positive")
    model, objective, spec, checkpoint = load_model(teacher, "ema", device)
    plan = {"format": PAIRS_FORMAT, "teacher": str(Path(teacher).resolve()), "num": num,
            "steps": steps, "seed": seed, "chunk": chunk, "cfg": cfg,
            "shape": list(spec.shape), "num_classes": spec.num_classes,
            "teacher_step": checkpoint.step}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    if meta_path.exists():
        existing = json.loads(meta_path.read_text())
        if existing != plan:
            raise UsageError(f"{out} holds other pairs (meta.json differs); choose another --out")
        return existing
    device = next(model.parameters()).device
    chunks = (num + chunk - 1) // chunk
    for k in tqdm(range(chunks), desc="reflow pairs", disable=not progress):
        path = out / f"pairs_{k:05d}.safetensors"
        if path.exists():
            continue
        size = min(chunk, num - k * chunk)
        generator = torch.Generator().manual_seed(derive_seed(seed, k))
        x0 = torch.randn((size, *spec.shape), generator=generator)
        y = None
        if spec.num_classes:
            y = (torch.arange(k * chunk, k * chunk + size) % spec.num_classes).to(device)
        x1 = sample(model, x0.to(device), steps, objective.sampling_spec(), y, cfg,
                    objective.null_class)  # fmt: skip
        tensors = {"x0": x0.contiguous(), "x1": x1.float().cpu().contiguous()}
        if y is not None:
            tensors["y"] = y.cpu()
        atomic_write(path, lambda tmp, t=tensors: save_file(t, str(tmp)))
    atomic_write_text(meta_path, json.dumps(plan, indent=2, sort_keys=True))
    return plan


def load_pairs(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.is_file():
        raise UsageError(f"no reflow pairs in {path} (meta.json missing: run shortcut pairs)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != PAIRS_FORMAT:
        raise UsageError(f"{path} does not hold reflow pairs ({PAIRS_FORMAT} expected)")
    parts = [load_file(str(p)) for p in sorted(path.glob("pairs_*.safetensors"))]
    tensors = {key: torch.cat([p[key] for p in parts]) for key in parts[0]} if parts else {}
    if not tensors or len(tensors["x0"]) != meta["num"]:
        raise UsageError(f"reflow pairs in {path} are incomplete; rerun shortcut pairs")
    return meta, tensors


@dataclass
class Reflow(Objective):
    name = "reflow"

    pairs: str = ""  # folder written by `shortcut pairs`
    init_from_teacher: bool = True  # start from the weights of the model that made the pairs
    stored: dict[str, torch.Tensor] = field(default_factory=dict, init=False, repr=False)

    def attach(self, context: AttachContext) -> None:
        if not self.pairs:
            raise UsageError("reflow needs --pairs DIR, written by: shortcut pairs --ckpt TEACHER")
        meta, tensors = load_pairs(self.pairs)
        shape, classes = tuple(context.data.shape), context.data.num_classes
        if (tuple(meta["shape"]), meta["num_classes"]) != (shape, classes):
            raise UsageError(
                f"pairs in {self.pairs} have shape {tuple(meta['shape'])} and "
                f"{meta['num_classes']} classes; this run's data has {shape} and {classes}"
            )
        self.stored = {k: v.to(context.device) for k, v in tensors.items()}
        if self.init_from_teacher:
            initialise_student(context, load_teacher(meta["teacher"], context, self.name))

    def targets(self, model, ema_model, x1, y, generator) -> TrainingBatch:
        n = x1.shape[0]
        index = torch.randint(0, len(self.stored["x0"]), (n,), generator=generator,
                              device=x1.device)  # fmt: skip
        x0, x1 = self.stored["x0"][index], self.stored["x1"][index]
        y = self.stored["y"][index] if "y" in self.stored else None
        t = grid_times(n, self.denoise_timesteps, generator, x1.device)
        batch = self.straight_batch(x0, x1, t, y, generator)
        batch.parts = {"reflow": slice(0, n)}
        return batch

    def sampling_spec(self) -> SamplingSpec:
        return SamplingSpec(fixed_d=1.0 / self.denoise_timesteps)
