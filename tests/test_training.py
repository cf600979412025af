"""The trainer: exact resume, signals, non-finite losses, and that training helps."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from helpers import tiny_config, tiny_trainer

from shortcut_models.checkpoint import load_checkpoint
from shortcut_models.data import ToyData
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.evaluation import evaluate_vectors
from shortcut_models.objectives import OBJECTIVES


def losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    keys = ("step", "loss", "loss_flow", "loss_bootstrap", "grad_norm")
    return [tuple(r.get(k) for k in keys) for r in map(json.loads, lines)]


@pytest.mark.parametrize("objective", ["shortcut", "flow_matching"])
def test_resume_continues_exactly(tmp_path, objective):
    config = tiny_config(objective=objective, steps=12)
    straight = tiny_trainer(tmp_path / "a", config)
    straight.run()

    first = tiny_trainer(tmp_path / "b", tiny_config(objective=objective, steps=5))
    first.run()
    resumed = tiny_trainer(tmp_path / "b", config, resume=True)
    assert resumed.step == 5
    resumed.run()

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert a == b and len(a) == 12
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(straight.ema.parameters(), resumed.ema.parameters()):
        assert torch.equal(p, q)


def test_resume_rejects_a_changed_config(run_dir):
    tiny_trainer(run_dir, tiny_config(steps=2)).run()
    with pytest.raises(UsageError, match="different config.*optimisation.lr"):
        tiny_trainer(run_dir, tiny_config(steps=4, lr=0.5), resume=True)
    with pytest.raises(UsageError, match="already holds a checkpoint"):
        tiny_trainer(run_dir, tiny_config(steps=4))


class PoisonedData(ToyData):
    """Checkerboard, but batch number `bad` is NaN."""

    def __init__(self, bad):
        super().__init__("checkerboard")
        self.bad = bad

    def batch(self, step, batch_size, seed, rows=None):
        x, y = super().batch(step, batch_size, seed, rows)
        return (x * float("nan"), y) if step == self.bad else (x, y)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(run_dir):
    trainer = tiny_trainer(run_dir, tiny_config(steps=10), save_every=2)
    trainer.data = PoisonedData(bad=4)  # the fifth step
    with pytest.raises(TrainingError, match="loss is nan at step 5; .*step 4"):
        trainer.run()
    assert load_checkpoint(run_dir).step == 4
    saved = load_checkpoint(run_dir).tensors("model").values()
    assert all(torch.isfinite(p).all() for p in saved)


def test_a_non_finite_step_between_records_is_named_at_the_next_record(run_dir):
    """The loss is read at logging and saving steps only; the first bad step is remembered on
    the device and named there, and nothing after it is saved."""
    trainer = tiny_trainer(run_dir, tiny_config(steps=12), save_every=4, log_every=3)
    trainer.data = PoisonedData(bad=4)  # the fifth step; the next record is at step 6
    with pytest.raises(TrainingError, match="loss is nan at step 5; .*step 4"):
        trainer.run()
    assert trainer.step == 6 and load_checkpoint(run_dir).step == 4


@pytest.mark.slow
def test_sigterm_saves_a_loadable_checkpoint(run_dir):
    command = [
        sys.executable, "-m", "shortcut_models", "train", "--out", str(run_dir),
        "--steps", "1000000", "--batch-size", "32", "--hidden-size", "16", "--depth", "1",
        "--log-every", "1", "--save-every", "1000000", "--no-progress", "--no-tensorboard",
    ]  # fmt: skip
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert time.time() < deadline and process.poll() is None, process.stderr.read()
        time.sleep(0.1)
    os.kill(process.pid, signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr and "--resume" in stderr
    checkpoint = load_checkpoint(run_dir)
    assert checkpoint.step >= 3
    resumed = tiny_trainer(run_dir, checkpoint.config, resume=True)
    assert resumed.step == checkpoint.step


@pytest.mark.slow
def test_training_beats_an_untrained_model(run_dir):
    config = tiny_config(
        data="8gaussians",
        steps=1500,
        batch_size=256,
        lr=3e-3,
        lr_schedule="cosine",
        ema_decay=0.95,
        backbone_options={"hidden_size": 64, "depth": 2},
    )
    trainer = tiny_trainer(run_dir, config, log_every=100)
    data, objective = trainer.data, trainer.objective
    before = evaluate_vectors(trainer.ema, objective, data, [1, 8], num=500, exact=False)
    trainer.run()
    after = evaluate_vectors(trainer.ema, objective, data, [1, 8], num=500, exact=False)
    for steps in (1, 8):
        assert after[steps]["sliced_w2"] < 0.5 * before[steps]["sliced_w2"], (before, after)


def test_same_seed_same_run(tmp_path):
    a = tiny_trainer(tmp_path / "a", tiny_config(steps=4))
    b = tiny_trainer(tmp_path / "b", tiny_config(steps=4))
    a.run()
    b.run()
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    c = tiny_trainer(tmp_path / "c", tiny_config(steps=4, seed=1))
    c.run()
    assert losses(tmp_path / "a") != losses(tmp_path / "c")


@pytest.fixture(scope="module")
def host_read_sources(tmp_path_factory):
    """A tiny teacher (the distillations) and pairs sampled from it (reflow)."""
    from helpers import flow_matching_run

    from shortcut_models.pairs import generate_pairs

    teacher = flow_matching_run(tmp_path_factory, steps=3)
    pairs = tmp_path_factory.mktemp("pairs") / "pairs"
    generate_pairs(teacher, pairs, num=64, steps=2, chunk=64, progress=False)
    return {"teacher": str(teacher), "pairs": str(pairs)}


# the calls that copy a device tensor to the host (each a sync on a GPU); `to` counts where our
# code names the host ("cpu"): on this CPU test the training device is the CPU too, and a move to
# a tensor's or the trainer's device is what a GPU run makes a host-to-device copy
HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy", "to")


def _in_host_noise() -> bool:
    """Whether the call comes from an objective's `host_noise`, which the trainer gives the
    batch's host rows before they go to the device (host work by design, not a read back)."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_name == "host_noise":
            return True
        frame = frame.f_back
    return False


