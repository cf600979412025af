"""MeanFlow: the JVP target, the folded CFG, the adaptive loss and one-call sampling."""

import pytest
import torch
from helpers import make_backbone
from torch import nn

from shortcut_models.backbones.forward_mode import forward_with_tangent
from shortcut_models.objectives import build_objective
from shortcut_models.objectives.base import flow_velocity, interpolate
from shortcut_models.objectives.meanflow import time_derivative
from shortcut_models.sampling import sample


class Linear(nn.Module):
    """u(x, t, d, y) = a x + b t + c d (+ e for a kept label): derivatives known by hand."""

    def __init__(self, a=0.5, b=2.0, c=-3.0, e=0.0):
        super().__init__()
        self.a, self.b, self.c, self.e = a, b, c, e
        self.calls = 0

    def forward(self, x, t, d, y=None):
        self.calls += 1
        shape = (-1, *([1] * (x.dim() - 1)))
        out = self.a * x + self.b * t.view(shape) + self.c * d.view(shape)
        if y is not None:
            out = out + self.e * (y.view(shape) != 10).to(x.dtype)
        return out


def draw(objective, x1, seed=0, y=None, model=None):
    model = model or Linear()
    batch = objective.targets(model, model, x1, y, torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed)  # replay the draws: times, then noise
    t, d = objective.times(x1.shape[0], g, x1.device)
    x0 = torch.randn(x1.shape, generator=g)
    return batch, t, d, x0


def test_target_is_v_plus_d_times_the_total_derivative():
    objective = build_objective("meanflow", mean_fraction=0.5)
    x1 = torch.randn(8, 2)
    batch, t, d, x0 = draw(objective, x1)
    v = flow_velocity(x0, x1)
    torch.testing.assert_close(batch.x_t, interpolate(x0, x1, t))
    # du/dt along the path with the end fixed = a v + b - c for the linear network
    expected = v + d[:, None] * (0.5 * v + 2.0 - (-3.0))
    torch.testing.assert_close(batch.target, expected)
    assert (d[:4] > 0).all() and (d[4:] == 0).all()  # half the rows learn an interval
    torch.testing.assert_close(batch.target[4:], v[4:])  # r = t: plain flow matching
    assert ((batch.t >= 0) & (batch.t + batch.d <= 1)).all()


def test_jvp_matches_finite_differences_on_a_small_network():
    torch.manual_seed(0)
    net = make_backbone("dit", input_size=8, in_channels=1, patch_size=4, hidden_size=32,
                         depth=2, num_heads=2, num_classes=10)  # fmt: skip
    for p in net.parameters():
        nn.init.normal_(p, std=0.05)
    net = net.double()  # float64, so that central differences are accurate to ~1e-8
    x, v = torch.randn(4, 1, 8, 8).double(), torch.randn(4, 1, 8, 8).double()
    t, d = torch.rand(4).double() * 0.5, torch.rand(4).double() * 0.4 + 0.1
    y = torch.randint(0, 10, (4,))
    with torch.no_grad():
        u, dudt = time_derivative(net, x, t, d, y, v)
        h = 1e-6
        ahead, behind = net(x + h * v, t + h, d - h, y), net(x - h * v, t - h, d + h, y)
    torch.testing.assert_close(u, net(x, t, d, y))
    numeric = (ahead - behind) / (2 * h)
    assert numeric.abs().max() > 0.1  # the check has something to check
    torch.testing.assert_close(dudt, numeric, atol=1e-6 * numeric.abs().max(), rtol=1e-5)


def test_cfg_is_folded_into_the_target_of_kept_labels_only():
    objective = build_objective(
        "meanflow", num_classes=10, cfg_omega=2.0, cfg_kappa=0.5, class_dropout_prob=0.5,
        mean_fraction=0.0,
    )  # fmt: skip
    x1, y = torch.randn(16, 2), torch.arange(16) % 10
    model = Linear(a=0.0, b=0.0, c=0.0, e=1.0)  # u = 1 with a label, 0 for the null class
    batch, t, d, x0 = draw(objective, x1, y=y, model=model)
    v = flow_velocity(x0, x1)
    kept = batch.y != 10
    assert kept.any() and (~kept).any()
    # omega v + kappa * 1 + (1 - omega - kappa) * 0 where the label was kept, else v
    torch.testing.assert_close(batch.target[kept], 2.0 * v[kept] + 0.5)
    torch.testing.assert_close(batch.target[~kept], v[~kept])


def test_adaptive_loss_weighting():
    pred, target = torch.zeros(3, 2), torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    batch = draw(build_objective("meanflow"), torch.randn(3, 2))[0]
    batch.target = target
    err = torch.tensor([1.0, 0.0, 2.0])
    plain, _ = build_objective("meanflow", norm_p=0.0).regression_loss(pred, batch)
    torch.testing.assert_close(plain, err.mean())
    weighted, info = build_objective("meanflow", norm_p=1.0, norm_c=0.5).regression_loss(
        pred, batch
    )
    total = 2 * err  # the paper weights the squared error summed over the 2 dimensions
    torch.testing.assert_close(weighted, (total / (total + 0.5)).mean())
    torch.testing.assert_close(info["mse"], err.mean())


