"""`shortcut demo`: train a small shortcut model (the `cpu-small` recipe) on MNIST, or another
named image set, and show every step budget from the same checkpoint, with the same noise and
labels; scored with FD-digits on the digit sets and FID on the others (openmoji)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from shortcut_models import logs
from shortcut_models.checkpoint import CHECKPOINT_NAME, load_checkpoint
from shortcut_models.compose import compose_config
from shortcut_models.config import TrainConfig
from shortcut_models.data import DIGIT_DATASETS, dataset, named_image_sets
from shortcut_models.data.images import to_uint8
from shortcut_models.devices import Choice, bf16_hardware, choose_device, choose_precision
from shortcut_models.errors import UsageError
from shortcut_models.evaluation import generate
from shortcut_models.evaluation.scoring import ImageScorer
from shortcut_models.files import prepare_out_dir, save_arrays
from shortcut_models.guidance import GuidanceSchedule, describe_schedule, scale_for
from shortcut_models.image_io import save_grid
from shortcut_models.objectives import Objective
from shortcut_models.report import markdown_table, write_json
from shortcut_models.sampling import STEP_BUDGETS
from shortcut_models.train import Plan, RunOptions, Trainer

REFERENCE_NUM = 10000  # training images whose classifier features form the reference
SAMPLE_CHUNK = 100
CLASS_COLUMNS = {"confident": "confident", "class_coverage": "class coverage"}
RECIPE = "cpu-small"
RECIPE_PRECISION = "bf16 trains its U-Net no faster, even on AMX"
BUDGETS = STEP_BUDGETS  # the budgets the demo samples and scores (--budgets)
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
    # CFG per step budget: one step wants more guidance than many. FD-digits at 1 / 4 / 128
    # steps of the 8-minute cpu-small U-Net (AMX, demo_mnist.md) by scale: 1.5: 57 / 20 / 17;
    # 1.75: 41 / 18 / 18; 2: 32 / 23 / 23
    cfg: GuidanceSchedule = ((1, 2.0), (4, 1.75))
    num: int = 200
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    budgets: tuple[int, ...] = field(default=BUDGETS)


def demo_config(options: DemoOptions) -> tuple[TrainConfig, dict[str, Any]]:
    """The run's TrainConfig and run options (precision, memory format): the recipe, overlaid
    with the options given (the one merge, `compose.compose_config`)."""
    given = {
        "data": options.data,
        "seed": options.seed,
        "steps": options.steps,
        "backbone": options.backbone,
        "batch_size": options.batch_size,
        "lr": options.lr,
        "ema_decay": options.ema_decay,
        "minutes": options.minutes,
    }
    values = {k: v for k, v in given.items() if v is not None}
    choices = {k: values.pop(k) for k in ("data", "backbone") if k in values}
    run = {"precision": options.precision} if options.precision else None
    composed = compose_config(
        None, recipe_name=options.recipe, choices=choices, values=values, run=run
    )
    return composed.config, composed.run


def demo_scorer(data: str, seed: int) -> ImageScorer:
    """FD-digits (with precision, recall, class scores) on the digit sets, FID (with precision
    and recall) on the others, against up to REFERENCE_NUM training images."""
    metric = "fd-digits" if data in DIGIT_DATASETS else "fid"
    return ImageScorer(metric, data, data, ref_num=REFERENCE_NUM, seed=seed)


def demo_labels(num: int, num_classes: int) -> torch.Tensor | None:
    """Classes in turn (a grid's columns), or None for an unlabelled set."""
    return torch.arange(num) % num_classes if num_classes else None


def _autocast(device: torch.device, precision: str) -> torch.autocast:
    """bf16 autocast where the run trains in bf16 (the Euler state stays fp32)."""
    bf16 = choose_precision(precision, device).value == "bf16"
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


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


def announcement(
    device: Choice,
    precision: Choice,
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
    bar = tqdm(total=sum(budgets), desc="sampling", unit="step", disable=not progress)
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


def run_demo(options: DemoOptions) -> dict[str, dict[str, float]]:
    """Train (or resume) into OUT/run; write grids, a side-by-side image and a metrics table."""
    entry = dataset(options.data)  # plugins load only for a name that is not built in
    if entry.kind != "image" or entry.options is not None:
        raise UsageError(f"the demo takes a named image set ({', '.join(named_image_sets())})")
    if options.num < 10:
        raise UsageError(f"--num must be at least 10, got {options.num}")
    if not options.budgets or min(options.budgets) < 1:
        raise UsageError(f"--budgets must be positive step counts, got {options.budgets}")
    budgets = sorted(set(options.budgets))
    created = not Path(options.out).exists()
    out = prepare_out_dir(options.out)
    try:
        return _run_demo(options, budgets, out)
    except UsageError:
        if created:  # a refused demo leaves no folder behind (its run folder removed itself)
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _run_demo(options: DemoOptions, budgets: list[int], out: Path) -> dict[str, dict[str, float]]:
    config, run = demo_config(options)
    precision = run["precision"]
    device = choose_device(options.device)
    chosen = choose_precision(precision, torch.device(device.value))
    if options.precision is None and options.recipe == RECIPE:  # the recipe's fp32: say why
        hardware = bf16_hardware(torch.device(device.value)).reason
        chosen = Choice(chosen.value, f"recipe {RECIPE}: {RECIPE_PRECISION}; {hardware}")
    announced = False
    scorer = demo_scorer(options.data, options.seed)

    def announce(plan: Plan | None) -> None:
        nonlocal announced
        model = trainer.evaluated
        shape = trainer.data.shape
        seconds = sampling_seconds(
            model, trainer.objective, shape, budgets, options.num, options.cfg, precision
        )
        reference = scorer.images_to_reference(shape)
        scoring = scoring_seconds(scorer, shape, options.num * len(budgets) + reference)
        minutes = config.training.minutes
        line = announcement(
            device, chosen, plan, minutes, budgets, options.num, seconds, datetime.now(),
            scoring, reference,
        )  # fmt: skip
        log.info(line)
        announced = True

    run_dir = out / "run"
    resume = (run_dir / CHECKPOINT_NAME).exists()
    if resume and config.training.minutes > 0:  # a budget run resumes the step count it planned
        config.training.steps = load_checkpoint(run_dir / CHECKPOINT_NAME).config.training.steps
    run_options = RunOptions(
        out_dir=run_dir,
        device=options.device,
        resume=resume,
        save_every=500,
        progress=options.progress,
        precision=precision,
        memory_format=run["memory_format"],
    )
    trainer = Trainer(config, run_options, on_plan=announce)
    tick = time.perf_counter()
    result = trainer.run()
    train_seconds = time.perf_counter() - tick
    if result.status == "interrupted":
        return {}
    if not announced:
        announce(None)

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
    labelled = data.num_classes > 0
    columns = {scorer.key: scorer.label, "precision": "precision", "recall": "recall"}
    columns.update(CLASS_COLUMNS if scorer.key == "fd_digits" else {})
    rows = [
        [n, metrics[str(n)]["cfg"] if labelled else "-"]
        + [metrics[str(n)][k] for k in columns]
        + [metrics[str(n)]["sample_seconds"]]
        for n in budgets
    ]
    table = markdown_table(["steps", "CFG", *columns.values(), "sampling s"], rows)
    side = "x".join(map(str, data.shape[1:]))
    guidance = describe_schedule(options.cfg) if labelled else "none (unlabelled data)"
    header = (
        f"# shortcut demo: {options.data}, recipe {options.recipe} ({config.backbone.name}, "
        f"{config.objective.name}), {result.step} training steps ({train_seconds:.0f} s this run), "
        f"{options.num} samples per budget, CFG {guidance}\n\n"
        f"Rows of all_steps.png, top to bottom: {', '.join(map(str, budgets))} steps; columns: "
        + (f"classes 0-{data.num_classes - 1}. " if labelled else "the first 10 samples. ")
        + f"Grids are enlarged 3x (nearest neighbour); samples.npz holds the exact {side} images."
        "\n\n" + _metric_note(scorer)
    )
    (out / "metrics.md").write_text(header + table + "\n")
    write_json(
        out / "metrics.json",
        {
            "config": config.flat(),
            "budgets": metrics,
            "train_seconds": train_seconds,
            "metric": scorer.label,
        },
    )
    print(table)
    print(
        f"wrote {out}/steps_*.png, all_steps.png, samples.npz, metrics.md, metrics.json; "
        f"checkpoint {run_dir}"
    )
    return metrics
