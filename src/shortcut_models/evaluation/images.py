"""Score image models at several step budgets: FID (Inception) or FD-digits, precision / recall,
and for FD-digits the classifier's class coverage.

Reference features come from a data set's training split, an image folder, an .npz of uint8
images (`arr_0`, NHWC, as FID tools write them), or only statistics from an .npz with `mu` and
`sigma` (then precision and recall, which need features, are left out). Features of named data
sets and folders are cached per feature network, source and count.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shortcut_models import logs
from shortcut_models.data import DIGIT_DATASETS, named_image_sets
from shortcut_models.distributed import SINGLE, Dist, shard_chunks
from shortcut_models.downloads import cache_dir
from shortcut_models.errors import UsageError
from shortcut_models.metrics.frechet import FeatureStats, frechet_distance
from shortcut_models.metrics.precision_recall import precision_recall

log = logs.get(__name__)

METRICS = ("fid", "fd-digits")
PR_LIMIT = 10000  # precision / recall on at most this many points per set (k-NN is quadratic)


class Reference:
    """Statistics of the reference set, and its features when they are known."""

    def __init__(self, stats: FeatureStats, features: np.ndarray | None, description: str):
        self.stats, self.features, self.description = stats, features, description


def build_extractor(
    metric: str,
    data_name: str,
    inception: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch: int = 64,
):
    if metric == "fid":
        from shortcut_models.metrics.inception import InceptionFeatures

        return InceptionFeatures(inception, device, batch)
    if metric == "fd-digits":
        from shortcut_models.metrics.digits import DigitFeatures

        return DigitFeatures.for_dataset(data_name)
    raise UsageError(f"unknown metric '{metric}' (choose from: {', '.join(METRICS)})")


def _images_from_npz(path: Path) -> torch.Tensor | None:
    """uint8 NCHW images from an .npz holding `arr_0` (NHWC), or None for a statistics file."""
    try:
        with np.load(path) as data:
            if "mu" in data and "sigma" in data:
                return None
            if "arr_0" not in data:
                raise UsageError(f"{path} holds neither 'arr_0' images nor 'mu' / 'sigma'")
            images = data["arr_0"]
    except UsageError:
        raise
    except Exception as exc:  # numpy raises OSError, ValueError, BadZipFile, EOFError ...
        raise UsageError(f"cannot read {path} ({exc})") from None
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise UsageError(f"{path}: arr_0 must be uint8 (N, H, W, 1 or 3), got {images.shape}")
    if len(images) < 2:
        raise UsageError(f"{path}: arr_0 holds {len(images)} image(s); statistics need at least 2")
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def _reference_source(ref: str, resolution: int, channels: int) -> tuple[str, Any]:
    """(cache key, loader of the data source) of a data set name or an image folder; the data
    is only opened when the features are not cached."""
    from shortcut_models.data import build_data

    if ref in DIGIT_DATASETS:
        from shortcut_models.data.mnist import digit_data

        return f"{ref}-train", lambda: digit_data(ref, "train")
    if ref in named_image_sets():
        return ref, lambda: build_data(ref)

    options = {"path": ref, "resolution": resolution, "channels": channels}
    digest = hashlib.sha1(str(Path(ref).resolve()).encode()).hexdigest()[:10]
    key = f"folder-{Path(ref).name}-{digest}-{resolution}px{channels}"
    return key, lambda: build_data("folder", options)


def load_reference(
    ref: str, extractor: Any, shape: tuple[int, ...], num: int, seed: int = 0
) -> Reference:
    """Reference statistics (and features) from a name, folder or .npz; cached where derived."""
    path = Path(ref)
    if path.suffix == ".npz" and path.is_file():
        images = _images_from_npz(path)
        if images is None:
            return Reference(FeatureStats.load(path), None, f"statistics {path}")
        features = extractor(images)
        return Reference(FeatureStats.of(features), features, f"{len(images)} images of {path}")
    if ref not in named_image_sets() and not path.is_dir():
        raise UsageError(
            f"--ref {ref}: not a data set ({', '.join(named_image_sets())}), image folder or .npz"
        )
    key, open_data = _reference_source(ref, shape[-1], shape[0])
    cache = cache_dir() / f"ref-{extractor.identity}-{key}-n{num}-seed{seed}.npz"
    if cache.is_file():
        with np.load(cache) as data:
            features = data["features"]
        stats = FeatureStats.of(features)
    else:
        images = open_data().sample(num, seed)
        log.info(f"computing reference features of {ref} ({len(images)} images)")
        features = extractor(images)
        stats = FeatureStats.of(features)
        cache.parent.mkdir(parents=True, exist_ok=True)
        stats.save(cache, features=features.astype(np.float32))
    return Reference(stats, features, f"{len(features)} images of {ref}")


def score_images(
    images: torch.Tensor, extractor: Any, reference: Reference, dist: Dist = SINGLE
) -> dict[str, float]:
    """The metric (under the extractor's key), precision / recall, and class scores if any;
    under torchrun the feature network's work is split over the processes."""
    chunk = -(-len(images) // dist.world_size)
    features = shard_chunks(
        len(images), chunk, dist, lambda a, b: torch.from_numpy(extractor(images[a:b]))
    ).numpy()
    scores = {extractor.key: frechet_distance(FeatureStats.of(features), reference.stats)}
    if reference.features is not None:
        scores.update(precision_recall(reference.features[:PR_LIMIT], features[:PR_LIMIT]))
    if hasattr(extractor, "class_scores"):
        scores.update(extractor.class_scores(images))
    return scores