def test_one_step_sampling_is_one_network_call():
    objective = build_objective("meanflow")
    model = Linear(a=0.0, b=0.0, c=1.0)
    x0 = torch.randn(5, 2)
    x1 = sample(model, x0, 1, objective.sampling_rule())
    assert model.calls == 1
    torch.testing.assert_close(x1, x0 + 1.0)  # x1 = x0 + u(x0, t=0, d=1)
    sample(model, x0, 3, objective.sampling_rule())  # any step count, not just powers of two
    assert model.calls == 4


def test_bad_options_are_clear_errors():
    with pytest.raises(Exception, match="mean_fraction"):
        build_objective("meanflow", mean_fraction=1.5)


@pytest.mark.parametrize(
    "name, options, shape",
    [
        ("mlp", {"dim": 2, "hidden_size": 32, "depth": 2}, (64, 2)),
        ("DiT-T/8", {"input_size": 16, "in_channels": 1, "hidden_size": 32, "depth": 1,
                     "num_heads": 2}, (8, 1, 16, 16)),
    ],
)  # fmt: skip
def test_one_pass_gives_the_gradient_of_two_passes(name, options, shape):
    """The JVP's primal output as the prediction: the same loss and gradients as a second
    forward pass (float64: equal to 1e-12), and no row evaluated twice."""
    from shortcut_models.objectives import build_objective

    torch.manual_seed(0)
    net = make_backbone(name, num_classes=3, time_scale=1.0, **options).double()
    x1, y = torch.randn(*shape, dtype=torch.float64), torch.randint(0, 3, (shape[0],))
    grads, calls = [], []
    net.register_forward_hook(lambda _, args, __: calls.append(args[0].shape[0]))  # rows
    for one_pass in (True, False):
        objective = build_objective("meanflow", num_classes=3, one_pass=one_pass)
        net.zero_grad()
        calls.clear()
        objective.loss(net, net, x1, y, torch.Generator().manual_seed(1))[0].backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters()]))
        # one pass: the JVP on the rows with d != 0, a forward on the others, each row once;
        # two passes: the same JVP, then the training forward on every row
        num_mean = round(shape[0] * objective.mean_fraction)
        assert calls == ([num_mean, shape[0] - num_mean] if one_pass else [num_mean, shape[0]])
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-12)


