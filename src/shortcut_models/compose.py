"""The one merge of a run's settings, nested: defaults < checkpoint (a resumed run) < recipe (a
fresh run) < flags, for the training config and the run options alike, remembering where each
value came from (`shortcut train --print-config`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shortcut_models.backbones import preset_values
from shortcut_models.config import (
    DEFAULT_TREE,
    SECTIONS,
    SELECTIONS,
    TrainConfig,
    leaves,
    merge,
    replaces,
)
from shortcut_models.errors import UsageError
from shortcut_models.execution import RunOptions
from shortcut_models.objectives import OBJECTIVES
from shortcut_models.recipes import describe, recipe, recipe_tree


@dataclass
class Composed:
    """A run's final settings and where each came from."""

    config: TrainConfig
    run: dict[str, Any]  # RunOptions values (all but out_dir)
    sources: dict[str, str]  # "optimisation.lr", "objective.bootstrap_ema", "run.precision"
    description: str | None  # what a fresh recipe set (printed when the run starts)

    def run_options(self, out_dir: Path) -> RunOptions:
        """The RunOptions of the run writing into `out_dir` (the one place they are built)."""
        return RunOptions(out_dir=Path(out_dir), **self.run)

    def table(self) -> str:
        """Every setting by section with its source: default, recipe NAME, flag, checkpoint,
        preset NAME or objective NAME (backbone options an objective changes)."""
        lines = []
        for section, values in self.sections().items():
            lines.append(f"[{section}]")
            for name, value in values.items():
                source = self.sources.get(f"{section}.{name}", "default")
                if (section, name) == ("training", "steps") and self.config.training.minutes > 0:
                    minutes = self.config.training.minutes
                    source += f"; not used: the {minutes:g}-minute budget plans the step count"
                lines.append(f"  {name} = {value!r}  # {source}")
        return "\n".join(lines)

    def sections(self) -> dict[str, dict[str, Any]]:
        config, out = self.config, {}
        for key in SELECTIONS:
            chosen = getattr(config, key)
            out[key] = {"name": chosen.name, **dataclasses.asdict(chosen.options)}
        for key in SECTIONS:
            out[key] = dataclasses.asdict(getattr(config, key))
        out["run"] = dict(self.run)
        return out


def compose_config(
    base: TrainConfig | None,
    *,
    recipe_name: str | None = None,
    flags: Mapping[str, Any] | None = None,
    carry: bool = False,
) -> Composed:
    """`base` (a resumed checkpoint's config, or None: the defaults), then a recipe (fresh runs
    only; its run options also for a resumed run), then `flags`: a partial tree as
    `TrainConfig.to_dict` writes it, with RunOptions values under "run". Options of an objective
    or backbone other than the one chosen below do not carry over (`config.merge`), nor a
    recipe's (with `carry`, as a comparison asks, an objective keeps the recipe's options it
    also has: `recipes.recipe_tree`)."""
    flags = {key: dict(value) for key, value in (flags or {}).items()}
    run_flags = flags.pop("run", {})
    training = flags.get("training", {})
    if "steps" in training and "minutes" not in training:
        training["minutes"] = 0.0  # a step count given replaces a recipe's wall-clock budget
    layers: list[tuple[str, Mapping[str, Any]]] = []
    description = None
    if base is not None:
        if recipe_name and recipe_name != base.training.recipe:
            raise UsageError(
                f"the run was started from recipe '{base.training.recipe or 'none'}', "
                f"not '{recipe_name}'"
            )
        layers.append(("checkpoint", base.to_dict()))
    elif recipe_name:
        raw = recipe(recipe_name).tree
        objective, backbone = (
            flags.get(key, {}).get("name")
            or raw.get(key, {}).get("name")
            or DEFAULT_TREE[key]["name"]
            for key in ("objective", "backbone")
        )
        tree = recipe_tree(recipe_name, objective, backbone, carry)
        tree.pop("run", None)
        layers.append((f"recipe {recipe_name}", tree))
        layers.append(("flag", {"training": {"recipe": recipe_name}}))
        description = describe(recipe_name, objective, backbone)
    layers.append(("flag", flags))
    tree: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for label, layer in layers:
        for key in SELECTIONS:
            if replaces(tree.get(key, {}), layer.get(key, {})):
                sources = {k: v for k, v in sources.items() if not k.startswith(f"{key}.")}
        tree = merge(tree, layer)
        sources.update(dict.fromkeys(leaves(layer), label))
    config = TrainConfig.from_tree(tree)
    run_recipe = (
        recipe(config.training.recipe).tree.get("run", {}) if config.training.recipe else {}
    )
    run = {**_run_defaults(), **run_recipe, **run_flags}
    sources.update({f"run.{k}": f"recipe {config.training.recipe}" for k in run_recipe})
    sources.update({f"run.{k}": "flag" for k in run_flags})
    _implied_sources(config, sources)
    return Composed(config, run, sources, description)


def _implied_sources(config: TrainConfig, sources: dict[str, str]) -> None:
    """Backbone options no layer set that a preset or the objective decides."""
    name, objective = config.backbone.name, config.objective.name
    implied = {k: f"preset {name}" for k in preset_values(name)}
    changed = OBJECTIVES[objective].backbone_defaults()
    implied.update({k: f"objective {objective}" for k in changed})
    for key, source in implied.items():
        sources.setdefault(f"backbone.{key}", source)


def _run_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(RunOptions) if f.name != "out_dir"}
