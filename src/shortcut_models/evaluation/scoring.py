"""The one evaluation orchestration: which reference a run is scored against, which feature
network, what shape its decoded samples have, and the table and plot of the results.

`shortcut evaluate` calls `evaluate_runs`; `compare` builds the same scorer with `scorer_for` and
calls its `score`; `demo` builds the FD-digits `ImageScorer` and scores the samples it already
holds with `score_images`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shortcut_models.config import TrainConfig
from shortcut_models.data import DIGIT_DATASETS, DataSource, DataSpec, build_data
from shortcut_models.data.images import to_uint8
from shortcut_models.distributed import SINGLE, Dist, main_first
from shortcut_models.errors import UsageError
from shortcut_models.evaluation import images
from shortcut_models.evaluation.generation import SamplingPlan, generate
from shortcut_models.evaluation.vectors import evaluate_vectors
from shortcut_models.factory import LoadedRun, load_run
from shortcut_models.guidance import describe_schedule, guides
from shortcut_models.plots import metric_vs_steps
from shortcut_models.progress import progress_bar
from shortcut_models.report import markdown_table
from shortcut_models.sampling import check_steps
from shortcut_models.seeding import EVALUATION, derive_seed
from shortcut_models.vae import decode_batched, decoder_for

Scores = dict[int, dict[str, float]]  # step budget -> metric name -> value
# the image scores after the headline metric: key -> table header
IMAGE_COLUMNS = {
    "precision": "precision",
    "recall": "recall",
    "confident": "confident",
    "class_coverage": "class coverage",
}


def default_reference(config: TrainConfig) -> str:
    """What an image run is scored against unless told: its image folder or its data set."""
    ref = config.data.options.path if config.data.name == "folder" else config.data.name
    if ref is None or config.data.name == "latents":
        raise UsageError("pass --ref: a data set name, image folder or .npz of images / stats")
    return ref


def default_metric(data: str) -> str:
    """FD-digits for the digit sets (their classifier ships with the package), FID otherwise."""
    return "fd-digits" if data in DIGIT_DATASETS else "fid"


class VectorScorer:
    """Sliced W2 (and exact W2) against fresh draws of the run's own data."""

    label, key, columns = "sliced W2", "sliced_w2", {"w2": "W2"}

    def __init__(
        self, exact: bool = True, data: DataSource | None = None, dist: Dist = SINGLE
    ) -> None:
        self.exact = exact
        self.data = data  # None: each run's own data, built from its config
        self.dist = dist

    def images_to_reference(self, shape: tuple[int, ...]) -> int:
        """How many reference images the first score at `shape` will measure (0: cached)."""
        if shape in self.references:
            return 0
        return images.reference_images_to_measure(
            self.ref, self.extractor, shape, self.ref_num, self.seed
        )

    def score(self, run: LoadedRun, plan: SamplingPlan) -> Scores:
        config = run.checkpoint.config
        data = self.data or build_data(config.data.name, config.data.options)
        return evaluate_vectors(
            run.model, run.objective, data, plan.steps, plan.num, plan.seed, self.exact, self.dist
        )


class ImageScorer:
    """FID or FD-digits, precision / recall (and class scores) against one reference set,
    whose features are computed once per sample shape."""

    def __init__(
        self,
        metric: str,
        ref: str,
        data_name: str,
        *,
        inception: str | Path | None = None,
        device: torch.device | str = "cpu",
        feature_batch: int | None = None,
        ref_num: int = 10000,
        seed: int = 0,
        vae: str | Path | None = None,
        progress: bool = True,
        dist: Dist = SINGLE,
    ) -> None:
        # fd-digits: the classifier of the named reference set, or of the model's data for a file
        named = metric == "fd-digits" and not Path(ref).exists()
        name = ref if named else data_name
        self.extractor = main_first(
            dist, lambda: images.build_extractor(metric, name, inception, device, feature_batch)
        )
        self.label, self.key, self.columns = self.extractor.name, self.extractor.key, IMAGE_COLUMNS
        self.ref, self.ref_num, self.seed = ref, ref_num, seed
        self.vae, self.device, self.progress, self.dist = vae, device, progress, dist
        self.references: dict[tuple[int, ...], images.Reference] = {}

    def reference(self, shape: tuple[int, ...]) -> images.Reference:
        if shape not in self.references:
            self.references[shape] = main_first(
                self.dist,
                lambda: images.load_reference(
                    self.ref,
                    self.extractor,
                    shape,
                    self.ref_num,
                    self.seed,
                    progress=self.progress and self.dist.is_main,
                ),  # fmt: skip
            )
        return self.references[shape]

    def images_to_reference(self, shape: tuple[int, ...]) -> int:
        """How many reference images the first score at `shape` will measure (0: cached)."""
        if shape in self.references:
            return 0
        return images.reference_images_to_measure(
            self.ref, self.extractor, shape, self.ref_num, self.seed
        )

    def score(self, run: LoadedRun, plan: SamplingPlan) -> Scores:
        """`plan.num` images per step budget (the same noise, classes in turn), decoded when
        the run is on latents, scored against the reference of their shape."""
        spec = run.spec
        codec = decoder_for(spec, self.vae, self.device) if spec.kind == "latent" else None
        shape = spec.shape
        if codec is not None:
            shape = tuple(codec.decode(torch.zeros(1, *spec.shape)).shape[1:])
        reference = self.reference(shape)
        labels = torch.arange(plan.num) % spec.num_classes if spec.num_classes else None
        batch = min(plan.batch, 4096)
        noise_seed = derive_seed(plan.seed, EVALUATION)
        step = self.extractor.batch

        results, dist = {}, self.dist
        # images this process samples and measures (all of them on one process)
        total = plan.num * len(plan.steps) if dist.world_size == 1 else None
        enabled = self.progress and dist.is_main
        bar = progress_bar(total, "sampled and measured", unit="img", enabled=enabled)

        def measure(x: torch.Tensor) -> torch.Tensor:
            """A chunk of samples -> its features, decoded and quantised a feature batch at a
            time, so memory holds one decoded batch and the features, whatever `plan.num`."""
            parts = []
            for start in range(0, len(x), step):
                y = x[start : start + step]
                if codec is not None:
                    y = decode_batched(codec, y, min(batch, 64))
                parts.append(images.measure(to_uint8(y), self.extractor))
                bar.update(len(y))
            return torch.cat(parts)

        with bar:
            for n in plan.steps:
                bar.set_postfix(steps=n)
                measured = generate(
                    run.model,
                    run.objective,
                    spec.shape,
                    plan.num,
                    n,
                    seed=noise_seed,
                    batch_size=batch,
                    labels=labels,
                    cfg_scale=plan.scale(n),
                    dist=dist,
                    then=measure,
                )
                results[n] = images.scores_of(measured, self.extractor, reference)
        return results

    def score_images(self, batch: torch.Tensor) -> dict[str, float]:
        """Scores of uint8 images (N, C, H, W) a caller generated itself."""
        return images.score_images(batch, self.extractor, self.reference(tuple(batch.shape[1:])))

    @property
    def description(self) -> str:
        return next(iter(self.references.values())).description if self.references else self.ref


