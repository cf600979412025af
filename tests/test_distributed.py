"""Two processes through torchrun (gloo, CPU) train exactly as one process with the same global
batch split into the same micro-batches; their checkpoints load anywhere."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import tiny_config

from shortcut_models.checkpoint import load_checkpoint
from shortcut_models.cli import main
from shortcut_models.errors import UsageError
from shortcut_models.factory import load_run
from shortcut_models.train import RunOptions, Trainer

# several processes (torchrun-like, gloo on CPU): slow, and the first thing to skip locally
pytestmark = [pytest.mark.distributed, pytest.mark.slow]

TRAIN = [
    "--data", "checkerboard", "--objective", "shortcut", "--steps", "6", "--batch-size", "64",
    "--lr", "1e-3", "--hidden-size", "32", "--depth", "1", "--log-every", "1",
    "--no-progress", "--no-tensorboard", "--device", "cpu",
]  # fmt: skip


def torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "shortcut_models", *args,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def single(out, steps=6, resume=False, objective="shortcut", **options) -> Trainer:
    config = tiny_config(steps=steps, batch_size=64, objective=objective)
    run = RunOptions(
        out_dir=out, device="cpu", progress=False, tensorboard=False, log_every=1, resume=resume,
        **options,
    )  # fmt: skip
    trainer = Trainer(config, run)
    trainer.run()
    return trainer


def losses(run_dir) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines]


def assert_same_weights(a, b, atol=1e-5, networks=("model", "ema")):
    for which in networks:
        ta, tb = load_checkpoint(a).tensors(which), load_checkpoint(b).tensors(which)
        assert ta.keys() == tb.keys()
        for key in ta:
            torch.testing.assert_close(ta[key], tb[key], atol=atol, rtol=1e-4, msg=key)


@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_train_as_one_process_accumulating_two_micro_batches(tmp_path, sharding):
    flags = ["--fsdp"] if sharding == "fsdp" else []
    torchrun("train", "--out", str(tmp_path / "two"), *TRAIN, *flags)
    single(tmp_path / "one", grad_accum=2)
    assert load_checkpoint(tmp_path / "two").step == 6
    assert_same_weights(tmp_path / "two", tmp_path / "one")
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)
    # the split matters, not the processes: one unsplit batch draws other noise and times
    single(tmp_path / "unsplit")
    assert losses(tmp_path / "unsplit")[0] != pytest.approx(losses(tmp_path / "one")[0], rel=1e-4)

    # a checkpoint saved by two processes samples and resumes in one (optimizer state included)
    model = load_run(tmp_path / "two").model
    assert sum(p.numel() for p in model.parameters()) > 0
    single(tmp_path / "two", steps=8, resume=True, grad_accum=2)
    single(tmp_path / "one", steps=8, resume=True, grad_accum=2)
    assert_same_weights(tmp_path / "two", tmp_path / "one")


def test_a_one_process_checkpoint_resumes_on_two_processes_under_fsdp(tmp_path):
    single(tmp_path / "a", grad_accum=2)
    single(tmp_path / "b", grad_accum=2)
    torchrun("train", "--out", str(tmp_path / "a"), *TRAIN, "--steps", "8", "--resume", "--fsdp")
    single(tmp_path / "b", steps=8, resume=True, grad_accum=2)
    assert load_checkpoint(tmp_path / "a").step == 8
    assert_same_weights(tmp_path / "a", tmp_path / "b")


def test_ism_twin_ema_and_ot_pairing_under_fsdp_match_one_process(tmp_path):
    torchrun("train", "--out", str(tmp_path / "two"), *TRAIN, "--objective", "ism", "--fsdp")
    single(tmp_path / "one", objective="ism", grad_accum=2)
    networks = ("model", "ema", "target_ema")
    assert_same_weights(tmp_path / "two", tmp_path / "one", networks=networks)


def test_meanflow_s_hand_written_jvp_under_fsdp_matches_one_process(tmp_path):
    """MeanFlow's JVP pass calls the network through its module call, so FSDP gathers the
    sharded weights for it as for a plain forward."""
    torchrun("train", "--out", str(tmp_path / "two"), *TRAIN, "--objective", "meanflow", "--fsdp")
    single(tmp_path / "one", objective="meanflow", grad_accum=2)
    assert_same_weights(tmp_path / "two", tmp_path / "one")
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-4)


ROWS_SCRIPT = """
import json, sys
from shortcut_models.config import TrainConfig
from shortcut_models.distributed import teardown
from shortcut_models.train import RunOptions, Trainer

out = sys.argv[1]
config = TrainConfig.from_tree({
    "data": {"name": "checkerboard"}, "objective": {"name": "meanflow"},
    "backbone": {"options": {"hidden_size": 32, "depth": 1}},
    "training": {"steps": 2, "batch_size": 64}, "optimisation": {"lr": 1e-3},
})
options = RunOptions(out_dir=out, device="cpu", progress=False, tensorboard=False)
trainer = Trainer(config, options)
calls = []
trainer.model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
trainer.run()
with open(f"{out}/calls_{trainer.dist.rank}.json", "w") as handle:
    json.dump({"calls": calls, "ddp": trainer.net is not trainer.model}, handle)
teardown()
"""


def test_meanflow_s_one_pass_holds_under_ddp(tmp_path):
    """Under DDP the JVP pass runs through the DDP wrapper, so its primal output is the
    prediction: each rank's 32 rows are evaluated once (8 by the JVP, 24 by a forward), and
    two processes still train as one process accumulating two micro-batches."""
    script = tmp_path / "rows.py"
    script.write_text(ROWS_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(script), str(tmp_path / "two"),
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((tmp_path / "two" / f"calls_{rank}.json").read_text())
        assert seen == {"calls": [8, 24, 8, 24], "ddp": True}
    config = tiny_config(steps=2, batch_size=64, objective="meanflow")
    run = RunOptions(out_dir=tmp_path / "one", device="cpu", progress=False, grad_accum=2)
    Trainer(config, run).run()
    assert_same_weights(tmp_path / "two", tmp_path / "one")


def test_batch_that_does_not_split_is_a_clear_error(tmp_path):
    with pytest.raises(UsageError, match="does not split into 3 equal micro-batches"):
        single(tmp_path / "x", grad_accum=3)


def test_fsdp_needs_several_processes(tmp_path):
    with pytest.raises(UsageError, match="launch with torchrun"):
        single(tmp_path / "x", fsdp=True)


def test_sampling_and_evaluation_split_over_two_processes_match_one(tmp_path):
    single(tmp_path / "run")
    common = [
        "--ckpt",
        str(tmp_path / "run"),
        "--steps",
        "1",
        "4",
        "--num-samples",
        "50",
        "--batch",
        "8",
    ]
    torchrun("sample", *common, "--out", str(tmp_path / "two"), "--device", "cpu")
    assert main(["sample", *common, "--out", str(tmp_path / "one")]) == 0
    with (
        np.load(tmp_path / "two" / "samples.npz") as two,
        np.load(tmp_path / "one/samples.npz") as one,
    ):
        assert sorted(two.files) == ["steps_1", "steps_4"]
        for key in two.files:
            np.testing.assert_allclose(two[key], one[key], atol=1e-6)
    torchrun("evaluate", *common, "--json", str(tmp_path / "two.json"), "--device", "cpu")
    assert main(["evaluate", *common, "--json", str(tmp_path / "one.json")]) == 0
    two, one = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("two", "one"))
    assert two.keys() == one.keys()
    for ckpt in one:
        for steps, scores in one[ckpt].items():
            assert two[ckpt][steps] == pytest.approx(scores, rel=1e-5)
