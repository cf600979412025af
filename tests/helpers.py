"""What several test files share: tiny configs and trainers, running the CLI in-process, and
small image files. Fixtures live in conftest.py; import these with `from helpers import ...`."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shortcut_models.cli import main
from shortcut_models.config import TrainConfig
from shortcut_models.train import RunOptions, Trainer

TINY = {"hidden_size": 32, "depth": 1}


def tiny_config(**overrides) -> TrainConfig:
    values = dict(
        data="checkerboard",
        objective="shortcut",
        steps=12,
        batch_size=64,
        lr=1e-3,
        backbone_options=dict(TINY),
    )
    values.update(overrides)
    return TrainConfig.from_flat(values)


def tiny_trainer(out_dir, config=None, **options) -> Trainer:
    opts = dict(out_dir=out_dir, progress=False, log_every=1, save_every=1000, tensorboard=False)
    opts.update(options)
    return Trainer(config or tiny_config(), RunOptions(**opts))


def flow_matching_run(tmp_path_factory, steps: int):
    """A tiny trained flow-matching run (a teacher, or a source to start from) for a module."""
    run = tmp_path_factory.mktemp("flow") / "run"
    tiny_trainer(run, tiny_config(objective="flow_matching", steps=steps)).run()
    return run


def tiny_digit_run(run_dir):
    """A DiT-T/4 trained one step on MNIST: a real image checkpoint, made in about a second."""
    config = tiny_config(
        data="mnist", backbone="DiT-T/4", backbone_options={}, batch_size=8, steps=1
    )
    tiny_trainer(run_dir, config).run()
    return run_dir


def run_main(argv, capsys):
    """(exit code, stdout, stderr) of `shortcut ARGV` run in this process."""
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code, err, expect):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert expect in lines[0], lines[0]


def write_image(path, size=(40, 30), mode="RGB", value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    array = np.full((size[1], size[0], channels), value, dtype=np.uint8).squeeze(
        -1 if channels == 1 else None
    )
    Image.fromarray(array, mode).save(path)
