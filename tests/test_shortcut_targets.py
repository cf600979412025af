"""The shortcut objective against hand-computed targets."""

import pytest
import torch
from torch import nn

from shortcut_models.errors import UsageError
from shortcut_models.objectives import build_objective
from shortcut_models.objectives.base import EPS
from shortcut_models.objectives.shortcut import bootstrap_levels


class Affine(nn.Module):
    """s(x, t, d, y) = a x + b t + c d (+ e y): a network with a closed form."""

    def __init__(self, a=0.5, b=1.0, c=2.0, e=0.0):
        super().__init__()
        self.a, self.b, self.c, self.e = a, b, c, e
        self.calls = 0

    def forward(self, x, t, d, y=None):
        self.calls += 1
        out = self.a * x + (self.b * t + self.c * d)[:, None]
        if y is not None:
            out = out + self.e * y.float()[:, None]
        return out


def two_half_steps(model, x_t, t, d, clip=4.0):
    half = d / 2
    v1 = model(x_t, t, half)
    x_mid = torch.clamp(x_t + half[:, None] * v1, -clip, clip)
    v2 = model(x_mid, t + half, half)
    return torch.clamp((v1 + v2) / 2, -clip, clip)


def make_batch(n=64, dim=2, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_bootstrap_rows_equal_mean_of_two_half_steps():
    objective = build_objective("shortcut", denoise_timesteps=128, bootstrap_every=8)
    teacher = Affine()
    x1 = make_batch(256)
    batch = objective.targets(Affine(a=9.0), teacher, x1, None, torch.Generator().manual_seed(1))
    rows = batch.groups["bootstrap"]
    expected = two_half_steps(teacher, batch.x_t[rows], batch.t[rows], batch.d[rows])
    torch.testing.assert_close(batch.target[rows], expected)
    assert not batch.target.requires_grad


def test_flow_rows_have_flow_matching_targets_at_the_finest_step():
    objective = build_objective("shortcut", denoise_timesteps=64)
    x1 = make_batch(128)
    batch = objective.targets(Affine(), Affine(), x1, None, torch.Generator().manual_seed(2))
    rows = batch.groups["flow"]
    t, x_t = batch.t[rows], batch.x_t[rows]
    data = x1[16:]  # disjoint split: bootstrap rows use x1[:16], flow rows the rest
    x0 = (x_t - t[:, None] * data) / (1 - (1 - EPS) * t[:, None])
    torch.testing.assert_close(batch.target[rows], data - (1 - EPS) * x0)
    assert torch.all(batch.d[rows] == 1 / 64)
    assert torch.all((t * 64) == torch.round(t * 64)) and t.max() < 1


def test_reference_batch_split_reuses_the_first_rows():
    objective = build_objective("shortcut", reference_batch_split=True)
    x1 = make_batch(64)
    batch = objective.targets(Affine(), Affine(), x1, None, torch.Generator().manual_seed(3))
    rows = batch.groups["flow"]
    t, x_t = batch.t[rows], batch.x_t[rows]
    x0 = (x_t - t[:, None] * x1[:56]) / (1 - (1 - EPS) * t[:, None])
    torch.testing.assert_close(batch.target[rows], x1[:56] - (1 - EPS) * x0)


def test_targets_are_clipped_at_the_midpoint_and_the_end():
    objective = build_objective("shortcut", bootstrap_every=1)
    steep = Affine(a=40.0, b=0.0, c=0.0)
    x1 = make_batch(64) * 2
    batch = objective.targets(steep, steep, x1, None, torch.Generator().manual_seed(4))
    unclipped = two_half_steps(steep, batch.x_t, batch.t, batch.d, clip=float("inf"))
    assert unclipped.abs().max() > 4  # the case really exercises the clipping
    assert batch.target.abs().max() <= 4
    torch.testing.assert_close(batch.target, two_half_steps(steep, batch.x_t, batch.t, batch.d))


def test_bootstrap_t_lies_on_the_grid_of_its_step_size():
    objective = build_objective("shortcut", bootstrap_every=1, denoise_timesteps=128)
    batch = objective.targets(Affine(), Affine(), make_batch(700), None, torch.Generator())
    t, d = batch.t, batch.d
    assert torch.all(t / d == torch.round(t / d))
    assert torch.all(t + d <= 1.0)
    levels = torch.round(-torch.log2(d)).long()
    assert torch.equal(levels, bootstrap_levels(700, 128))


def test_bootstrap_uses_ema_weights_by_default_and_raw_weights_on_request():
    online, ema = Affine(a=1.0), Affine(a=-1.0)
    x1 = make_batch(64)
    for use_ema, expected_model in ((True, ema), (False, online)):
        objective = build_objective("shortcut", bootstrap_ema=use_ema)
        batch = objective.targets(online, ema, x1, None, torch.Generator().manual_seed(5))
        rows = batch.groups["bootstrap"]
        expected = two_half_steps(expected_model, batch.x_t[rows], batch.t[rows], batch.d[rows])
        torch.testing.assert_close(batch.target[rows], expected)


@pytest.mark.parametrize(
    "num_bootstrap, m, expected",
    [
        # 8 rows, 7 levels: one row per level from the finest bootstrap level down, remainder at 0
        (8, 128, [6, 5, 4, 3, 2, 1, 0, 0]),
        (2, 128, [0, 0]),  # fewer rows than levels: all at level 0, as the reference
        (12, 16, [3, 3, 3, 2, 2, 2, 1, 1, 1, 0, 0, 0]),
        (32, 128, [6] * 4 + [5] * 4 + [4] * 4 + [3] * 4 + [2] * 4 + [1] * 4 + [0] * 8),
    ],
)
def test_levels_match_the_reference(num_bootstrap, m, expected):
    assert bootstrap_levels(num_bootstrap, m).tolist() == expected


def test_bootstrap_cfg_guides_only_the_finest_group():
    scale = 3.0
    objective = build_objective(
        "shortcut",
        num_classes=10,
        bootstrap_every=1,
        bootstrap_cfg=True,
        bootstrap_cfg_scale=scale,
        class_dropout_prob=0.0,
    )
    teacher = Affine(a=0.0, b=0.0, c=0.0, e=1.0)  # velocity = label: guided = null + s (y - null)
    x1 = make_batch(14)
    y = torch.arange(14) % 10
    batch = objective.targets(teacher, teacher, x1, y, torch.Generator().manual_seed(6))
    guided = 10 + scale * (y[:2].float() - 10)  # 14 rows // 7 levels = 2 guided rows
    torch.testing.assert_close(batch.target[:2, 0], guided.clamp(-4, 4))
    torch.testing.assert_close(batch.target[2:, 0], y[2:].float().clamp(-4, 4))


def test_label_dropout_only_in_flow_rows():
    objective = build_objective("shortcut", num_classes=10, class_dropout_prob=1.0)
    x1 = make_batch(64)
    y = torch.zeros(64, dtype=torch.long)
    batch = objective.targets(Affine(), Affine(), x1, y, torch.Generator())
    assert torch.all(batch.y[batch.groups["bootstrap"]] == 0)
    assert torch.all(batch.y[batch.groups["flow"]] == 10)


def test_logit_normal_time_sampling_of_the_flow_rows():
    x1 = make_batch(4096)
    grid = build_objective("shortcut").targets(Affine(), Affine(), x1, None, torch.Generator())
    assert torch.all(grid.t * 128 == torch.round(grid.t * 128))
    objective = build_objective("shortcut", time_sampling="logit_normal", time_mu=-0.4)
    batch = objective.targets(Affine(), Affine(), x1, None, torch.Generator().manual_seed(3))
    t = batch.t[batch.groups["flow"]]
    assert t.min() > 0 and t.max() < 1
    assert (t * 128 != torch.round(t * 128)).float().mean() > 0.99  # off the grid
    median = 1 - torch.sigmoid(torch.tensor(-0.4))  # mu < 0 leans toward the data end (t = 1)
    assert abs(t.median() - median) < 0.03
    with pytest.raises(UsageError, match="time_sampling"):
        build_objective("flow_matching", time_sampling="uniform")


def test_adaptive_loss_weights_rows_by_a_stopped_gradient():
    x1 = make_batch(8)
    plain = build_objective("flow_matching")
    adaptive = build_objective("flow_matching", norm_p=1.0, norm_c=0.5)
    batch = plain.targets(None, None, x1, None, torch.Generator().manual_seed(4))
    pred = torch.zeros_like(x1, requires_grad=True)
    mse = plain.per_sample_loss(pred, batch)
    weighted = adaptive.per_sample_loss(pred, batch)
    total = mse * x1[0].numel()  # summed over the sample's dimensions, as the paper
    torch.testing.assert_close(weighted, total / (total + 0.5))
    (grad,) = torch.autograd.grad(weighted.sum(), pred)
    (grad_total,) = torch.autograd.grad(total.sum(), pred)
    weight = 1 / (total.detach() + 0.5)
    torch.testing.assert_close(grad, weight[:, None] * grad_total)  # the weight: no gradient


def test_coarse_level_sampling_favours_few_step_levels_and_covers_all():
    objective = build_objective("shortcut", bootstrap_every=1, level_sampling="coarse")
    g = torch.Generator().manual_seed(0)
    batch = objective.targets(Affine(), Affine(), make_batch(7000), None, g)
    levels = torch.round(-torch.log2(batch.d)).long()
    counts = torch.bincount(levels, minlength=7).float() / 7000
    expected = torch.pow(2.0, -torch.arange(7.0))
    torch.testing.assert_close(counts, expected / expected.sum(), atol=0.02, rtol=0)
    assert torch.all(batch.t / batch.d == torch.round(batch.t / batch.d))  # still on its grid
    # a small batch (2 bootstrap rows) reaches every level within a few hundred steps
    small = build_objective("shortcut", bootstrap_every=8, level_sampling="coarse")
    seen = set()
    for step in range(400):
        g = torch.Generator().manual_seed(step)
        b = small.targets(Affine(), Affine(), make_batch(16), None, g)
        seen |= set(torch.round(-torch.log2(b.d[:2])).long().tolist())
    assert seen == set(range(7))
    with pytest.raises(UsageError, match="level_sampling"):
        build_objective("shortcut", level_sampling="fine")