def _to_host(args, kwargs, caller) -> bool:
    target = kwargs.get("device", args[0] if args else None)
    named = isinstance(target, str) and torch.device(target).type == "cpu"
    return named and "shortcut_models" in caller


@pytest.mark.parametrize("objective", list(OBJECTIVES))
def test_no_host_read_in_a_step_between_logging_steps(
    run_dir, monkeypatch, objective, host_read_sources
):
    """A step and the loop's bookkeeping read nothing back from the device (what a GPU run
    needs), for every objective: no Tensor.item / tolist / float / int / bool / cpu / numpy /
    to("cpu") on steps that neither log nor save (ism's optimal-transport pairing is solved on
    the host before the batch goes to the device). AdamW's own reads of its CPU step counter
    are left out: on a GPU the trainer runs the fused AdamW, which keeps it on the device."""
    options = {}
    if objective in ("progressive_distillation", "consistency_distillation"):
        options = {"teacher": host_read_sources["teacher"], "denoise_timesteps": 4}
    elif objective == "reflow":
        options = {"pairs": host_read_sources["pairs"]}
    config = tiny_config(objective=objective, steps=10, objective_options=options)
    trainer = tiny_trainer(run_dir, config, log_every=10)
    reads = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            moved = _name != "to" or _to_host(args, kwargs, caller)
            if moved and "torch/optim" not in caller and not _in_host_noise():
                reads.append((_name, caller))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    per_step, step = [], trainer.train_step

    def marked(*args, **kwargs):
        per_step.append(len(reads))
        return step(*args, **kwargs)

    trainer.train_step = marked
    trainer.run()
    monkeypatch.undo()
    # reads between the start of step k and the start of step k + 1, for steps 1 .. 9
    between = [b - a for a, b in zip(per_step, per_step[1:])]
    assert len(between) == 9 and between == [0] * 9, reads
    assert len(reads) > per_step[-1]  # the logging step and the save did read: the hooks work


