"""The playground's model: loaded once, sampled one request at a time (a lock queues concurrent
clicks), answered as a PNG and the time it took."""

from __future__ import annotations

import base64
import io
import math
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from shortcut_models.data.images import to_uint8
from shortcut_models.errors import UsageError
from shortcut_models.evaluation.generation import generate
from shortcut_models.factory import load_run
from shortcut_models.guidance import check_scale
from shortcut_models.image_io import grid
from shortcut_models.plots import scatter_panels
from shortcut_models.sampling import STEP_BUDGETS

MAX_COUNT = 64
MAX_CLASS_NAMES = 1000  # /api/info lists at most this many; /api/classes pages through the rest
# generations waiting behind the one running: more are answered 503 with Retry-After at once
# (under 200 concurrent requests 80 clients waited past 60 s holding their connections)
MAX_WAITING = 8


class Busy(Exception):
    """Too many generations queued; `retry_after` is the seconds a client should wait."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"busy: {MAX_WAITING} generations are queued; retry in {retry_after} s")
        self.retry_after = retry_after


class Playground:
    """One loaded run and what a page may ask of it."""

    def __init__(
        self, ckpt: str | Path, device: torch.device | str = "cpu", weights: str | None = None
    ) -> None:
        self.run = load_run(ckpt, weights, device)
        spec = self.run.objective.sampling_rule()
        self.steps = [n for n in STEP_BUDGETS if spec.allows(n)]
        self.lock = threading.Lock()  # one generation at a time
        self.queue_lock = threading.Lock()  # guards `waiting` and `last_s`
        self.waiting, self.last_s = 0, 1.0

    def info(self) -> dict[str, Any]:
        data = self.run.spec
        names = data.class_names or [str(c) for c in range(data.num_classes)]
        config = self.run.checkpoint.config
        return {
            "run": str(self.run.checkpoint.path.parent),
            "objective": config.objective.name,
            "backbone": config.backbone.name,
            "kind": data.kind,
            "steps": self.steps,
            "num_classes": len(names),
            "classes": names[:MAX_CLASS_NAMES],  # bounded: /api/classes pages through the rest
            "max_count": MAX_COUNT,
        }

    def classes(self, start: int, count: int) -> dict[str, Any]:
        """Class names [start, start + count), count at most MAX_CLASS_NAMES."""
        data = self.run.spec
        names = data.class_names or [str(c) for c in range(data.num_classes)]
        if start < 0 or not 1 <= count <= MAX_CLASS_NAMES:
            raise UsageError(f"start must be >= 0 and count in 1..{MAX_CLASS_NAMES}")
        return {"start": start, "classes": names[start : start + count], "total": len(names)}

    def generate(self, steps: int, label: int | None, cfg: float, seed: int, count: int) -> dict:
        """A PNG (grid of images, or a scatter plot of vectors) and the milliseconds it took."""
        data = self.run.spec
        if steps not in self.steps:
            raise UsageError(f"steps must be one of {self.steps}, got {steps}")
        if not 1 <= count <= MAX_COUNT:
            raise UsageError(f"count must be in 1..{MAX_COUNT}, got {count}")
        if not 0 <= seed < 2**63:
            raise UsageError(f"seed must be in [0, 2^63), got {seed}")
        labels = None
        if data.num_classes:
            if label is not None and not 0 <= label < data.num_classes:
                raise UsageError(f"class must be in 0..{data.num_classes - 1}, got {label}")
            classes = torch.arange(count) % data.num_classes
            labels = classes if label is None else torch.full((count,), label)
        elif label is not None or cfg != 1.0:
            raise UsageError("this model is unconditional: class and cfg do not apply")
        try:
            check_scale(cfg, "cfg")
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        with self.queue_lock:  # a bounded queue: beyond it, ask the client to come back
            if self.waiting >= MAX_WAITING:
                raise Busy(max(1, math.ceil(self.waiting * self.last_s)))
            self.waiting += 1
        try:
            x, ms = self._generate(data, count, steps, seed, labels, cfg)
        finally:
            with self.queue_lock:
                self.waiting -= 1
        png = _png_of(x, data.kind)
        return {"image": "data:image/png;base64," + base64.b64encode(png).decode(), "ms": ms}

    def _generate(self, data: Any, count: int, steps: int, seed: int, labels: Any, cfg: float):
        """(samples, milliseconds), one generation at a time: concurrent requests queue here."""
        with self.lock:
            tick = time.perf_counter()
            x = generate(
                self.run.model,
                self.run.objective,
                data.shape,
                count,
                steps,
                seed=seed,
                labels=labels,
                cfg_scale=cfg,
            )
            ms = 1000 * (time.perf_counter() - tick)
        with self.queue_lock:
            self.last_s = ms / 1000
        return x, ms


def _png_of(x: torch.Tensor, kind: str) -> bytes:
    if kind == "vector":
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "points.png"
            scatter_panels({"samples": x}, path)
            return path.read_bytes()
    from PIL import Image

    images = to_uint8(x)
    array = grid(images, ncol=min(8, len(images)))
    buffer = io.BytesIO()
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(buffer, "PNG")
    return buffer.getvalue()
