"""Image data, image sampling and the demo, at tiny sizes."""

import json

import numpy as np
import pytest
import torch
from helpers import config_tree, tiny_trainer

from shortcut_models.cli import main
from shortcut_models.config import TrainConfig
from shortcut_models.data import build_data
from shortcut_models.data import mnist as mnist_module
from shortcut_models.data.images import ImageData, to_uint8
from shortcut_models.demo import DemoOptions, announcement, run_demo
from shortcut_models.errors import UsageError

TINY_DIT = {"hidden_size": 32, "depth": 1, "num_heads": 2, "patch_size": 8}


@pytest.fixture(scope="module")
def mnist():
    return build_data("mnist")


def test_mnist_shape_range_and_labels(mnist):
    assert len(mnist) == 60000 and mnist.shape == (1, 32, 32) and mnist.num_classes == 10
    x, y = mnist.batch(0, 128, seed=0)
    assert x.shape == (128, 1, 32, 32) and x.dtype == torch.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.all(x[:, :, :2] == -1) and torch.all(x[:, :, :, -2:] == -1)  # padding
    assert set(y.tolist()) <= set(range(10)) and len(set(y.tolist())) > 5
    test = mnist_module.digit_data("mnist", "test")
    assert len(test) == 10000


def test_image_batches_cover_an_epoch_once_and_are_deterministic():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1, 1).repeat(1, 1, 2, 2)
    data = ImageData("ten", images, torch.arange(10), num_classes=10)
    seen = torch.cat([data.batch(k, 3, seed=1)[1] for k in range(3)])
    assert len(set(seen.tolist())) == 9  # 3 batches of 3 from one permutation, last image dropped
    assert torch.equal(data.batch(4, 3, seed=1)[1], data.batch(4, 3, seed=1)[1])
    assert not torch.equal(data.batch(0, 3, seed=1)[1], data.batch(3, 3, seed=1)[1])


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_module, "FASHION_DIR", tmp_path)
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        build_data("fashion-mnist")


def test_uint8_round_trip():
    x = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    assert torch.equal(to_uint8(x.float() / 127.5 - 1), x)


def test_class_conditional_image_training_and_sampling(tmp_path, capsys):
    config = TrainConfig.from_tree(
        config_tree(data="mnist", backbone="dit", steps=2, batch_size=16, backbone_options=TINY_DIT)
    )
    assert config.objective.name == "shortcut"
    trainer = tiny_trainer(tmp_path / "run", config)
    trainer.run()
    argv = ["sample", "--ckpt", str(tmp_path / "run"), "--out", str(tmp_path / "s"), "--num", "12"]
    assert main(argv + ["--steps", "1", "2", "--cfg", "2", "--class", "3", "--npz"]) == 0
    assert len(list((tmp_path / "s" / "steps_001").glob("*.png"))) == 12
    assert (tmp_path / "s" / "grid_steps_002.png").exists()
    with np.load(tmp_path / "s" / "samples_steps_001.npz") as f:
        assert f["arr_0"].shape == (12, 32, 32, 1) and f["arr_0"].dtype == np.uint8
    code = main(argv + ["--class", "12"])
    assert code == 2 and "--class must be in 0..9" in capsys.readouterr().err


