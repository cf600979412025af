"""Faults and bad input on the surfaces added after the first fault suite: wall-clock budgets,
`--data array`, `export` (issue 27). Each test failed before its fix."""

import numpy as np
import pytest
from helpers import assert_one_line_error, run_main

pytestmark = pytest.mark.faults

TINY = ["--hidden-size", "8", "--depth", "1", "--batch-size", "16"]


def test_a_budget_too_long_to_plan_is_refused_before_training(tmp_path, capsys):
    """--minutes 1e308 trained, then died in the plan with OverflowError after a checkpoint."""
    out = tmp_path / "run"
    argv = ["train", "--data", "moons", *TINY, "--minutes", "1e308", "--out", str(out)]
    code, _, err = run_main(argv, capsys)
    assert_one_line_error(code, err, "minutes must be at most")
    assert not (out / "checkpoint.safetensors").exists()


def array_run(tmp_path, capsys, x, y=None, name="data.npz"):
    path = tmp_path / name
    if name.endswith(".npz"):
        np.savez(path, x=x, **({} if y is None else {"y": y}))
    else:
        np.save(path, x)
    argv = ["train", "--data", "array", "--data-path", str(path), *TINY, "--steps", "1"]
    return run_main([*argv, "--out", str(tmp_path / "run")], capsys)


@pytest.mark.parametrize("label", [10**6, 2**63 + 5], ids=["a million classes", "beyond int64"])
def test_array_labels_beyond_the_class_cap_are_one_line(tmp_path, capsys, label):
    """One stray label made a 256 MB checkpoint (10^6) or a C++ stack (2^63 + 5, uint64)."""
    x = np.random.default_rng(0).normal(size=(32, 2)).astype(np.float32)
    y = np.zeros(32, dtype=np.uint64)
    y[3] = label
    code, _, err = array_run(tmp_path, capsys, x, y)
    assert_one_line_error(code, err, "labels must lie in [0, 1000)")
    assert f"largest {label}" in err
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_array_values_that_overflow_float32_are_refused(tmp_path, capsys):
    """1e300 is finite in float64 and inf in float32: it trained to 'loss is nan at step 1'."""
    x = np.random.default_rng(0).normal(size=(32, 2))
    x[2, 1] = 1e300
    code, _, err = array_run(tmp_path, capsys, x, name="data.npy")
    assert_one_line_error(code, err, "beyond float32")


def test_a_text_file_named_npy_is_not_an_array_and_pickles_stay_off(tmp_path, capsys):
    path = tmp_path / "data.npy"
    path.write_text("1,2\n3,4\n")
    argv = ["train", "--data", "array", "--data-path", str(path), *TINY, "--steps", "1"]
    code, _, err = run_main([*argv, "--out", str(tmp_path / "run")], capsys)
    assert_one_line_error(code, err, "is not an .npy file")
    assert "allow_pickle" not in err and "pickle" not in err.lower()


@pytest.mark.parametrize("cfg", ["nan", "inf", "-inf"])
def test_export_refuses_a_guidance_scale_that_is_not_finite(tmp_path, capsys, cfg):
    """export --cfg nan wrote a generator of NaN images and exited 0."""
    from helpers import tiny_digit_run

    run = tiny_digit_run(tmp_path / "run")
    out = tmp_path / "g.pt2"
    code, _, err = run_main(
        ["export", "--ckpt", str(run), f"--cfg={cfg}", "--out", str(out)], capsys
    )
    assert_one_line_error(code, err, "cfg must be a finite number")
    assert not out.exists()


def test_export_refuses_an_output_that_is_not_a_regular_file(tmp_path, capsys):
    """export --out /dev/null (as root) replaced the device node with a regular file; a FIFO
    stands in for it here. Refused before any work; the FIFO is still a FIFO."""
    import os
    import stat

    from helpers import tiny_digit_run

    run = tiny_digit_run(tmp_path / "run")
    fifo = tmp_path / "pipe.onnx"
    os.mkfifo(fifo)
    code, _, err = run_main(["export", "--ckpt", str(run), "--out", str(fifo)], capsys)
    assert_one_line_error(code, err, "exists and is not a regular file")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    from shortcut_models.files import atomic_write

    with pytest.raises(Exception, match="not a regular file"):  # the writer itself refuses too
        atomic_write(fifo, lambda tmp: tmp.write_text("x"))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


