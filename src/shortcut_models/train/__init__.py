"""Training: `Trainer(config, RunOptions(out_dir=...)).run()`.

- `trainer`: the step and the loop (read this first)
- `setup`: the networks a run trains, built or restored
- `checkpoints`: the stateful parts, resume checks, atomic saves, the last good checkpoint
- `metrics`: metrics.jsonl, TensorBoard, the progress bar
- `schedule`: the run's length (--steps, or the --minutes plan)
- `health`: the first non-finite step, watched on the device
- `signals`: SIGINT / SIGTERM end a run on a saved checkpoint
- `batches`: this process's rows of each step's batch, loaded ahead
- `result`: how a run ended
"""

from shortcut_models.execution import RunOptions
from shortcut_models.train.checkpoints import METRICS_NAME
from shortcut_models.train.result import TrainResult
from shortcut_models.train.schedule import PLAN_STEPS, Plan
from shortcut_models.train.trainer import Trainer

__all__ = ["METRICS_NAME", "PLAN_STEPS", "Plan", "RunOptions", "TrainResult", "Trainer"]
