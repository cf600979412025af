"""FD-digits: a Fréchet distance on the features of a small classifier of MNIST-like data.

Inception runs at a few images per second on 2 CPU cores; this classifier runs at thousands. It is
trained once per data set (seeded, on its training split) and shipped with the package, so every
user computes the same metric; its test accuracy is kept with it. Its 128-d penultimate features
give the distance; its softmax gives how confidently and how evenly the samples fall into the
classes. Not comparable with FID, and never called FID.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from shortcut_models.data.images import ImageData, to_unit_range
from shortcut_models.downloads import sha256_of
from shortcut_models.errors import UsageError
from shortcut_models.progress import progress_bar

FEATURES = 128


class DigitClassifier(nn.Module):
    """Four 3x3 convolutions and a 128-d feature layer, for 1x32x32 inputs in [-1, 1]."""

    def __init__(self, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(
            *block(channels, 16), *block(16, 16), nn.MaxPool2d(2),
            *block(16, 32), *block(32, 32), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, FEATURES), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURES, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def train_classifier(
    train: ImageData,
    test: ImageData,
    *,
    steps: int = 1000,
    batch: int = 128,
    seed: int = 0,
    progress: bool = True,
) -> tuple[DigitClassifier, float]:
    """Adam, cosine schedule, seeded batches; returns (model in eval mode, test accuracy)."""
    torch.manual_seed(seed)
    model = DigitClassifier(train.num_classes, train.shape[0])
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    bar = progress_bar(
        steps, f"digit classifier for {train.name}", iterable=range(steps), enabled=progress
    )
    model.train()
    for step in bar:
        x, y = train.batch(step, batch, seed)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 1000):
            index = torch.arange(start, min(start + 1000, len(test)))
            correct += (model(test.fetch(index, None)).argmax(1) == test.labels[index]).sum().item()
    return model, correct / len(test)


# The shipped classifiers: trained once (seed 0, 1,000 steps; benchmarks/train_digit_classifiers.py
# reproduces them) so that FD-digits is one fixed metric on every machine. A new training recipe or
# weights file gets a new version, and every recorded figure names the version it used.
VERSION = "v1"
WEIGHTS_DIR = Path(__file__).parent / "weights"
WEIGHTS_SHA256 = {
    "mnist": "073e497faa86bd9d9ec035230711f5af74d11bc791287cdef71f37f5ce118d23",
    "fashion-mnist": "77e41b293bdb49f700ff64281648f98f4f1d9c66aec9b8159df36a23644a1595",
}


def weights_path(name: str) -> Path:
    return WEIGHTS_DIR / f"digits-{name}-{VERSION}.safetensors"


class DigitFeatures:
    """uint8 images (N, 1, 32, 32) -> 128-d classifier features (float32); also class
    probabilities."""

    name = f"FD-digits {VERSION}"
    key = "fd_digits"

    def __init__(self, model: DigitClassifier, accuracy: float, identity: str, batch: int = 512):
        self.model = model.eval()
        self.accuracy = accuracy
        self.identity = identity
        self.batch = batch

    @classmethod
    def for_dataset(cls, name: str) -> DigitFeatures:
        """The shipped classifier of data set `name`, checked against its SHA-256."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        if name not in WEIGHTS_SHA256:
            raise UsageError(f"fd-digits applies to mnist and fashion-mnist, not '{name}'")
        path = weights_path(name)
        if not path.is_file() or sha256_of(path) != WEIGHTS_SHA256[name]:
            raise UsageError(
                f"the shipped {name} digit classifier {path} is missing or damaged "
                "(SHA-256 mismatch); reinstall shortcut-models"
            )
        with safe_open(str(path), framework="pt") as handle:
            accuracy = float(json.loads(handle.metadata()["accuracy"]))
        model = DigitClassifier()
        model.load_state_dict(load_file(str(path)))
        return cls(model.eval(), accuracy, f"digits-{name}-{VERSION}")

    width = FEATURES

    @torch.no_grad()
    def _run(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """float32 features and class probabilities, a batch at a time."""
        if images.shape[1:] != (1, 32, 32):
            raise UsageError(f"fd-digits takes 1x32x32 images, got {tuple(images.shape[1:])}")
        features, probs = [], []
        for start in range(0, len(images), self.batch):
            h = self.model.body(to_unit_range(images[start : start + self.batch]))
            features.append(h.numpy())
            probs.append(self.model.head(h).softmax(-1).numpy())
        return np.concatenate(features), np.concatenate(probs)

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self._run(images)[0]

    def class_probabilities(self, images: torch.Tensor) -> np.ndarray:
        return self._run(images)[1]


def class_scores(probs: np.ndarray, threshold: float = 0.9) -> dict[str, float]:
    """From the classifier's probabilities (N, K) of the samples: confident, the share of samples
    whose top class has probability >= threshold; class_coverage, exp(entropy) of the confident
    samples' class histogram over the number of classes: 1.0 when every class is generated equally
    often, 1/K when only one is."""
    probs = np.asarray(probs, dtype=np.float64)
    top = probs.max(1)
    confident = top >= threshold
    counts = np.bincount(probs.argmax(1)[confident], minlength=probs.shape[1])
    if counts.sum() == 0:
        return {"confident": 0.0, "class_coverage": 0.0}
    share = counts / counts.sum()
    entropy = -(share[share > 0] * np.log(share[share > 0])).sum()
    return {
        "confident": float(confident.mean()),
        "class_coverage": float(np.exp(entropy) / probs.shape[1]),
    }
