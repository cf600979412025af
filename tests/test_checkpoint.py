"""Checkpoints: safetensors round trip, atomic writes, foreign files."""

import pytest
import torch
from helpers import tiny_config, tiny_trainer
from safetensors.torch import save_file

from shortcut_models.checkpoint import load_checkpoint, save_checkpoint
from shortcut_models.errors import UsageError
from shortcut_models.factory import load_run
from shortcut_models.files import atomic_write


def test_round_trip_restores_weights_ema_and_optimizer(run_dir):
    trainer = tiny_trainer(run_dir, tiny_config(steps=3))
    trainer.run()
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint.step == 3 and checkpoint.config == trainer.config
    fresh = tiny_trainer(run_dir, trainer.config, resume=True)
    for a, b in zip(trainer.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(trainer.ema.state_dict().values(), fresh.ema.state_dict().values()):
        assert torch.equal(a, b)
    old, new = trainer.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert old.keys() == new.keys()
    for index in old:
        for key in old[index]:
            assert torch.equal(torch.as_tensor(old[index][key]), torch.as_tensor(new[index][key]))
    # EMA and raw weights really differ, so loading the wrong one would be caught
    model = load_run(run_dir, "ema").model
    raw = load_run(run_dir, "model").model
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), raw.state_dict().values())
    )


def test_failed_write_keeps_the_previous_checkpoint(run_dir):
    trainer = tiny_trainer(run_dir, tiny_config(steps=2))
    trainer.run()
    before = (run_dir / "checkpoint.safetensors").read_bytes()

    def broken(tmp):
        tmp.write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(run_dir / "checkpoint.safetensors", broken)
    assert (run_dir / "checkpoint.safetensors").read_bytes() == before
    assert not [p for p in run_dir.iterdir() if p.name.endswith(".tmp")]
    assert load_checkpoint(run_dir).step == 2


def test_save_overwrites_atomically(run_dir):
    trainer = tiny_trainer(run_dir, tiny_config(steps=2))
    trainer.run()
    trainer.step = 7
    parts = {"model": trainer.model.state_dict(), "ema": trainer.ema.state_dict()}
    save_checkpoint(run_dir, config=trainer.config, step=7, parts=parts)
    assert load_checkpoint(run_dir).step == 7


def test_foreign_and_corrupt_files_are_clear_errors(tmp_path):
    foreign = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(UsageError, match="not a shortcut-models checkpoint"):
        load_checkpoint(foreign)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(UsageError, match="not a readable safetensors file"):
        load_checkpoint(garbage)
    with pytest.raises(UsageError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_a_config_stored_before_sections_still_loads():
    """Checkpoints written before the config had sections store it flat: read as the same
    settings, and written back by section."""
    from shortcut_models.config import TrainConfig

    flat = {
        "data": "mnist", "data_options": {}, "objective": "shortcut",
        "objective_options": {"bootstrap_ema": False}, "backbone": "unet",
        "backbone_options": {"channels": [16, 32, 64]}, "steps": 2300, "batch_size": 64,
        "lr": 0.001, "beta1": 0.9, "beta2": 0.999, "weight_decay": 0.1, "warmup_steps": 0,
        "lr_schedule": "cosine", "grad_clip": 0.0, "ema_decay": 0.99, "minutes": 0.0, "seed": 0,
        "eval_weights": "ema", "init_from": "", "recipe": "cpu-small",
    }  # fmt: skip
    config = TrainConfig.from_dict(flat)
    assert config.optimisation.lr == 0.001 and config.training.steps == 2300
    assert config.objective.options.bootstrap_ema is False
    assert config.backbone.options.channels == [16, 32, 64]
    assert config.backbone.options.patch == 1  # the default: it was not stored
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert set(config.to_dict()) == {"data", "objective", "backbone", "training", "optimisation"}
