"""`shortcut demo`: train a recipe into OUT/run (resumable), then sample every step budget from
the same checkpoint, noise and labels, and write the grids, samples and a metrics table."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from shortcut_models import logs
from shortcut_models.checkpoint import CHECKPOINT_NAME
from shortcut_models.compose import Composed, compose_config
from shortcut_models.data import dataset, named_image_sets
from shortcut_models.demo.budgets import (
    demo_scorer,
    sampling_seconds,
    score_budgets,
    scoring_seconds,
)
from shortcut_models.demo.report import announcement, metrics_header
from shortcut_models.devices import Decision, bf16_hardware, choose_device, choose_precision
from shortcut_models.errors import UsageError
from shortcut_models.evaluation.scoring import ImageScorer
from shortcut_models.files import prepare_out_dir, save_arrays
from shortcut_models.guidance import GuidanceSchedule
from shortcut_models.image_io import save_grid
from shortcut_models.report import markdown_table, write_json
from shortcut_models.sampling import STEP_BUDGETS
from shortcut_models.train import Plan, Trainer

CLASS_COLUMNS = {"confident": "confident", "class_coverage": "class coverage"}
RECIPE = "cpu-small"
RECIPE_PRECISION = "bf16 trains its U-Net no faster, even on AMX"
BUDGETS = STEP_BUDGETS  # the budgets the demo samples and scores (--budgets)
# CFG per step budget: one step wants more guidance than many, chosen on noise seeds the demo
# does not report (benchmarks/results/demo_cfg_validation.md)
DEMO_CFG: GuidanceSchedule = ((1, 2.5), (2, 2.0), (4, 1.75))
log = logs.get(__name__)


@dataclass
class DemoOptions:
    """The demo trains a recipe (`cpu-small`); a field left at None keeps the recipe's value."""

    out: Path
    data: str = "mnist"
    recipe: str = RECIPE
    minutes: float | None = None  # a wall-clock training budget instead of a step count
    steps: int | None = None
    backbone: str | None = None
    batch_size: int | None = None
    lr: float | None = None
    ema_decay: float | None = None
    precision: str | None = None
    cfg: GuidanceSchedule = DEMO_CFG
    num: int = 200
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    budgets: tuple[int, ...] = field(default=BUDGETS)


def demo_config(options: DemoOptions, run_dir: Path) -> Composed:
    """The run's settings: the recipe, overlaid with the options given (`compose_config`)."""
    training = {
        "steps": options.steps,
        "minutes": options.minutes,
        "batch_size": options.batch_size,
    }
    sections = {
        "training": {"seed": options.seed, **training},
        "optimisation": {"lr": options.lr, "ema_decay": options.ema_decay},
        "run": {"precision": options.precision},
    }
    flags: dict[str, Any] = {"data": {"name": options.data}}
    for key, values in sections.items():
        given = {k: v for k, v in values.items() if v is not None}
        if given:
            flags[key] = given
    if options.backbone:
        flags["backbone"] = {"name": options.backbone}
    flags["run"] = {
        **flags.get("run", {}),
        "device": options.device,
        "resume": (run_dir / CHECKPOINT_NAME).exists(),
        "save_every": 500,
        "progress": options.progress,
    }
    return compose_config(None, recipe_name=options.recipe, flags=flags)


def run_demo(options: DemoOptions) -> dict[str, dict[str, float]]:
    """Train (or resume) into OUT/run; write grids, a side-by-side image and a metrics table."""
    dataset(options.data)  # plugins load only for a name that is not built in
    if options.data not in named_image_sets():
        raise UsageError(f"the demo takes a named image set ({', '.join(named_image_sets())})")
    if options.num < 10:
        raise UsageError(f"--num must be at least 10, got {options.num}")
    if not options.budgets or min(options.budgets) < 1:
        raise UsageError(f"--budgets must be positive step counts, got {options.budgets}")
    created = not Path(options.out).exists()
    out = prepare_out_dir(options.out)
    try:
        return _run_demo(options, sorted(set(options.budgets)), out)
    except UsageError:
        if created:  # a refused demo leaves no folder behind (its run folder removed itself)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


