"""What the demo samples and scores: every step budget from the same noise and labels, with the
times a user is told before training starts."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from shortcut_models.data import DIGIT_DATASETS
from shortcut_models.data.images import to_uint8
from shortcut_models.devices import autocast, resolve_precision
from shortcut_models.evaluation import generate
from shortcut_models.evaluation.scoring import ImageScorer
from shortcut_models.guidance import GuidanceSchedule, scale_for
from shortcut_models.objectives import Objective
from shortcut_models.progress import progress_bar

REFERENCE_NUM = 10000  # training images whose classifier features form the reference
SAMPLE_CHUNK = 100


def demo_scorer(data: str, seed: int) -> ImageScorer:
    """FD-digits (with precision, recall, class scores) on the digit sets, FID (with precision
    and recall) on the others, against up to REFERENCE_NUM training images."""
    metric = "fd-digits" if data in DIGIT_DATASETS else "fid"
    return ImageScorer(metric, data, data, ref_num=REFERENCE_NUM, seed=seed)


def demo_labels(num: int, num_classes: int) -> torch.Tensor | None:
    """Classes in turn (a grid's columns), or None for an unlabelled set."""
    return torch.arange(num) % num_classes if num_classes else None


def _autocast(device: torch.device, precision: str):
    """bf16 autocast where the run trains in bf16 (the Euler state stays fp32)."""
    return autocast(device, resolve_precision(precision, device))


def sampling_seconds(
    model: nn.Module,
    objective: Objective,
    shape: tuple[int, ...],
    budgets: Sequence[int],
    num: int,
    cfg: GuidanceSchedule,
    precision: str,
) -> float:
    """What sampling every budget will take: one network call on a chunk, timed (the second of
    two) once for CFG 1 (one pass) and once for any other scale (two), times the calls the
    budgets make. Uses no random state of the run."""
    chunk = min(num, SAMPLE_CHUNK)
    device = next(model.parameters()).device
    labels = torch.zeros(chunk, dtype=torch.long) if objective.num_classes else None
    # every scale but 1 costs the same (two passes): time one scale of each kind
    kinds = {scale_for(cfg, n) == 1.0: scale_for(cfg, n) for n in budgets}
    per_call: dict[bool, float] = {}
    for plain, scale in kinds.items():
        for _ in range(2):
            tick = time.perf_counter()
            with _autocast(device, precision):
                generate(model, objective, shape, chunk, 1, 0, chunk, labels, scale).cpu()
            per_call[plain] = time.perf_counter() - tick
    calls = sum(per_call[scale_for(cfg, n) == 1.0] * n for n in budgets)
    return calls * math.ceil(num / chunk)


def scoring_seconds(scorer: ImageScorer, shape: tuple[int, ...], count: int) -> float:
    """What measuring `count` images will take: the scorer's network on a few blank images of
    `shape`, timed (the second of two calls), scaled."""
    if count == 0:
        return 0.0
    blank = torch.zeros(min(scorer.extractor.batch, 8), *shape, dtype=torch.uint8)
    scorer.extractor(blank)
    tick = time.perf_counter()
    scorer.extractor(blank)
    return (time.perf_counter() - tick) / len(blank) * count


def score_budgets(
    model: nn.Module,
    objective: Objective,
    shape: tuple[int, ...],
    num_classes: int,
    scorer: ImageScorer,
    budgets: Sequence[int],
    num: int,
    seed: int,
    cfg: float | GuidanceSchedule,
    precision: str = "fp32",
    progress: bool = False,
) -> tuple[dict[str, dict[str, float]], dict[int, torch.Tensor]]:
    """Scores and uint8 images per step budget, classes in turn, the same noise for every budget;
    `cfg` is one scale or one per budget.

    With precision "bf16" the network runs under bf16 autocast (the Euler state stays fp32), as
    the demo trains; chunks of SAMPLE_CHUNK keep a CPU's caches warm (batches of 1,000 ran at
    half the speed of 64 here)."""
    labels = demo_labels(num, num_classes)
    schedule = cfg if isinstance(cfg, tuple) else ((1, float(cfg)),)
    device = next(model.parameters()).device
    metrics, images = {}, {}
    bar = progress_bar(sum(budgets), "sampling", unit="step", enabled=progress)
    for n in budgets:
        tick = time.perf_counter()
        with _autocast(device, precision):
            scale = scale_for(schedule, n)
            x = generate(model, objective, shape, num, n, seed, SAMPLE_CHUNK, labels, scale)
        seconds = time.perf_counter() - tick
        bar.update(n)
        images[n] = to_uint8(x)
        metrics[str(n)] = {
            **scorer.score_images(images[n]),
            "sample_seconds": seconds,
            "cfg": scale if labels is not None else None,
        }
    bar.close()
    return metrics, images
