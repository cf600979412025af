"""The extension points: the data registry (the `array` source, a custom source, entry-point
plugins) and options declared once as dataclass fields (flags, README tables)."""

import inspect
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_main

from shortcut_models.backbones import BACKBONE_OPTIONS, BACKBONES, build_backbone
from shortcut_models.cli.flags import backbone_options, option_tables
from shortcut_models.data import build_data, dataset_names, register_dataset
from shortcut_models.data import registry as data_registry
from shortcut_models.errors import UsageError
from shortcut_models.metrics import sliced_wasserstein

README = Path(__file__).resolve().parents[1] / "README.md"
OPTIONS_PAGE = README.parent / "docs" / "options.md"
MEANS = np.array(
    [[1.5, 0, 0, 0, 0], [-1.5, 0, 0, 0, 0], [0, 1.5, 1.5, 0, 0], [0, 0, 0, -1.5, 1.5]],
    dtype=np.float32,
)


def mixture(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(MEANS), n)
    return (MEANS[y] + 0.3 * rng.standard_normal((n, 5))).astype(np.float32), y


def test_array_data_learns_a_5d_gaussian_mixture(tmp_path, capsys):
    x, y = mixture(2000, 0)
    np.savez(tmp_path / "gmm.npz", x=x, y=y)
    train = ["train", "--data", "array", "--data-path", str(tmp_path / "gmm.npz")]
    train += ["--steps", "400", "--batch-size", "128", "--lr", "2e-3", "--ema-decay", "0.9"]
    train += ["--hidden-size", "64", "--out", str(tmp_path / "run"), "--no-progress"]
    code, _, err = run_main([*train, "--no-tensorboard"], capsys)
    assert code == 0, err
    argv = ["evaluate", "--ckpt", str(tmp_path / "run"), "--steps", "1", "8", "--num", "500"]
    code, out, err = run_main([*argv, "--json", str(tmp_path / "e.json")], capsys)
    assert code == 0, err
    scores = json.loads((tmp_path / "e.json").read_text())[str(tmp_path / "run")]
    noise = sliced_wasserstein(torch.randn(500, 5), torch.from_numpy(x[:500]))
    assert scores["1"]["sliced_w2"] < 0.5 * noise, (scores, noise)
    assert scores["8"]["sliced_w2"] < 0.3 * noise, (scores, noise)
    # conditional sampling puts a class's samples around its own component
    out_dir = tmp_path / "samples"
    argv = ["sample", "--ckpt", str(tmp_path / "run"), "--steps", "1", "--num", "400"]
    code, _, err = run_main([*argv, "--class", "2", "--out", str(out_dir)], capsys)
    assert code == 0, err
    with np.load(out_dir / "samples.npz") as saved:
        samples = saved["steps_1"]
    assert samples.shape == (400, 5)
    assert np.linalg.norm(samples.mean(0) - MEANS[2]) < 0.5
    assert (out_dir / "samples.png").stat().st_size > 0


@pytest.mark.parametrize(
    "array, expect",
    [
        (np.zeros((4, 2, 2)), "expected an array [N, D]"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN or inf"),
        ({"x": np.zeros((4, 2)), "y": np.array([0.5, 1, 2, 3])}, "integer labels"),
        ({"points": np.zeros((4, 2))}, "holds no 'x'"),
    ],
)
def test_bad_arrays_are_one_line_errors(tmp_path, capsys, array, expect):
    path = tmp_path / "a.npz"
    if isinstance(array, dict):
        np.savez(path, **array)
    else:
        path = tmp_path / "a.npy"
        np.save(path, array)
    argv = ["train", "--data", "array", "--data-path", str(path), "--out", str(tmp_path / "r")]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, expect)


def test_data_options_are_checked_per_source(tmp_path, capsys):
    argv = ["train", "--data", "array", "--out", str(tmp_path / "r")]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "data set 'array' needs --data-path")
    code, _, err = run_main([*argv, "--data-path", "x.npy", "--resolution", "8"], capsys)
    assert_one_line_error(code, err, "data set 'array' does not take --resolution")


def readme_block(heading: str, language: str) -> str:
    text = README.read_text()
    section = text[text.index(heading) :]
    return re.search(rf"```{language}\n(.*?)```", section, re.S).group(1)


