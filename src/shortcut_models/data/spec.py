"""What a trained model needs to know about its data, stored in every checkpoint.

Sampling reads this instead of the data itself, so a checkpoint trained on a folder or on latent
shards samples on a machine that has neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class DataSpec:
    name: str
    kind: str  # "vector", "image" or "latent"
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
            class_names=list(getattr(source, "class_names", []) or []),
            vae=getattr(source, "vae", None),
            scaling_factor=getattr(source, "scaling_factor", None),
            fingerprint=getattr(source, "fingerprint", None),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DataSpec:
        values = json.loads(text)
        values["shape"] = tuple(values["shape"])
        return cls(**values)
