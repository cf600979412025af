"""The one merge of a run's settings: defaults < recipe < flags (a resumed run: its checkpoint's
config < flags), for the training config and the run options alike, remembering where each value
came from (`shortcut train --print-config`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shortcut_models.backbones import BACKBONE_OPTIONS, backbone_kind, resolve_backbone
from shortcut_models.config import CHOICES, SECTIONS, RunOptions, TrainConfig
from shortcut_models.data import resolve_data_options
from shortcut_models.errors import UsageError
from shortcut_models.objectives import OBJECTIVES, build_objective
from shortcut_models.objectives import objective_options as objective_option_names
from shortcut_models.options import declared_options
from shortcut_models.recipes import describe, recipe, recipe_options


@dataclass
class Composed:
    """A run's final settings and where each came from."""

    config: TrainConfig
    run: dict[str, Any]  # RunOptions values (all but out_dir)
    sources: dict[str, str]  # "lr", "objective.bootstrap_ema", "run.precision" -> its source
    description: str | None  # what a fresh recipe set (printed when the run starts)

    def table(self) -> str:
        """Every setting by section with its source: default, recipe NAME, flag, checkpoint,
        preset NAME or objective NAME (backbone options an objective needs)."""
        lines = []
        for section, values in self.sections().items():
            lines.append(f"[{section}]")
            for name, value in values.items():
                key = name if section in ("training", "optimisation") else f"{section}.{name}"
                key = section if name == "name" else key
                lines.append(f"  {name} = {value!r}  # {self.sources.get(key, 'default')}")
        return "\n".join(lines)

    def sections(self) -> dict[str, dict[str, Any]]:
        config = self.config
        out: dict[str, dict[str, Any]] = {}
        for choice in CHOICES:
            out[choice] = {"name": getattr(config, choice).name, **self.options_of(choice)}
        for section in SECTIONS:
            out[section] = dataclasses.asdict(getattr(config, section))
        out["run"] = dict(self.run)
        return out

    def options_of(self, choice: str) -> dict[str, Any]:
        """Every option of the chosen data set, objective or backbone, defaults filled in."""
        config = self.config
        if choice == "data":
            return resolve_data_options(config.data.name, config.data.options)
        if choice == "objective":
            fields = declared_options(OBJECTIVES[config.objective.name])
            return {f.name: config.objective.options.get(f.name, f.default) for f in fields}
        _, preset = resolve_backbone(config.backbone.name)
        fields = declared_options(BACKBONE_OPTIONS[backbone_kind(config.backbone.name)])
        defaults = {f.name: f.default for f in fields}
        return {**defaults, **preset, **_objective_needs(config), **config.backbone.options}


def _objective_needs(config: TrainConfig) -> dict[str, Any]:
    """Backbone options the objective sets (MeanFlow: t unscaled); the config's own win."""
    return build_objective(config.objective.name, **config.objective.options).backbone_options()


def compose_config(
    base: TrainConfig | None,
    *,
    recipe_name: str | None = None,
    choices: Mapping[str, str] | None = None,
    values: Mapping[str, Any] | None = None,
    data_options: Mapping[str, Any] | None = None,
    objective_options: Mapping[str, Any] | None = None,
    backbone_options: Mapping[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
) -> Composed:
    """`base` (a resumed checkpoint's config, or the defaults), then a recipe (fresh runs only;
    its run options, such as precision, also for a resumed run), then what the user gave:
    `choices` (data, objective, backbone), plain config `values`, options of the data,
    objective and backbone, and RunOptions values `run`. Options of an objective or backbone
    other than the one the base or recipe chose do not carry over."""
    given = dict(choices or {})
    merged = (base or TrainConfig()).flat()
    fresh = recipe_name if base is None else None
    from_recipe: dict[str, Any] = {}
    if fresh:
        from_recipe = recipe(fresh)[0]
        merged.update(from_recipe, recipe=fresh)
    elif recipe_name and recipe_name != base.training.recipe:
        raise UsageError(
            f"the run was started from recipe '{base.training.recipe or 'none'}', "
            f"not '{recipe_name}'"
        )
    for key in CHOICES:
        if key in given:
            if key != "data" and given[key] != merged[key]:
                merged[f"{key}_options"] = {}
                from_recipe.pop(f"{key}_options", None)
            merged[key] = given[key]
    description = None
    if fresh:  # its options for the objective and backbone this run trains
        recipe_sets = recipe_options(fresh, merged["objective"], merged["backbone"])
        for key, found in zip(("objective_options", "backbone_options"), recipe_sets, strict=True):
            from_recipe[key] = {**found, **from_recipe.get(key, {})}
            merged[key] = {**found, **merged[key]}  # options already there win
        description = describe(fresh, merged["objective"], merged["backbone"])
    if "data" in given and base is not None and given["data"] != base.data.name:
        merged["data_options"] = {}
    merged["data_options"] = {**merged["data_options"], **(data_options or {})}
    values = dict(values or {})
    if "steps" in values and "minutes" not in values and merged["minutes"] > 0:
        values["minutes"] = 0.0  # a step count given replaces a recipe's wall-clock budget
    merged.update(values)
    accepted = objective_option_names(merged["objective"])
    for name, value in (objective_options or {}).items():
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} does not apply to objective '{merged['objective']}'")
        merged["objective_options"] = {**merged["objective_options"], name: value}
    merged["backbone_options"] = {**merged["backbone_options"], **(backbone_options or {})}
    config = TrainConfig.from_flat(merged)
    run_recipe = recipe(config.training.recipe)[1] if config.training.recipe else {}
    run_values = {**_run_defaults(), **run_recipe, **(run or {})}
    flagged = {
        *given,
        *values,
        *(f"data.{k}" for k in data_options or {}),
        *(f"objective.{k}" for k in objective_options or {}),
        *(f"backbone.{k}" for k in backbone_options or {}),
        *(f"run.{k}" for k in run or {}),
    }
    if fresh:
        flagged.add("recipe")
    sources = _sources(config, base is not None, from_recipe, run_recipe, flagged)
    return Composed(config, run_values, sources, description)


def _run_defaults() -> dict[str, Any]:
    return {f.name: f.default for f in dataclasses.fields(RunOptions) if f.name != "out_dir"}


def _sources(
    config: TrainConfig,
    resumed: bool,
    from_recipe: dict[str, Any],
    run_recipe: dict[str, Any],
    flagged: set[str],
) -> dict[str, str]:
    """Where each setting that is not a default came from."""
    by_recipe = f"recipe {config.training.recipe}"
    sources: dict[str, str] = {}
    stored = "checkpoint" if resumed else None
    fields = (f.name for section in SECTIONS.values() for f in dataclasses.fields(section))
    for name in (*CHOICES, *fields):
        if name in from_recipe:
            sources[name] = by_recipe
        elif stored and name != "recipe":
            sources[name] = stored
    for choice in CHOICES:
        if choice == "backbone":
            for name in resolve_backbone(config.backbone.name)[1]:
                sources[f"backbone.{name}"] = f"preset {config.backbone.name}"
            for name in _objective_needs(config):
                sources[f"backbone.{name}"] = f"objective {config.objective.name}"
        for name in getattr(config, choice).options:
            if name in from_recipe.get(f"{choice}_options", {}):
                sources[f"{choice}.{name}"] = by_recipe
            elif stored:
                sources[f"{choice}.{name}"] = stored
    sources.update({f"run.{name}": by_recipe for name in run_recipe})
    sources.update(dict.fromkeys(flagged, "flag"))
    return sources
