"""Score vector models (2-D toys, arrays) at several step budgets against fresh data."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from shortcut_models.data import DataSource
from shortcut_models.distributed import SINGLE, Dist
from shortcut_models.errors import UsageError
from shortcut_models.evaluation.generation import generate
from shortcut_models.metrics import sliced_wasserstein, wasserstein2
from shortcut_models.objectives import Objective
from shortcut_models.sampling import check_steps
from shortcut_models.seeding import EVALUATION, derive_seed


def evaluate_vectors(
    model: nn.Module,
    objective: Objective,
    data: DataSource,
    steps: Sequence[int],
    num: int = 2000,
    seed: int = 0,
    exact: bool = True,
    dist: Dist = SINGLE,
) -> dict[int, dict[str, float]]:
    """Sliced W2 (and exact W2 when `exact`) between samples and fresh data, per step budget;
    a conditional model samples the labels of the reference rows."""
    spec = objective.sampling_rule()
    for n in steps:
        check_steps(n, spec)
    if data.kind != "vector":
        raise UsageError(f"'{data.name}' holds images: the 2-D distances do not apply")
    # a conditional model samples the labels of the reference rows (their mix of classes)
    reference, labels = data.labelled_sample(num, derive_seed(seed, EVALUATION))
    if not data.num_classes:
        labels = None
    results: dict[int, dict[str, float]] = {}
    for n in steps:
        generated = generate(
            model, objective, data.shape, num, n, seed=seed, labels=labels, dist=dist
        )
        scores = {"sliced_w2": sliced_wasserstein(generated, reference, seed=seed)}
        if exact:
            scores["w2"] = wasserstein2(generated, reference)
        results[n] = scores
    return results
