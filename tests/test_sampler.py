"""The Euler sampler: how often it calls the network, and with which t and d."""

import pytest
import torch
from torch import nn

from shortcut_models.errors import UsageError
from shortcut_models.objectives import build_objective
from shortcut_models.sampling import SamplingRule, sample


class Recorder(nn.Module):
    """Constant velocity c; remembers every (t, d, batch size) it was called with."""

    def __init__(self, c=1.0):
        super().__init__()
        self.c = c
        self.calls = []

    def forward(self, x, t, d, y=None):
        self.calls.append((t.clone(), d.clone(), x.shape[0]))
        return torch.full_like(x, self.c)


@pytest.mark.parametrize("steps", [1, 2, 4, 8, 128])
def test_n_calls_with_step_size_one_over_n(steps):
    model = Recorder(c=2.0)
    noise = torch.randn(5, 2)
    spec = build_objective("shortcut").sampling_rule()
    out = sample(model, noise, steps, spec)
    assert len(model.calls) == steps
    for i, (t, d, _) in enumerate(model.calls):
        assert torch.allclose(t, torch.full((5,), i / steps))
        assert torch.allclose(d, torch.full((5,), 1 / steps))
    torch.testing.assert_close(out, noise + 2.0)  # Euler with constant velocity is exact


def test_flow_matching_model_is_told_its_training_step_size():
    model = Recorder()
    spec = build_objective("flow_matching", denoise_timesteps=128).sampling_rule()
    sample(model, torch.randn(3, 2), 3, spec)  # any n is allowed
    assert len(model.calls) == 3
    assert all(torch.allclose(d, torch.full((3,), 1 / 128)) for _, d, _ in model.calls)


def test_cfg_is_one_batched_call_per_step():
    model = Recorder()
    y = torch.tensor([1, 2, 3])
    sample(model, torch.randn(3, 2), 1, SamplingRule(), y=y, cfg_scale=2.0, null_class=10)
    assert len(model.calls) == 1 and model.calls[0][2] == 6


@pytest.mark.parametrize("steps", [3, 6, 256, 0])
def test_shortcut_rejects_step_counts_it_was_not_trained_for(steps):
    spec = build_objective("shortcut", denoise_timesteps=128).sampling_rule()
    with pytest.raises(UsageError):
        sample(Recorder(), torch.randn(2, 2), steps, spec)


def test_same_noise_same_samples():
    torch.manual_seed(0)
    net = nn.Linear(2, 2)

    def model(x, t, d, y=None):
        return net(x) * t[:, None]

    noise = torch.randn(4, 2)
    a = sample(model, noise, 4)
    b = sample(model, noise.clone(), 4)
    assert torch.equal(a, b)