def test_demo_announcement_says_device_precision_steps_and_finish():
    from datetime import datetime

    from shortcut_models.devices import Decision
    from shortcut_models.train import Plan

    line = announcement(
        Decision("cpu", "no CUDA or Apple GPU, 2 CPU threads"),
        Decision("fp32", "this CPU computes bf16 only by emulation (no AMX or AVX512-BF16)"),
        Plan(steps=1234, rate=2.5, seconds_left=400.0),
        7.0,
        (1, 2, 4, 128),
        200,
        60.0,
        datetime(2026, 12, 4, 12, 0, 0),
    )
    assert line == (
        "demo: cpu (no CUDA or Apple GPU, 2 CPU threads); fp32 (this CPU computes bf16 only by "
        "emulation (no AMX or AVX512-BF16)); 1,234 training steps (planned for 7 minutes at 2.50 "
        "steps/s); then 200 samples at each of 4 step budgets (about 1.0 min); done at about "
        "12:07 (8 min from now)"
    )
    fixed = announcement(
        Decision("cuda", "asked for (--device)"),
        Decision("bf16", "the GPU computes bf16"),
        Plan(steps=500, rate=10.0, seconds_left=45.0),
        0.0,
        (1,),
        10,
        15.0,
        datetime(2026, 12, 4, 23, 59, 30),
    )
    assert "500 training steps (at 10.00 steps/s)" in fixed and "done at about 00:00" in fixed
    first = announcement(
        Decision("cpu", "r"), Decision("fp32", "r"), Plan(steps=10, rate=1.0, seconds_left=300.0),
        7.0, (1, 4), 200, 60.0, datetime(2026, 12, 4, 12, 0, 0), 240.0, 4495,
    )  # fmt: skip
    assert first.endswith(
        "then 200 samples at each of 2 step budgets (about 1.0 min), scored in about 4.0 min, "
        "4,495 reference images measured once first; done at about 12:10 (10 min from now)"
    )
    assert "training done" in announcement(
        Decision("cpu", "r"), Decision("fp32", "r"), None, 7.0, (1,), 10, 5.0, datetime(2026, 1, 1)
    )


@pytest.mark.slow
def test_demo_says_first_what_it_will_do_and_when(tmp_path, tiny_digits, monkeypatch, capsys):
    """The first line, before the progress bar has gone far: device, precision and why, the step
    count and the finish time from the first timed steps; --steps replaces the recipe's budget."""
    from shortcut_models.metrics.digits import DigitFeatures
    from shortcut_models.train import PLAN_STEPS

    monkeypatch.setattr(DigitFeatures, "for_dataset", lambda *a, **k: tiny_digits)
    steps = PLAN_STEPS + 3
    options = DemoOptions(
        out=tmp_path / "demo", steps=steps, batch_size=8, num=10, progress=False, budgets=(2, 1)
    )
    metrics = run_demo(options)
    assert set(metrics) == {"1", "2"}
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("demo: cpu (") and f"; {steps} training steps (at " in lines[0]
    assert "; then 10 samples at each of 2 step budgets" in lines[0]
    assert "done at about" in lines[0] and "min from now)" in lines[0]
    precision = lines[0].split("; ")[1]
    assert precision.startswith(("fp32 (", "bf16 (this CPU computes bf16 in hardware"))
    again = run_demo(options)  # resumed: nothing to train, the line says so
    assert {n: m["fd_digits"] for n, m in again.items()} == {
        n: m["fd_digits"] for n, m in metrics.items()
    }
    assert "training done" in capsys.readouterr().err.splitlines()[0]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, tiny_digits, monkeypatch):
    from shortcut_models.metrics.digits import DigitFeatures

    monkeypatch.setattr(DigitFeatures, "for_dataset", lambda *a, **k: tiny_digits)
    options = DemoOptions(out=tmp_path / "demo", steps=2, batch_size=8, num=10, progress=False)
    metrics = run_demo(options)
    assert set(metrics) == {"1", "2", "4", "8", "16", "32", "64", "128"}
    for name in (
        "all_steps.png",
        "steps_001.png",
        "steps_128.png",
        "metrics.md",
        "run/config.json",
    ):
        assert (tmp_path / "demo" / name).exists(), name
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    budgets = saved["budgets"]
    assert budgets["1"]["fd_digits"] > 0 and 0 <= budgets["128"]["class_coverage"] <= 1
    config = saved["config"]
    assert config["training"]["recipe"] == "cpu-small" and config["backbone"]["name"] == "unet"
    # the default guidance per budget: 2.5 at one step, 2 at two, 1.75 from four on
    assert {n: m["cfg"] for n, m in budgets.items()} == {
        "1": 2.5,
        "2": 2.0,
        **{str(n): 1.75 for n in (4, 8, 16, 32, 64, 128)},
    }
    assert (
        "CFG 2.5 (2 from 2 steps, 1.75 from 4 steps)"
        in (tmp_path / "demo" / "metrics.md").read_text()
    )
    assert "FD-digits" in (tmp_path / "demo" / "metrics.md").read_text()
    with np.load(tmp_path / "demo" / "samples.npz") as arrays:  # exact-size images
        assert arrays["steps_001"].shape == (10, 32, 32, 1)
    from PIL import Image

    assert Image.open(tmp_path / "demo" / "steps_001.png").size == (2 + 10 * 98, 2 + 98)