def test_readme_custom_source_example_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(data_registry, "_REGISTRY", dict(data_registry._REGISTRY))
    code = readme_block("## Bring your own data", "python")
    assert code.count("\n") <= 13  # the README promises a short example
    code = code.replace('"runs/ring"', repr(str(tmp_path / "ring")))
    code = code.replace('"steps": 4000', '"steps": 30')
    exec(compile(code, "README.md", "exec"), {})
    assert "ring" in dataset_names("vector")
    source = build_data("ring")
    assert torch.equal(source.sample(8, 0), source.sample(8, 0))
    assert (tmp_path / "ring" / "checkpoint.safetensors").is_file()


def test_a_registered_source_takes_its_declared_options(monkeypatch):
    from dataclasses import dataclass

    from shortcut_models.options import option

    monkeypatch.setattr(data_registry, "_REGISTRY", dict(data_registry._REGISTRY))

    @dataclass
    class Options:
        radius: float = option(1.0, "circle radius")

    built = {}
    register_dataset("circle", lambda radius: built.setdefault("r", radius), Options, kind="vector")
    build_data("circle", {"radius": 2.5})
    assert built["r"] == 2.5
    with pytest.raises(UsageError, match="does not take --width"):
        build_data("circle", {"width": 1})
    with pytest.raises(ValueError, match="kind must be one of"):
        register_dataset("bad", lambda: None, kind="audio")


def test_entry_point_plugins_register_their_sets(monkeypatch, capsys):
    class Entry:
        name, value = "ring", "mypackage.data:register"

        def load(self):
            return lambda: register_dataset("plugin-set", lambda: None, kind="vector")

    monkeypatch.setattr(data_registry, "_REGISTRY", dict(data_registry._REGISTRY))
    monkeypatch.setattr(data_registry, "_plugins_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [Entry()])
    assert "plugin-set" in dataset_names()

    class Broken(Entry):
        def load(self):
            raise ImportError("no module named mypackage")

    monkeypatch.setattr(data_registry, "_plugins_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [Broken()])
    code, out, err = run_main(["train", "--help"], capsys)  # named in one line, then skipped
    assert code == 0 and "--data DATA" in out
    assert err.strip() == (
        "warning: data set plugin 'ring' (mypackage.data:register) failed and is skipped: "
        "ImportError: no module named mypackage"
    )


def test_the_option_tables_are_the_generated_ones():
    """Regenerate with: python -c "from shortcut_models.cli.flags import option_tables as t;
    print(t())" and paste between the markers in docs/options.md."""
    text = OPTIONS_PAGE.read_text()
    start, end = "<!-- options:begin -->\n", "<!-- options:end -->"
    assert text[text.index(start) + len(start) : text.index(end)].strip() == option_tables()


def test_each_backbone_is_built_from_its_options_dataclass():
    """A backbone's defaults are stated once, in its options dataclass: the constructor takes
    that dataclass (and the data's shape), and a changed option reaches the network."""
    assert set(BACKBONE_OPTIONS) == set(BACKBONES)
    for kind, network in BACKBONES.items():
        parameters = list(inspect.signature(network).parameters)
        assert parameters[:3] == ["options", "shape", "num_classes"], kind
    shapes = {"mlp": (2,), "dit": (1, 8, 8), "unet": (1, 8, 8)}
    for kind, shape in shapes.items():
        small = BACKBONE_OPTIONS[kind](time_scale=7.0)
        assert build_backbone(kind, small, shape).cond.t_embedder.scale == 7.0, kind


def test_every_generated_flag_is_in_the_train_help(capsys):
    from shortcut_models.cli.flags import config_options, data_options, objective_options

    code, out, _ = run_main(["train", "--help"], capsys)
    assert code == 0
    for option in [*config_options(), *objective_options(), *backbone_options(), *data_options()]:
        assert option.flag in out, option.flag


def test_one_flag_has_one_meaning_across_owners():
    """Two owners that give the same option name different help texts are refused: the flag
    is merged by name, so it could not tell the user which meaning it has."""
    from dataclasses import dataclass

    from shortcut_models.options import collect, option

    @dataclass
    class First:
        scale: float = option(1.0, "the time scale")

    @dataclass
    class Second:
        scale: float = option(2.0, "the image scale")

    @dataclass
    class Third:
        scale: float = option(3.0)  # only a default of its own: fine

    assert collect({"a": First, "c": Third})[0].defaults == {"a": 1.0, "c": 3.0}
    with pytest.raises(TypeError, match="option 'scale' of b"):
        collect({"a": First, "b": Second})
