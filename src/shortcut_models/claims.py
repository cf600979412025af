"""The paper's claims decided from a comparison's seeds, not read off one number.

A comparison (`shortcut compare`, one run per seed; `benchmarks/compare_seeds.py` merges them)
gives each method's score per step budget and seed, lower is better. Each seed's run trains from
its own initialisation and data order *and* samples from its own noise, so the spread over seeds
holds the metric's sampling noise as well as training's: a t-interval over seeds covers both.

A claim "shortcut beats X at n steps" is decided by a paired t-test over the seeds both methods
have (the per-seed differences shortcut - X): "beats" when the 95% interval of the mean
difference lies below zero, "loses" when above, "tie" otherwise; with one seed there is no
interval and the verdict says so ("one seed") instead of calling a difference a win. A claim
"within a few percent of" holds when the difference's interval lies below MARGIN of the other's
mean, fails when above it, and is undecided otherwise.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from scipy import stats

from shortcut_models.report import markdown_table

LEVEL = 0.95
MARGIN = 0.05  # "within a few percent": at most 5% worse than the other method's mean

# {method: {steps: {seed: score}}}, steps and seeds as strings (the JSON's keys)
SeedScores = Mapping[str, Mapping[str, Mapping[str, float]]]


@dataclass(frozen=True)
class Interval:
    """Mean of n values with a two-sided t-interval at LEVEL (low = high = mean when n = 1)."""

    mean: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n": self.n}


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The mean and its t-interval; n = 1 gives no width (there is no spread to measure)."""
    if not values:
        raise ValueError("an interval needs at least one value")
    mean = statistics.fmean(values)
    if len(values) == 1:
        return Interval(mean, mean, mean, 1)
    half = stats.t.ppf((1 + level) / 2, len(values) - 1) * statistics.stdev(values)
    half /= math.sqrt(len(values))
    return Interval(mean, mean - half, mean + half, len(values))


def by_seed(scores_by_seed: Mapping[str, Mapping[str, Mapping[str, float]]]) -> dict:
    """{seed: {method: {steps: score}}} (one run per seed, as compare_seeds.py keeps them) to
    {method: {steps: {seed: score}}}."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for seed, scores in scores_by_seed.items():
        for method, per_steps in scores.items():
            for steps, value in per_steps.items():
                out.setdefault(method, {}).setdefault(str(steps), {})[str(seed)] = float(value)
    return out


def intervals(scores: SeedScores) -> dict[str, dict[str, dict[str, Any]]]:
    """{method: {steps: interval}} over the seeds each cell has."""
    return {
        method: {
            steps: t_interval(list(seeds.values())).to_dict() for steps, seeds in cells.items()
        }
        for method, cells in scores.items()
    }


def paired_difference(a: Mapping[str, float], b: Mapping[str, float]) -> Interval:
    """The t-interval of a - b over the seeds both have."""
    shared = sorted(set(a) & set(b), key=str)
    if not shared:
        raise ValueError("the two methods share no seed")
    return t_interval([a[s] - b[s] for s in shared])


def beats(a: Mapping[str, float], b: Mapping[str, float]) -> str:
    """'beats' / 'loses' / 'tie' for a against b (lower scores are better), 'one seed' when the
    two share a single seed."""
    diff = paired_difference(a, b)
    if diff.n < 2:
        return "one seed"
    if diff.high < 0:
        return "beats"
    return "loses" if diff.low > 0 else "tie"


def within(a: Mapping[str, float], b: Mapping[str, float], margin: float = MARGIN) -> str:
    """'holds' when a is at most `margin` of b's mean worse than b (the difference's whole
    interval below it), 'fails' when the whole interval is above, else 'undecided'."""
    diff = paired_difference(a, b)
    bound = margin * statistics.fmean(b[s] for s in set(a) & set(b))
    if diff.n < 2:
        return "one seed"
    if diff.high <= bound:
        return "holds"
    return "fails" if diff.low > bound else "undecided"


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims: shortcut at `steps` against each method of `against`."""

    key: str
    text: str
    steps: int
    against: tuple[str, ...]
    kind: str = "beats"  # or "within" (MARGIN)


CLAIMS = (
    Claim(
        "one_step_one_phase",
        "at 1 step shortcut beats the other one-phase methods",
        1,
        ("flow_matching", "consistency_training", "live_reflow"),
    ),
    Claim(
        "four_steps_baselines",
        "at 4 steps shortcut beats the distillation and consistency baselines",
        4,
        ("progressive_distillation", "consistency_distillation", "reflow", "consistency_training"),
    ),
    Claim(
        "many_steps_flow_matching",
        f"at 128 steps shortcut is within {MARGIN:.0%} of flow matching",
        128,
        ("flow_matching",),
        "within",
    ),
)


def decide(scores: SeedScores, method: str = "shortcut") -> dict[str, Any]:
    """Each claim's verdict against each method the comparison has, with the paired
    difference's interval and the seeds it rests on."""
    out: dict[str, Any] = {}
    for claim in CLAIMS:
        mine = scores.get(method, {}).get(str(claim.steps))
        rows = {}
        for other in claim.against:
            theirs = scores.get(other, {}).get(str(claim.steps))
            if not mine or not theirs or not set(mine) & set(theirs):
                continue
            judge = within if claim.kind == "within" else beats
            rows[other] = {
                "verdict": judge(mine, theirs),
                "difference": paired_difference(mine, theirs).to_dict(),
                "seeds": sorted(set(mine) & set(theirs), key=str),
            }
        out[claim.key] = {"text": claim.text, "steps": claim.steps, "against": rows}
    return out


def verdict_cell(row: Mapping[str, Any] | None, mine: float, theirs: float) -> str:
    """One claim against one rival on one set: the verdict, both means and the paired
    difference (shortcut - rival) with its 95% interval, or the bare difference of one seed."""
    if row is None:
        return "-"
    d = row["difference"]
    spread = f" [{d['low']:+.3g}, {d['high']:+.3g}]" if d["n"] > 1 else ""
    seeds = f"{d['n']} seed{'s' * (d['n'] > 1)}"
    return f"**{row['verdict']}**: {mine:.3g} vs {theirs:.3g}, {d['mean']:+.3g}{spread} ({seeds})"


def claim_table(sets: Mapping[str, Mapping[str, Any]], method: str = "shortcut") -> str:
    """The claims as rows, one per claim and rival, one column per set, from each set's results
    JSON (its "claims" and "intervals", as compare_seeds.py writes them)."""
    rows = []
    for claim in CLAIMS:
        rivals = dict.fromkeys(
            r for res in sets.values() for r in res["claims"][claim.key]["against"]
        )
        for rival in rivals:
            row = [claim.text, rival.replace("_", " ")]
            for results in sets.values():
                found = results["claims"][claim.key]["against"].get(rival)
                means = results["intervals"]
                row.append(
                    verdict_cell(
                        found,
                        means.get(method, {}).get(str(claim.steps), {}).get("mean", math.nan),
                        means.get(rival, {}).get(str(claim.steps), {}).get("mean", math.nan),
                    )
                )
            rows.append(row)
    return markdown_table(["claim", "against", *sets], rows)
