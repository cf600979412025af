"""`shortcut demo`: train a small shortcut model (the `cpu-small` recipe) on MNIST, or another
named image set, and show every step budget from the same checkpoint, with the same noise and
labels; scored with FD-digits on the digit sets and FID on the others (openmoji).

`run` trains and writes, `budgets` samples and scores, `report` says what it will do and writes
the table's header."""

from shortcut_models.demo.budgets import demo_scorer, score_budgets
from shortcut_models.demo.report import announcement
from shortcut_models.demo.run import RECIPE, DemoOptions, run_demo

__all__ = ["RECIPE", "DemoOptions", "announcement", "demo_scorer", "run_demo", "score_budgets"]
