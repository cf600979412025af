"""The paper's baselines: targets on hand-checkable cases, phases, teachers, pairs, compare."""

import json

import pytest
import torch
from helpers import flow_matching_run, tiny_config, tiny_trainer
from torch import nn

from shortcut_models.backbones import backbone_options
from shortcut_models.errors import UsageError
from shortcut_models.objectives import build_objective, make_options
from shortcut_models.objectives.base import EPS
from shortcut_models.pairs import generate_pairs
from shortcut_models.sampling import SamplingRule, sample


class Constant(nn.Module):
    """A 'network' whose velocity is the same everywhere."""

    def __init__(self, value: float):
        super().__init__()
        self.value = nn.Parameter(torch.tensor(value), requires_grad=False)

    def forward(self, x, t, d, y=None):
        return torch.full_like(x, float(self.value))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_consistency_distillation_target():
    m, c, u = 8, 2.0, -1.0
    objective = build_objective("consistency_distillation", denoise_timesteps=m)
    objective.teacher_network = Constant(c)
    x1 = torch.randn(16, 2)
    batch = objective.targets(None, Constant(u), x1, None, gen())
    t = batch.t[:, None]
    expected = (c / m + (1 - t - 1 / m) * u) / (1 - t)
    torch.testing.assert_close(batch.target, expected.expand_as(batch.target))
    assert torch.all(batch.d == 1 / m)


def test_consistency_training_target_and_curriculum():
    objective = build_objective("consistency_training", denoise_timesteps=16)
    x1 = torch.randn(32, 2)
    objective.set_step(0, 100)  # stage 0: dt = 1, t = 0, the point at t2 = 1 is the data
    batch = objective.targets(None, Constant(5.0), x1, None, gen())
    assert torch.all(batch.t == 0)
    torch.testing.assert_close(batch.target, x1 - batch.x_t, atol=1e-4, rtol=1e-4)  # EPS
    stages = []
    for step in (0, 24, 25, 50, 75, 99):
        objective.set_step(step, 100)
        stages.append(objective.stage())
    assert stages == [0, 0, 1, 2, 3, 3]  # log2(16) = 4 stages, finer as training goes on
    objective.set_step(99, 100)
    batch = objective.targets(None, Constant(3.0), x1, None, gen(1))
    t = batch.t[:, None]
    assert torch.all(batch.t * 8 == torch.round(batch.t * 8))  # on the grid of dt = 1/8
    x0 = (batch.x_t - t * x1) / (1 - (1 - EPS) * t)
    dt = 1 / 8
    expected = (dt * (x1 - (1 - EPS) * x0) + (1 - t - dt) * 3.0) / (1 - t)
    torch.testing.assert_close(batch.target, expected, atol=1e-4, rtol=1e-4)


def test_progressive_distillation_target_and_phases():
    objective = build_objective("progressive_distillation", denoise_timesteps=8)
    objective.teacher_network, objective.student_ema = Constant(1.5), Constant(0.25)
    objective.teacher_phase = 0
    batch = objective.targets(None, None, torch.randn(8, 2), None, gen())
    torch.testing.assert_close(batch.target, torch.full((8, 2), 1.5))  # mean of two equal steps
    steps = []
    for step in range(0, 9, 3):
        objective.set_step(step, 9)
        steps.append(objective.student_steps())
    assert steps == [4, 2, 1]  # 3 phases for M = 8: the step count halves each phase
    objective.set_step(8, 9)
    batch = objective.targets(None, None, torch.randn(8, 2), None, gen())
    assert torch.all(batch.d == 1.0) and torch.all(batch.t == 0)
    # a new phase's teacher is the student's EMA
    torch.testing.assert_close(batch.target, torch.full((8, 2), 0.25))


