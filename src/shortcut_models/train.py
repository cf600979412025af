"""The training loop: AdamW, EMA, atomic checkpoints, exact resume, clean stop on signals; on
GPUs bf16 autocast, torch.compile, fused AdamW, TF32, data in worker processes; several processes
through torchrun (DDP, or FSDP for large models).

It calls `objective.loss` and never asks which objective it runs.

A step's global batch is split into world_size x grad_accum micro-batches, and micro-batch j draws
its noise and times from its own generator (seed, step, j). So the numbers depend on the global
batch and the number of micro-batches, not on how they are spread over processes: 2 processes
train exactly as 1 process accumulating 2 micro-batches (tested), up to float summation order.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from shortcut_models import distributed, parallel
from shortcut_models.checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    all_finite,
    load_checkpoint,
    save_checkpoint,
)
from shortcut_models.config import RESUMABLE_CHANGES, DataSpec, TrainConfig
from shortcut_models.data import DataSource
from shortcut_models.distributed import resolve_device, resolve_precision
from shortcut_models.ema import make_ema, update_ema
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.factory import (
    build_data,
    build_model_for,
    build_objective_for,
    initialise_from,
    load_run,
)
from shortcut_models.files import atomic_write_text, prepare_out_dir, temporary_files
from shortcut_models.locking import FolderLock
from shortcut_models.objectives.base import AttachContext
from shortcut_models.seeding import OBJECTIVE, step_generator

METRICS_NAME = "metrics.jsonl"
LOG_PARTIAL = "log_partial"  # checkpoint metadata: loss sums not yet written to the log
# A wall-clock budget (config.minutes) is turned into a step count once the steps after the first
# PLAN_SKIP (allocator and kernel warm-up) have been timed up to step PLAN_STEPS and for at least
# PLAN_SECONDS (or a twentieth of the budget, if less).
PLAN_SKIP = 3
PLAN_STEPS = 20
PLAN_SECONDS = 15.0


@dataclass
class RunOptions:
    """How and where a run executes. On CPU with the defaults none of it changes the numbers;
    grad_accum x world size sets how the batch is split (see the module docstring), and bf16
    rounds differently from fp32."""

    out_dir: Path
    device: str = "auto"
    resume: bool = False
    log_every: int = 100
    save_every: int = 1000
    progress: bool = True
    tensorboard: bool = True
    precision: str = "auto"  # "fp32", "bf16" (autocast), or "auto": bf16 on a GPU that has it
    compile: bool = False  # torch.compile the network, the no-grad target passes included
    grad_accum: int = 1  # micro-batches per process per optimizer step
    workers: int | None = None  # data-loading processes (None: 4 on GPU, 0 on CPU)
    activation_checkpointing: bool = False  # recompute DiT blocks in backward to save memory
    fsdp: bool = False  # shard weights, gradients and optimizer state (under torchrun)


@dataclass
class TrainResult:
    step: int
    status: str  # "completed" or "interrupted"
    checkpoint: Path
    signal: int | None = None
    last_loss: float | None = None


class _StepBatches(torch.utils.data.Dataset):
    """Item k: this process's rows of global batch k (what the data-loading workers produce)."""

    def __init__(self, data: DataSource, batch_size: int, seed: int, rows: slice) -> None:
        self.data, self.batch_size, self.seed, self.rows = data, batch_size, seed, rows

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.data.batch(step, self.batch_size, self.seed, self.rows)


