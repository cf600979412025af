"""Reflow (Liu et al., 2022) in two stages: couple noise to a trained flow's samples, then
straighten the flow on those couplings.

Stage 1, `pairs.generate_pairs` (`shortcut pairs`), writes the folder this module reads.
Stage 2, objective `reflow`: flow matching on the straight paths x0 -> x1 of random stored pairs
(the batch's own images are not used), starting from the teacher's weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from shortcut_models.errors import UsageError
from shortcut_models.objectives.base import (
    AttachContext,
    Objective,
    TrainingBatch,
    grid_times,
)
from shortcut_models.objectives.teacher import initialise_student, load_teacher
from shortcut_models.options import option
from shortcut_models.sampling import SamplingRule

PAIRS_FORMAT = "shortcut-models-pairs/1"


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
    needs = "pairs"

    pairs: str = option("", "the folder written by `shortcut pairs`", path=True)
    init_from_teacher: bool = option(
        True, "start from the weights of the model that made the pairs"
    )
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

    def targets(self, model, target_net, x1, y, generator) -> TrainingBatch:
        n = x1.shape[0]
        count = len(self.stored["x0"])
        index = torch.randint(0, count, (n,), generator=generator, device=x1.device)
        x0, x1 = self.stored["x0"][index], self.stored["x1"][index]
        y = self.stored["y"][index] if "y" in self.stored else None
        t = grid_times(n, self.denoise_timesteps, generator, x1.device)
        batch = self.straight_batch(x0, x1, t, y, generator)
        batch.groups = {"reflow": slice(0, n)}
        return batch

    def sampling_rule(self) -> SamplingRule:
        return SamplingRule(fixed_d=1.0 / self.denoise_timesteps)
