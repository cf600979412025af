"""`shortcut compare`: the paper's comparison on your data, with one backbone, seed and budget.

Every method gets the same number of optimizer steps S: the paper's (flow matching, progressive
and consistency distillation, consistency training, reflow, live reflow, shortcut) and newer ones
(MeanFlow, shortcut with the iSM options, improved MeanFlow). Methods that need a teacher
(progressive and consistency distillation, reflow) spend `--teacher-share` of them (default half)
training a flow-matching teacher and the rest on the student, and the table says so; reflow
additionally pays for sampling its pairs. Each method's config is composed from the shared
settings (`CompareBase`). Every run folder resumes, so an interrupted comparison continues where
it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortcut_models import logs
from shortcut_models.checkpoint import CHECKPOINT_NAME, load_checkpoint
from shortcut_models.compose import compose_config
from shortcut_models.config import TrainConfig, merge
from shortcut_models.devices import resolve_device
from shortcut_models.errors import UsageError
from shortcut_models.evaluation.generation import SamplingPlan
from shortcut_models.evaluation.scoring import scorer_for
from shortcut_models.factory import build_objective_for, load_run
from shortcut_models.files import atomic_write_text, prepare_out_dir
from shortcut_models.guidance import GuidanceSchedule, describe_schedule
from shortcut_models.objectives import OBJECTIVES
from shortcut_models.pairs import generate_pairs
from shortcut_models.report import machine_record, markdown_table, write_json
from shortcut_models.sampling import STEP_BUDGETS
from shortcut_models.train import Trainer

log = logs.get(__name__)

PAPER_ORDER = (
    "flow_matching",
    "progressive_distillation",
    "consistency_distillation",
    "consistency_training",
    "reflow",
    "live_reflow",
    "shortcut",
)
BEYOND_PAPER = ("meanflow", "ism", "imf")  # newer one-step objectives, compared in the same harness
METHODS = PAPER_ORDER + BEYOND_PAPER
SCORES_NAME = "compare_scores.json"


# Per kind of data: backbone, steps, batch size, lr (EMA 0.99 and cosine decay for both).
DEFAULTS_BY_KIND = {"vector": ("mlp", 4000, 256, 1e-3), "image": ("DiT-T/4", 2500, 64, 1e-3)}


@dataclass(frozen=True)
class CompareBase:
    """What every method of a comparison shares: a recipe (or none) and the settings given over
    it, a partial config tree; each method's config is composed from them (`method_config`)."""

    recipe: str | None
    flags: dict[str, Any]

    def method_config(
        self, objective: str, options: dict[str, Any] | None = None, steps: int | None = None
    ) -> TrainConfig:
        """The config of one method: the recipe, with the options it sets for `objective` and
        those of its own objective that `objective` also has, then the shared settings, then
        `options` and a step count (the budget, or a two-stage method's part of it)."""
        method = {"objective": {"name": objective, "options": dict(options or {})}}
        if steps is not None:
            method["training"] = {"steps": steps, "minutes": 0.0}
        flags = merge(self.flags, method)
        return compose_config(None, recipe_name=self.recipe, flags=flags, carry=True).config

    @property
    def config(self) -> TrainConfig:
        """The shared settings as a config (of the recipe's objective, or the default one)."""
        return self.method_config(self.flags.get("objective", {}).get("name", "shortcut"))


def compare_config(
    data: str,
    data_options: dict[str, Any] | None = None,
    *,
    backbone: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    ema_decay: float | None = None,
    seed: int = 0,
    recipe_name: str | None = None,
) -> CompareBase:
    """The shared settings of every method in a comparison; None: the recipe's value (its
    network, batch, optimizer, EMA; a fixed step count, never its wall-clock budget), else the
    default for the kind of data (an MLP for vectors, DiT-T/4 for images)."""
    from shortcut_models.data import dataset

    if not recipe_name:
        kind = "vector" if dataset(data).kind == "vector" else "image"
        default_backbone, default_steps, default_batch, default_lr = DEFAULTS_BY_KIND[kind]
        backbone = backbone or default_backbone
        steps = default_steps if steps is None else steps
        batch_size = default_batch if batch_size is None else batch_size
        lr = default_lr if lr is None else lr
        ema_decay = 0.99 if ema_decay is None else ema_decay
    training = {"steps": steps, "batch_size": batch_size, "seed": seed}
    optimisation = {"lr": lr, "ema_decay": ema_decay}
    if not recipe_name:
        optimisation["lr_schedule"] = "cosine"
    flags: dict[str, Any] = {
        "data": {"name": data, "options": dict(data_options or {})},
        # every method trains a fixed step count, never a recipe's wall-clock budget
        "training": {**{k: v for k, v in training.items() if v is not None}, "minutes": 0.0},
        "optimisation": {k: v for k, v in optimisation.items() if v is not None},
    }
    if backbone:
        flags["backbone"] = {"name": backbone}
    return CompareBase(recipe_name, flags)