def test_hand_written_attention_jvp_equals_the_math_kernel_s():
    """The attention tangent of backbones.attention (fused forward, blocks of queries) against
    the math kernel's automatic forward-mode rule, in float64; the primal's gradient too."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from shortcut_models.backbones import attention as module

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 300, 16, dtype=torch.float64) for _ in range(3))
    tangents = tuple(torch.randn_like(q) for _ in range(3))
    with sdpa_kernel(SDPBackend.MATH):
        reference = torch.func.jvp(
            lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=0.25), (q, k, v), tangents
        )
    with module.jvp_attention():
        primal, tangent = torch.func.jvp(
            lambda a, b, c: module.attention(a, b, c, 0.25), (q, k, v), tangents
        )
    assert module.CHUNK < 300  # several query blocks were used
    torch.testing.assert_close(primal, reference[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(tangent, reference[1], rtol=0, atol=1e-5)
    assert float((tangent - reference[1]).abs().max()) < 1e-12
    mine, theirs = q.clone().requires_grad_(), q.clone().requires_grad_()
    with module.jvp_attention():
        torch.func.jvp(lambda a: module.attention(a, k, v, 0.25), (mine,), tangents[:1])[
            0
        ].sum().backward()
    F.scaled_dot_product_attention(theirs, k, v, scale=0.25).sum().backward()
    torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=1e-12)


def test_a_dit_jvp_with_the_hand_written_rule_equals_the_math_kernel_s():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from shortcut_models.backbones.attention import jvp_attention

    torch.manual_seed(0)
    net = make_backbone(
        "DiT-T/4", input_size=16, in_channels=1, hidden_size=32, depth=2, num_heads=2,
        num_classes=3, time_scale=1.0,
    ).double()  # fmt: skip
    x, v = torch.randn(4, 1, 16, 16, dtype=torch.float64), torch.randn(4, 1, 16, 16).double()
    t, d, y = torch.rand(4).double(), torch.rand(4).double() * 0.1, torch.tensor([0, 1, 2, 3])
    ones = torch.ones_like(t)

    def fn(a, b, c):
        return net(a, b, c, y)

    with sdpa_kernel(SDPBackend.MATH):
        reference = torch.func.jvp(fn, (x, t, d), (v, ones, -ones))
    with jvp_attention():
        got = torch.func.jvp(fn, (x, t, d), (v, ones, -ones))
    torch.testing.assert_close(got[1], reference[1], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "name, options, shape",
    [
        ("mlp", {"dim": 3, "hidden_size": 16, "depth": 2}, (6, 3)),
        ("DiT-T/4", {"input_size": 16, "in_channels": 2, "hidden_size": 32, "depth": 2,
                     "num_heads": 2}, (4, 2, 16, 16)),
        ("unet", {"input_size": 8, "in_channels": 2, "channels": [8, 16], "num_heads": 2,
                  "cond_size": 16}, (3, 2, 8, 8)),
        ("unet", {"input_size": 8, "in_channels": 2, "channels": [8, 16], "num_heads": 2,
                  "cond_size": 16, "patch": 2}, (3, 2, 8, 8)),
        ("unet", {"input_size": 8, "in_channels": 2, "channels": [8, 16], "num_heads": 2,
                  "cond_size": 16, "patch": 2, "prediction": "data"}, (3, 2, 8, 8)),
    ],
)  # fmt: skip
@pytest.mark.parametrize("guidance_input", [False, True])
def test_hand_written_tangents_equal_forward_mode_autodiff(name, options, shape, guidance_input):
    """forward_with_tangent (backbones.forward_mode) against torch.func.jvp through the plain
    forward with the math attention kernel, in float64: the value is the forward's to the last
    bit (and so are its gradients, DiT's blocks recomputed too), the tangent equal to 1e-10."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    net = make_backbone(
        name, num_classes=3, time_scale=1.0, guidance_input=guidance_input, **options
    ).double()
    for p in net.parameters():  # no zero-initialised layers: every path carries a tangent
        torch.nn.init.normal_(p, std=0.3)
    x, dx = torch.randn(*shape).double(), torch.randn(*shape).double()
    t, d, y = (
        torch.rand(shape[0]).double(),
        torch.rand(shape[0]).double() * 0.3,
        torch.arange(shape[0]) % 4,
    )
    w = 1 + torch.rand(shape[0]).double() if guidance_input else None
    dt, dd = torch.randn_like(t), torch.randn_like(d)
    with sdpa_kernel(SDPBackend.MATH):
        value, tangent = torch.func.jvp(lambda a, b, c: net(a, b, c, y, w), (x, t, d), (dx, dt, dd))
    got_value, got_tangent = forward_with_tangent(net, x, t, d, y, w, dx=dx, dt=dt, dd=dd)
    assert torch.equal(got_value, net(x, t, d, y, w)) and not got_tangent.requires_grad
    torch.testing.assert_close(got_value, value, rtol=0, atol=1e-10)  # the math kernel's
    torch.testing.assert_close(got_tangent, tangent, rtol=1e-10, atol=1e-10)
    assert float(tangent.abs().max()) > 1e-2
    _, only_t = forward_with_tangent(net, x, t, d, y, w, dt=dt)  # missing tangents are zero
    with sdpa_kernel(SDPBackend.MATH):
        reference = torch.func.jvp(lambda b: net(x, b, d, y, w), (t,), (dt,))[1]
    torch.testing.assert_close(only_t, reference, rtol=1e-10, atol=1e-10)

    net.zero_grad()
    net(x, t, d, y, w).square().sum().backward()
    expected = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    net.recompute_activations = True  # DiT's blocks recompute; the others ignore it
    forward_with_tangent(net, x, t, d, y, w, dx=dx, dt=dt, dd=dd)[0].square().sum().backward()
    for p, g in zip(net.parameters(), expected, strict=True):
        assert torch.equal(p.grad, g)


def test_any_backbone_gets_its_tangent_rules_or_the_autodiff_fallback():
    """A custom backbone with layers the built-in ones lack (an affine LayerNorm, RMSNorm,
    Dropout, tanh, a scalar division): plain code, no tangent code; forward_with_tangent gives
    torch.func.jvp's tangent (float64), functions without a rule through its fallback."""

    class Custom(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.out = nn.Linear(3, 8), nn.Linear(8, 3)
            self.norm, self.rms = nn.LayerNorm(8), nn.RMSNorm(8)
            self.drop = nn.Dropout(0.5)

        def forward(self, x, t, d, y=None):
            h = self.norm(self.inp(x) * t[:, None]) + d[:, None]
            return self.out(self.drop(torch.tanh(self.rms(h)) / 2))

    torch.manual_seed(0)
    net = Custom().double().eval()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    x, t, d = torch.randn(5, 3).double(), torch.rand(5).double(), torch.rand(5).double()
    dx, dt, dd = torch.randn_like(x), torch.randn_like(t), torch.randn_like(d)
    value, tangent = torch.func.jvp(lambda a, b, c: net(a, b, c), (x, t, d), (dx, dt, dd))
    got_value, got_tangent = forward_with_tangent(net, x, t, d, dx=dx, dt=dt, dd=dd)
    assert torch.equal(got_value, net(x, t, d))
    torch.testing.assert_close(got_tangent, tangent, rtol=1e-10, atol=1e-10)