def test_reflow_and_live_reflow_targets():
    objective = build_objective("reflow", denoise_timesteps=8)
    x0, x1 = torch.randn(5, 2), torch.randn(5, 2)
    objective.stored = {"x0": x0, "x1": x1}
    batch = objective.targets(None, None, torch.zeros(4, 2), None, gen())
    for row in range(4):  # each row is a stored pair, on its straight path
        match = [
            i for i in range(5) if torch.allclose(batch.target[row], x1[i] - (1 - EPS) * x0[i])
        ]
        assert len(match) == 1
    live = build_objective("live_reflow", denoise_timesteps=8, bootstrap_every=4)
    batch = live.targets(Constant(0.5), None, torch.randn(16, 2), None, gen())
    reflow = batch.groups["reflow"]
    # 8 Euler steps of a constant velocity 0.5 end at x0 + 0.5: the target is 0.5, with d = 1
    torch.testing.assert_close(batch.target[reflow], torch.full((4, 2), 0.5))
    assert torch.all(batch.d[reflow] == 1) and torch.all(batch.d[batch.groups["flow"]] == 1 / 8)


def test_live_reflow_samples_with_the_levels_it_was_trained_on():
    """The reference tells a live-reflow network d = 1 below M steps and d = 1/M at M steps
    (the only two step sizes it trains); telling it 1/n would ask for untrained levels."""
    told = []

    class Recording(Constant):
        def forward(self, x, t, d, y=None):
            told.append(float(d[0]))
            return super().forward(x, t, d, y)

    spec = build_objective("live_reflow", denoise_timesteps=8).sampling_rule()
    for steps in (1, 2, 4, 8):
        told.clear()
        sample(Recording(1.0), torch.randn(3, 2), steps, spec)
        assert told == [1.0 if steps < 8 else 1 / 8] * steps


def test_consistency_sampling_renoises_but_one_step_is_one_call():
    calls = []

    class Counting(Constant):
        def forward(self, x, t, d, y=None):
            calls.append(1)
            return super().forward(x, t, d, y)

    noise = torch.randn(4, 2)
    spec = SamplingRule(renoise=True)
    one = sample(Counting(1.0), noise, 1, spec, generator=gen())
    assert len(calls) == 1
    torch.testing.assert_close(one, noise + 1.0)
    a = sample(Constant(1.0), noise, 4, spec, generator=gen(3))
    b = sample(Constant(1.0), noise, 4, spec, generator=gen(3))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, sample(Constant(1.0), noise, 4, SamplingRule(), generator=gen(3)))


def interrupt_after_two_steps(run_dir, config):
    """A run of `config` stopped (and saved) after two of its steps."""
    trainer = tiny_trainer(run_dir, config)
    trainer.train_step()
    trainer.train_step()
    trainer.save()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    return flow_matching_run(tmp_path_factory, steps=3)


def test_distillation_starts_from_the_teacher_and_resumes_exactly(teacher, tmp_path):
    config = tiny_config(
        objective="progressive_distillation",
        objective_options={"teacher": str(teacher), "denoise_timesteps": 4},
        steps=4,
    )
    straight = tiny_trainer(tmp_path / "a", config)
    from shortcut_models.checkpoint import load_checkpoint

    teacher_weights = load_checkpoint(teacher).tensors("ema")
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(value, teacher_weights[key])
    straight.run()
    interrupt_after_two_steps(tmp_path / "b", config)
    resumed = tiny_trainer(tmp_path / "b", config, resume=True)
    resumed.run()
    assert resumed.objective.teacher_phase == straight.objective.teacher_phase == 1
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)


def test_wrong_teacher_or_pairs_are_clear_errors(teacher, tmp_path):
    ct = tmp_path / "ct"
    tiny_trainer(ct, tiny_config(objective="consistency_training", steps=1)).run()
    for bad, message in (
        (ct, "needs one of flow_matching, shortcut"),
        (tmp_path / "none", "no checkpoint"),
    ):
        config = tiny_config(
            objective="consistency_distillation", objective_options={"teacher": str(bad)}
        )
        with pytest.raises(UsageError, match=message):
            tiny_trainer(tmp_path / "cd", config)
    wide = tiny_config(
        objective="consistency_distillation", objective_options={"teacher": str(teacher)}
    )
    wide.backbone.options = backbone_options("mlp", {"hidden_size": 64, "depth": 1})
    with pytest.raises(UsageError, match="must match"):
        tiny_trainer(tmp_path / "cd2", wide)
    with pytest.raises(UsageError, match="needs a teacher"):
        tiny_trainer(tmp_path / "cd3", tiny_config(objective="progressive_distillation"))
    with pytest.raises(UsageError, match="no reflow pairs"):
        tiny_trainer(
            tmp_path / "r",
            tiny_config(objective="reflow", objective_options={"pairs": str(tmp_path)}),
        )


