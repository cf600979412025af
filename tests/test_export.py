"""`shortcut export`: generator files that reproduce the PyTorch sampler (ONNX, torch.export)."""

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_main, tiny_config, tiny_digit_run, tiny_trainer

from shortcut_models.export import export_generator, run_exported
from shortcut_models.factory import load_run
from shortcut_models.sampling import sample

pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def vector_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vec") / "run"
    tiny_trainer(run, tiny_config(steps=5)).run()
    return run


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return tiny_digit_run(tmp_path_factory.mktemp("digits") / "run")


@pytest.mark.parametrize("fmt, steps", [("onnx", 1), ("pt2", 4)])
def test_vector_generator_matches_the_sampler_at_any_batch(vector_run, tmp_path, fmt, steps):
    out = tmp_path / f"gen.{fmt}"
    report = export_generator(vector_run, out, steps=steps, fmt=fmt)
    assert report.max_difference < 1e-4 and report.inputs == ["noise"]
    run = load_run(vector_run)
    for batch in (1, 7):
        noise = torch.randn(batch, 2)
        expected = sample(run.model, noise, steps, run.objective.sampling_rule())
        got = run_exported(out, fmt, {"noise": noise})
        assert got.shape == (batch, 2)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-4)


def test_conditional_image_generator_with_cfg(digits, tmp_path, capsys):
    out = tmp_path / "digits.onnx"
    argv = ["export", "--ckpt", str(digits), "--out", str(out), "--steps", "2", "--cfg", "1.5"]
    code, printed, err = run_main(argv, capsys)
    assert code == 0, err
    assert "inputs noise, labels" in printed and "matches the PyTorch sampler" in printed
    run = load_run(digits)
    noise, labels = torch.randn(3, 1, 32, 32), torch.tensor([0, 7, 9])
    x = sample(run.model, noise, 2, run.objective.sampling_rule(), labels, 1.5, 10)
    got = run_exported(out, "onnx", {"noise": noise, "labels": labels})
    torch.testing.assert_close(got, (x.clamp(-1, 1) + 1) / 2, rtol=0, atol=1e-4)
    assert float(got.min()) >= 0 and float(got.max()) <= 1
    assert np.isfinite(got.numpy()).all()


def test_u_net_generator_matches_the_sampler(tmp_path):
    """The demo's backbone (convolutions, GroupNorm, upsampling, attention) exports too."""
    run_dir = tmp_path / "unet"
    config = tiny_config(
        data="mnist", backbone="unet", backbone_options={"channels": [8, 16], "num_heads": 2},
        batch_size=8, steps=1,
    )  # fmt: skip
    tiny_trainer(run_dir, config).run()
    out = tmp_path / "unet.onnx"
    report = export_generator(run_dir, out, steps=1, fmt="onnx")
    assert report.max_difference < 1e-4
    run = load_run(run_dir)
    noise, labels = torch.randn(2, 1, 32, 32), torch.tensor([3, 5])
    x = sample(run.model, noise, 1, run.objective.sampling_rule(), labels)
    got = run_exported(out, "onnx", {"noise": noise, "labels": labels})
    torch.testing.assert_close(got, (x.clamp(-1, 1) + 1) / 2, rtol=0, atol=1e-4)


def test_export_errors_are_one_line(vector_run, tmp_path, capsys):
    base = ["export", "--ckpt", str(vector_run), "--out", str(tmp_path / "g.onnx")]
    code, _, err = run_main([*base, "--steps", "3"], capsys)
    assert_one_line_error(code, err, "power-of-two number of steps, got 3")
    code, _, err = run_main([*base, "--cfg", "2"], capsys)
    assert_one_line_error(code, err, "unconditional: --cfg does not apply")
    code, _, err = run_main([*base, "--decode"], capsys)
    assert_one_line_error(code, err, "--decode applies only to models trained on latents")
    ct = tmp_path / "ct"
    tiny_trainer(ct, tiny_config(objective="consistency_training", steps=2)).run()
    argv = ["export", "--ckpt", str(ct), "--out", str(tmp_path / "c.onnx"), "--steps", "2"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "--no-renoise-sampling")
    assert not (tmp_path / "g.onnx").exists()