def test_a_budget_s_planned_step_count_is_run_state():
    """The count a --minutes budget planned is restored from the checkpoint's `plan` part; one
    written before it was a part stored it as its config's steps; a fixed count ignores both."""
    from shortcut_models.config import Training
    from shortcut_models.distributed import SINGLE
    from shortcut_models.train.schedule import WallClockPlan

    cpu = torch.device("cpu")
    budget = Training(minutes=1.0, steps=5)
    plan = WallClockPlan(budget, 100, SINGLE, cpu)
    plan.load_state_dict({"planned_steps": torch.tensor(77)}, stored_steps=321)
    assert plan.total == 77 and not plan.pending
    older = WallClockPlan(budget, 100, SINGLE, cpu)
    older.load_state_dict({}, stored_steps=321)
    assert older.total == 321
    fixed = WallClockPlan(Training(steps=5), 100, SINGLE, cpu)
    fixed.load_state_dict({}, stored_steps=321)
    assert fixed.total == 5 and fixed.state_dict() == {}


def test_a_budget_is_revised_when_the_speed_drops_after_the_plan(monkeypatch):
    """A CPU that runs its first seconds at 10 steps/s and then at 5 (a laptop's boost, then
    throttling): planned from the first seconds alone the run would take 100 s of its 60; revised
    at a quarter, a half and three quarters of the budget from the rate since the last decision,
    it ends within 5%."""
    from shortcut_models.config import Training
    from shortcut_models.distributed import SINGLE
    from shortcut_models.train import schedule

    class Clock:
        now = 0.0

        def perf_counter(self):
            return self.now

    clock = Clock()
    monkeypatch.setattr(schedule, "time", clock)
    plan = schedule.WallClockPlan(Training(minutes=1.0, steps=5), 0, SINGLE, torch.device("cpu"))
    plan.begin()
    step, plans = 0, []
    while plan.pending or step < plan.total:
        clock.now += 0.1 if clock.now < 20 else 0.2  # 10 steps/s for 20 s, then 5
        step += 1
        found = plan.after_step(step)
        if found is not None:
            plans.append(found)
    first, *revised = plans
    assert not first.revised and first.steps > 500  # planned at 10 steps/s
    assert [p.revised for p in revised] == [True, True, True]
    assert revised[-1].steps < first.steps and abs(revised[-1].rate - 5.0) < 0.01
    assert abs(clock.now - 60.0) <= 3.0, clock.now  # on time; without revisions: 100 s
    assert plan.state_dict()["planned_steps"] == step  # the revised count is the run state


def test_the_merge_drops_options_of_another_choice_only():
    """A layer that names another objective or backbone drops the options below it for the one
    it replaces; options below that named no one carry (a recipe's per-kind options)."""
    from shortcut_models.config import merge

    lower = {"backbone": {"name": "unet", "options": {"channels": [8, 16]}}}
    assert merge(lower, {"backbone": {"name": "dit"}})["backbone"] == {"name": "dit", "options": {}}
    kept = merge(lower, {"backbone": {"name": "unet", "options": {"patch": 2}}})["backbone"]
    assert kept["options"] == {"channels": [8, 16], "patch": 2}
    unnamed = {"backbone": {"options": {"attention_scale": "linear"}}}
    carried = merge(unnamed, {"backbone": {"name": "DiT-S/2"}})["backbone"]
    assert carried == {"name": "DiT-S/2", "options": {"attention_scale": "linear"}}


@pytest.mark.parametrize("warmup", [False, True])
def test_the_sampling_ema_warms_up_when_asked(tmp_path, warmup):
    """With --ema-warmup the first update keeps a tenth of the initial weights (decay 1/10),
    not 0.999 of them; without it the decay is the configured one from the first step."""
    config = tiny_config(steps=1, ema_decay=0.999, ema_warmup=warmup)
    trainer = tiny_trainer(tmp_path / "run", config)
    before = [p.detach().clone() for p in trainer.ema.parameters()]
    trainer.run()
    decay = 0.1 if warmup else 0.999
    for start, ema, model in zip(before, trainer.ema.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(ema, decay * start + (1 - decay) * model.detach())
