"""What a run reports: metrics.jsonl, TensorBoard and the progress bar. The loss terms of the
steps between two records are summed on the device; the host reads them only at a record (or a
save), so a step makes no host synchronisation of its own."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from shortcut_models import distributed, logs
from shortcut_models.distributed import Dist
from shortcut_models.files import atomic_write_text
from shortcut_models.progress import progress_bar
from shortcut_models.train.checkpoints import METRICS_NAME

log = logs.get(__name__)


class MetricsLog:
    """Sums of each loss term since the last record, with their step count and seconds; they
    are a part of the checkpoint (`state_dict`), so a resumed run's first record averages the same
    steps as an uninterrupted run's."""

    def __init__(self, out_dir: Path, dist: Dist, device: torch.device, batch_size: int) -> None:
        self.path = out_dir / METRICS_NAME
        self.dist, self.device, self.batch_size = dist, device, batch_size
        # float64 where the device has it: the same sums as adding the terms as Python floats
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.names: list[str] = []
        self.sums: torch.Tensor | None = None
        self.count, self.seconds, self.tick = 0, 0.0, time.perf_counter()
        self.bar: Any = None  # progress_bar: a tqdm bar or a LogProgress
        self.writer: object | None = None

    # -- the state a checkpoint keeps -----------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The sums not yet written (a host read: called at saves only), averaged over ranks,
        each under its place and name ("sum.000.loss"), with their step count and seconds."""
        sums = [] if self.sums is None else distributed.all_mean(self.sums, self.dist).tolist()
        state = {
            f"sum.{i:03d}.{name}": torch.tensor(value, dtype=torch.float64)
            for i, (name, value) in enumerate(zip(self.names, sums, strict=True))
        }
        state["count"] = torch.tensor(self.count)
        state["seconds"] = torch.tensor(self.seconds, dtype=torch.float64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        sums = sorted((key, value) for key, value in state.items() if key.startswith("sum."))
        self.names = [key.split(".", 2)[2] for key, _ in sums]
        values = [float(value) for _, value in sums]
        self.sums = torch.tensor(values, dtype=self.dtype, device=self.device) if values else None
        self.count, self.seconds = int(state["count"]), float(state["seconds"])

    def load_legacy(self, partial: dict) -> None:
        """The sums an older checkpoint kept as JSON metadata ({sums, count, seconds})."""
        wide = torch.float64
        sums = partial["sums"].items()
        state = {f"sum.{i:03d}.{k}": torch.tensor(v, dtype=wide) for i, (k, v) in enumerate(sums)}
        state["count"] = torch.tensor(partial["count"])
        state["seconds"] = torch.tensor(partial["seconds"], dtype=wide)
        self.load_state_dict(state)

    def truncate(self, step: int) -> None:
        """Drop records past the checkpoint, so a resumed log reads like an uninterrupted one."""
        if not self.path.exists():
            return
        kept, damaged = [], 0
        for line in self.path.read_text(errors="replace").splitlines():
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
            log.warning(
                f"dropped {damaged} damaged line(s) of {self.path} (a write cut short, for "
                "example by a full disk)"
            )
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    # -- during the loop ------------------------------------------------------------------------

    def open(self, total: int, initial: int, description: str, progress: bool, tensorboard: bool):
        """The progress bar and the TensorBoard writer (rank 0), and the clock."""
        main = self.dist.is_main
        self.bar = progress_bar(
            total, description, unit="step", enabled=progress and main, initial=initial
        )
        self.writer = _tensorboard(self.path.parent) if tensorboard and main else None
        self.tick = time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor]) -> None:
        """One step's terms (0-dim tensors on the device): summed there, nothing read."""
        if list(terms) != self.names:  # a term seen for the first time (or missing) this step
            new = [name for name in terms if name not in self.names]
            self.names += new
            pad = torch.zeros(len(new), dtype=self.dtype, device=self.device)
            self.sums = pad if self.sums is None else torch.cat([self.sums, pad])
        if len(terms) == len(self.names):  # every known term this step (the usual case)
            values = [terms[name].to(self.dtype) for name in self.names]
        else:
            zero = torch.zeros((), dtype=self.dtype, device=self.device)
            values = [terms[n].to(self.dtype) if n in terms else zero for n in self.names]
        self.sums = self.sums + torch.stack(values)
        self.count += 1
        if self.bar is not None:
            self.bar.update(1)

    def checkpoint_clock(self) -> None:
        """Bank the seconds so far (before a save writes them into the checkpoint)."""
        now = time.perf_counter()
        self.seconds, self.tick = self.seconds + now - self.tick, now

    def write(self, step: int, lr: float) -> dict[str, float]:
        """Average the sums over steps and ranks into one record (one host read), write it to
        metrics.jsonl and TensorBoard (rank 0), and start new sums."""
        now = time.perf_counter()
        elapsed, self.tick = self.seconds + now - self.tick, now
        sums = distributed.all_mean(self.sums, self.dist).tolist() if self.sums is not None else []
        record: dict[str, float] = {"step": step}
        record.update({k: v / self.count for k, v in zip(self.names, sums, strict=True)})
        record["lr"] = lr
        record["samples_per_s"] = self.count * self.batch_size / max(elapsed, 1e-9)
        if self.dist.is_main:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(record) + "\n")
            if self.writer is not None:
                for key, value in record.items():
                    if key != "step":
                        self.writer.add_scalar(f"train/{key}", value, step)
        if self.bar is not None:
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", samples_per_s=f"{record['samples_per_s']:.0f}"
            )
        self.names, self.sums, self.count, self.seconds = [], None, 0, 0.0
        return record

    def close(self) -> None:
        self.checkpoint_clock()
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()

    def message(self, text: str) -> None:
        """A line beside the progress bar (rank 0)."""
        if self.dist.is_main:
            log.info(text)


def _tensorboard(folder: Path) -> object | None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(folder / "tensorboard"))