class Trainer:
    """Owns the network, its EMA copy and the optimizer for one run folder."""

    def __init__(
        self, config: TrainConfig, options: RunOptions, data: DataSource | None = None
    ) -> None:
        for name in ("log_every", "save_every", "grad_accum"):
            if getattr(options, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be >= 1")
        if options.workers is not None and options.workers < 0:
            raise UsageError(f"workers must be >= 0, got {options.workers}")
        self.options = options
        self.out_dir = prepare_out_dir(options.out_dir)
        self.device, self.dist = distributed.setup(resolve_device(options.device))
        self.autocast_dtype = resolve_precision(options.precision, self.device)
        parts = self.dist.world_size * options.grad_accum
        if config.batch_size % parts:
            raise UsageError(
                f"batch size {config.batch_size} does not split into {parts} equal micro-batches "
                f"({self.dist.world_size} processes x grad-accum {options.grad_accum})"
            )
        self.micro_batch = config.batch_size // parts
        # one writer per folder: taken before anything in it is read or changed
        self.lock = FolderLock(self.out_dir, "shortcut train") if self.dist.is_main else None
        try:
            self._setup(config, options, data)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Release the run folder (done at the end of `run`)."""
        if self.lock is not None:
            self.lock.release()

    def _setup(self, config: TrainConfig, options: RunOptions, data: DataSource | None) -> None:
        if self.dist.is_main:
            self._remove_stale_temporaries()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
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
        stored = checkpoint.data if checkpoint is not None else None
        now = getattr(self.data, "fingerprint", None)
        if stored is not None and stored.fingerprint and now and stored.fingerprint != now:
            print(
                f"warning: the files of {config.data_options.get('path')} changed since the "
                "checkpoint was written (names or sizes); training continues on them as they are",
                file=sys.stderr,
            )
        self.objective = build_objective_for(config, self.data)
        if options.fsdp and not self.objective.shards_with_fsdp:
            raise UsageError(f"{config.objective} does not run under --fsdp; use DDP")
        with torch.random.fork_rng(devices=[]):  # seed the initial weights, leave global RNG alone
            torch.manual_seed(config.seed)
            self.model = build_model_for(config, self.data, self.objective).to(self.device)
        if options.activation_checkpointing:
            if not hasattr(self.model, "checkpoint_activations"):
                raise UsageError(f"activation checkpointing needs a DiT, not {config.backbone}")
            self.model.checkpoint_activations = True
        self.ema = make_ema(self.model)
        self.step = 0
        self.saved_step: int | None = None
        # loss sums since the last metrics record, saved with the checkpoint so that a resumed
        # run's first record averages the same steps as an uninterrupted run's
        self.log_sums: dict[str, float] = {}
        self.log_count, self.log_seconds = 0, 0.0
        if checkpoint is None and config.init_from:
            step = initialise_from(config, self.data, self.objective, [self.model, self.ema])
            print(f"started from {config.init_from} (step {step})", file=sys.stderr)
        if checkpoint is not None:
            checkpoint.load_weights(self.model, "model")
            checkpoint.load_weights(self.ema, "ema")
            self.step = self.saved_step = checkpoint.step
            if LOG_PARTIAL in checkpoint.extra:
                partial = json.loads(checkpoint.extra[LOG_PARTIAL])
                self.log_sums, self.log_count = partial["sums"], partial["count"]
                self.log_seconds = partial["seconds"]
        context = AttachContext(
            model=self.model,
            ema=self.ema,
            config=config,
            data=self.data,
            device=self.device,
            fresh=checkpoint is None,
            load_run=load_run,
        )
        self.objective.attach(context)
        # the twin EMA that computes targets (iSM), when the objective asks for one
        self.target_ema: torch.nn.Module | None = None
        if self.objective.twin_ema_decay() > 0:
            self.target_ema = make_ema(self.ema)
            if checkpoint is not None:
                checkpoint.load_weights(self.target_ema, "target_ema")
        # what the step runs through: DDP / FSDP wrappers, then torch.compile
        # every weight average with its decay: each is sharded alike and updated after a step
        self.averages = [(self.ema, config.ema_decay)]
        if self.target_ema is not None:
            self.averages.append((self.target_ema, self.objective.twin_ema_decay()))
        copies = [average for average, _ in self.averages]
        self.net = parallel.distribute(self.model, copies, self.dist, self.device, options.fsdp)
        self.target_net = self.target_ema or self.ema
        if options.compile:
            self.net, self.target_net = torch.compile(self.net), torch.compile(self.target_net)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.lr,
            betas=(config.beta1, config.beta2),
            weight_decay=config.weight_decay,
            fused=True if self.device.type == "cuda" else None,
        )
        if checkpoint is not None:
            state = checkpoint.optimizer_state()
            parallel.load_optimizer_state(self.model, self.optimizer, state, options.fsdp)
            self.objective.load_state_tensors(checkpoint.tensors("objective", self.device))
            if self.dist.is_main:
                self._truncate_metrics(self.step)
        self._stop_signal: int | None = None
        # a wall-clock budget not yet turned into steps (a fresh run, or one stopped before)
        self.planning = config.minutes > 0 and self.step < PLAN_STEPS

    # -- one step ---------------------------------------------------------------------------

    @property
    def rows(self) -> slice:
        """This process's rows of the global batch."""
        per_rank = self.micro_batch * self.options.grad_accum
        return slice(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """This process's rows of batches self.step, self.step + 1, ..., read ahead by workers."""
        workers = self.options.workers
        if workers is None:
            workers = min(4, os.cpu_count() or 1) if self.device.type == "cuda" else 0
        dataset = _StepBatches(self.data, self.config.batch_size, self.config.seed, self.rows)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=None,
            sampler=range(self.step, sys.maxsize),  # the loop stops at config.steps
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if workers else None,
        )
        return iter(loader)

    def train_step(
        self, batch: tuple[torch.Tensor, torch.Tensor | None] | None = None
    ) -> dict[str, float]:
        """One optimizer step on batch number self.step (this process's rows of it, fetched now
        unless given); returns its loss terms, averaged over micro-batches and processes."""
        config, accum = self.config, self.options.grad_accum
        x_rows, y_rows = batch or self.data.batch(
            self.step, config.batch_size, config.seed, self.rows
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.model.train()
        self.objective.set_step(self.step, config.steps)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        for a in range(accum):
            part = self.dist.rank * accum + a  # the micro-batch's number within the global batch
            rows = slice(a * self.micro_batch, (a + 1) * self.micro_batch)
            x1 = x_rows[rows].to(self.device, non_blocking=True)
            y = None if y_rows is None else y_rows[rows].to(self.device, non_blocking=True)
            generator = step_generator(config.seed, self.step, OBJECTIVE, self.device, part)
            with self._gradient_sync(a == accum - 1), self._autocast():
                loss, info = self.objective.loss(self.net, self.target_net, x1, y, generator)
                (loss / accum).backward()
            for key, value in {"loss": loss.detach(), **info}.items():
                totals[key] = totals.get(key, 0) + value.detach().float() / accum
        keys = sorted(totals)
        values = distributed.all_mean(torch.stack([totals[k] for k in keys]), self.dist).tolist()
        terms = dict(zip(keys, values, strict=True))
        if not math.isfinite(terms["loss"]):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"loss is {terms['loss']} at step {self.step + 1}; "
                f"training stopped without saving, {self._last_good()}"
            )
        max_norm = config.grad_clip if config.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        grad_norm = float(grad_norm)
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(
                f"the gradient norm is {grad_norm} at step {self.step + 1} (the loss was "
                f"{terms['loss']:.4g}); training stopped without saving, {self._last_good()}"
            )
        self.optimizer.step()
        for average, decay in self.averages:
            if self.options.fsdp:
                average.reshard()  # a no-grad forward leaves the root's weights gathered
            update_ema(average, self.model, decay)
        self.step += 1
        return {"loss": terms.pop("loss"), "grad_norm": grad_norm, **terms}

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _gradient_sync(self, sync: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on all but the last micro-batch of a step."""
        if sync or not self.dist.enabled:
            return contextlib.nullcontext()
        if self.options.fsdp:
            self.model.set_requires_gradient_sync(False)
            return _restore_sync(self.model)
        return distributed.unwrap(self.net, through_ddp=False).no_sync()  # DDP

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to zero at config.steps (held at its
        start while a wall-clock budget is still being planned)."""
        config = self.config
        scale = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        if config.lr_schedule == "cosine" and not self.planning:
            progress = min(
                1.0, max(0, step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
            )
            scale *= 0.5 * (1 + math.cos(math.pi * progress))
        return config.lr * scale

    # -- the loop ---------------------------------------------------------------------------

    @property
    def evaluated(self) -> torch.nn.Module:
        """The network sample and evaluate use: the EMA, or the raw weights where the config's
        eval_weights says "model" (as `load_run` chooses for a saved run)."""
        return self.model if self.config.eval_weights == "model" else self.ema

    def _last_good(self) -> str:
        if self.saved_step is None:
            return "no checkpoint had been written yet"
        return (
            f"the last good checkpoint is {self.out_dir / CHECKPOINT_NAME} (step {self.saved_step})"
        )

    def save(self) -> Path:
        """Every process calls it (gathering FSDP weights is collective); rank 0 writes. Weights
        with NaN or inf are never written: a finite checkpoint is never replaced by them."""
        finite = all_finite([*self.model.parameters(), *self.ema.parameters()])
        if distributed.any_rank(not finite, self.dist, self.device):
            raise TrainingError(
                f"the weights hold NaN or inf at step {self.step}; not saved, {self._last_good()}"
            )
        fsdp = self.options.fsdp
        model = parallel.full_state(self.model, fsdp)
        ema = parallel.full_state(self.ema, fsdp)
        target_ema = None if self.target_ema is None else parallel.full_state(self.target_ema, fsdp)
        optimizer = parallel.full_optimizer_state(self.model, self.optimizer, fsdp)
        path = self.out_dir / CHECKPOINT_NAME
        if self.dist.is_main:
            save_checkpoint(
                self.out_dir,
                self.config,
                self.step,
                model,
                ema,
                optimizer,
                DataSpec.of(self.data),
                self.objective.state_tensors(),
                target_ema,
                {LOG_PARTIAL: json.dumps(self._log_partial())},
            )
        distributed.barrier(self.dist)
        self.saved_step = self.step
        return path

    def run(self) -> TrainResult:
        """Train to config.steps, or until SIGINT / SIGTERM; always ends on a saved checkpoint.

        A second signal while the stop-save runs is ignored (it says so). A file that cannot be
        written (a full disk, a file-size limit) ends training with a TrainingError naming the
        last checkpoint, which is intact: every write is atomic.
        """
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            return self._run()
        except OSError as exc:
            what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            raise TrainingError(f"{what}; training stopped, {self._last_good()}") from None
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()

    def _run(self) -> TrainResult:
        main = self.dist.is_main
        writer = self._tensorboard() if main else None
        bar = tqdm(
            total=self.config.steps,
            initial=self.step,
            disable=not (self.options.progress and main),
            dynamic_ncols=True,
            desc=f"{self.config.objective} on {self.config.data}",
        )
        tick, last_loss, stopped = time.perf_counter(), None, False
        start, start_step, probe_tick = time.perf_counter(), self.step, 0.0
        plan_at = max(PLAN_STEPS, start_step + PLAN_SKIP + 5)
        probe_seconds = min(PLAN_SECONDS, self.config.minutes * 3)
        batches = self.batches()
        try:
            while self.planning or self.step < self.config.steps:
                signalled = self._stop_signal is not None
                stopped = distributed.any_rank(signalled, self.dist, self.device)
                if stopped:
                    break
                terms = self.train_step(next(batches))
                if self.planning and self.step == start_step + PLAN_SKIP:
                    probe_tick = time.perf_counter()
                elif self.planning and self.step >= plan_at:
                    # every rank must plan at the same step (the plan is a collective mean)
                    timed = time.perf_counter() - probe_tick >= probe_seconds
                    if distributed.any_rank(timed, self.dist, self.device):
                        self._plan(start, probe_tick, start_step + PLAN_SKIP, bar)
                last_loss = terms["loss"]
                for key, value in terms.items():
                    self.log_sums[key] = self.log_sums.get(key, 0.0) + value
                self.log_count += 1
                bar.update(1)
                if self.step % self.options.log_every == 0 or self.step == self.config.steps:
                    now = time.perf_counter()
                    elapsed, tick = self.log_seconds + now - tick, now
                    count = self.log_count
                    record = {"step": self.step, **{k: v / count for k, v in self.log_sums.items()}}
                    record["lr"] = self.learning_rate(self.step - 1)
                    record["samples_per_s"] = count * self.config.batch_size / max(elapsed, 1e-9)
                    if main:
                        self._log(record, writer)
                    bar.set_postfix(
                        loss=f"{record['loss']:.4f}", samples_per_s=f"{record['samples_per_s']:.0f}"
                    )
                    self.log_sums, self.log_count, self.log_seconds = {}, 0, 0.0
                if self.step % self.options.save_every == 0:
                    self.log_seconds += time.perf_counter() - tick
                    tick = time.perf_counter()
                    self.save()
            self.log_seconds += time.perf_counter() - tick
        finally:
            del batches  # stops the data-loading workers
            bar.close()
            if writer is not None:
                writer.close()
        path = self.save() if self.saved_step != self.step else self.out_dir / CHECKPOINT_NAME
        status = "interrupted" if stopped else "completed"
        return TrainResult(self.step, status, path, self._stop_signal, last_loss)

    def _plan(self, start: float, probe_tick: float, probe_step: int, bar: tqdm) -> None:
        """Turn the wall-clock budget into config.steps from the measured step rate (the mean
        over processes, so every rank plans the same count); the checkpoint stores it."""
        now = time.perf_counter()
        rate = (self.step - probe_step) / max(now - probe_tick, 1e-9)
        left = max(0.0, self.config.minutes * 60 - (now - start))
        planned = torch.tensor(float(self.step + int(rate * left)))
        planned = int(distributed.all_mean(planned.to(self.device), self.dist).item())
        self.config.steps = max(self.step, planned)
        self.planning = False
        bar.total = self.config.steps
        bar.refresh()
        if self.dist.is_main:
            tqdm.write(
                f"{self.config.minutes:g} minutes at {rate:.2f} steps/s: training "
                f"{self.config.steps} steps",
                file=sys.stderr,
            )

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stop_signal is not None:  # already stopping: the save must not be cut short
            print(
                f"signal {signum} ignored: saving the checkpoint at step {self.step}, please wait",
                file=sys.stderr,
            )
            return
        self._stop_signal = signum  # the loop finishes its step, saves and returns

    def _log_partial(self) -> dict[str, object]:
        return {"sums": self.log_sums, "count": self.log_count, "seconds": self.log_seconds}

    def _remove_stale_temporaries(self) -> None:
        """Delete what a save cut short by kill -9 left (our own `.NAME.*.tmp` files only)."""
        stale = [
            path
            for name in (CHECKPOINT_NAME, CONFIG_NAME, METRICS_NAME)
            for path in temporary_files(self.out_dir, name)
        ]
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            print(
                f"removed {len(stale)} temporary file(s) left by an interrupted save in "
                f"{self.out_dir}",
                file=sys.stderr,
            )

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
        kept, damaged = [], 0
        for line in path.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                damaged += 1  # a line cut short by a full disk or a kill
            elif record["step"] <= step:
                kept.append(line)
        if damaged:
            print(
                f"dropped {damaged} damaged line(s) of {path} (a write cut short, for example "
                "by a full disk)",
                file=sys.stderr,
            )
        atomic_write_text(path, "".join(line + "\n" for line in kept))


@contextlib.contextmanager
def _restore_sync(model: torch.nn.Module) -> Iterator[None]:
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)