def test_reflow_pairs_resume_and_are_reused(teacher, tmp_path):
    pairs = tmp_path / "pairs"
    meta = generate_pairs(teacher, pairs, num=50, steps=2, chunk=20, progress=False)
    assert (
        meta["num"] == 50
        and sorted(p.name for p in pairs.iterdir())[-1] == "pairs_00002.safetensors"
    )
    first = (pairs / "pairs_00000.safetensors").stat().st_mtime_ns
    last = (pairs / "pairs_00002.safetensors").read_bytes()
    (pairs / "meta.json").unlink()
    (pairs / "pairs_00002.safetensors").unlink()
    generate_pairs(teacher, pairs, num=50, steps=2, chunk=20, progress=False)  # resumes
    assert (pairs / "pairs_00000.safetensors").stat().st_mtime_ns == first
    assert (pairs / "pairs_00002.safetensors").read_bytes() == last
    with pytest.raises(UsageError, match="holds other pairs"):
        generate_pairs(teacher, pairs, num=60, steps=2, chunk=20, progress=False)
    config = tiny_config(objective="reflow", objective_options={"pairs": str(pairs)}, steps=4)
    straight = tiny_trainer(tmp_path / "a", config)
    straight.run()
    interrupt_after_two_steps(tmp_path / "b", config)
    resumed = tiny_trainer(tmp_path / "b", config, resume=True)
    resumed.run()
    assert (pairs / "pairs_00000.safetensors").stat().st_mtime_ns == first  # reused, not rewritten
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value)
    other = tmp_path / "other"
    dit = {"hidden_size": 32, "depth": 1, "num_heads": 2}
    mnist = tiny_config(objective="flow_matching", steps=1, data="mnist", backbone="DiT-T/8",
                        backbone_options=dit, batch_size=8)  # fmt: skip
    tiny_trainer(other, mnist).run()
    mnist_pairs = tmp_path / "mnist_pairs"
    generate_pairs(other, mnist_pairs, num=4, steps=1, progress=False)
    wrong = tiny_config(objective="reflow", objective_options={"pairs": str(mnist_pairs)})
    with pytest.raises(UsageError, match="have shape"):
        tiny_trainer(tmp_path / "c", wrong)


@pytest.mark.slow
def test_compare_end_to_end_on_2d(tmp_path, capsys):
    from shortcut_models.cli import main

    argv = ["compare", "--data", "moons", "--out", str(tmp_path / "cmp"), "--steps", "4"]
    argv += ["--batch-size", "32", "--num", "64", "--eval-steps", "1", "2", "128"]
    argv += ["--pairs-num", "32", "--pairs-steps", "2", "--no-progress"]
    argv += ["--json", str(tmp_path / "cmp.json")]
    assert main(argv) == 0
    results = json.loads((tmp_path / "cmp.json").read_text())
    assert set(results) == {
        "flow_matching", "progressive_distillation", "consistency_distillation",
        "consistency_training", "reflow", "live_reflow", "shortcut", "meanflow", "ism", "imf",
    }  # fmt: skip
    assert set(results["shortcut"]) == {"1", "2", "128"}
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "2 teacher + 2 student steps" in table
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0

    # a rerun reuses every score; it re-evaluates only a run whose checkpoint changed
    scores = tmp_path / "cmp" / "shortcut" / "compare_scores.json"
    scores.write_text(scores.read_text().replace(str(results["shortcut"]["1"]), "12345.0"))
    assert main(argv) == 0
    again = json.loads((tmp_path / "cmp.json").read_text())
    assert again["shortcut"]["1"] == 12345.0  # read back, not recomputed
    assert again["meanflow"] == results["meanflow"]

    # a teacher share of 3/4: its own teacher, pairs and student folders beside the others
    share = [*argv[:-2], "--objectives", "progressive_distillation", "reflow"]
    assert main([*share, "--teacher-share", "0.75"]) == 0
    table = (tmp_path / "cmp" / "compare.md").read_text()
    assert "3 teacher + 1 student steps" in table and "3 teacher + 1 reflow steps" in table
    made = {p.name for p in (tmp_path / "cmp").iterdir()}
    assert {"teacher_flow_matching_teacher3", "progressive_distillation_teacher3"} <= made
    assert {"reflow_pairs_teacher3", "teacher_flow_matching", "reflow_pairs"} <= made
    capsys.readouterr()
    assert main([*share, "--teacher-share", "1"]) == 2
    assert "--teacher-share must lie in (0, 1)" in capsys.readouterr().err


