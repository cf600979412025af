import pytest
import torch

from shortcut_models.config import TrainConfig
from shortcut_models.train import RunOptions, Trainer

torch.set_num_threads(2)

TINY = {"hidden_size": 32, "depth": 1}


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        data="checkerboard",
        objective="shortcut",
        steps=12,
        batch_size=64,
        lr=1e-3,
        backbone_options=dict(TINY),
    )
    values.update(overrides)
    return TrainConfig(**values)


def tiny_trainer(out_dir, config=None, **options) -> Trainer:
    opts = dict(out_dir=out_dir, progress=False, log_every=1, save_every=1000, tensorboard=False)
    opts.update(options)
    return Trainer(config or tiny_config(), RunOptions(**opts))


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"
