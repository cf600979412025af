"""Sampling a trained model at several step budgets and scoring it: vectors against fresh data
(sliced W2, W2), images against a reference set (FID or FD-digits, precision, recall); `scoring`
is the one orchestration `shortcut evaluate`, `compare` and `demo` share."""

from shortcut_models.evaluation.generation import generate
from shortcut_models.evaluation.vectors import evaluate_vectors

__all__ = ["evaluate_vectors", "generate"]