@dataclass
class CompareOptions:
    base: CompareBase  # data, backbone, steps (the budget S), batch, lr, EMA, seed, recipe
    out: Path
    objectives: tuple[str, ...] = METHODS
    eval_steps: tuple[int, ...] = STEP_BUDGETS
    num: int = 2000
    metric: str = "auto"  # sliced W2 for 2-D data, fd-digits for MNIST-like, else fid
    pairs_num: int = 10000
    pairs_steps: int = 32
    device: str = "auto"
    progress: bool = True
    inception: str | None = None
    ref: str | None = None  # images: the reference set (default: the data set itself)
    cfg: GuidanceSchedule = ((1, 1.0),)  # guidance at evaluation, per budget, for every method
    precision: str | None = None  # training autocast (None: the recipe's, else auto)
    memory_format: str | None = None  # (None: the recipe's, else contiguous)
    teacher_share: float = 0.5  # two-stage methods: the teacher's part of the step budget

    def __post_init__(self) -> None:
        self.shared = self.base.config  # the settings every method has in common

    def teacher_steps(self) -> int:
        """The teacher's steps of the budget (at least 1, and at least 1 left for the student)."""
        steps = self.shared.training.steps
        return min(max(int(steps * self.teacher_share), 1), steps - 1)

    def folder(self, name: str) -> str:
        """The run folder of `name` (or of "teacher_flow_matching", "reflow_pairs"); a two-stage
        folder names its teacher's steps unless the teacher has the default half, so that no
        folder resumes a run made with a teacher of another length."""
        two_stage = name not in OBJECTIVES or OBJECTIVES[name].needs
        if self.teacher_share == 0.5 or not two_stage:
            return name
        return f"{name}_teacher{self.teacher_steps()}"


