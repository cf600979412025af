"""Improved MeanFlow: the v-loss through the predicted velocity, the guidance scale and interval
as conditions, the auxiliary v head, and one-call guided sampling."""

import math

import pytest
import torch
from helpers import make_backbone
from torch import nn

from shortcut_models.objectives import build_objective
from shortcut_models.objectives.base import flow_velocity, interpolate
from shortcut_models.sampling import sample

NULL = 10


class TwoHeads(nn.Module):
    """u = a x + b t + c d + m w [kept], v = p x + q t + k w [kept]: every term known by hand
    (kept: the label is not the null class)."""

    guidance_input = True

    def __init__(self, a=0.5, b=2.0, c=-3.0, m=0.25, p=-0.5, q=1.5, k=0.75):
        super().__init__()
        self.a, self.b, self.c, self.m, self.p, self.q, self.k = a, b, c, m, p, q, k
        self.calls = []

    def forward(self, x, t, d, y=None, w=None, interval=None, both_heads=False):
        self.calls.append((x.shape[0], w, interval))
        shape = (-1, *([1] * (x.dim() - 1)))
        kept = (y != NULL).to(x.dtype).view(shape) if y is not None else 0.0
        scale = (w if w is not None else torch.ones(x.shape[0])).view(shape)
        u = self.a * x + self.b * t.view(shape) + self.c * d.view(shape) + self.m * scale * kept
        v = self.p * x + self.q * t.view(shape) + self.k * scale * kept
        return torch.cat([u, v], dim=1) if both_heads else u


def replay(objective, n, x1, seed):
    """The objective's draws, in its order: times, noise, scale and interval, label dropout."""
    g = torch.Generator().manual_seed(seed)
    num_mean = n - round(n * objective.flow_fraction)
    t, d = objective.logit_normal_steps(n, num_mean, g, "cpu")
    x0 = torch.randn(x1.shape, generator=g)
    u = torch.rand(3, n, generator=g)
    drop = torch.rand(n, generator=g) < objective.class_dropout_prob
    return num_mean, t, d, x0, u, drop


@pytest.mark.parametrize("tangents", ["hand", "autodiff"])
def test_loss_is_the_v_loss_of_the_hand_computation(tangents):
    """V = u - d (a v_c + b - c) and v regressed onto v_g = v + (1 - 1/w') (v_c - v_u), with
    w' = w inside the row's interval, 1 outside, and v_g = v where the label was dropped."""
    n = 64
    objective = build_objective(
        "imf", num_classes=10, norm_p=0.0, class_dropout_prob=0.3, tangents=tangents
    )
    x1, y = torch.randn(n, 2), torch.arange(n) % 10
    model = TwoHeads()
    loss, info = objective.loss(model, model, x1, y, torch.Generator().manual_seed(3))

    num_mean, t, d, x0, u, drop = replay(objective, n, x1, seed=3)
    w = torch.exp(u[0] * math.log(8.0))
    lo, hi = 0.5 * u[1], 0.5 + 0.5 * u[2]
    lo[num_mean:], hi[num_mean:] = 0.0, 1.0  # the d = 0 rows: guidance everywhere
    inside = (lo <= t) & (t <= hi)
    assert inside[:num_mean].any() and not inside[:num_mean].all()  # both kinds of rows
    assert drop.any() and not drop.all()
    w_in = torch.where(inside, w, 1.0)
    x_t, v = interpolate(x0, x1, t), flow_velocity(x0, x1)
    col = lambda z: z[:, None]  # noqa: E731
    v_c = -0.5 * x_t + 1.5 * col(t) + 0.75 * col(w_in)  # the v head at d = 0, scale w'
    v_g = torch.where(col(drop), v, v + col(1 - 1 / w_in) * 0.75 * col(w_in))
    kept = col((~drop).float())
    u_row = 0.5 * x_t + 2.0 * col(t) - 3.0 * col(d) + 0.25 * col(w) * kept
    compound = u_row - col(d) * (0.5 * v_c + 2.0 + 3.0)
    v_row = -0.5 * x_t + 1.5 * col(t) + 0.75 * col(w) * kept
    err_u = (compound - v_g).pow(2).mean(1)
    err_v = (v_row - v_g).pow(2).mean(1)
    torch.testing.assert_close(loss, (err_u + err_v).mean())
    torch.testing.assert_close(info["mse_v"], err_v.mean())
    # targets: one call of 1.5 n rows (conditional at w' where d != 0, null label at 1 on every
    # row), over [0, 1] at d = 0; the d = 0 rows' v_c is the training forward's v head
    rows, scales, interval = model.calls[0]
    assert rows == num_mean + n == 3 * n // 2
    torch.testing.assert_close(scales, torch.cat([w_in[:num_mean], torch.ones(n)]))
    assert interval is None  # the network's default, [0, 1]


