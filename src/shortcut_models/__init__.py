"""Shortcut models (Frans et al., 2024) in PyTorch: one network, one training phase,
sampling in 1, 2, 4, ..., 128 steps from the same checkpoint."""

from shortcut_models.backbones import build_backbone
from shortcut_models.checkpoint import load_checkpoint, load_model
from shortcut_models.config import TrainConfig
from shortcut_models.objectives import build_objective
from shortcut_models.sampling import SamplingSpec, sample
from shortcut_models.train import Trainer

__version__ = "0.1.0"

__all__ = [
    "SamplingSpec",
    "TrainConfig",
    "Trainer",
    "build_backbone",
    "build_objective",
    "load_checkpoint",
    "load_model",
    "sample",
]
