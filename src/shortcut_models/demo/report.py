"""What the demo says: its first line (what it will do on this machine, and when it will be
done) and the header of metrics.md."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from shortcut_models.config import TrainConfig
from shortcut_models.devices import Decision
from shortcut_models.evaluation.scoring import ImageScorer
from shortcut_models.guidance import GuidanceSchedule, describe_schedule
from shortcut_models.train import Plan


def announcement(
    device: Decision,
    precision: Decision,
    plan: Plan | None,
    minutes: float,
    budgets: Sequence[int],
    num: int,
    sampling: float,
    now: datetime,
    scoring: float = 0.0,
    reference_images: int = 0,
) -> str:
    """The demo's first line: what it will do on this machine, why, and when it will be done.
    `scoring`: the seconds of measuring the samples and the `reference_images` not cached."""
    if plan is None:  # nothing left to train (a finished run, resumed) or too few steps to time
        steps, left = "training done", 0.0
    else:
        budget = f"planned for {minutes:g} minutes at" if minutes > 0 else "at"
        steps = f"{plan.steps:,} training steps ({budget} {plan.rate:.2f} steps/s)"
        left = plan.seconds_left
    total = left + sampling + scoring
    finish = now + timedelta(seconds=total)
    reference = (
        f", {reference_images:,} reference images measured once first" if reference_images else ""
    )
    scored = f", scored in about {scoring / 60:.1f} min{reference}" if scoring else ""
    return (
        f"demo: {device.value} ({device.reason}); {precision.value} ({precision.reason}); "
        f"{steps}; then {num} samples at each of {len(budgets)} step budgets "
        f"(about {sampling / 60:.1f} min){scored}; done at about {finish:%H:%M} "
        f"({total / 60:.0f} min from now)"
    )


def _metric_note(scorer: ImageScorer) -> str:
    """What the headline metric is, for metrics.md."""
    if scorer.key == "fid":
        return (
            f"FID: Fréchet distance on TF-Inception pool3 features against "
            f"{scorer.description}; biased upward with few samples (a few hundred score far "
            "above the 10,000-50,000 of published figures), so compare it across budgets.\n\n"
        )
    return (
        f"{scorer.label}: Fréchet distance on the features of the shipped classifier (test "
        f"accuracy {scorer.extractor.accuracy:.4f}) against {scorer.description}; not FID, and "
        f"biased upward with few samples, so compare it across budgets. Confident: share of "
        f"samples the classifier puts in one class with p >= 0.9; class coverage: how evenly "
        f"those spread over the classes (1 = evenly).\n\n"
    )


def metrics_header(
    data_name: str,
    recipe: str,
    config: TrainConfig,
    steps: int,
    train_seconds: float,
    num: int,
    cfg: GuidanceSchedule,
    budgets: Sequence[int],
    data: Any,
    scorer: ImageScorer,
) -> str:
    """The text above metrics.md's table: what was trained and sampled, how to read the grids."""
    labelled = data.num_classes > 0
    guidance = describe_schedule(cfg) if labelled else "none (unlabelled data)"
    side = "x".join(map(str, data.shape[1:]))
    return (
        f"# shortcut demo: {data_name}, recipe {recipe} ({config.backbone.name}, "
        f"{config.objective.name}), {steps} training steps ({train_seconds:.0f} s this run), "
        f"{num} samples per budget, CFG {guidance}\n\n"
        f"Rows of all_steps.png, top to bottom: {', '.join(map(str, budgets))} steps; columns: "
        + (f"classes 0-{data.num_classes - 1}. " if labelled else "the first 10 samples. ")
        + f"Grids are enlarged 3x (nearest neighbour); samples.npz holds the exact {side} images."
        "\n\n" + _metric_note(scorer)
    )
