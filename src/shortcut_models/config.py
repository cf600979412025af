"""The configuration of a run, nested as it is stored: the chosen data set, objective and backbone,
each a registered name with its own typed options dataclass, then the training and optimisation
sections (`TrainConfig`, stored as JSON in every checkpoint). How and where a run executes is
`execution.RunOptions` (not stored). `merge` is the one way settings are layered (compose.py
orders the layers: defaults < checkpoint < recipe < flags)."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shortcut_models.backbones import backbone_options
from shortcut_models.data import data_options
from shortcut_models.errors import UsageError
from shortcut_models.objectives import OBJECTIVES, make_options
from shortcut_models.options import option

LR_SCHEDULES = ("constant", "cosine")
EVAL_WEIGHTS = ("ema", "model")
MAX_SEED = 2**63  # seeds are 63-bit (torch.manual_seed takes at most 64 bits)
MAX_MINUTES = 1_000_000  # about two years: any longer budget cannot be planned as a step count

# Settings that may differ between a checkpoint and the run that resumes it.
RESUMABLE_CHANGES = frozenset({"training.steps"})


def _check_positive(**values: float) -> None:
    for name, value in values.items():
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"{name.replace('_', '-')} must be positive, got {value}")


def _check_non_negative(**values: float) -> None:
    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{name.replace('_', '-')} must be finite, got {value}")
        if value < 0:
            raise UsageError(f"{name.replace('_', '-')} must be >= 0, got {value}")


@dataclass
class Training:
    """How long and on what: steps and batch, a wall-clock budget, the seed, the weights that are
    evaluated, where the network starts, the recipe the run started from."""

    steps: int = option(5000, "total number of optimizer steps")
    batch_size: int = option(256, "samples per step")
    # with a budget the step count is planned from the rate measured over the first steps
    # (train.schedule) and kept as run state in the checkpoint, so a resumed run continues it
    minutes: float = option(
        0.0,
        "train for this wall-clock budget instead of --steps: the step count (and the cosine "
        "schedule) is planned from the rate measured over the first steps (at least 20 steps "
        "and 15 s) and stored (0: off)",
    )
    seed: int = option(0, "seed of initial weights, data order and noise")
    eval_weights: str = option(
        "ema",
        "weights sample / evaluate / compare use: ema, or model (the raw weights, as the "
        "reference evaluates)",
        choices=EVAL_WEIGHTS,
    )
    init_from: str = option(
        "",
        "shortcut / ism / meanflow: start the network (and its EMA) from this run's EMA weights, "
        "same backbone and data; step-size and guidance embeddings the source lacks start at "
        "zero; the optimiser starts fresh (fine-tune a flow-matching model into a few-step one)",
        path=True,
    )
    recipe: str = ""  # the named recipe the run started from (its values are in the config)

    def __post_init__(self) -> None:
        _check_positive(steps=self.steps, batch_size=self.batch_size)
        _check_non_negative(minutes=self.minutes, seed=self.seed)
        if self.seed >= MAX_SEED:
            raise UsageError(f"seed must be below 2^63, got {self.seed}")
        if self.minutes > MAX_MINUTES:
            raise UsageError(
                f"minutes must be at most {MAX_MINUTES:,} (about two years), got {self.minutes:g}"
            )
        if self.eval_weights not in EVAL_WEIGHTS:
            raise UsageError(
                f"eval-weights must be one of {', '.join(EVAL_WEIGHTS)}, got {self.eval_weights!r}"
            )


@dataclass
class Optimisation:
    """AdamW, its learning-rate schedule and the weight EMA. Defaults follow the reference: lr
    1e-4, betas (0.9, 0.999), weight decay 0.1, EMA 0.999."""

    lr: float = option(1e-4, "AdamW learning rate")
    beta1: float = option(0.9, "AdamW beta1")
    beta2: float = option(0.999, "AdamW beta2")
    weight_decay: float = option(0.1, "AdamW weight decay")
    warmup_steps: int = option(0, "linear learning-rate warm-up steps (0: none)")
    lr_schedule: str = option(
        "constant",
        "constant, or cosine decay to zero at --steps (the reference's use_cosine)",
        choices=LR_SCHEDULES,
    )
    grad_clip: float = option(0.0, "clip the global gradient norm to this (0: off)")
    ema_decay: float = option(0.999, "decay of the weight EMA used for sampling and targets")
    ema_warmup: bool = option(
        False,
        "the EMA's decay after k updates is min(decay, (1 + k) / (10 + k)), so that a long EMA "
        "of a short run is not still holding the initial weights",
    )

    def __post_init__(self) -> None:
        _check_positive(lr=self.lr)
        _check_non_negative(
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps,
            grad_clip=self.grad_clip,
        )
        if self.lr_schedule not in LR_SCHEDULES:
            raise UsageError(
                f"lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        for name in ("beta1", "beta2", "ema_decay"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UsageError(f"{name.replace('_', '-')} must be in [0, 1)")


SECTION_TYPES: dict[str, type] = {"training": Training, "optimisation": Optimisation}
SECTIONS = tuple(SECTION_TYPES)
SELECTIONS = ("data", "objective", "backbone")


@dataclass
class Selection:
    """A registered data set, objective or backbone: its name and its options, an instance of
    the dataclass that name registers (`FolderOptions`, `ShortcutOptions`, `UNetOptions`, ...),
    every field filled in."""

    name: str
    options: Any

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "options": dataclasses.asdict(self.options)}


def _selection(section: str, tree: Mapping[str, Any], objective: str) -> Selection:
    """The typed selection of `section` from a partial tree {name, options}: defaults filled in
    (a backbone's: its defaults < its preset < what `objective` changes < the tree's)."""
    name, values = tree["name"], dict(tree.get("options", {}))
    if section == "data":
        return Selection(name, data_options(name, values))
    if section == "objective":
        return Selection(name, make_options(name, values))
    from_objective = OBJECTIVES[objective].backbone_defaults() if objective in OBJECTIVES else {}
    base = backbone_options(name)
    wanted = {k: v for k, v in from_objective.items() if hasattr(base, k)}
    return Selection(name, backbone_options(name, {**wanted, **values}))


def replaces(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> bool:
    """Whether selection `upper` ({name, options}) chooses another name than `lower` names:
    then `lower`'s options are for something else and do not carry over."""
    return "name" in lower and upper.get("name", lower["name"]) != lower["name"]