@dataclass
class Announcer:
    """Says what the demo will do once the first steps are timed (`Trainer`'s on_plan)."""

    options: DemoOptions
    budgets: list[int]
    scorer: ImageScorer
    device: Decision
    precision: Decision
    announced: bool = False

    def __call__(self, plan: Plan | None, trainer: Trainer) -> None:
        shape, options = trainer.data.shape, self.options
        precision = trainer.options.precision
        seconds = sampling_seconds(
            trainer.evaluated, trainer.objective, shape, self.budgets, options.num, options.cfg,
            precision,
        )  # fmt: skip
        reference = self.scorer.images_to_reference(shape)
        count = options.num * len(self.budgets) + reference
        scoring = scoring_seconds(self.scorer, shape, count)
        minutes = trainer.plan.minutes
        log.info(
            announcement(
                self.device, self.precision, plan, minutes, self.budgets, options.num, seconds,
                datetime.now(), scoring, reference,
            )
        )  # fmt: skip
        self.announced = True


def _decisions(options: DemoOptions, precision: str) -> tuple[Decision, Decision]:
    """The device and precision the demo runs on, with the reasons it prints."""
    device = choose_device(options.device)
    chosen = choose_precision(precision, torch.device(device.value))
    if options.precision is None and options.recipe == RECIPE:  # the recipe's fp32: say why
        hardware = bf16_hardware(torch.device(device.value)).reason
        chosen = Decision(chosen.value, f"recipe {RECIPE}: {RECIPE_PRECISION}; {hardware}")
    return device, chosen


def _run_demo(options: DemoOptions, budgets: list[int], out: Path) -> dict[str, dict[str, float]]:
    run_dir = out / "run"
    composed = demo_config(options, run_dir)
    config, precision = composed.config, composed.run["precision"]
    scorer = demo_scorer(options.data, options.seed)
    announce = Announcer(options, budgets, scorer, *_decisions(options, precision))
    trainer = Trainer(config, composed.run_options(run_dir), on_plan=announce)
    tick = time.perf_counter()
    result = trainer.run()
    train_seconds = time.perf_counter() - tick
    if result.status == "interrupted":
        return {}
    if not announce.announced:
        announce(None, trainer)
    data = trainer.data
    metrics, images = score_budgets(
        trainer.evaluated.eval(),
        trainer.objective,
        shape=data.shape,
        num_classes=data.num_classes,
        scorer=scorer,
        budgets=budgets,
        num=options.num,
        seed=options.seed,
        cfg=options.cfg,
        precision=precision,
        progress=options.progress,
    )
    for n, x in images.items():
        save_grid(x[:100], out / f"steps_{n:03d}.png")
    save_grid(torch.cat([x[:10] for x in images.values()]), out / "all_steps.png")
    # uint8 NHWC arrays per budget (steps_001, ...), at their exact size
    save_arrays(
        {f"steps_{n:03d}": x.permute(0, 2, 3, 1).numpy() for n, x in images.items()},
        out / "samples.npz",
    )
    columns = {scorer.key: scorer.label, "precision": "precision", "recall": "recall"}
    columns.update(CLASS_COLUMNS if scorer.key == "fd_digits" else {})
    labelled = data.num_classes > 0
    rows = [
        [n, metrics[str(n)]["cfg"] if labelled else "-"]
        + [metrics[str(n)][k] for k in columns]
        + [metrics[str(n)]["sample_seconds"]]
        for n in budgets
    ]
    table = markdown_table(["steps", "CFG", *columns.values(), "sampling s"], rows)
    header = metrics_header(
        options.data, options.recipe, config, result.step, train_seconds, options.num,
        options.cfg, budgets, data, scorer,
    )  # fmt: skip
    (out / "metrics.md").write_text(header + table + "\n")
    record = {
        "config": config.to_dict(),
        "budgets": metrics,
        "train_seconds": train_seconds,
        "metric": scorer.label,
    }
    write_json(out / "metrics.json", record)
    print(table)
    print(
        f"wrote {out}/steps_*.png, all_steps.png, samples.npz, metrics.md, metrics.json; "
        f"checkpoint {run_dir}"
    )
    return metrics
