"""Injected faults and hostile input: torn logs, full disks, two writers, NaN weights, signals
during saves, resumed logs (`pytest -m faults` runs just these)."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from helpers import (
    assert_one_line_error,
    run_main,
    tiny_config,
    tiny_digit_run,
    tiny_trainer,
    write_image,
)

from shortcut_models.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    save_checkpoint,
)
from shortcut_models.cli import main
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.factory import load_run
from shortcut_models.locking import FolderLock
from shortcut_models.train import METRICS_NAME

pytestmark = pytest.mark.faults

TINY_CLI = ["--data", "moons", "--hidden-size", "8", "--depth", "1", "--batch-size", "32"]


def shortcut(*argv, limit_bytes=None, **kwargs):
    """Run the CLI in a child process (optionally under a file-size limit)."""

    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "shortcut_models", *argv]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit,
        env=env,
        **kwargs,
    )


def finish(process, timeout=120):
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_torn_metrics_lines_are_dropped_on_resume(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_trainer(run, tiny_config(steps=4)).run()
    with open(run / METRICS_NAME, "a") as handle:
        handle.write('[1, 2]\n{"step": 5, "lo')  # valid JSON but no record, then a cut line
    result = tiny_trainer(run, tiny_config(steps=8), resume=True).run()
    assert result.status == "completed" and result.step == 8
    assert "dropped 2 damaged line(s)" in capsys.readouterr().err
    records = [json.loads(line) for line in (run / METRICS_NAME).read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_the_run_resumes(tmp_path):
    out = tmp_path / "run"
    argv = [
        "train",
        *TINY_CLI,
        "--save-every",
        "50",
        "--log-every",
        "1",
        "--steps",
        "400",
        "--out",
        str(out),
        "--no-progress",
    ]
    # the tiny run's checkpoint is 40 kB: one fits, the growing metrics.jsonl later does not
    code, _, err = finish(shortcut(*argv, limit_bytes=48_000))
    assert code == 1, err
    assert "Traceback" not in err and "training failed" in err and "File too large" in err
    assert "the last good checkpoint is" in err
    step = load_checkpoint(out).step
    assert 0 < step < 400
    code, _, err = finish(shortcut(*argv, "--resume"))
    assert code == 0, err
    assert load_checkpoint(out).step == 400


@pytest.mark.slow
def test_a_second_writer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "run"
    first = shortcut("train", *TINY_CLI, "--steps", "1000000", "--out", str(out), "--no-progress")
    try:
        deadline = time.time() + 60
        while not ((out / ".lock").exists() and "pid" in (out / ".lock").read_text()):
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        second = shortcut("train", *TINY_CLI, "--steps", "10", "--out", str(out))
        code, _, err = finish(second)
        assert code == 2 and f"pid {first.pid}" in err and "in use by shortcut train" in err
        assert "Traceback" not in err
    finally:
        first.send_signal(signal.SIGTERM)
        code, _, err = finish(first)
    assert code == 143, err
    # the kernel released the lock with the holder: the run continues
    code, _, err = finish(
        shortcut(
            "train", *TINY_CLI, "--steps", "20", "--out", str(out), "--resume", "--no-progress"
        )
    )
    assert code == 0, err


def test_lock_handover_within_one_process(tmp_path):
    first = FolderLock(tmp_path, "one")
    second = FolderLock(tmp_path, "two")  # takes over: one Trainer after another
    assert first.handle is None and second.handle is not None
    second.release()


def test_nan_weights_are_never_saved_and_never_sampled(tmp_path):
    run = tmp_path / "run"
    trainer = tiny_trainer(run, tiny_config(steps=4))
    trainer.run()
    before = (run / CHECKPOINT_NAME).read_bytes()
    trainer = tiny_trainer(run, tiny_config(steps=8), resume=True)
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingError, match="NaN or inf at step 4; not saved, the last good"):
        trainer.save()
    trainer.close()
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    bad = tmp_path / "bad"
    bad.mkdir()
    loaded = load_run(run)
    model, data, checkpoint = loaded.model, loaded.spec, loaded.checkpoint
    model.state_dict()[next(iter(model.state_dict()))].fill_(float("inf"))
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    parts = {"model": model.state_dict(), "ema": ema}
    save_checkpoint(bad, config=checkpoint.config, step=4, parts=parts, data=data)
    with pytest.raises(UsageError, match="NaN or inf"):
        load_run(bad)


def test_a_huge_learning_rate_stops_at_the_gradient_or_the_loss(tmp_path):
    trainer = tiny_trainer(tmp_path / "run", tiny_config(lr=1e30, steps=50), save_every=1)
    with pytest.raises(TrainingError, match="is (nan|inf|-inf) at step"):
        trainer.run()
    model = load_run(tmp_path / "run").model  # whatever was saved is finite
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_non_finite_options_are_bad_input(tmp_path, capsys):
    for flag, value in (
        ("--lr", "inf"),
        ("--weight-decay", "nan"),
        ("--norm-p", "inf"),
        ("--time-scale", "nan"),
    ):
        code = main(["train", *TINY_CLI, flag, value, "--out", str(tmp_path / flag)])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err, (flag, err)


def test_a_second_signal_during_the_stop_save_is_ignored(tmp_path, monkeypatch, capsys):
    trainer = tiny_trainer(tmp_path / "run", tiny_config(steps=1000))
    step, save = trainer.train_step, trainer.save

    def signalled_step(*args, **kwargs):
        terms = step(*args, **kwargs)
        if trainer.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # the first: stop after this step
        return terms

    def signalled_save():
        os.kill(os.getpid(), signal.SIGINT)  # the second, while the stop-save runs
        return save()

    monkeypatch.setattr(trainer, "train_step", signalled_step)
    monkeypatch.setattr(trainer, "save", signalled_save)
    result = trainer.run()
    assert result.status == "interrupted" and result.signal == signal.SIGTERM
    assert load_checkpoint(tmp_path / "run").step == 3
    assert "signal 2 ignored: saving the checkpoint at step 3" in capsys.readouterr().err


@pytest.mark.slow
def test_two_quick_signals_to_the_command_lose_nothing(tmp_path):
    out = tmp_path / "run"
    process = shortcut(
        "train",
        *TINY_CLI,
        "--steps",
        "1000000",
        "--out",
        str(out),
        "--save-every",
        "1000000",
        "--no-progress",
    )
    deadline = time.time() + 60
    metrics = out / METRICS_NAME
    while not metrics.exists() or not metrics.read_text():  # training runs: handlers are set
        assert time.time() < deadline
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    code, _, err = finish(process)
    # 143: both handled; -15: the second came after everything was saved and reported
    assert code in (143, -15), err
    step = load_checkpoint(out).step
    assert f"at step {step}; saved" in err and step > 0
    assert not list(out.glob(".*.tmp"))


def test_stale_temporaries_of_a_killed_save_are_removed(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_trainer(run, tiny_config(steps=2)).run()
    stale = run / f".{CHECKPOINT_NAME}.x1y2.tmp"
    stale.write_bytes(b"half a checkpoint")
    keep = run / ".other.tmp"
    keep.write_text("not ours")
    tiny_trainer(run, tiny_config(steps=3), resume=True).run()
    assert not stale.exists() and keep.exists()
    assert "removed 1 temporary file(s)" in capsys.readouterr().err


def test_resumed_log_is_identical_with_log_every(tmp_path, monkeypatch):
    config = tiny_config(steps=12)
    tiny_trainer(tmp_path / "whole", config, log_every=4).run()
    stopped = tiny_trainer(tmp_path / "cut", config, log_every=4)
    original = stopped.train_step

    def stop_at_six(*args, **kwargs):
        terms = original(*args, **kwargs)
        if stopped.step == 6:
            os.kill(os.getpid(), signal.SIGTERM)  # the loop stops after this step
        return terms

    monkeypatch.setattr(stopped, "train_step", stop_at_six)
    assert stopped.run().status == "interrupted"
    tiny_trainer(tmp_path / "cut", config, log_every=4, resume=True).run()

    def records(run):
        lines = (tmp_path / run / METRICS_NAME).read_text().splitlines()
        return [
            {k: v for k, v in json.loads(line).items() if k != "samples_per_s"} for line in lines
        ]

    assert records("cut") == records("whole")
    assert [r["step"] for r in records("cut")] == [4, 8, 12]


def test_files_get_the_users_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        run = tmp_path / "run"
        tiny_trainer(run, tiny_config(steps=2)).run()
        tiny_trainer(run, tiny_config(steps=3), resume=True).run()
        for name in (CHECKPOINT_NAME, "config.json", METRICS_NAME):
            assert (run / name).stat().st_mode & 0o777 == 0o644, name
    finally:
        os.umask(previous)


# -- bad input ----------------------------------------------------------------------------------


def broken_png(path):
    """A PNG whose IDAT length field is halved: Pillow raises SyntaxError decoding it."""
    write_image(path)
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT") - 4
    length = int.from_bytes(data[at : at + 4], "big")
    data[at : at + 4] = (length // 2).to_bytes(4, "big")
    path.write_bytes(bytes(data))


@pytest.fixture
def folder_with_a_broken_png(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        write_image(root / f"{i}.png", value=60 * i)
    broken_png(root / "broken.png")
    return root


def test_a_broken_png_is_named_or_skipped(folder_with_a_broken_png, tmp_path, capsys):
    root = str(folder_with_a_broken_png)
    argv = [
        "train",
        "--data",
        "folder",
        "--data-path",
        root,
        "--resolution",
        "8",
        "--backbone",
        "DiT-T/4",
        "--steps",
        "1",
        "--batch-size",
        "2",
        "--no-progress",
        "--objective",
        "flow_matching",
    ]
    code, _, err = run_main([*argv, "--out", str(tmp_path / "a")], capsys)
    assert_one_line_error(code, err, "broken.png")
    code, _, err = run_main([*argv, "--out", str(tmp_path / "b"), "--skip-bad"], capsys)
    assert code == 0 and "skipping unreadable image" in err and "Traceback" not in err
    # evaluate --ref, stats and encode read folders through the same FolderReader
    from shortcut_models.data.folder import FolderReader, scan_folder

    reader = FolderReader(scan_folder(root), 8, 3, skip_bad=True)
    assert sum(len(images) for images, _ in reader.batches(4)) == 3


def reference_file(tmp_path, name, **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_damaged_reference_files_are_refused_before_sampling(tmp_path, capsys):
    run = tiny_digit_run(tmp_path / "run")
    good = reference_file(tmp_path, "good.npz", mu=np.zeros(4), sigma=np.eye(4))
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:100])
    cases = {
        truncated: "cannot read",
        reference_file(tmp_path, "empty.npz", arr_0=np.zeros((0, 32, 32, 1), np.uint8)): "0 image",
        reference_file(tmp_path, "nan.npz", mu=np.zeros(4), sigma=np.full((4, 4), np.nan)): "NaN",
        reference_file(tmp_path, "text.npz", mu=np.array(["a"] * 4), sigma=np.eye(4)): "numbers",
        reference_file(tmp_path, "inf.npz", mu=np.full(4, np.inf), sigma=np.eye(4)): "NaN or inf",
    }
    for ref, expect in cases.items():
        argv = [
            "evaluate",
            "--ckpt",
            str(run),
            "--metric",
            "fd-digits",
            "--ref",
            str(ref),
            "--steps",
            "1",
            "--num",
            "4",
        ]
        code, _, err = run_main(argv, capsys)
        assert_one_line_error(code, err, expect)


def test_json_is_always_valid(tmp_path, capsys):
    from shortcut_models.report import write_json

    write_json(tmp_path / "r.json", {"fid": float("nan"), "w2": [1.0, float("inf")]})
    assert json.loads((tmp_path / "r.json").read_text()) == {"fid": None, "w2": [1.0, None]}
    assert "written as null" in capsys.readouterr().err


def test_outputs_are_checked_before_the_work_and_fall_back(tmp_path, capsys, monkeypatch):
    from shortcut_models import report

    run = tmp_path / "run"
    tiny_trainer(run, tiny_config(steps=2)).run()
    folder = tmp_path / "a-folder.json"
    folder.mkdir()
    code, _, err = run_main(["evaluate", "--ckpt", str(run), "--json", str(folder)], capsys)
    assert_one_line_error(code, err, "is a folder")
    code, _, err = run_main(["stats", "--ref", "mnist", "--out", str(folder)], capsys)
    assert_one_line_error(code, err, "is a folder")
    real = report.atomic_write

    def fails_once(path, write):  # the disk fills at the very end
        if path.name == "r.json":
            raise OSError(28, "No space left on device")
        real(path, write)

    monkeypatch.setattr(report, "atomic_write", fails_once)
    written = report.write_json(tmp_path / "r.json", {"a": 1})
    assert written != tmp_path / "r.json" and json.loads(written.read_text()) == {"a": 1}
    assert f"wrote the result to {written}" in capsys.readouterr().err


def test_numbers_out_of_range_are_bad_input(tmp_path, capsys):
    out = str(tmp_path / "r")
    for argv, expect in (
        (["--seed", str(2**64)], "2^63"),
        (["--hidden-size", "-8"], "must be positive"),
        (["--hidden-size", "0"], "must be positive"),
        (["--depth", "-1"], "must be positive"),
    ):
        code, _, err = run_main(["train", "--data", "moons", *argv, "--out", out], capsys)
        assert code == 2 and "Traceback" not in err and expect in err, (argv, err)
    code, _, err = run_main(["sample", "--ckpt", out, "--num", "1000000000000"], capsys)
    assert code == 2  # no checkpoint there: still one line


def test_compare_keeps_a_given_zero(tmp_path, capsys):
    code, _, err = run_main(
        [
            "compare",
            "--data",
            "moons",
            "--lr",
            "0",
            "--out",
            str(tmp_path / "c"),
            "--objectives",
            "shortcut",
        ],
        capsys,
    )
    assert_one_line_error(code, err, "lr must be positive")


def test_sampling_refuses_what_memory_or_the_folder_cannot_hold(tmp_path, capsys):
    run = tiny_digit_run(tmp_path / "run")
    code, _, err = run_main(
        ["sample", "--ckpt", str(run), "--num", "1000000000000", "--out", str(tmp_path / "s")],
        capsys,
    )
    assert_one_line_error(code, err, "GiB")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "steps_001").write_text("a file")
    code, _, err = run_main(
        ["sample", "--ckpt", str(run), "--steps", "1", "--num", "2", "--out", str(tmp_path / "t")],
        capsys,
    )
    assert_one_line_error(code, err, "is a file")


def test_resume_below_the_checkpoint_says_so(tmp_path, capsys):
    out = str(tmp_path / "r")
    base = ["train", "--data", "moons", "--hidden-size", "8", "--depth", "1", "--no-progress"]
    assert run_main([*base, "--steps", "6", "--out", out], capsys)[0] == 0
    code, _, err = run_main([*base, "--steps", "3", "--out", out, "--resume"], capsys)
    assert code == 0 and "past --steps 3: nothing was trained" in err


def test_pairs_and_evaluate_refuse_bad_targets(tmp_path, capsys):
    run = tmp_path / "run"
    tiny_trainer(run, tiny_config(steps=2, objective="flow_matching")).run()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = run_main(
        ["pairs", "--ckpt", str(run), "--out", str(a_file), "--num", "4"], capsys
    )
    assert_one_line_error(code, err, "cannot write to output folder")
    code, _, err = run_main(["evaluate", "--ckpt", str(run), "--ref", "mnist"], capsys)
    assert_one_line_error(code, err, "--ref applies to image models")
    code, _, err = run_main(["evaluate", "--ckpt", str(run), "--cfg", "2"], capsys)
    assert_one_line_error(code, err, "is unconditional")


def test_damaged_latent_index_and_labels(tmp_path, capsys):
    from shortcut_models.data.latents import LATENTS_FORMAT, LatentData

    root = tmp_path / "latents"
    root.mkdir()
    np.save(root / "latents_00000.npy", np.zeros((4, 2, 4, 4, 4), np.float16))
    np.save(root / "labels_00000.npy", np.array([0, 1, 7, 1]))
    meta = {
        "format": LATENTS_FORMAT,
        "count": 4,
        "shape": [4, 4, 4],
        "vae": "v",
        "scaling_factor": 0.18,
        "class_names": ["a", "b"],
        "shards": [{"latents": "latents_00000.npy", "labels": "labels_00000.npy"}],
    }
    for damage, expect in (
        ({"scaling_factor": "big"}, "wrong type"),
        ({"shards": None}, "wrong type"),
        ({"vae": None, "shape": None}, "wrong type"),
    ):
        (root / "meta.json").write_text(json.dumps({**meta, **damage}))
        with pytest.raises(UsageError, match=expect):
            LatentData(root)
    (root / "meta.json").write_text(json.dumps([meta]))
    with pytest.raises(UsageError, match="not a latent shard index"):
        LatentData(root)
    del meta["vae"]
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="missing 'vae'"):
        LatentData(root)
    meta["vae"] = "v"
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(UsageError, match="labels outside 0..1"):
        LatentData(root)


def test_ctrl_c_at_start_up_is_one_line():
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupted(name, *a, **k):\n"
        "    if name == 'torch': raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = interrupted\n"
        "from shortcut_models.entry import run\n"
        "raise SystemExit(run())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 130 and done.stderr.strip() == "shortcut: interrupted"


def test_empty_class_folder_and_a_changed_folder_warn(tmp_path, capsys):
    from shortcut_models.data.folder import scan_folder

    root = tmp_path / "images"
    for i in range(2):
        write_image(root / "a" / f"{i}.png")
        write_image(root / "c" / f"{i}.png")
    (root / "b").mkdir()
    listing = scan_folder(root)
    assert listing.class_names == ["a", "b", "c"]
    assert "class folder" in capsys.readouterr().err
    config = tiny_config(
        data="folder",
        data_options={"path": str(root), "resolution": 8},
        backbone="DiT-T/4",
        backbone_options={},
        objective="flow_matching",
        batch_size=2,
        steps=1,
    )
    tiny_trainer(tmp_path / "run", config).run()
    write_image(root / "a" / "new.png")
    tiny_trainer(tmp_path / "run", config.overlay({"training": {"steps": 2}}), resume=True).run()
    assert "changed since the checkpoint" in capsys.readouterr().err


def test_seeds_far_apart_draw_different_noise():
    from shortcut_models.seeding import derive_seed

    assert derive_seed(3, 0, 1) != derive_seed(3 + 2**32, 0, 1)
    assert derive_seed(3, 0, 1) == derive_seed(3, 0, 1)
