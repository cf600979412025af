"""The iSM options: wavelet loss, optimal-transport pairing, twin EMA, intrinsic guidance."""

import itertools

import pytest
import torch
from helpers import make_backbone, tiny_config, tiny_trainer
from torch import nn

from shortcut_models.checkpoint import load_checkpoint
from shortcut_models.errors import UsageError
from shortcut_models.objectives import build_objective
from shortcut_models.objectives.base import flow_velocity
from shortcut_models.objectives.pairing import ot_pair, ot_permutation
from shortcut_models.objectives.wavelet import auto_levels, haar_bands, wavelet_loss
from shortcut_models.sampling import sample

TINY_DIT = {"hidden_size": 32, "depth": 1, "num_heads": 2, "patch_size": 8}

# -- multi-level wavelet loss ----------------------------------------------------------------


def test_haar_bands_partition_the_pixel_mse():
    error = torch.randn(3, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    bands = haar_bands(error, 3)
    assert len(bands) == 10 and bands[-1].shape == (3, 2, 2, 2)
    shares = sum(b.pow(2).flatten(1).mean(1) for b in bands)
    torch.testing.assert_close(shares, error.pow(2).flatten(1).mean(1))


def test_wavelet_loss_sums_band_errors_not_energies():
    c, h = 0.3, 0.1
    constant = torch.full((1, 1, 4, 4), c)
    checker = h * (-1.0) ** (torch.arange(4)[:, None] + torch.arange(4)[None, :])
    error = constant + checker.view(1, 1, 4, 4)
    # MSE = c^2 + h^2 (the fine band is 10% of it); the wavelet loss weighs it by its RMS h
    torch.testing.assert_close(error.pow(2).mean(), torch.tensor(c**2 + h**2))
    expected = c + h + 5 * 1e-4  # five empty bands contribute sqrt(EPS) each
    torch.testing.assert_close(wavelet_loss(error, 2), torch.tensor([expected]))


def test_wavelet_levels_option_changes_the_loss_and_checks_shapes():
    plain = build_objective("flow_matching")
    wave = build_objective("flow_matching", wavelet_levels=2)
    x1 = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    batch = plain.targets(None, None, x1, None, torch.Generator().manual_seed(2))
    pred = torch.zeros_like(x1)
    mse, _ = plain.regression_loss(pred, batch)
    loss, _ = wave.regression_loss(pred, batch)
    torch.testing.assert_close(loss, wavelet_loss(pred - batch.target, 2).mean())
    assert not torch.isclose(loss, mse)
    with pytest.raises(UsageError, match="image batches"):
        vectors = plain.targets(None, None, torch.randn(4, 2), None, _gen(3))
        wave.regression_loss(torch.zeros(4, 2), vectors)
    with pytest.raises(UsageError, match="divisible by 16"):
        build_objective("flow_matching", wavelet_levels=4).regression_loss(pred, batch)
    assert auto_levels((2, 1, 32, 32)) == 3 and auto_levels((2, 1, 28, 28)) == 2
    assert auto_levels((2, 2)) == 0
    auto = build_objective("ism", num_classes=0)
    vectors = auto.targets(nn.Identity(), _Linear(), torch.randn(16, 2), None, _gen(0))
    torch.testing.assert_close(
        auto.regression_loss(torch.zeros(16, 2), vectors)[0], vectors.target.pow(2).mean()
    )  # vectors: plain MSE


# -- optimal-transport pairing ---------------------------------------------------------------


def test_ot_pairing_is_the_exact_assignment():
    x1 = torch.tensor([[0.0], [10.0], [5.0]])
    x0 = torch.tensor([[9.0], [4.0], [1.0]])
    torch.testing.assert_close(ot_pair(x0, x1), torch.tensor([[1.0], [9.0], [4.0]]))
    g = _gen(3)
    a, b = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    best = min(((a[list(p)] - b) ** 2).sum() for p in itertools.permutations(range(6)))
    torch.testing.assert_close(((a[ot_permutation(a, b)] - b) ** 2).sum(), best)
    grouped = ot_pair(a, b, group=3)  # two problems of 3 rows: rows stay in their group
    assert {tuple(r) for r in grouped[:3].tolist()} == {tuple(r) for r in a[:3].tolist()}


def test_ot_pairing_option_permutes_the_noise_of_flow_rows():
    x1 = torch.randn(32, 2, generator=_gen(4))
    plain = build_objective("flow_matching").targets(None, None, x1, None, _gen(5))
    paired = build_objective("flow_matching", ot_pairing=True).targets(
        None, None, x1, None, _gen(5)
    )
    x0 = _noise_of(plain, x1)
    x0_ot = _noise_of(paired, x1)
    torch.testing.assert_close(paired.t, plain.t)
    assert not torch.allclose(x0_ot, x0)
    torch.testing.assert_close(x0_ot, x0[ot_permutation(x0, x1)])  # same draws, re-paired
    assert ((x0_ot - x1) ** 2).sum() < ((x0 - x1) ** 2).sum()


# -- twin EMA ----------------------------------------------------------------------------------


def test_twin_ema_computes_targets_and_resumes_exactly(tmp_path):
    options = {"target_ema_decay": 0.5}
    config = tiny_config(steps=6, ema_decay=0.99, objective_options=options)
    trainer = tiny_trainer(tmp_path / "a", config)
    assert trainer.target_net is trainer.target_ema
    before = [p.clone() for p in trainer.target_ema.parameters()]
    trainer.train_step()
    for old, new, live in zip(before, trainer.target_ema.parameters(), trainer.model.parameters()):
        torch.testing.assert_close(new, 0.5 * old + 0.5 * live)  # decay 0.5, not --ema-decay
    trainer.run()
    assert not all(
        torch.equal(p, q) for p, q in zip(trainer.ema.parameters(), trainer.target_ema.parameters())
    )
    assert load_checkpoint(tmp_path / "a").tensors("target_ema")

    first = tiny_trainer(
        tmp_path / "b", tiny_config(steps=3, ema_decay=0.99, objective_options=options)
    )
    first.run()
    resumed = tiny_trainer(tmp_path / "b", config, resume=True)
    resumed.run()
    for p, q in zip(trainer.target_ema.parameters(), resumed.target_ema.parameters()):
        assert torch.equal(p, q)
    assert tiny_trainer(tmp_path / "c", tiny_config(steps=1)).target_ema is None


# -- intrinsic guidance ------------------------------------------------------------------------


class _Linear(nn.Module):
    """u(x, t, d, y, w) = a x + b t + c d + e [y kept] + g (w - 1): derivatives by hand."""

    guidance_input = True

    def __init__(self, a=0.5, b=1.0, c=2.0, e=3.0, g=0.25):
        super().__init__()
        self.a, self.b, self.c, self.e, self.g = a, b, c, e, g
        self.calls: list[torch.Tensor | None] = []

    def forward(self, x, t, d, y=None, w=None):
        self.calls.append(w)
        out = self.a * x + (self.b * t + self.c * d)[:, None]
        if y is not None:
            out = out + self.e * (y != 10).float()[:, None]
        if w is not None:
            out = out + self.g * (w - 1)[:, None]
        return out


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _noise_of(batch, x1):
    """x0 recovered from x_t = (1 - (1 - EPS) t) x0 + t x1."""
    t = batch.t[:, None]
    return (batch.x_t - t * x1) / (1 - (1 - 1e-5) * t)


def test_intrinsic_guidance_targets_by_hand():
    objective = build_objective(
        "shortcut", num_classes=10, intrinsic_guidance=True, class_dropout_prob=0.5
    )
    teacher = _Linear()
    x1 = torch.randn(64, 2, generator=_gen(6))
    y = torch.randint(0, 10, (64,), generator=_gen(7))
    batch = objective.targets(nn.Identity(), teacher, x1, y, _gen(8))
    flow, boot = batch.groups["flow"], batch.groups["bootstrap"]
    w, labels = batch.w[flow], batch.y[flow]
    kept = labels != 10
    assert kept.any() and (~kept).any()
    assert torch.all(w[~kept] == 1) and torch.all((w[kept] >= 1) & (w[kept] <= 4))
    v = flow_velocity(_noise_of(batch, x1)[flow], x1[flow])
    null = torch.full_like(labels, 10)
    u_null = teacher(batch.x_t[flow], batch.t[flow], batch.d[flow], null, torch.ones_like(w))
    expected = w[:, None] * v + (1 - w[:, None]) * u_null
    torch.testing.assert_close(batch.target[flow], expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(batch.target[flow][~kept], v[~kept], atol=1e-4, rtol=1e-4)
    # bootstrap rows: both half steps told the row's own scale, no CFG combination
    assert batch.w[boot].min() >= 1 and len(set(batch.w[boot].tolist())) > 1
    assert all(torch.equal(c, batch.w[boot]) for c in teacher.calls[:2])
    args, kwargs = batch.inputs()
    assert torch.equal(kwargs["w"], batch.w) and len(args) == 4


def test_intrinsic_guidance_samples_in_one_call_per_step_at_any_scale():
    model = _Linear()
    noise = torch.randn(8, 2, generator=_gen(9))
    y = torch.arange(8)
    out = sample(model, noise, 1, y=y, cfg_scale=3.0, null_class=10)
    assert len(model.calls) == 1 and torch.all(model.calls[0] == 3.0)
    expected = noise + model(noise, torch.zeros(8), torch.ones(8), y, torch.full((8,), 3.0))
    torch.testing.assert_close(out, expected)
    net = make_backbone("mlp", dim=2, num_classes=10, guidance_input=True, hidden_size=16)
    for p in net.parameters():
        nn.init.normal_(p, std=0.3)
    t, d = torch.rand(8), torch.full((8,), 0.5)
    assert not torch.allclose(net(noise, t, d, y, torch.full((8,), 3.0)), net(noise, t, d, y))
    torch.testing.assert_close(net(noise, t, d, y), net(noise, t, d, y, torch.ones(8)))
    plain = make_backbone("mlp", dim=2, num_classes=10, hidden_size=16)
    with pytest.raises(ValueError, match="no guidance input"):
        plain(noise, t, d, y, torch.ones(8))


def test_intrinsic_guidance_options_are_checked():
    with pytest.raises(UsageError, match="choose one"):
        build_objective("shortcut", intrinsic_guidance=True, bootstrap_cfg=True)
    with pytest.raises(UsageError, match="guidance_min"):
        build_objective("shortcut", guidance_min=3.0, guidance_max=2.0)
    assert build_objective("ism", num_classes=10).network_inputs()["guidance_input"]
    assert "guidance_input" not in build_objective("ism", num_classes=0).network_inputs()


def test_ism_trains_and_samples_on_mnist(tmp_path):
    config = tiny_config(
        data="mnist", objective="ism", backbone="dit", backbone_options=TINY_DIT,
        steps=3, batch_size=16,
    )  # fmt: skip
    trainer = tiny_trainer(tmp_path / "m", config)
    assert trainer.model.guidance_input and trainer.target_ema is not None
    trainer.run()
    from shortcut_models.factory import load_run

    run = load_run(tmp_path / "m")
    model, objective, spec = run.model, run.objective, run.spec
    noise = torch.randn(4, *spec.shape, generator=_gen(10))
    images = sample(model, noise, 1, objective.sampling_rule(), torch.arange(4), 2.0, 10)
    assert images.shape == (4, 1, 32, 32) and torch.isfinite(images).all()


def test_cli_flags_reach_the_run_and_misplaced_ones_are_refused(tmp_path, capsys):
    from shortcut_models.cli import main
    from shortcut_models.factory import load_run

    base = [
        "train",
        "--data",
        "checkerboard",
        "--steps",
        "1",
        "--hidden-size",
        "16",
        "--depth",
        "1",
    ]
    base += ["--no-progress", "--no-tensorboard"]
    flags = ["--ot-pairing", "--target-ema-decay", "0.5", "--time-scale", "1"]
    assert main([*base, "--out", str(tmp_path / "a"), *flags]) == 0
    run = load_run(tmp_path / "a")
    model, objective, checkpoint = run.model, run.objective, run.checkpoint
    assert objective.ot_pairing and objective.target_ema_decay == 0.5
    assert model.cond.t_embedder.scale == 1.0 and checkpoint.tensors("target_ema")
    wrong = [
        *base,
        "--out",
        str(tmp_path / "b"),
        "--objective",
        "meanflow",
        "--wavelet-levels",
        "2",
    ]
    assert main(wrong) == 2
    assert "--wavelet-levels does not apply to objective 'meanflow'" in capsys.readouterr().err
