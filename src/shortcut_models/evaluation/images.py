"""Score image models at several step budgets: FID (Inception) or FD-digits, precision / recall,
and for FD-digits the classifier's class coverage.

Reference features come from a data set's training split, an image folder, an .npz of uint8
images (`arr_0`, NHWC, as FID tools write them), or only statistics from an .npz with `mu` and
`sigma` (then precision and recall, which need features, are left out). Features of named data
sets and folders are cached per feature network, source and count; those of an image .npz per
feature network and the file's content (an edited file is measured again).

Memory does not grow with the image count beyond the features: images pass through the feature
network a batch at a time (reference images drawn in chunks, samples measured as each chunk is
generated and decoded), and only the features (2,048 float32 per image for Inception) are kept.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from shortcut_models import logs
from shortcut_models.data import DIGIT_DATASETS, named_image_sets
from shortcut_models.distributed import SINGLE, Dist, shard_chunks
from shortcut_models.downloads import cache_dir
from shortcut_models.errors import UsageError
from shortcut_models.files import read_cached_arrays
from shortcut_models.metrics.digits import class_scores
from shortcut_models.metrics.frechet import FeatureStats, frechet_distance
from shortcut_models.metrics.precision_recall import precision_recall
from shortcut_models.progress import progress_bar

log = logs.get(__name__)

METRICS = ("fid", "fd-digits")
# Images per Inception call unless told, independent of the sampling batch: on a CPU 8 is the
# fastest of 8 / 16 / 32 for the oneDNN-optimised network and holds the least memory
# (benchmarks/results/inception_speed.md); a GPU wants larger batches.
FEATURE_BATCH = {"cpu": 8, "accelerator": 128}
PR_LIMIT = 10000  # precision / recall on at most this many points per set (k-NN is quadratic)


class FeatureExtractor(Protocol):
    """What scoring needs of a feature network (Inception, the digit classifier, a stand-in):
    uint8 images (N, C, H, W) -> (N, D) features. A classifier also has `width` (= D) and
    `class_probabilities`, which add the class scores."""

    name: str  # the metric's name in tables ("FID")
    key: str  # its key in results ("fid")
    identity: str  # names the network in cache files
    batch: int  # images per call

    def __call__(self, images: torch.Tensor) -> np.ndarray: ...


class Reference:
    """Statistics of the reference set, and its features when they are known."""

    def __init__(self, stats: FeatureStats, features: np.ndarray | None, description: str):
        self.stats, self.features, self.description = stats, features, description


def build_extractor(
    metric: str,
    data_name: str,
    inception: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch: int | None = None,
) -> FeatureExtractor:
    """The feature network of `metric`; `batch` images per Inception call (default: by device,
    `FEATURE_BATCH`)."""
    if metric == "fid":
        from shortcut_models.metrics.inception import InceptionFeatures

        if batch is None:
            batch = FEATURE_BATCH["cpu" if torch.device(device).type == "cpu" else "accelerator"]
        return InceptionFeatures(inception, device, batch)
    if metric == "fd-digits":
        from shortcut_models.metrics.digits import DigitFeatures

        return DigitFeatures.for_dataset(data_name)
    raise UsageError(f"unknown metric '{metric}' (choose from: {', '.join(METRICS)})")


def _images_from_npz(path: Path) -> np.ndarray | None:
    """uint8 NHWC images from an .npz holding `arr_0`, or None for a statistics file."""
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
    return images


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


def _reference_cache(
    ref: str, extractor: FeatureExtractor, shape: tuple[int, ...], num: int, seed: int
) -> tuple[Path, Callable[[], Any]]:
    """(the cache file of a named set's or folder's reference features, the loader of its
    data); a UsageError for anything else."""
    if ref not in named_image_sets() and not Path(ref).is_dir():
        raise UsageError(
            f"--ref {ref}: not a data set ({', '.join(named_image_sets())}), image folder or .npz"
        )
    key, open_data = _reference_source(ref, shape[-1], shape[0])
    return cache_dir() / f"ref-{extractor.identity}-{key}-n{num}-seed{seed}.npz", open_data


def _npz_cache(path: Path, extractor: FeatureExtractor) -> Path:
    """The cache file of an image .npz's reference features, named by a digest of its bytes."""
    with open(path, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha1").hexdigest()[:12]
    return cache_dir() / f"ref-{extractor.identity}-npz-{path.stem}-{digest}.npz"


def reference_images_to_measure(
    ref: str, extractor: FeatureExtractor, shape: tuple[int, ...], num: int, seed: int = 0
) -> int:
    """How many images `load_reference` will put through the extractor: none where the
    features are cached or the .npz holds statistics, else the reference's image count (up to
    `num`; a data source without a length counts as `num`)."""
    path = Path(ref)
    if path.suffix == ".npz" and path.is_file():
        if _npz_cache(path, extractor).is_file():
            return 0
        array = _images_from_npz(path)
        return 0 if array is None else len(array)
    cache, open_data = _reference_cache(ref, extractor, shape, num, seed)
    if cache.is_file():
        return 0
    return _images_in(open_data(), num)


def _images_in(source: Any, num: int) -> int:
    """How many of up to `num` images a data source gives (`num` for one without a length)."""
    return min(num, len(source)) if hasattr(source, "__len__") else num


def load_reference(
    ref: str,
    extractor: FeatureExtractor,
    shape: tuple[int, ...],
    num: int,
    seed: int = 0,
    progress: bool = False,
) -> Reference:
    """Reference statistics (and features) from a name, folder or .npz; cached where derived.
    `progress` shows the measuring of images (a bar, or log lines where no terminal shows one)."""
    path = Path(ref)
    if path.suffix == ".npz" and path.is_file():
        cache = _npz_cache(path, extractor)
        if not cache.is_file():
            array = _images_from_npz(path)
            if array is None:  # a statistics file
                return Reference(FeatureStats.load(path), None, f"statistics {path}")

        def measure_npz() -> np.ndarray:
            chunks = (
                torch.from_numpy(array[start : start + extractor.batch]).permute(0, 3, 1, 2)
                for start in range(0, len(array), extractor.batch)
            )
            return features_of(chunks, extractor, progress, len(array))

        return _cached_reference(cache, measure_npz, str(path))
    cache, open_data = _reference_cache(ref, extractor, shape, num, seed)

    def measure_source() -> np.ndarray:
        log.info(f"computing reference features of {ref} (up to {num} images)")
        source = open_data()
        chunks = source.sample_batches(num, seed, extractor.batch)
        return features_of(chunks, extractor, progress, _images_in(source, num))

    return _cached_reference(cache, measure_source, ref)


def _cached_reference(cache: Path, measure: Callable[[], np.ndarray], name: str) -> Reference:
    """The reference whose features `cache` holds, or `measure()`s them and caches them."""
    if cache.is_file():
        features = read_cached_arrays(cache, _feature_problem)["features"]
        stats = FeatureStats.of(features)
    else:
        features = measure()
        stats = FeatureStats.of(features)
        cache.parent.mkdir(parents=True, exist_ok=True)
        stats.save(cache, features=features)
    return Reference(stats, features, f"{len(features)} images of {name}")


def _feature_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """Why a cached reference's arrays are unusable, or None."""
    features = arrays.get("features")
    if features is None:
        return "no 'features' array"
    if features.ndim != 2 or len(features) < 2 or features.dtype.kind != "f":
        return f"features of shape {features.shape} and type {features.dtype}"
    if not np.isfinite(features).all():
        return "features hold NaN or inf"
    return None


def features_of(
    chunks: Iterable[torch.Tensor],
    extractor: FeatureExtractor,
    progress: bool = False,
    total: int | None = None,
) -> np.ndarray:
    """float32 features of uint8 image chunks, computed a chunk at a time (`progress`: counted
    on a bar, or in log lines where no terminal shows one)."""
    out = []
    with progress_bar(total, "reference features", unit="img", enabled=progress) as bar:
        for chunk in chunks:
            out.append(extractor(chunk))
            bar.update(len(chunk))
    return np.concatenate(out)


def measure(images: torch.Tensor, extractor: FeatureExtractor) -> torch.Tensor:
    """float32 (N, D [+ K]): the features of uint8 images, then the class probabilities when the
    extractor is a classifier; what a sample keeps once it has been scored."""
    parts = [torch.from_numpy(extractor(images))]
    if hasattr(extractor, "class_probabilities"):
        parts.append(torch.from_numpy(extractor.class_probabilities(images)))
    return torch.cat(parts, dim=1)


def scores_of(
    measured: torch.Tensor, extractor: FeatureExtractor, reference: Reference
) -> dict[str, float]:
    """The metric (under the extractor's key), precision / recall, and class scores if any, from
    the rows `measure` returned."""
    width = getattr(extractor, "width", measured.shape[1])
    features = measured[:, :width].double().numpy()
    scores = {extractor.key: frechet_distance(FeatureStats.of(features), reference.stats)}
    if reference.features is not None:
        scores.update(precision_recall(reference.features[:PR_LIMIT], features[:PR_LIMIT]))
    if width < measured.shape[1]:
        scores.update(class_scores(measured[:, width:].numpy()))
    return scores


def score_images(
    images: torch.Tensor, extractor: FeatureExtractor, reference: Reference, dist: Dist = SINGLE
) -> dict[str, float]:
    """Scores of uint8 images held in memory; under torchrun the feature network's work is split
    over the processes."""
    chunk = -(-len(images) // dist.world_size)
    measured = shard_chunks(len(images), chunk, dist, lambda a, b: measure(images[a:b], extractor))
    return scores_of(measured, extractor, reference)