@pytest.mark.slow
def test_sigterm_during_export_leaves_no_output_and_no_temporary(tmp_path):
    """SIGTERM killed export outright, leaving a 0-byte .NAME.xxxx.tmp that later exports kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import tiny_digit_run

    run = tiny_digit_run(tmp_path / "run")
    out = tmp_path / "g.onnx"
    stale = tmp_path / ".g.onnx.killed9.tmp"  # what a kill -9 would leave
    stale.write_bytes(b"")
    argv = ["export", "--ckpt", str(run), "--steps", "16", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "shortcut_models", *argv],
        stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip

    def writing() -> bool:  # the stale file is gone and this export's own temporary is there
        return not stale.exists() and bool(list(tmp_path.glob(".g.onnx.*.tmp")))

    deadline = time.time() + 120
    while time.time() < deadline and not writing():
        assert child.poll() is None, child.communicate()
        time.sleep(0.02)
    assert writing()
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 143, err
    assert err.strip().splitlines()[-1] == "shortcut export: terminated", err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".g.onnx.*"))


@pytest.mark.parametrize(
    "argv, expect",
    [
        (["--backbone", "DiT-T/4"], "cannot take data"),
        (["--init-from", "/nonexistent", "--objective", "shortcut"], "no checkpoint at"),
    ],
    ids=["backbone", "init-from"],
)
def test_a_refused_run_leaves_no_folder(tmp_path, capsys, argv, expect):
    """Refused runs created their output folder, empty but for .lock."""
    out = tmp_path / "run"
    code, _, err = run_main(["train", "--data", "moons", *TINY, "--out", str(out), *argv], capsys)
    assert_one_line_error(code, err, expect)
    assert not out.exists()
    existing = tmp_path / "mine"  # a folder that was there before is left as it was
    (existing / "notes").mkdir(parents=True)
    run_main(["train", "--data", "moons", *TINY, "--out", str(existing), *argv], capsys)
    assert sorted(p.name for p in existing.iterdir()) == ["notes"]


def test_a_refused_demo_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "demo"
    code, _, err = run_main(["demo", "--out", str(out), "--backbone", "mlp"], capsys)
    assert_one_line_error(code, err, "cannot take data")
    assert not out.exists()


class Plugin:
    """An entry point of the group shortcut_models.datasets, calling `register` when loaded."""

    name, value = "bad", "badpkg.data:register"

    def __init__(self, register):
        self.register = register

    def load(self):
        return self.register


@pytest.fixture
def plugins(monkeypatch):
    """Install entry points for this test; record whether anything asked for them."""
    import shortcut_models.data as data_registry

    monkeypatch.setattr(data_registry, "_REGISTRY", dict(data_registry._REGISTRY))
    monkeypatch.setattr(data_registry, "_plugins_loaded", False)
    asked = []

    def install(*entries):
        def entry_points(group):
            asked.append(group)
            return list(entries)

        monkeypatch.setattr("importlib.metadata.entry_points", entry_points)
        return asked

    return install


def test_a_plugin_that_exits_on_import_is_named_and_skipped(tmp_path, capsys, plugins):
    """A plugin raising SystemExit broke every command, --help included, silently (exit 3)."""

    def exits():
        raise SystemExit(3)

    asked = plugins(Plugin(exits))
    out = tmp_path / "run"
    argv = ["train", "--data", "moons", *TINY, "--steps", "1", "--no-progress", "--out", str(out)]
    code, _, err = run_main(argv, capsys)
    assert code == 0 and not asked, err  # a built-in data set never loads plugins
    code, text, err = run_main(["train", "--help"], capsys)
    assert code == 0 and "--data DATA" in text
    assert err.strip() == (
        "warning: data set plugin 'bad' (badpkg.data:register) failed and is skipped: SystemExit: 3"
    )
    assert asked


def test_a_plugin_cannot_replace_a_built_in_data_set(tmp_path, capsys, plugins):
    from shortcut_models.data import dataset, register_dataset

    def shadows():
        register_dataset("mine", lambda: None, kind="vector")  # rolled back with the failure
        register_dataset("moons", lambda: None, kind="vector")

    plugins(Plugin(shadows))
    code, _, err = run_main(["train", "--data", "mine", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "unknown data set 'mine'" in err
    assert "'moons' is a built-in data set: register yours under another name" in err
    assert dataset("moons").description == "a 2-D toy distribution"
    with pytest.raises(ValueError, match="built-in"):
        register_dataset("mnist", lambda: None, kind="image")
