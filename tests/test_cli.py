"""CLI: bad input ends as one line on stderr with exit code 2, never a traceback."""

import subprocess
import sys

import pytest
import torch
from helpers import assert_one_line_error, run_main, tiny_config, tiny_trainer
from safetensors.torch import save_file

from shortcut_models.cli import main
from shortcut_models.errors import UsageError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    tiny_trainer(run_dir, tiny_config(steps=3)).run()
    return run_dir


def test_unknown_data_set(tmp_path, capsys):
    code, _, err = run_main(["train", "--out", str(tmp_path / "r"), "--data", "nope"], capsys)
    assert_one_line_error(code, err, "unknown data set 'nope' (choose from: checkerboard")


def test_negative_sizes(tmp_path, capsys):
    code, _, err = run_main(["train", "--out", str(tmp_path / "r"), "--batch-size", "-4"], capsys)
    assert_one_line_error(code, err, "batch-size must be positive")
    code, _, err = run_main(["train", "--out", str(tmp_path / "r"), "--steps", "0"], capsys)
    assert_one_line_error(code, err, "steps must be positive")


def test_option_of_another_objective(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--objective", "flow_matching"]
    code, _, err = run_main(argv + ["--bootstrap-every", "4"], capsys)
    assert_one_line_error(code, err, "does not apply to objective 'flow_matching'")


def test_bad_denoise_timesteps(tmp_path, capsys):
    argv = ["train", "--out", str(tmp_path / "r"), "--denoise-timesteps", "100"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "power of two")


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run_main(["train", "--out", str(blocker / "run")], capsys)
    assert_one_line_error(code, err, "cannot write to output folder")


def test_non_power_of_two_steps_for_a_shortcut_model(trained, tmp_path, capsys):
    argv = ["sample", "--ckpt", str(trained), "--out", str(tmp_path / "s"), "--steps", "1", "3"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "power-of-two number of steps, got 3")
    argv = ["evaluate", "--ckpt", str(trained), "--steps", "256", "--num", "10"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "at most 128 steps")


def test_missing_and_foreign_checkpoints(tmp_path, capsys):
    code, _, err = run_main(["evaluate", "--ckpt", str(tmp_path / "nothing")], capsys)
    assert_one_line_error(code, err, "no checkpoint at")
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3)}, str(foreign))
    code, _, err = run_main(["sample", "--ckpt", str(foreign), "--out", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "not a shortcut-models checkpoint")


def test_resume_without_checkpoint_and_with_changed_config(trained, tmp_path, capsys):
    code, _, err = run_main(["train", "--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert_one_line_error(code, err, "nothing to resume")
    argv = ["train", "--out", str(trained), "--resume", "--lr", "0.5", "--no-progress"]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "different config (optimisation.lr)")


def test_sample_and_evaluate_write_their_files(trained, tmp_path, capsys):
    argv = ["sample", "--ckpt", str(trained), "--out", str(tmp_path / "s"), "--num", "50"]
    code, out, _ = run_main(argv + ["--steps", "1", "2"], capsys)
    assert code == 0
    import numpy as np

    with np.load(tmp_path / "s" / "samples.npz") as arrays:
        assert sorted(arrays) == ["steps_1", "steps_2"] and arrays["steps_1"].shape == (50, 2)
    assert (tmp_path / "s" / "samples.png").stat().st_size > 0
    argv = ["evaluate", "--ckpt", str(trained), "--steps", "1", "2", "--num", "64"]
    code, out, _ = run_main(argv + ["--json", str(tmp_path / "e.json")], capsys)
    assert code == 0 and "sliced W2" in out
    import json

    result = json.loads((tmp_path / "e.json").read_text())
    assert set(result[str(trained)]) == {"1", "2"}
    assert set(result[str(trained)]["1"]) == {"sliced_w2", "w2"}


def test_module_entry_point_and_help():
    done = subprocess.run(
        [sys.executable, "-m", "shortcut_models", "train", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for flag in ("--bootstrap-every", "--bootstrap-ema", "--resume", "--denoise-timesteps"):
        assert flag in done.stdout


def test_message_flags_and_debug(tmp_path, capsys, monkeypatch):
    """--quiet drops info lines, --verbose adds the traceback of a one-line error as a debug
    line, --debug and SHORTCUT_DEBUG=1 re-raise it; ranks other than 0 say only errors."""
    base = ["train", "--data", "moons", "--steps", "2", "--hidden-size", "8", "--depth", "1",
            "--no-progress", "--no-tensorboard", "--recipe", "reference"]  # fmt: skip
    code, _, err = run_main([*base, "--out", str(tmp_path / "a")], capsys)
    assert code == 0 and "recipe reference:" in err
    code, _, err = run_main([*base, "--out", str(tmp_path / "b"), "--quiet"], capsys)
    assert code == 0 and err == ""
    bad = ["train", "--out", str(tmp_path / "c"), "--steps", "0"]
    code, _, err = run_main([*bad, "--verbose"], capsys)
    assert (
        code == 2 and "Traceback" in err and err.strip().endswith("steps must be positive, got 0")
    )
    with pytest.raises(UsageError, match="steps must be positive"):
        main([*bad, "--debug"])
    monkeypatch.setenv("SHORTCUT_DEBUG", "1")
    with pytest.raises(UsageError):
        main(bad)
    monkeypatch.delenv("SHORTCUT_DEBUG")
    monkeypatch.setenv("RANK", "1")
    code, _, err = run_main([*base, "--out", str(tmp_path / "d")], capsys)
    assert code == 0 and err == ""
    code, _, err = run_main(bad, capsys)
    assert code == 2 and err.startswith("rank 1: shortcut train: error: steps must be positive")


def test_print_config_names_where_each_value_came_from(tmp_path, capsys):
    """The one merge: defaults < recipe < flags, for the config and the run options alike;
    --print-config shows every value by section with its source and trains nothing."""

    def printed(*flags):
        argv = ["train", "--out", str(tmp_path / "r"), *flags, "--print-config"]
        code, out, _ = run_main(argv, capsys)
        assert code == 0 and not (tmp_path / "r").exists()
        return {line.strip() for line in out.splitlines()}

    recipe = ["--recipe", "cpu-small", "--data", "mnist"]
    lines = printed(*recipe, "--lr", "2e-3", "--precision", "fp32", "--bootstrap-every", "4")
    assert "lr = 0.002  # flag" in lines  # a flag beats the recipe's 1e-3
    assert "lr_schedule = 'cosine'  # recipe cpu-small" in lines
    assert "bootstrap_ema = False  # recipe cpu-small" in lines
    assert "bootstrap_every = 4  # flag" in lines
    assert "channels = [16, 32, 64]  # recipe cpu-small" in lines
    assert "beta1 = 0.9  # default" in lines
    assert "precision = 'fp32'  # flag" in lines  # a run option, merged the same way
    assert {"[data]", "[objective]", "[backbone]", "[training]", "[optimisation]", "[run]"} <= lines
    assert "precision = 'fp32'  # recipe cpu-small" in printed(*recipe)
    assert "memory_format = 'auto'  # recipe cpu-small" in printed(*recipe)
    assert "minutes = 8.0  # recipe cpu-small" in printed(*recipe)
    assert "minutes = 0.0  # flag" in printed(*recipe, "--steps", "10")  # steps replace it
    assert "hidden_size = 128  # preset DiT-T/4" in printed("--backbone", "DiT-T/4")
    assert "time_scale = 1.0  # objective meanflow" in printed("--objective", "meanflow")
    assert "time_scale = 2.0  # flag" in printed("--objective", "meanflow", "--time-scale", "2")