def _train(config: TrainConfig, run_dir: Path, options: CompareOptions, data: Any) -> float:
    """Train (or finish) one run on the shared data source; returns the seconds spent now."""
    run = {
        "device": options.device,
        "resume": (run_dir / CHECKPOINT_NAME).exists(),
        "progress": options.progress,
        "save_every": max(500, config.training.steps // 4),
        "tensorboard": False,
        "precision": options.precision,
        "memory_format": options.memory_format,
    }
    run = {k: v for k, v in run.items() if v is not None}
    composed = compose_config(config, recipe_name=config.training.recipe, flags={"run": run})
    tick = time.perf_counter()
    result = Trainer(config, composed.run_options(run_dir), data).run()
    if result.status == "interrupted":
        raise KeyboardInterrupt
    return time.perf_counter() - tick


def _budget_note(name: str, options: CompareOptions) -> str:
    s, teacher = options.shared.training.steps, options.teacher_steps()
    if OBJECTIVES[name].needs == "teacher":
        return f"{teacher} teacher + {s - teacher} student steps"
    if OBJECTIVES[name].needs == "pairs":
        return (
            f"{teacher} teacher + {s - teacher} reflow steps, "
            f"+ {options.pairs_num} pairs x {options.pairs_steps} teacher steps"
        )
    return f"{s} steps"


def _evaluator(options: CompareOptions, data: Any):
    """(metric label, score(run_dir, steps) -> {steps: value}) for the run's data source."""
    base = options.shared
    if data.kind == "latent":
        raise UsageError("compare runs on pixel data; evaluate latent models with evaluate")
    scorer = scorer_for(
        data,
        base,
        metric=options.metric,
        ref=options.ref,
        exact=False,
        data=data,
        inception=options.inception,
        device=_device(options),
        ref_num=10000,
        seed=base.training.seed,
        progress=options.progress,
    )

    def score(run_dir: Path, steps: list[int]) -> dict[int, float]:
        run = load_run(run_dir, device=_device(options))
        plan = SamplingPlan(steps, options.num, base.training.seed, cfg=options.cfg, batch=256)
        return {n: s[scorer.key] for n, s in scorer.score(run, plan).items()}

    return scorer.label, score


def _device(options: CompareOptions):
    return resolve_device(options.device)


def run_compare(options: CompareOptions) -> dict[str, Any]:
    """Train every objective, evaluate each at the allowed step budgets, write table/JSON/plot."""
    from shortcut_models.data import build_data
    from shortcut_models.plots import metric_vs_steps

    unknown = [o for o in options.objectives if o not in OBJECTIVES]
    if unknown:
        raise UsageError(f"unknown objective(s): {', '.join(unknown)}")
    if options.shared.training.steps < 2:
        raise UsageError("the budget (--steps) must be at least 2")
    if not 0.0 < options.teacher_share < 1.0:  # nan too
        raise UsageError(f"--teacher-share must lie in (0, 1), got {options.teacher_share}")
    out = prepare_out_dir(options.out)
    data = build_data(options.shared.data.name, options.shared.data.options)
    label, score = _evaluator(options, data)
    half = options.teacher_steps()
    seconds: dict[str, float] = {}
    teacher_dir = out / options.folder("teacher_flow_matching")
    if any(OBJECTIVES[o].needs for o in options.objectives):
        teacher = options.base.method_config("flow_matching", steps=half)
        log.info(f"== teacher: flow_matching, {half} steps")
        seconds["teacher"] = _train(teacher, teacher_dir, options, data)
    results: dict[str, dict[str, float]] = {}
    rows = []
    for name in options.objectives:
        extra: dict[str, Any] = {}
        steps = options.shared.training.steps
        if OBJECTIVES[name].needs == "teacher":
            extra["teacher"] = str(teacher_dir.resolve())
            steps = options.shared.training.steps - half
        if OBJECTIVES[name].needs == "pairs":
            tick = time.perf_counter()
            generate_pairs(
                teacher_dir,
                out / options.folder("reflow_pairs"),
                num=options.pairs_num,
                steps=options.pairs_steps,
                seed=options.shared.training.seed,
                device=_device(options),
                progress=options.progress,
            )
            seconds["reflow_pairs"] = time.perf_counter() - tick
            extra["pairs"] = str((out / options.folder("reflow_pairs")).resolve())
            steps = options.shared.training.steps - half
        config = options.base.method_config(name, extra, steps)
        log.info(f"== {name}: {steps} steps")
        seconds[name] = _train(config, out / options.folder(name), options, data)
        objective = build_objective_for(config, data)
        allowed = [n for n in options.eval_steps if objective.sampling_rule().allows(n)]
        setting = {"metric": label, "num": options.num}
        if options.cfg != ((1, 1.0),):
            setting["cfg"] = describe_schedule(options.cfg)
        values = _scores(out / options.folder(name), allowed, score, setting)
        results[name] = {str(n): v for n, v in values.items()}
        rows.append(
            [name, _budget_note(name, options), *(values.get(n, "-") for n in options.eval_steps)]
        )
    table = markdown_table(["objective", "training", *map(str, options.eval_steps)], rows)
    header = (
        f"# {label} by number of sampling steps (lower is better)\n\n"
        f"data {options.shared.data.name}, backbone {options.shared.backbone.name}, budget "
        f"{options.shared.training.steps} steps x batch {options.shared.training.batch_size}, "
        f"seed {options.shared.training.seed}, "
        f"{options.num} samples per entry"
        + (f", recipe {options.shared.training.recipe}" if options.shared.training.recipe else "")
        + (f", CFG {describe_schedule(options.cfg)}" if options.cfg != ((1, 1.0),) else "")
        + (f", reference {options.ref}" if options.ref else "")
        + "\n\n"
    )
    (out / "compare.md").write_text(header + table + "\n")
    curves = {name: {int(n): v for n, v in r.items()} for name, r in results.items()}
    metric_vs_steps(
        curves, label, out / "compare.png", f"{options.shared.data.name}: {label} vs steps"
    )
    meta = {
        "seconds": seconds,
        "config": options.shared.to_dict(),
        # the guidance schedule every method was sampled with, (from step count, scale) pairs
        "cfg": [list(pair) for pair in options.cfg],
        "machine": machine_record(),
    }
    write_json(out / "compare.meta.json", meta)
    print(table)
    return results


def _scores(run_dir: Path, steps: list[int], score: Any, setting: dict) -> dict[int, float]:
    """Scores of a finished run, computed once per setting and checkpoint (a rerun that adds a
    method re-evaluates only that one, and an interrupted one only the budgets it had not
    scored)."""
    key = {**setting, "step": load_checkpoint(run_dir).step}
    path = run_dir / SCORES_NAME
    stored: dict[str, float] = {}
    if path.is_file():
        saved = json.loads(path.read_text())
        stored = saved["scores"] if saved.get("key") == key else {}
    for n in [n for n in steps if str(n) not in stored]:  # saved one budget at a time: an
        # interrupted evaluation (FID of 1,000 samples: minutes per budget) keeps what it scored
        stored.update({str(k): v for k, v in score(run_dir, [n]).items()})
        atomic_write_text(path, json.dumps({"key": key, "scores": stored}, indent=1) + "\n")
    return {n: stored[str(n)] for n in steps}