def test_unlabelled_data_has_no_guidance_inputs_and_regresses_on_v():
    objective = build_objective("imf", num_classes=0, norm_p=0.0)
    assert objective.backbone_defaults() == {"time_scale": 1.0}
    assert objective.network_inputs() == {"velocity_head": True}
    n, x1 = 16, torch.randn(16, 2)
    model = TwoHeads(m=0.0, k=0.0)
    loss, _ = objective.loss(model, model, x1, None, torch.Generator().manual_seed(0))
    num_mean, t, d, x0, _, _ = replay(objective, n, x1, seed=0)
    x_t, v = interpolate(x0, x1, t), flow_velocity(x0, x1)
    col = lambda z: z[:, None]  # noqa: E731
    v_c = -0.5 * x_t + 1.5 * col(t)  # the v head (no label: no guidance term)
    compound = 0.5 * x_t + 2.0 * col(t) - 3.0 * col(d) - col(d) * (0.5 * v_c + 5.0)
    expected = ((compound - v).pow(2).mean(1) + (v_c - v).pow(2).mean(1)).mean()
    torch.testing.assert_close(loss, expected)
    assert all(w is None and interval is None for _, w, interval in model.calls)
    assert model.calls[0][0] == num_mean  # the no-gradient pass: the rows with d != 0 only


@pytest.mark.parametrize(
    "name, options, shape",
    [
        ("unet", {"input_size": 8, "in_channels": 1, "channels": (8, 16), "cond_size": 16,
                  "num_heads": 2}, (6, 1, 8, 8)),
        ("unet", {"input_size": 8, "in_channels": 1, "channels": (8, 16), "cond_size": 16,
                  "num_heads": 2, "prediction": "data"}, (6, 1, 8, 8)),
        ("DiT-T/4", {"input_size": 8, "in_channels": 1, "hidden_size": 32, "depth": 1,
                     "num_heads": 2}, (6, 1, 8, 8)),
        ("mlp", {"dim": 2, "hidden_size": 32, "depth": 2}, (6, 2)),
    ],
)  # fmt: skip
def test_hand_written_tangents_give_autodiff_s_loss_and_gradients(name, options, shape):
    """On real backbones with the v head and the guidance inputs: the same loss and gradients
    (float64) by hand-written tangent rules as by torch.func.jvp."""
    objective = build_objective("imf", num_classes=3)
    torch.manual_seed(0)
    net = make_backbone(
        name,
        num_classes=3,
        **objective.backbone_defaults(),
        **objective.network_inputs(),
        **options,
    ).double()
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)  # not zero-initialised heads: every term counts
    x1, y = torch.randn(*shape, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    grads, losses = [], []
    for tangents in ("hand", "autodiff"):
        net.zero_grad()
        objective = build_objective("imf", num_classes=3, tangents=tangents)
        loss, _ = objective.loss(net, net, x1, y, torch.Generator().manual_seed(1))
        loss.backward()
        losses.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert grads[0].abs().max() > 0
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-9, atol=1e-12)


