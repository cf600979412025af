"""`shortcut import-official`: the restricted unpickler and the run folder it writes, on pickles
with the official checkpoint's structure made here without JAX (flax's FrozenDict and optax's
state tuples stood in by classes registered under their module names while pickling)."""

import collections
import json
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_main, synthetic_flax_tree

from shortcut_models.factory import load_run

RECORDED = Path(__file__).parent / "data" / "official_forward_tiny.json"


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
    # the official DiT's own output on these parameters, recorded by
    # benchmarks/record_official_forward.py: an expectation the conversion did not compute
    recorded = json.loads(RECORDED.read_text())
    x = torch.tensor(recorded["x_nhwc"]).permute(0, 3, 1, 2)
    t, y = torch.tensor(recorded["t"]), torch.tensor(recorded["y"])
    d = torch.pow(2.0, -torch.tensor(recorded["level"]))  # official dt: log2 of the sections
    for which, seed in (("model", "0"), ("ema", "1")):
        expected = torch.tensor(recorded["output_nhwc_by_seed"][seed], dtype=torch.float64)
        expected = expected.permute(0, 3, 1, 2)
        model = load_run(run, weights=which).model
        with torch.no_grad():
            out = model(x, t, d, y).double()
        # float32 in both codes: summation order differs (parity.py's relative tolerance)
        scale = max(1.0, expected.abs().max().item())
        torch.testing.assert_close(out, expected, atol=1e-5 * scale, rtol=0)
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
    refused(official_file(tmp_path / "bias.pkl", tree), "has 8 outputs but 16 biases")
    tree["DiTBlock_1"]["Dense_4"]["bias"] = np.zeros(8)
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


def _raw_nested_pickle(levels):
    """{"train_state": {"params": {"a": {"a": ...}}}} `levels` deep, written as pickle opcodes
    (pickle.dumps itself would recurse that deep)."""
    key = b"X\x01\x00\x00\x00a"
    body = b"}X\x0b\x00\x00\x00train_state}X\x06\x00\x00\x00params}" + (key + b"}") * levels
    return b"\x80\x02" + body + b"s" * (levels + 2) + b"."


def test_hostile_tree_shapes_end_in_bounded_time_as_one_line(tmp_path, capsys):
    import time

    def refused(data, expect):
        path = tmp_path / "hostile.pkl"
        path.write_bytes(data)
        out = tmp_path / "run"
        tick = time.perf_counter()
        code, _, err = run_main(["import-official", str(path), "--out", str(out)], capsys)
        assert time.perf_counter() - tick < 20  # the shared tree took 2^40 visits before
        assert_one_line_error(code, err, expect)
        assert not out.exists()

    shared = {"w": np.zeros(2, dtype=np.float32)}
    for _ in range(40):  # 714 bytes: each level holds the one below twice
        shared = {"a": shared, "b": shared}
    data = pickle.dumps({"train_state": {"params": shared}})
    assert len(data) < 2000
    refused(data, "nests deeper than 16 levels")
    looped = {}
    looped["a"] = looped
    refused(pickle.dumps({"train_state": {"params": looped}}), "contains itself")
    refused(_raw_nested_pickle(100_000), "nests deeper than 16 levels")
    # sharing within the bounds is fine (params_ema may be params): checked once, then read on
    shared = {"w": np.zeros(2, dtype=np.float32)}
    for _ in range(14):
        shared = {"a": shared, "b": shared}
    refused(pickle.dumps({"train_state": {"params": shared}}), "no PatchEmbed_0")


def test_damaged_official_trees_are_one_line_and_write_nothing(tmp_path, official_names, capsys):
    sizes = ("--num-heads", "4", "--input-size", "8")

    def refused(tree, expect, step=7, out=None, dtype=np.float32):
        path = tmp_path / "damaged.pkl"
        state = {"params": tree, "params_ema": tree, "step": step}
        path.write_bytes(pickle.dumps({"train_state": _as(state, dtype)}))
        out = out or tmp_path / "run"
        code, _, err = run_main(["import-official", str(path), "--out", str(out), *sizes], capsys)
        assert_one_line_error(code, err, expect)
        return out

    def edited(change):
        tree = synthetic_flax_tree()
        change(tree)
        return tree

    for expect, change in (
        ("no FinalLayer_0", lambda t: t.pop("FinalLayer_0")),
        ("no TimestepEmbedder_1", lambda t: t.pop("TimestepEmbedder_1")),
        ("no DiTBlock_1", lambda t: t.update(DiTBlock_2=t.pop("DiTBlock_1"))),
        ("a block named 'DiTBlock_x'", lambda t: t.update(DiTBlock_x=t["DiTBlock_0"])),
        ("patch embedding of shape", lambda t: _set(t, "PatchEmbed_0/Conv_0/kernel", (2, 2, 3, 0))),
        ("is not a 2-D array", lambda t: _set(t, "DiTBlock_0/MlpBlock_0/Dense_0/kernel", (16,))),
        ("no DiTBlock_1/Dense_2/bias", lambda t: t["DiTBlock_1"]["Dense_2"].pop("bias")),
        ("is not a 1-D array", lambda t: _set(t, "DiTBlock_0/Dense_1/bias", (16, 1))),
    ):
        assert not refused(edited(change), expect).exists(), expect
    tree = synthetic_flax_tree()
    tree["FinalLayer_0"]["Dense_1"]["bias"] = np.full(12, 1e39)  # float64, beyond float32
    assert not refused(tree, "beyond float32's range", dtype=None).exists()
    if hasattr(np, "float128"):
        tree = synthetic_flax_tree()
        tree["FinalLayer_0"]["Dense_1"]["bias"] = np.zeros(12, dtype=np.float128)
        assert not refused(tree, "not an array of float16", dtype=None).exists()
    for step in (np.float64(np.inf), -5, 10**40, np.float32(2.5)):
        assert not refused(synthetic_flax_tree(), "train_state.step", step=step).exists()
    # --out: a file, a folder that is not empty, an empty path: refused before reading
    (tmp_path / "a_file").write_text("x")
    refused(synthetic_flax_tree(), "is a file", out=tmp_path / "a_file")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("keep")
    refused(synthetic_flax_tree(), "not empty", out=tmp_path / "full")
    assert (tmp_path / "full" / "notes.txt").read_text() == "keep"
    code, _, err = run_main(["import-official", "x.pkl", "--out", ""], capsys)
    assert code == 2 and "empty path" in err


def _set(tree, path, shape):
    *parents, leaf = path.split("/")
    for part in parents:
        tree = tree[part]
    tree[leaf] = np.zeros(shape)


def _as(tree, dtype):
    """Plain dicts of arrays (in `dtype` unless None), as a file would hold them."""
    if isinstance(tree, dict):
        return {k: _as(v, dtype) for k, v in tree.items()}
    if isinstance(tree, np.ndarray) and dtype is not None:
        return tree.astype(dtype)
    return tree