def test_compare_from_a_recipe_shares_its_network_and_gives_each_method_its_options():
    """--recipe cpu-small: every method on the demo's folded U-Net, batch, optimizer and EMA at a
    fixed step count (never the recipe's wall-clock budget); online bootstrap targets go to the
    methods that have that option (shortcut, ism), not to the others."""
    from shortcut_models.compare import compare_config

    shared = compare_config("mnist", recipe_name="cpu-small", steps=2300, seed=1)
    base = shared.config
    assert base.backbone.name == "unet" and base.backbone.options.patch == 2
    assert base.training.steps == 2300 and base.training.minutes == 0
    assert base.training.recipe == "cpu-small" and base.training.seed == 1
    assert (base.training.batch_size, base.optimisation.lr, base.optimisation.ema_decay) == (
        64, 1e-3, 0.99,
    )  # fmt: skip
    for name in ("shortcut", "ism"):
        assert shared.method_config(name).objective.options.bootstrap_ema is False
    assert shared.method_config("flow_matching").objective.options == make_options("flow_matching")
    other = compare_config("mnist", recipe_name="cpu-small", backbone="DiT-T/4", ema_decay=0.9)
    other = other.config
    assert other.backbone.options == backbone_options("DiT-T/4")
    assert other.optimisation.ema_decay == 0.9
    plain = compare_config("mnist").config
    assert plain.backbone.name == "DiT-T/4" and plain.training.steps == 2500


@pytest.mark.slow
def test_compare_guides_each_budget_as_asked(tmp_path, monkeypatch, tiny_digits):
    """--cfg 2 4:1.75 reaches the sampler: budgets 1 and 2 at 2, 4 at 1.75; the table says so."""
    import shortcut_models.evaluation.scoring as scoring
    from shortcut_models.cli import main
    from shortcut_models.metrics.digits import DigitFeatures

    monkeypatch.setattr(DigitFeatures, "for_dataset", lambda *a, **k: tiny_digits)

    seen = []
    real = scoring.ImageScorer.score

    def spy(self, run, plan):
        seen.append((tuple(plan.steps), *(plan.scale(n) for n in plan.steps)))
        return real(self, run, plan)

    monkeypatch.setattr(scoring.ImageScorer, "score", spy)
    argv = ["compare", "--data", "mnist", "--recipe", "cpu-small", "--steps", "2"]
    argv += ["--objectives", "flow_matching", "--num", "10", "--eval-steps", "1", "2", "4"]
    argv += ["--metric", "fd-digits", "--cfg", "2", "4:1.75", "--no-progress"]
    argv += ["--out", str(tmp_path / "cmp"), "--batch-size", "8"]
    assert main(argv) == 0
    assert seen == [((1,), 2.0), ((2,), 2.0), ((4,), 1.75)]  # each budget saved as scored
    assert (
        "recipe cpu-small, CFG 2 (1.75 from 4 steps)" in (tmp_path / "cmp/compare.md").read_text()
    )
    meta = json.loads((tmp_path / "cmp" / "compare.meta.json").read_text())
    assert meta["machine"]["commit"] and meta["config"]["backbone"]["name"] == "unet"
    assert meta["cfg"] == [[1, 2.0], [4, 1.75]]