def merge(lower: Mapping[str, Any], upper: Mapping[str, Any]) -> dict[str, Any]:
    """`upper` over `lower`, section by section (both partial trees as `TrainConfig.to_dict`
    writes them, `run` included). Where `upper` chooses another data set, objective or backbone
    than `lower` names, `lower`'s options for it do not carry over."""
    out = {
        key: dict(value) if isinstance(value, Mapping) else value for key, value in lower.items()
    }
    for key, value in upper.items():
        if key in SELECTIONS:
            mine = dict(out.get(key, {}))
            if replaces(mine, value):  # options below that named no one carry
                mine = {"name": value["name"]}
            options = {**mine.get("options", {}), **value.get("options", {})}
            out[key] = {**mine, **{k: v for k, v in value.items() if k != "options"}}
            out[key]["options"] = options
        elif isinstance(value, Mapping):
            out[key] = {**out.get(key, {}), **value}
        else:
            raise UsageError(f"unknown config section: {key}")
    return out


DEFAULT_TREE: dict[str, Any] = {
    "data": {"name": "checkerboard"},
    "objective": {"name": "shortcut"},
    "backbone": {"name": "mlp"},
}


@dataclass
class TrainConfig:
    """Everything that defines a training run (not where or how fast it runs), by section, as
    torchtitan's job config: `config.optimisation.lr`, `config.backbone.options.channels`.
    Built from a partial nested tree with `from_tree` (missing values take their defaults)."""

    data: Selection
    objective: Selection
    backbone: Selection
    training: Training = field(default_factory=Training)
    optimisation: Optimisation = field(default_factory=Optimisation)

    @classmethod
    def from_tree(cls, tree: Mapping[str, Any] | None = None) -> TrainConfig:
        """From a partial tree: `TrainConfig.from_tree({"data": {"name": "moons"},
        "training": {"steps": 4000}, "optimisation": {"lr": 1e-3}})`."""
        tree = merge(DEFAULT_TREE, tree or {})
        unknown = set(tree) - {*SELECTIONS, *SECTIONS}
        if unknown:
            raise UsageError(f"unknown config section(s): {', '.join(sorted(unknown))}")
        objective = tree["objective"]["name"]
        chosen = {key: _selection(key, tree[key], objective) for key in SELECTIONS}
        sections = {}
        for key, kind in SECTION_TYPES.items():
            values = tree.get(key, {})
            names = {f.name for f in dataclasses.fields(kind)}
            extra = sorted(set(values) - names)
            if extra:
                raise UsageError(f"unknown {key} setting(s): {', '.join(extra)}")
            sections[key] = kind(**values)
        return cls(**chosen, **sections)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {key: getattr(self, key).to_dict() for key in SELECTIONS}
        out.update({key: dataclasses.asdict(getattr(self, key)) for key in SECTIONS})
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """From a stored config: `to_dict`'s tree (older files hold only the options that were
        set), or the flat record the first checkpoints stored ({data, data_options, lr, ...})."""
        if not any(isinstance(values.get(key), Mapping) for key in SELECTIONS):
            values = _tree_of_flat_record(values)
        return cls.from_tree(values)

    def overlay(self, tree: Mapping[str, Any]) -> TrainConfig:
        """A copy with the settings of partial `tree` changed (`{"training": {"steps": 2}}`)."""
        return TrainConfig.from_tree(merge(self.to_dict(), tree))

    def differences(self, other: TrainConfig) -> list[str]:
        """Section-qualified names of the settings whose values differ (`optimisation.lr`)."""
        mine, theirs = leaves(self.to_dict()), leaves(other.to_dict())
        return [key for key in {**mine, **theirs} if mine.get(key) != theirs.get(key)]


def leaves(tree: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of a (partial) tree by section-qualified name: {"optimisation.lr": 1e-4,
    "backbone.name": "mlp", "backbone.depth": 3, ...}"""
    out = {}
    for key, section in tree.items():
        for name, value in section.items():
            if name == "options":
                out.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                out[f"{key}.{name}"] = value
    return out


def _tree_of_flat_record(values: Mapping[str, Any]) -> dict[str, Any]:
    """The first checkpoints' flat config ({data, data_options, steps, lr, ...}) as a tree."""
    tree: dict[str, Any] = {}
    sections = {
        key: {f.name for f in dataclasses.fields(kind)} for key, kind in SECTION_TYPES.items()
    }
    for key, value in values.items():
        if key in SELECTIONS:
            tree.setdefault(key, {})["name"] = value
        elif key.endswith("_options") and key.removesuffix("_options") in SELECTIONS:
            tree.setdefault(key.removesuffix("_options"), {})["options"] = dict(value)
        else:
            section = next((name for name, names in sections.items() if key in names), None)
            if section is None:
                raise UsageError(f"unknown config field(s): {key}")
            tree.setdefault(section, {})[key] = value
    return tree