def test_the_v_head_doubles_the_output_and_a_call_returns_u():
    net = make_backbone(
        "unet", input_size=8, in_channels=3, channels=(8, 16), num_classes=2, patch=2,
        velocity_head=True, guidance_input=True, guidance_interval=True,
    )  # fmt: skip
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)
    x, t, d, y = torch.randn(2, 3, 8, 8), torch.rand(2), torch.rand(2), torch.tensor([0, 1])
    both = net(x, t, d, y, both_heads=True)
    assert both.shape == (2, 6, 8, 8)
    torch.testing.assert_close(net(x, t, d, y), both[:, :3])
    # the interval is an input: [0, 1] when not given
    everywhere = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    torch.testing.assert_close(net(x, t, d, y, interval=everywhere), net(x, t, d, y))
    assert not torch.equal(net(x, t, d, y, interval=torch.tensor([[0.2, 0.6]] * 2)), both[:, :3])


def test_interval_input_needs_the_guidance_input_and_is_refused_where_absent():
    with pytest.raises(Exception, match="needs the guidance input"):
        make_backbone("mlp", dim=2, num_classes=2, guidance_interval=True)
    net = make_backbone("mlp", dim=2, num_classes=2, guidance_input=True)
    with pytest.raises(ValueError, match="no guidance interval input"):
        net(torch.randn(1, 2), torch.rand(1), torch.rand(1), interval=torch.tensor([[0.0, 1.0]]))


def test_guided_sampling_is_one_call_per_step_told_the_scale():
    objective = build_objective("imf", num_classes=10)
    inputs = {**objective.backbone_defaults(), **objective.network_inputs()}
    net = make_backbone("mlp", dim=2, num_classes=10, **inputs)
    calls = []
    net.register_forward_hook(lambda _, args, kwargs, out: calls.append(kwargs), with_kwargs=True)
    x0, y = torch.randn(5, 2), torch.arange(5)
    sample(net, x0, 3, objective.sampling_rule(), y=y, cfg_scale=2.5, null_class=10)
    assert len(calls) == 3  # any step count, one call each, no unconditional pass
    assert all(torch.equal(kw["w"], torch.full((5,), 2.5)) for kw in calls)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"guidance_max": 0.5}, "guidance_max must be at least 1"),
        ({"flow_fraction": 1.5}, "flow_fraction must be in"),
        ({"norm_c": 0.0}, "norm_c must be positive"),
        ({"guidance_max": float("nan")}, "guidance_max must be a finite number"),
    ],
)
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(Exception, match=message):
        build_objective("imf", **options)


def test_a_trained_run_samples_and_exports_with_guidance_as_one_call(tmp_path):
    """Train on labelled digits (U-Net), then the exported generator at --cfg 1.5 matches the
    sampler, which calls the network once per step with the scale as an input."""
    pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")
    from helpers import tiny_config, tiny_trainer

    from shortcut_models.export import export_generator, run_exported
    from shortcut_models.factory import load_run

    config = tiny_config(
        data="mnist", objective="imf", backbone="unet",
        backbone_options={"channels": [8, 16], "num_heads": 2}, batch_size=8, steps=2,
    )  # fmt: skip
    tiny_trainer(tmp_path / "run", config).run()
    run = load_run(tmp_path / "run")
    assert run.model.velocity_head and run.model.cond.interval_embedders is not None
    report = export_generator(tmp_path / "run", tmp_path / "g.onnx", steps=2, fmt="onnx", cfg=1.5)
    assert report.max_difference < 1e-4
    noise, labels = torch.randn(2, 1, 32, 32), torch.tensor([3, 5])
    x = sample(run.model, noise, 2, run.objective.sampling_rule(), labels, 1.5, 10)
    got = run_exported(tmp_path / "g.onnx", "onnx", {"noise": noise, "labels": labels})
    torch.testing.assert_close(got, (x.clamp(-1, 1) + 1) / 2, rtol=0, atol=1e-4)
