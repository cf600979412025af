"""What a data source is: the `DataSource` protocol, and `Source`, the base class that gives the
optional parts their defaults (built-in sources and your own inherit it)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch

# Vectors (2-D toys, arrays: MLP, Wasserstein metrics), pixel images, or VAE latents of images.
DataKind = Literal["vector", "image", "latent"]


class DataSource(Protocol):
    name: str
    kind: DataKind
    shape: tuple[int, ...]
    num_classes: int
    class_names: list[str]  # sorted folder names, or [] (labels 0 .. num_classes - 1)
    vae: str | None  # latents: the AutoencoderKL that decodes them
    scaling_factor: float | None  # latents: the factor they were multiplied by
    fingerprint: str | None  # files: a hash of the listing, to notice a changed folder

    def batch(
        self, step: int, batch_size: int, seed: int, rows: slice | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Global batch number `step` (or its `rows`): a pure function of (seed, step)."""
        ...

    def sample(self, n: int, seed: int) -> torch.Tensor:
        """n reference rows for evaluation."""
        ...

    def sample_batches(self, n: int, seed: int, batch: int) -> Iterator[torch.Tensor]:
        """The rows of `sample(n, seed)`, `batch` at a time (how references are measured)."""
        ...

    def labelled_sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`sample` with the rows' labels (None where the source has none)."""
        ...


class Source:
    """Defaults for the optional parts of `DataSource`: no class names, VAE or fingerprint,
    and reference rows without labels."""

    class_names: list[str] = []  # noqa: RUF012 (never mutated: sources assign their own)
    vae: str | None = None
    scaling_factor: float | None = None
    fingerprint: str | None = None

    def sample(self, n: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def sample_batches(self, n: int, seed: int, batch: int) -> Iterator[torch.Tensor]:
        """`sample` cut into batches; a large source overrides it to hold one batch at a time."""
        yield from self.sample(n, seed).split(batch)

    def labelled_sample(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.sample(n, seed), None


@dataclass(frozen=True)
class DataSpec:
    """What a trained model needs to know about its data, stored in every checkpoint: sampling
    reads this instead of the data, so a checkpoint trained on a folder or on latent shards
    samples on a machine that has neither."""

    name: str
    kind: DataKind
    shape: tuple[int, ...]
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    vae: str | None = None  # latent data: the AutoencoderKL that decodes samples
    scaling_factor: float | None = None
    fingerprint: str | None = None  # image folders: a hash of the file listing (names, sizes)

    @classmethod
    def of(cls, source: Any) -> DataSpec:
        return cls(
            name=source.name,
            kind=source.kind,
            shape=tuple(source.shape),
            num_classes=source.num_classes,
            class_names=list(source.class_names),
            vae=source.vae,
            scaling_factor=source.scaling_factor,
            fingerprint=source.fingerprint,
        )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        values = json.loads(text)
        values["shape"] = tuple(values["shape"])
        return cls(**values)
