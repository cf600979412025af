"""2-D data sets and the Wasserstein distances."""

import pytest
import torch

from shortcut_models.data import TOY_DATASETS, ToyData, build_data
from shortcut_models.errors import UsageError
from shortcut_models.metrics import sliced_wasserstein, wasserstein2


@pytest.mark.parametrize("name", list(TOY_DATASETS))
def test_toy_batches_are_deterministic_and_in_range(name):
    data = ToyData(name)
    a, _ = data.batch(3, 500, seed=0)
    b, _ = data.batch(3, 500, seed=0)
    c, _ = data.batch(4, 500, seed=0)
    assert a.shape == (500, 2) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() < 3.0 and a.std() > 0.3


def test_checkerboard_occupies_only_dark_squares():
    x = ToyData("checkerboard").sample(4000, seed=1)
    parity = (torch.floor(x[:, 0]) + torch.floor(x[:, 1])) % 2
    assert torch.all(parity == parity[0])


def test_unknown_data_set():
    with pytest.raises(UsageError, match="unknown data set"):
        build_data("imagenet-9000")


def test_distances_of_identical_and_shifted_clouds():
    a = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(a, a) == 0.0
    assert wasserstein2(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = torch.tensor([3.0, 4.0])
    assert wasserstein2(a, a + shift) == pytest.approx(5.0, rel=1e-6)  # a translation costs |shift|
    # sliced W2 of a translation: sqrt(E_theta <theta, shift>^2) = |shift| / sqrt(2) in 2-D
    assert sliced_wasserstein(a, a + shift, num_projections=4096) == pytest.approx(
        5.0 / 2**0.5, rel=0.03
    )


def test_diverged_samples_are_infinitely_far():
    a = torch.randn(10, 2)
    assert sliced_wasserstein(a, a * float("nan")) == float("inf")
