"""The training loop: `train_step` (micro-batches, backward, clipping, AdamW and its learning
rate, the EMAs) and `run` (log, save, plan a wall-clock budget, stop on signals). Checkpoints,
metrics, the run's length and the non-finite watch live in the sibling modules.

A step's global batch is split into world_size x grad_accum micro-batches, and micro-batch j draws
its noise and times from its own generator (seed, step, j). So the numbers depend on the global
batch and the number of micro-batches, not on how they are spread over processes: 2 processes
train exactly as 1 process accumulating 2 micro-batches (tested), up to float summation order.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from shortcut_models import distributed, parallel
from shortcut_models.config import Optimisation, TrainConfig
from shortcut_models.data import DataSource, DataSpec
from shortcut_models.devices import autocast, resolve_device, resolve_precision
from shortcut_models.ema import update_ema, warmed_decay
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.execution import RunOptions
from shortcut_models.files import prepare_out_dir
from shortcut_models.locking import LOCK_NAME, FolderLock, undo_new_files
from shortcut_models.objectives.base import at_least_fp32
from shortcut_models.seeding import OBJECTIVE, PAIRING, step_generator
from shortcut_models.train.batches import step_batches
from shortcut_models.train.checkpoints import CheckpointManager, NetworkState, OptimizerState
from shortcut_models.train.health import NonFiniteWatch
from shortcut_models.train.metrics import MetricsLog
from shortcut_models.train.result import TrainResult
from shortcut_models.train.schedule import Plan, WallClockPlan
from shortcut_models.train.setup import build_networks
from shortcut_models.train.signals import StopSignals

LOG_PARTIAL = "log_partial"  # older checkpoints kept the log's sums as JSON metadata


EMA_PARTS = ("ema", "target_ema")  # checkpoint part names of the EMAs, in order


class Trainer:
    """Owns the network, its EMAs and the optimizer for one run folder."""

    def __init__(
        self,
        config: TrainConfig,
        options: RunOptions,
        data: DataSource | None = None,
        on_plan: Callable[[Plan | None, Trainer], None] | None = None,
    ) -> None:
        """`on_plan(plan, trainer)` is called once, when the first steps have been timed (a
        fixed-step run is timed too when it is given)."""
        self.options, self.on_plan = options, on_plan
        self.lock: FolderLock | None = None
        folder_is_new = not Path(options.out_dir).exists()
        lock_was_there = (Path(options.out_dir) / LOCK_NAME).exists()
        self.out_dir = prepare_out_dir(options.out_dir)
        try:
            self._accept(config, data)
        except BaseException:
            ours = self.lock is not None and not lock_was_there
            self.close()
            undo_new_files(self.out_dir, folder_is_new, ours)  # a refused run leaves nothing
            raise

    def _accept(self, config: TrainConfig, data: DataSource | None) -> None:
        """Everything that can refuse the run, then its setup (the folder exists and is ours)."""
        options = self.options
        self.device, self.dist = distributed.setup(resolve_device(options.device))
        self.autocast_dtype = resolve_precision(options.precision, self.device)
        micro_batches = self.dist.world_size * options.grad_accum
        if config.training.batch_size % micro_batches:
            raise UsageError(
                f"batch size {config.training.batch_size} does not split into {micro_batches} "
                "equal micro-batches "
                f"({self.dist.world_size} processes x grad-accum {options.grad_accum})"
            )
        self.micro_batch = config.training.batch_size // micro_batches
        # one writer per folder: taken before anything in it is read or changed
        self.lock = FolderLock(self.out_dir, "shortcut train") if self.dist.is_main else None
        self._setup(config, data)

    def _setup(self, config: TrainConfig, data: DataSource | None) -> None:
        self.config, self.checkpoints = (
            config,
            CheckpointManager(self.out_dir, self.dist, self.device),
        )
        if self.dist.is_main:
            self.checkpoints.remove_stale_temporaries()
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        checkpoint = self.checkpoints.open(config, self.options.resume)
        nets = build_networks(
            config, self.options, data, checkpoint, self.dist, self.device, self.autocast_dtype
        )
        self.data, self.objective = nets.data, nets.objective
        self.model, self.ema, self.target_ema = nets.model, nets.ema, nets.target_ema
        self.net, self.target_net = nets.net, nets.target_net
        self.emas = nets.emas  # (EMA, decay), each updated after a step
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.optimisation.lr,
            betas=(config.optimisation.beta1, config.optimisation.beta2),
            weight_decay=config.optimisation.weight_decay,
            # one kernel for all parameters: on a CPU 5x faster than the per-tensor loop (the
            # demo's U-Net: 0.9 against 4.8 ms a step, benchmarks/results/throughput_unet_cpu.md)
            fused=True if self.device.type in ("cuda", "cpu") else None,
        )
        self.step = 0
        self.log = MetricsLog(self.out_dir, self.dist, self.device, config.training.batch_size)
        self.plan = WallClockPlan(
            config.training,
            checkpoint.step if checkpoint is not None else 0,
            self.dist,
            self.device,
            measure=self.on_plan is not None,
        )
        fsdp = self.options.fsdp
        parts = {"model": NetworkState(self.model, fsdp)}
        parts.update(
            {
                name: NetworkState(net, fsdp)
                for name, (net, _) in zip(EMA_PARTS, self.emas, strict=False)
            }
        )
        parts.update(
            optimizer=OptimizerState(self.model, self.optimizer, fsdp),
            objective=self.objective,
            log=self.log,
            plan=self.plan,
        )
        self.checkpoints.parts = parts
        if checkpoint is not None:
            self.step = checkpoint.step
            self.checkpoints.restore(checkpoint, ("optimizer", "objective"))
            self.plan.load_state_dict(checkpoint.tensors("plan"), checkpoint.config.training.steps)
            if LOG_PARTIAL in checkpoint.extra:  # written before the log was a part
                self.log.load_legacy(json.loads(checkpoint.extra[LOG_PARTIAL]))
            else:
                self.checkpoints.restore(checkpoint, ("log",))
            if self.dist.is_main:
                self.log.truncate(self.step)
        self.watch = NonFiniteWatch(self.device)

    def close(self) -> None:
        """Release the run folder (done at the end of `run`)."""
        if self.lock is not None:
            self.lock.release()

    # -- one step ---------------------------------------------------------------------------

    def train_step(
        self, batch: tuple[torch.Tensor, torch.Tensor | None] | None = None
    ) -> dict[str, torch.Tensor]:
        """One optimizer step on batch number self.step (this process's rows of it, fetched now
        unless given). Returns its loss terms, averaged over micro-batches, as tensors on the
        device: nothing here waits for the device."""
        config, accum, fsdp = self.config, self.options.grad_accum, self.options.fsdp
        x_rows, y_rows = batch or self.data.batch(
            self.step, config.training.batch_size, config.training.seed, self.rows
        )
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate(self.step)
        self.model.train()
        self.objective.set_step(self.step, self.plan.total)
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, torch.Tensor] = {}
        for a in range(accum):
            index = self.dist.rank * accum + a  # the micro-batch's number in the global batch
            rows = slice(a * self.micro_batch, (a + 1) * self.micro_batch)
            # noise paired with the data (OT) is drawn and solved on the host, before the batch
            # goes to the device: the step reads nothing back
            host = step_generator(config.training.seed, self.step, PAIRING, "cpu", index)
            paired = self.objective.host_noise(x_rows[rows], host)
            if paired is not None:
                paired = paired.to(self.device, non_blocking=True)
            x1 = x_rows[rows].to(self.device, non_blocking=True)
            y = None if y_rows is None else y_rows[rows].to(self.device, non_blocking=True)
            generator = step_generator(
                config.training.seed, self.step, OBJECTIVE, self.device, index
            )
            sync = parallel.gradient_sync(self.net, self.model, self.dist, fsdp, a == accum - 1)
            with sync, autocast(self.device, self.autocast_dtype):
                loss, info = self.objective.loss(
                    self.net, self.target_net, x1, y, generator, paired
                )
                (loss / accum).backward()
            for key, value in {"loss": loss.detach(), **info}.items():
                totals[key] = totals.get(key, 0) + at_least_fp32(value.detach()) / accum
        max_norm = (
            config.optimisation.grad_clip if config.optimisation.grad_clip > 0 else float("inf")
        )
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        if hasattr(grad_norm, "full_tensor"):  # a DTensor under FSDP
            grad_norm = grad_norm.full_tensor()
        self.optimizer.step()
        for index, (ema, decay) in enumerate(self.emas):
            if fsdp:
                ema.reshard()  # a no-grad forward leaves the root's weights gathered
            if index == 0 and config.optimisation.ema_warmup:  # the sampling EMA
                decay = warmed_decay(decay, self.step)
            update_ema(ema, self.model, decay)
        self.step += 1
        self.watch.observe(self.step, totals["loss"], grad_norm)
        return {"loss": totals.pop("loss"), "grad_norm": grad_norm, **dict(sorted(totals.items()))}

    def learning_rate(self, step: int) -> float:
        """The schedule at `step` (its cosine held at the start while a budget is planned)."""
        total = None if self.planning else self.plan.total
        return learning_rate(self.config.optimisation, step, total)

    @property
    def planning(self) -> bool:
        """A wall-clock budget not yet turned into a step count."""
        return self.plan.pending

    @property
    def rows(self) -> slice:
        """This process's rows of the global batch."""
        per_rank = self.micro_batch * self.options.grad_accum
        return slice(self.dist.rank * per_rank, (self.dist.rank + 1) * per_rank)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """This process's rows of batches self.step, self.step + 1, ..."""
        size, seed = self.config.training.batch_size, self.config.training.seed
        workers = self.options.workers
        return step_batches(self.data, size, seed, self.rows, self.step, self.device, workers)

    # -- the loop ---------------------------------------------------------------------------

    @property
    def evaluated(self) -> torch.nn.Module:
        """The network sample and evaluate use: the EMA, or the raw weights where the config's
        eval_weights says "model" (as `load_run` chooses for a saved run)."""
        return self.model if self.config.training.eval_weights == "model" else self.ema

    saved_step = property(lambda self: self.checkpoints.saved_step)

    def save(self) -> Path:
        """Every process calls it; rank 0 writes. Refuses to save after a non-finite step."""
        self.watch.check(self.checkpoints.last_good())
        return self.checkpoints.save(self.step, self.config, DataSpec.of(self.data))

    def _planned(self, plan: Plan) -> None:
        """Report a budget's step count, decided (to `on_plan` where given, else a line) or
        revised (a line) now."""
        minutes = self.plan.minutes
        if minutes > 0:
            self.log.bar.total = plan.steps
            self.log.bar.refresh()
        if plan.revised:
            self.log.message(
                f"{minutes:g} minutes: training {plan.steps:,} steps (revised at "
                f"{plan.rate:.2f} steps/s, the rate since the last decision)"
            )
        elif self.on_plan is not None:
            self.on_plan(plan, self)
        elif minutes > 0:
            self.log.message(
                f"{minutes:g} minutes at {plan.rate:.2f} steps/s: training {plan.steps} steps"
            )

    def run(self) -> TrainResult:
        """Train to the configured steps, or until SIGINT / SIGTERM (`train.signals`); always ends
        on a saved checkpoint. A file that cannot be written (a full disk, a file-size limit) ends
        training with a TrainingError naming the last checkpoint, which is intact: every write
        is atomic."""
        signals = StopSignals(self.dist, self.device, self.options.log_every, lambda: self.step)
        try:
            with signals:
                return self._run(signals)
        except OSError as exc:
            what = f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else "")
            last_good = self.checkpoints.last_good()
            raise TrainingError(f"{what}; training stopped, {last_good}") from None
        finally:
            self.close()

    def _run(self, signals: StopSignals) -> TrainResult:
        config, options, log = self.config, self.options, self.log
        description = f"{config.objective.name} on {config.data.name}"
        log.open(self.plan.total, self.step, description, options.progress, options.tensorboard)
        self.plan.begin()
        batches, stopped = self.batches(), False
        try:
            while self.planning or self.step < self.plan.total:
                stopped = signals.requested(self.step)
                if stopped:
                    break
                terms = self.train_step(next(batches))
                log.add(terms)
                plan = self.plan.after_step(self.step)
                if plan is not None:
                    self._planned(plan)
                if self.step % options.log_every == 0 or self.step == self.plan.total:
                    self.watch.check(self.checkpoints.last_good())
                    log.write(self.step, self.learning_rate(self.step - 1))
                if self.step % options.save_every == 0:
                    log.checkpoint_clock()
                    self.save()
        finally:
            del batches  # stops the data-loading workers
            log.close()
        path = self.save() if self.saved_step != self.step else self.checkpoints.path
        status = "interrupted" if stopped else "completed"
        return TrainResult(self.step, status, path, signals.signum)


def learning_rate(optimisation: Optimisation, step: int, total_steps: int | None) -> float:
    """Linear warm-up, then constant or cosine decay to zero at `total_steps` (None: a
    wall-clock budget not planned yet, and the cosine is held at its start)."""
    warmup = optimisation.warmup_steps
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    if optimisation.lr_schedule == "cosine" and total_steps is not None:
        progress = max(0, step - warmup) / max(1, total_steps - warmup)
        scale *= 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return optimisation.lr * scale