def scorer_for(
    spec: DataSpec | DataSource,
    config: TrainConfig,
    *,
    metric: str = "auto",
    ref: str | None = None,
    exact: bool = True,
    data: DataSource | None = None,
    dist: Dist = SINGLE,
    **image_options: Any,
) -> VectorScorer | ImageScorer:
    """The scorer of a run's kind of data: vectors against fresh draws of `data` (default: each
    run's own), images against `ref` (default: the run's own data) with `metric` (auto:
    FD-digits for digit sets, else FID)."""
    if spec.kind == "vector":
        if ref is not None:
            raise UsageError(
                "--ref applies to image models; 2-D models are scored against their data"
            )
        return VectorScorer(exact, data, dist)
    metric = default_metric(config.data.name) if metric == "auto" else metric
    ref = ref or default_reference(config)
    return ImageScorer(metric, ref, config.data.name, dist=dist, **image_options)


@dataclass
class EvaluateOptions(SamplingPlan):
    """What `shortcut evaluate` scores: every run at every budget, with one seed's noise."""

    metric: str = "fid"
    ref: str | None = None
    ref_num: int = 10000
    feature_batch: int | None = None  # images per Inception call (None: by device)
    inception: str | Path | None = None
    vae: str | Path | None = None
    exact: bool = True
    weights: str | None = None  # "ema", "model", or None: each run's eval_weights
    plot: Path | None = None
    progress: bool = True


@dataclass
class Evaluation:
    results: dict[str, dict[str, dict[str, float]]]  # run -> str(steps) -> metric -> value
    table: str
    plot: Path | None = None


def evaluate_runs(
    paths: Sequence[str | Path], options: EvaluateOptions, device: torch.device, dist: Dist
) -> Evaluation:
    """Score every run at every step budget; one table (and for images a plot) for all."""
    runs = {str(path): load_run(path, options.weights, device) for path in paths}
    if len({run.spec.kind == "vector" for run in runs.values()}) > 1:
        raise UsageError("evaluate 2-D and image checkpoints separately")
    for name, run in runs.items():
        if run.spec.num_classes == 0 and guides(options.cfg):
            raise UsageError(f"{name} is unconditional: --class and --cfg do not apply")
        for n in options.steps:
            check_steps(n, run.objective.sampling_rule())
    first = next(iter(runs.values()))
    scorer = scorer_for(
        first.spec,
        first.checkpoint.config,
        metric=options.metric,
        ref=options.ref,
        exact=options.exact,
        device=device,
        feature_batch=options.feature_batch,
        dist=dist,
        **{k: getattr(options, k) for k in ("inception", "ref_num", "seed", "vae", "progress")},
    )
    results, rows, curves = {}, [], {}
    for name, run in runs.items():
        scores = scorer.score(run, options)
        results[name] = {str(n): s for n, s in scores.items()}
        curves[name] = {n: s[scorer.key] for n, s in scores.items()}
        for n, s in scores.items():
            rows.append([name, n, s[scorer.key], *(s.get(k, "-") for k in scorer.columns)])
    headers = ["checkpoint", "steps", scorer.label, *scorer.columns.values()]
    plot = None
    if isinstance(scorer, ImageScorer) and options.plot is not None and dist.is_main:
        title = f"{scorer.label} vs {scorer.description}, cfg {describe_schedule(options.cfg)}"
        metric_vs_steps(curves, scorer.label, options.plot, title)
        plot = options.plot
    return Evaluation(results, markdown_table(headers, rows), plot)


def write_reference_stats(
    ref: str,
    out: Path,
    *,
    metric: str = "fid",
    ref_num: int = 50000,
    shape: tuple[int, ...] = (3, 32, 32),
    inception: str | Path | None = None,
    device: torch.device | str = "cpu",
    batch: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[Path, str]:
    """Save the feature mean and covariance of a reference set (pytorch-fid / ADM layout);
    returns the file written and what it describes."""
    extractor = images.build_extractor(metric, ref, inception, device, batch)
    reference = images.load_reference(ref, extractor, shape, ref_num, seed, progress=progress)
    written = reference.stats.save(out)
    return written, f"{extractor.name} statistics of {reference.description}"