def test_demo_trains_the_colour_recipe(tmp_path, tiny_digits, monkeypatch):
    """--recipe cpu-colour: the demo trains MeanFlow on the wider U-Net and samples it."""
    from shortcut_models.metrics.digits import DigitFeatures

    monkeypatch.setattr(DigitFeatures, "for_dataset", lambda *a, **k: tiny_digits)
    options = DemoOptions(
        out=tmp_path / "demo", recipe="cpu-colour", steps=2, batch_size=8, num=10,
        progress=False, budgets=(1, 4),
    )  # fmt: skip
    assert set(run_demo(options)) == {"1", "4"}
    config = json.loads((tmp_path / "demo" / "metrics.json").read_text())["config"]
    assert config["training"]["recipe"] == "cpu-colour"
    assert config["objective"]["name"] == "meanflow"
    assert config["backbone"]["options"]["channels"] == [32, 64, 128]


def test_guidance_schedule_by_budget():
    """--cfg SCALE [STEPS:SCALE ...]: the scale of the last start at or below the budget."""
    from shortcut_models.guidance import describe_schedule, parse_entry, scale_for, schedule_from

    schedule = schedule_from([parse_entry(t) for t in ("32:1.5", "2", "4:1.75")])
    assert schedule == ((1, 2.0), (4, 1.75), (32, 1.5))
    assert [scale_for(schedule, n) for n in (1, 2, 4, 16, 32, 128)] == [2, 2, 1.75, 1.75, 1.5, 1.5]
    assert describe_schedule(schedule) == "2 (1.75 from 4 steps, 1.5 from 32 steps)"
    assert describe_schedule(((1, 1.5),)) == "1.5"
    for bad in ("x", "4:", "0:2", "2:-1", "2:inf", "nan", "a:2"):
        with pytest.raises(ValueError):
            parse_entry(bad)
    with pytest.raises(ValueError, match="from 1 step"):
        schedule_from([(4, 1.5)])
    with pytest.raises(ValueError, match="two guidance scales from 4 steps"):
        schedule_from([(1, 2.0), (4, 1.5), (4, 1.75)])


def test_demo_refuses_a_guidance_schedule_without_a_first_scale(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--cfg", "4:1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "shortcut demo: error: --cfg: the first guidance scale applies from 1 step: "
        "give a bare SCALE"
    ]
    assert not (tmp_path / "d").exists()


def test_a_data_predicting_unet_steps_to_its_prediction():
    """prediction='data': the body predicts the clean image and the call returns the velocity
    that reaches it at t = 1, so one step from noise is the body's output (x + 1 * s = x^);
    near t = 1 the gap 1 - t is held at 0.05. 'velocity' returns the body's output as is."""
    from shortcut_models.backbones.unet import UNet, UNetOptions

    torch.manual_seed(0)
    x, d = torch.randn(3, 3, 8, 8), torch.ones(3)
    for prediction in ("data", "velocity"):
        net = UNet(UNetOptions(channels=[8, 16], patch=2, prediction=prediction), (3, 8, 8))
        torch.nn.init.normal_(net.out.weight, std=0.1)
        for t, gap in ((torch.zeros(3), 1.0), (torch.full((3,), 0.99), 0.05)):
            body = net.body(x, net.cond(t, d))
            got = net(x, t, d)
            want = (body - x) / gap if prediction == "data" else body
            torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="prediction must be one of"):
        UNetOptions(prediction="noise")
