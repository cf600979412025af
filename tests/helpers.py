"""What several test files share: tiny configs and trainers, running the CLI in-process, and
small image files. Fixtures live in conftest.py; import these with `from helpers import ...`."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shortcut_models.cli import main
from shortcut_models.config import TrainConfig
from shortcut_models.train import RunOptions, Trainer

TINY = {"hidden_size": 32, "depth": 1}


def config_tree(**values) -> dict:
    """A partial config tree from the tests' short keywords: `data`, `objective`, `backbone`
    (names), `data_options` / `objective_options` / `backbone_options`, and any field of the
    training or optimisation section by its name (`steps=12`, `lr=1e-3`)."""
    import dataclasses

    from shortcut_models.config import SECTION_TYPES, SELECTIONS

    tree: dict = {}
    for key, value in values.items():
        if key in SELECTIONS:
            tree.setdefault(key, {})["name"] = value
        elif key.removesuffix("_options") in SELECTIONS:
            tree.setdefault(key.removesuffix("_options"), {})["options"] = dict(value)
        else:
            section = next(
                name
                for name, cls in SECTION_TYPES.items()
                if key in {f.name for f in dataclasses.fields(cls)}
            )
            tree.setdefault(section, {})[key] = value
    return tree


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
    return TrainConfig.from_tree(config_tree(**values))


def make_backbone(name: str, **values):
    """`build_backbone` from keywords: the data's (`input_size`, `in_channels` or `dim`,
    `num_classes`), the objective's inputs (`guidance_input`, ...) and the rest as options."""
    from shortcut_models.backbones import backbone_kind, backbone_options, build_backbone

    inputs = {k: values.pop(k) for k in ("guidance_input", "guidance_interval", "velocity_head")
              if k in values}  # fmt: skip
    num_classes = values.pop("num_classes", 0)
    if backbone_kind(name) == "mlp":
        shape = (values.pop("dim", 2),)
    else:
        default_channels = 4 if backbone_kind(name) == "dit" else 1
        side = values.pop("input_size", 32)
        shape = (values.pop("in_channels", default_channels), side, side)
    return build_backbone(name, backbone_options(name, values), shape, num_classes, **inputs)


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


def synthetic_flax_tree(hidden=16, depth=2, patch=2, channels=3, classes=10, seed=0):
    """Random parameters with the official DiT's flax names and shapes (no JAX needed)."""
    rng = np.random.default_rng(seed)

    def dense(fan_in, fan_out):
        return {
            "kernel": rng.standard_normal((fan_in, fan_out)),
            "bias": rng.standard_normal(fan_out),
        }

    tree = {
        "PatchEmbed_0": {
            "Conv_0": {
                "kernel": rng.standard_normal((patch, patch, channels, hidden)),
                "bias": rng.standard_normal(hidden),
            }
        },
        "TimestepEmbedder_0": {"Dense_0": dense(256, hidden), "Dense_1": dense(hidden, hidden)},
        "TimestepEmbedder_1": {"Dense_0": dense(256, hidden), "Dense_1": dense(hidden, hidden)},
        "LabelEmbedder_0": {"Embed_0": {"embedding": rng.standard_normal((classes + 1, hidden))}},
        "FinalLayer_0": {
            "Dense_0": dense(hidden, 2 * hidden),
            "Dense_1": dense(hidden, patch * patch * channels),
        },
        "Embed_0": {"embedding": np.zeros((256, 1))},
    }
    for i in range(depth):
        tree[f"DiTBlock_{i}"] = {
            "Dense_0": dense(hidden, 6 * hidden),
            **{f"Dense_{j}": dense(hidden, hidden) for j in (1, 2, 3, 4)},
            "MlpBlock_0": {
                "Dense_0": dense(hidden, 4 * hidden),
                "Dense_1": dense(4 * hidden, hidden),
            },
        }
    return tree
