"""Metrics comparing generated samples with data."""

from shortcut_models.metrics.wasserstein import sliced_wasserstein, wasserstein2

__all__ = ["sliced_wasserstein", "wasserstein2"]
