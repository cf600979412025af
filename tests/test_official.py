"""`shortcut import-official`: the restricted unpickler and the run folder it writes, on pickles
with the official checkpoint's structure made here without JAX (flax's FrozenDict and optax's
state tuples stood in by classes registered under their module names while pickling)."""

import collections
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, make_backbone, run_main, synthetic_flax_tree

from shortcut_models.backbones.flax_dit import dit_state_from_flax
from shortcut_models.factory import load_run
from shortcut_models.recipes import REFERENCE_DIT


class FrozenDict(dict):
    __module__ = "flax.core.frozen_dict"

    def __reduce__(self):  # as flax's: FrozenDict(a plain dict)
        return FrozenDict, (dict(self),)


ScaleByAdamState = collections.namedtuple(
    "ScaleByAdamState", "count mu nu", module="optax._src.transform"
)
EmptyState = collections.namedtuple("EmptyState", "", module="optax._src.base")


@pytest.fixture
def official_names(monkeypatch):
    """Register the stand-ins under flax's and optax's module paths while a test pickles."""
    places = {
        "flax.core.frozen_dict": {"FrozenDict": FrozenDict},
        "optax._src.transform": {"ScaleByAdamState": ScaleByAdamState},
        "optax._src.base": {"EmptyState": EmptyState},
    }
    for package in ("flax", "flax.core", "optax", "optax._src"):
        monkeypatch.setitem(sys.modules, package, types.ModuleType(package))
    for name, members in places.items():
        module = types.ModuleType(name)
        for attr, cls in members.items():
            setattr(module, attr, cls)
        monkeypatch.setitem(sys.modules, name, module)


def frozen(tree):
    if isinstance(tree, dict):
        return FrozenDict({k: frozen(v) for k, v in tree.items()})
    return np.asarray(tree, dtype=np.float32)


def official_file(path, params, ema=None, step=7):
    """A pickle laid out as the official Checkpoint writes one after process_allgather."""
    zeros = frozen({k: v for k, v in params.items()})
    state = {
        "params": frozen(params),
        "params_ema": frozen(ema if ema is not None else params),
        "opt_state": ((ScaleByAdamState(np.int32(3), zeros, zeros), EmptyState(), EmptyState()),),
        "step": np.int32(step),
    }
    path.write_bytes(pickle.dumps({"train_state": state, "_timestamp": 1.7e9}))
    return path


def test_an_official_checkpoint_becomes_a_run_that_samples(tmp_path, official_names, capsys):
    params = synthetic_flax_tree(classes=10, seed=0)
    ema = synthetic_flax_tree(classes=10, seed=1)
    # the official Checkpoint, saving to a local path, makes PATH a folder holding PATH.tmp
    (tmp_path / "official").mkdir()
    source = official_file(tmp_path / "official" / "official.tmp", params, ema).parent
    run = tmp_path / "run"
    argv = ["import-official", str(source), "--out", str(run), "--num-heads", "4"]
    code, out, err = run_main([*argv, "--input-size", "8"], capsys)
    assert code == 0, err
    loaded = load_run(run)
    assert loaded.checkpoint.step == 7 and loaded.spec.num_classes == 10
    assert (
        loaded.spec.shape == (3, 8, 8) and loaded.checkpoint.config.training.recipe == "reference"
    )
    assert loaded.checkpoint.config.training.eval_weights == "model"  # raw: official use_ema 0
    x = torch.randn(2, 3, 8, 8)
    t, d, y = torch.rand(2), torch.full((2,), 0.25), torch.tensor([3, 10])
    for which, tree in (("model", params), ("ema", ema)):
        expected = make_backbone(
            "dit", input_size=8, in_channels=3, patch_size=2, hidden_size=16, depth=2,
            num_heads=4, mlp_ratio=4.0, num_classes=10, **REFERENCE_DIT,
        )  # fmt: skip
        float32 = {k: np.asarray(v, dtype=np.float32) for k, v in _flat(tree).items()}
        expected.load_state_dict(dit_state_from_flax(_unflat(float32), 10))
        model = load_run(run, weights=which).model
        with torch.no_grad():
            torch.testing.assert_close(model(x, t, d, y), expected.eval()(x, t, d, y))
    code, _, err = run_main(
        ["sample", "--ckpt", str(run), "--out", str(tmp_path / "s"), "--steps", "1", "4"], capsys
    )
    assert code == 0, err
    assert (tmp_path / "s" / "grid_steps_004.png").stat().st_size > 0
    # export and the playground take it like any run
    code, printed, err = run_main(
        ["export", "--ckpt", str(run), "--out", str(tmp_path / "g.onnx"), "--steps", "1"], capsys
    )
    assert code == 0 and "matches the PyTorch sampler" in printed, err
    from shortcut_models.serve import Playground

    assert Playground(run).info()["num_classes"] == 10
    code, _, err = run_main(argv + ["--input-size", "8"], capsys)  # never over a run
    assert_one_line_error(code, err, "already holds a run")


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unflat(flat):
    tree = {}
    for key, value in flat.items():
        *parents, leaf = key.split("/")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


class RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_that_would_run_a_command_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pkl"
    hostile.write_bytes(pickle.dumps({"train_state": {"params": RunsACommand(marker)}}))
    out = tmp_path / "run"
    code, _, err = run_main(["import-official", str(hostile), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "asks to load posix.system")
    assert not marker.exists() and not out.exists()
    # a second route to code: builtins.eval via a reduce of its own
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(b"\x80\x04cbuiltins\neval\n(V__import__('os')\ntR.")
    code, _, err = run_main(["import-official", str(evil), "--out", str(out)], capsys)
    assert_one_line_error(code, err, "builtins.eval")


def test_files_that_are_not_official_checkpoints_are_one_line(tmp_path, official_names, capsys):
    def refused(path, expect, *more):
        out = tmp_path / "run"
        code, _, err = run_main(["import-official", str(path), "--out", str(out), *more], capsys)
        assert_one_line_error(code, err, expect)
        assert not out.exists()

    text = tmp_path / "notes.txt"
    text.write_text("hello")
    refused(text, "not a pickle")
    good = official_file(tmp_path / "good.pkl", synthetic_flax_tree())
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(good.read_bytes()[:5000])
    refused(cut, "truncated")
    other = tmp_path / "other.pkl"
    other.write_bytes(pickle.dumps({"weights": [1, 2]}))
    refused(other, "no train_state.params")
    refused(tmp_path / "missing.pkl", "no file at")
    refused(good, "not one of the DiT presets")  # hidden 16, no --num-heads
    refused(good, "give the side of its inputs", "--num-heads", "4")  # 3 channels
    refused(good, "does not divide", "--num-heads", "3", "--input-size", "8")
    tree = synthetic_flax_tree()
    del tree["PatchEmbed_0"]
    refused(official_file(tmp_path / "nopatch.pkl", tree), "no PatchEmbed_0")
    tree = synthetic_flax_tree()
    tree["DiTBlock_1"]["Dense_4"]["kernel"] = np.zeros((16, 8))
    refused(
        official_file(tmp_path / "shape.pkl", tree),
        "do not fit a DiT",
        *("--num-heads", "4", "--input-size", "8"),
    )
    tree = synthetic_flax_tree()
    tree["FinalLayer_0"]["Dense_1"]["bias"][0] = np.nan
    refused(official_file(tmp_path / "nan.pkl", tree), "holds NaN")
    no_ema = tmp_path / "no_ema.pkl"
    state = pickle.loads(official_file(no_ema, synthetic_flax_tree()).read_bytes())
    del state["train_state"]["params_ema"]  # a train state without EMA (TrainState, not ...Ema)
    no_ema.write_bytes(pickle.dumps(state))
    refused(no_ema, "holds no params_ema", "--weights", "ema")
