"""The training loop: AdamW, EMA, atomic checkpoints, exact resume, clean stop on signals.

It calls `objective.targets` and `objective.loss` and never asks which objective it runs.
"""

from __future__ import annotations

import json
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from shortcut_models.checkpoint import (
    CHECKPOINT_NAME,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from shortcut_models.config import RESUMABLE_CHANGES, TrainConfig
from shortcut_models.data import DataSource
from shortcut_models.data.spec import DataSpec
from shortcut_models.ema import make_ema, update_ema
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.factory import build_data, build_model_for, build_objective_for
from shortcut_models.objectives.base import AttachContext
from shortcut_models.seeding import OBJECTIVE, step_generator

METRICS_NAME = "metrics.jsonl"


@dataclass
class RunOptions:
    """How and where a run executes; none of it changes the numbers it produces on CPU."""

    out_dir: Path
    device: str = "auto"
    resume: bool = False
    log_every: int = 100
    save_every: int = 1000
    progress: bool = True
    tensorboard: bool = True


@dataclass
class TrainResult:
    step: int
    status: str  # "completed" or "interrupted"
    checkpoint: Path
    signal: int | None = None
    last_loss: float | None = None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device 'cuda' was asked for but no CUDA GPU is available")
    return device


def prepare_out_dir(out_dir: Path) -> Path:
    """Create the run folder and prove it is writable, or raise a UsageError."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise UsageError(
            f"cannot write to output folder {out_dir}: {exc.strerror or exc}"
        ) from None
    return out_dir


class Trainer:
    """Owns the network, its EMA copy and the optimizer for one run folder."""

    def __init__(
        self, config: TrainConfig, options: RunOptions, data: DataSource | None = None
    ) -> None:
        for name in ("log_every", "save_every"):
            if getattr(options, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        self.options = options
        self.out_dir = prepare_out_dir(options.out_dir)
        self.device = resolve_device(options.device)
        checkpoint_path = self.out_dir / CHECKPOINT_NAME
        checkpoint = None
        if options.resume:
            if not checkpoint_path.exists():
                raise UsageError(f"nothing to resume: no checkpoint in {self.out_dir}")
            checkpoint = load_checkpoint(checkpoint_path)
            changed = [
                f for f in checkpoint.config.differences(config) if f not in RESUMABLE_CHANGES
            ]
            if changed:
                raise UsageError(
                    f"the checkpoint in {self.out_dir} was trained with a different config "
                    f"({', '.join(changed)}); "
                    f"only {', '.join(sorted(RESUMABLE_CHANGES))} may change"
                )
        elif checkpoint_path.exists():
            raise UsageError(
                f"{self.out_dir} already holds a checkpoint: pass --resume to continue it "
                "or choose another --out"
            )
        self.config = config
        self.data = data if data is not None else build_data(config.data, config.data_options)
        self.objective = build_objective_for(config, self.data)
        with torch.random.fork_rng(devices=[]):  # seed the initial weights, leave global RNG alone
            torch.manual_seed(config.seed)
            self.model = build_model_for(config, self.data).to(self.device)
        self.ema = make_ema(self.model)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay,
        )
        self.step = 0
        self.saved_step: int | None = None
        if checkpoint is not None:
            checkpoint.load_weights(self.model, "model")
            checkpoint.load_weights(self.ema, "ema")
            checkpoint.load_optimizer(self.optimizer)
            self.step = self.saved_step = checkpoint.step
        context = AttachContext(
            self.model, self.ema, config, self.data, self.device, fresh=checkpoint is None
        )
        self.objective.attach(context)
        if checkpoint is not None:
            self.objective.load_state_tensors(checkpoint.tensors("objective", self.device))
            self._truncate_metrics(self.step)
        self._stop_signal: int | None = None

    # -- one step ---------------------------------------------------------------------------

    def train_step(self) -> dict[str, float]:
        """One optimizer step on batch number self.step; returns its loss terms as floats."""
        config = self.config
        x1, y = self.data.batch(self.step, config.batch_size, config.seed)
        x1 = x1.to(self.device, non_blocking=True)
        y = None if y is None else y.to(self.device, non_blocking=True)
        generator = step_generator(config.seed, self.step, OBJECTIVE, self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)

        self.model.train()
        self.objective.set_step(self.step, config.steps)
        batch = self.objective.targets(self.model, self.ema, x1, y, generator)
        pred = self.model(batch.x_t, batch.t, batch.d, batch.y)
        loss, info = self.objective.loss(pred, batch)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            if self.saved_step is not None:
                where = f"the last good checkpoint is {self.out_dir / CHECKPOINT_NAME}"
                where += f" (step {self.saved_step})"
            else:
                where = "no checkpoint had been written yet"
            raise TrainingError(
                f"loss is {loss_value} at step {self.step + 1}; "
                f"training stopped without saving, {where}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        self.optimizer.step()
        update_ema(self.ema, self.model, config.ema_decay)
        self.step += 1
        out = {"loss": loss_value, "grad_norm": float(grad_norm)}
        out.update({key: float(value) for key, value in info.items()})
        return out

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to zero at config.steps."""
        config = self.config
        scale = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        if config.lr_schedule == "cosine":
            progress = min(
                1.0, max(0, step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
            )
            scale *= 0.5 * (1 + math.cos(math.pi * progress))
        return config.lr * scale

    # -- the loop ---------------------------------------------------------------------------

    def save(self) -> Path:
        path = save_checkpoint(
            self.out_dir,
            self.config,
            self.step,
            self.model,
            self.ema,
            self.optimizer,
            DataSpec.of(self.data),
            self.objective.state_tensors(),
        )
        self.saved_step = self.step
        return path

    def run(self) -> TrainResult:
        """Train to config.steps, or until SIGINT / SIGTERM; always ends on a saved checkpoint."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        writer = self._tensorboard()
        bar = tqdm(
            total=self.config.steps,
            initial=self.step,
            disable=not self.options.progress,
            dynamic_ncols=True,
            desc=f"{self.config.objective} on {self.config.data}",
        )
        sums: dict[str, float] = {}
        count, tick, last_loss = 0, time.perf_counter(), None
        try:
            while self.step < self.config.steps and self._stop_signal is None:
                terms = self.train_step()
                last_loss = terms["loss"]
                for key, value in terms.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                bar.update(1)
                if self.step % self.options.log_every == 0 or self.step == self.config.steps:
                    elapsed = time.perf_counter() - tick
                    record = {"step": self.step, **{k: v / count for k, v in sums.items()}}
                    record["lr"] = self.learning_rate(self.step - 1)
                    record["samples_per_s"] = count * self.config.batch_size / max(elapsed, 1e-9)
                    self._log(record, writer)
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}", samples_per_s=f"{record['samples_per_s']:.0f}"
                    )
                    sums, count, tick = {}, 0, time.perf_counter()
                if self.step % self.options.save_every == 0:
                    self.save()
        finally:
            bar.close()
            if writer is not None:
                writer.close()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        path = self.save() if self.saved_step != self.step else self.out_dir / CHECKPOINT_NAME
        status = "interrupted" if self._stop_signal is not None else "completed"
        return TrainResult(self.step, status, path, self._stop_signal, last_loss)

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stop_signal = signum  # the loop finishes its step, saves and returns

    def _log(self, record: dict[str, float], writer: object | None) -> None:
        with open(self.out_dir / METRICS_NAME, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if writer is not None:
            for key, value in record.items():
                if key != "step":
                    writer.add_scalar(f"train/{key}", value, record["step"])

    def _tensorboard(self) -> object | None:
        if not self.options.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _truncate_metrics(self, step: int) -> None:
        """Drop records past the checkpoint, so a resumed log reads like an uninterrupted one."""
        path = self.out_dir / METRICS_NAME
        if not path.exists():
            return
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line).get("step", 0) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))
