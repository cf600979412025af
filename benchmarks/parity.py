"""Parity with the official JAX code (kvfrans/shortcut-models): same parameters, same inputs,
same numbers, on CPU, in float64 and in float32.

float64 (`--dtype float64`: JAX with jax_enable_x64, the official DiT built in float64, our
network and every input in double) is the proof that holds on any machine: every check must agree
to 1e-10, far below any rounding of float32. float32 (`--dtype float32`, what both codes train in)
differs by summation order, which varies with the CPU's instruction set: its tolerance is relative
to the values' magnitude (1e-5 of max(1, max |value|) for networks and targets, 1e-4 for
sampling), so a DiT-B/2 whose outputs reach 3.14 may differ by 3.1e-5 on any CPU.

Needs a checkout of the official repository (nothing of it enters ours) and one environment with
both its JAX dependencies and this package. Versions that ran it on CPU (Python 3.11):

    python -m venv jaxenv && jaxenv/bin/pip install "jax==0.4.20" "jaxlib==0.4.20" \\
        "flax==0.7.4" "optax==0.1.7" "numpy<2" "scipy<1.13" "ml_dtypes==0.2.0" \\
        "chex==0.1.85" einops ml_collections torch==2.13.0
    jaxenv/bin/pip install --no-deps -e . && jaxenv/bin/pip install tqdm pillow safetensors \
        "POT>=0.9.4" "matplotlib>=3.7"
    git clone https://github.com/kvfrans/shortcut-models official
    jaxenv/bin/python benchmarks/parity.py --official official --official-commit 6010043 \\
        --dtype float64 --md benchmarks/results/parity_float64.md \
        --json benchmarks/results/parity_float64.json
    jaxenv/bin/python benchmarks/parity.py --official official --official-commit 6010043 \
        --dtype float32 --md benchmarks/results/parity.md --json benchmarks/results/parity.json

Checks (max abs difference of each, against the tolerances above):
- forward: the official DiT with random parameters (every layer perturbed, so the zero-
  initialised ones matter) against our DiT under the reference recipe's options with those
  parameters converted (backbones/flax_dit.py), for a small config and DiT-B/2 at 32x32x4;
- targets: the official `get_targets` of shortcut (bootstrap rows with and without bootstrap
  CFG; flow rows), progressive distillation (phase 0 with CFG, a later phase), consistency
  distillation and training, and live reflow, against ours on the same x_t, t, step levels and
  labels (the noise the official code drew is recovered from its x_t);
- sampling: n Euler steps from the same noise (the official evaluation loop, helper_eval.py,
  written out here in JAX) for n = 1, 4, 128, with CFG and for live reflow's levels;
- import: a checkpoint the official code writes (its TrainStateEma, gathered as its train.py
  does, saved by its Checkpoint class) read by `shortcut import-official`: the forward and the
  1 / 4 / 128-step samples of the imported run against the official code's, raw and EMA weights.
The official baselines other than shortcut and live reflow build their DiT with ignore_dt (the
network sees level 0 always); ours tells those networks the constant 1/M. Both are a constant
step input; here our network is wrapped to see level 0 too, so the converted parameters apply.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import tempfile
import types
from datetime import date
from pathlib import Path

import numpy as np
import torch

from shortcut_models.backbones import backbone_options, build_backbone
from shortcut_models.backbones.flax_dit import dit_state_from_flax
from shortcut_models.objectives import build_objective
from shortcut_models.recipes import REFERENCE_DIT, REFERENCE_OBJECTIVES
from shortcut_models.report import markdown_table
from shortcut_models.sampling import sample

M = 128
CLASSES = 10
# float32: relative to max(1, max |value|); float64: absolute
TOLERANCE = {
    "float32": {"forward": 1e-5, "target": 1e-5, "sampling": 1e-4, "training": 1e-5},
    "float64": {"forward": 1e-10, "target": 1e-10, "sampling": 1e-10, "training": 1e-10},
}
DTYPE = {"np": np.float32, "torch": torch.float32}  # set by main() from --dtype


def tolerance(dtype: str, kind: str, scale: float) -> float:
    """The largest difference accepted for a check of `kind` whose values reach `scale`."""
    limit = TOLERANCE[dtype][kind]
    return limit * max(1.0, scale) if dtype == "float32" else limit


def official_modules(path: Path) -> dict[str, types.ModuleType]:
    sys.path.insert(0, str(path.resolve()))
    names = {
        "model": "model",
        "shortcut": "targets_shortcut",
        "progressive": "baselines.targets_progressive",
        "cd": "baselines.targets_consistency_distillation",
        "ct": "baselines.targets_consistency_training",
        "livereflow": "baselines.targets_livereflow",
    }
    modules = {key: importlib.import_module(name) for key, name in names.items()}
    if DTYPE["np"] is np.float64:  # the official code casts to float32 in places (its time and
        # position embeddings, attention weights, targets): widen those casts to float64 there
        for module in [*modules.values(), importlib.import_module("math_utils")]:
            module.jnp = Float64Numpy(module.jnp)
            if hasattr(module, "np"):
                module.np = Float64Numpy(module.np)
    return modules


class Float64Numpy:
    """jax.numpy (or numpy) as a module sees it, with `float32` meaning float64."""

    def __init__(self, inner: types.ModuleType) -> None:
        self.inner = inner

    def __getattr__(self, name: str):
        return getattr(self.inner, "float64" if name == "float32" else name)


class Official:
    """The official DiT with random, perturbed float32 parameters, and its `train_state`."""

    def __init__(self, mods, size: dict, image: int, channels: int, ignore_dt: bool, seed: int):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp
        self.size, self.channels = size, channels
        self.net = mods["model"].DiT(
            **size,
            out_channels=channels,
            class_dropout_prob=0.1,
            num_classes=CLASSES,
            ignore_dt=ignore_dt,
            dtype=jnp.float64 if DTYPE["np"] is np.float64 else jnp.float32,
        )
        x = jnp.zeros((1, image, image, channels))
        params = self.net.init(
            {"params": jax.random.PRNGKey(seed)},
            x,
            jnp.zeros((1,)),
            jnp.zeros((1,)),
            jnp.zeros((1,), dtype=jnp.int32),
        )["params"]
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
        noisy = [
            (leaf + 0.05 * jax.random.normal(k, leaf.shape)).astype(DTYPE["np"])
            for leaf, k in zip(leaves, list(keys), strict=True)
        ]
        self.params = jax.tree_util.tree_unflatten(tree, noisy)
        self.step = 1

    def __call__(self, x, t, dt, y, train=False, params=None):
        return self.net.apply({"params": self.params}, x, t, dt, y)

    call_model = call_model_ema = __call__

    def ours(self, image: int, options: dict | None = None) -> torch.nn.Module:
        """Our DiT with these parameters, under the reference's options unless given others."""
        values = {**self.size, **(REFERENCE_DIT if options is None else options)}
        shape = (self.channels, image, image)
        net = build_backbone("dit", backbone_options("dit", values), shape, CLASSES)
        net = net.to(DTYPE["torch"])
        flat = self.jax.tree_util.tree_map(np.asarray, self.params)
        state = {k: v.to(DTYPE["torch"]) for k, v in dit_state_from_flax(flat, CLASSES).items()}
        net.load_state_dict(state)
        return net.eval()


class LevelZero(torch.nn.Module):
    """Our network seeing step level 0 whatever d it is told (the official ignore_dt)."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x, t, d, y=None):
        return self.net(x, t, torch.ones_like(d), y)


def nchw(a) -> torch.Tensor:
    return torch.from_numpy(np.asarray(a, dtype=DTYPE["np"])).permute(0, 3, 1, 2).contiguous()


def floats(a) -> torch.Tensor:
    """A vector (t, d) in the working precision."""
    return torch.from_numpy(np.asarray(a, dtype=DTYPE["np"]))


def nhwc(a: torch.Tensor) -> np.ndarray:
    return a.permute(0, 2, 3, 1).numpy()


def flags(n: int, **model) -> types.SimpleNamespace:
    values = dict(
        bootstrap_every=8,
        denoise_timesteps=M,
        bootstrap_dt_bias=0,
        bootstrap_ema=1,
        bootstrap_cfg=0,
        cfg_scale=4.0,
        num_classes=CLASSES,
        class_dropout_prob=0.1,
    )
    values.update(model)
    return types.SimpleNamespace(batch_size=n, model=values, max_steps=70)


def recover_noise(x_t, t, x1) -> torch.Tensor:
    """x0 from x_t = (1 - (1 - 1e-5) t) x0 + t x1."""
    tb = t[:, None, None, None]
    return (x_t - tb * x1) / (1 - (1 - 1e-5) * tb)


def largest(theirs, mine) -> tuple[float, float]:
    """(max abs difference, max abs official value: the scale the difference is relative to)."""
    a, b = np.asarray(theirs, dtype=np.float64), np.asarray(mine, dtype=np.float64)
    return float(np.max(np.abs(a - b))), float(np.max(np.abs(a)))


def check_forward(
    mods, size: dict, image: int, channels: int, n: int, options: dict | None = None
) -> tuple[float, float]:
    official = Official(mods, size, image, channels, ignore_dt=False, seed=0)
    ours = official.ours(image, options)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, image, image, channels)).astype(DTYPE["np"])
    t = rng.random(n).astype(DTYPE["np"])
    level = rng.integers(0, 8, n)
    y = rng.integers(0, CLASSES + 1, n)
    theirs = official(official.jnp.asarray(x), t, level.astype(DTYPE["np"]), y)
    with torch.no_grad():
        mine = ours(
            nchw(x),
            torch.from_numpy(t),
            torch.pow(2.0, -torch.from_numpy(level)).to(DTYPE["torch"]),
            torch.from_numpy(y),
        )
    return largest(theirs, nhwc(mine))


SMALL = dict(patch_size=2, hidden_size=64, depth=2, num_heads=4, mlp_ratio=4)
IMAGE, CHANNELS = 8, 4


def batch(n: int, seed: int):
    rng = np.random.default_rng(seed)
    images = np.clip(rng.standard_normal((n, IMAGE, IMAGE, CHANNELS)), -2, 2).astype(DTYPE["np"])
    return images, rng.integers(0, CLASSES, n).astype(np.int32)


def check_shortcut(mods, bootstrap_cfg: bool) -> dict[str, float]:
    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=False, seed=1)
    ours_net = official.ours(IMAGE)
    n = 64
    images, labels = batch(n, 1)
    fl = flags(n, bootstrap_cfg=int(bootstrap_cfg), cfg_scale=1.5)
    key = official.jax.random.PRNGKey(3)
    x_t, v_t, t, dt_base, y, _ = mods["shortcut"].get_targets(fl, key, official, images, labels)
    x_t, v_t, t = nchw(x_t), nchw(v_t), floats(t)
    level, y = floats(dt_base), torch.from_numpy(np.asarray(y)).long()
    options = {
        **REFERENCE_OBJECTIVES["shortcut"],
        "bootstrap_cfg": bootstrap_cfg,
        "bootstrap_cfg_scale": 1.5,
    }
    objective = build_objective("shortcut", num_classes=CLASSES, **options)
    nb = n // 8
    boot = slice(0, nb)
    mine = objective.bootstrap_target(
        ours_net, x_t[boot], t[boot], torch.pow(2.0, -level[boot]), y[boot]
    )
    name = "shortcut bootstrap target" + (" (bootstrap CFG 1.5)" if bootstrap_cfg else "")
    result = {name: largest(v_t[boot], mine)}
    if not bootstrap_cfg:  # the flow rows: first n - nb images (the reference's split)
        flow = slice(nb, n)
        x1 = nchw(images[: n - nb])
        x0 = recover_noise(x_t[flow], t[flow], x1)
        from shortcut_models.objectives.base import flow_velocity, interpolate

        result["shortcut flow rows (x_t and target)"] = max(
            largest(interpolate(x0, x1, t[flow]), x_t[flow]),
            largest(flow_velocity(x0, x1), v_t[flow]),
        )
        expected_levels = torch.tensor([6, 5, 4, 3, 2, 1, 0, 0] + [7] * (n - nb)).to(level)
        assert torch.equal(level, expected_levels), level
    return result


def check_progressive(mods) -> dict[str, float]:
    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=True, seed=2)
    teacher = LevelZero(official.ours(IMAGE))
    n = 32
    images, labels = batch(n, 2)
    result = {}
    for step, cfg in ((1, True), (1, False), (45, False)):
        fl = flags(n, bootstrap_cfg=int(cfg), cfg_scale=1.5)
        official.step = step
        key = official.jax.random.PRNGKey(4)
        out = mods["progressive"].get_targets(fl, key, official, official, images, labels)
        x_t, v, t, dt_base, y = out[:5]
        objective = build_objective(
            "progressive_distillation",
            num_classes=CLASSES,
            denoise_timesteps=M,
            first_phase_cfg_scale=1.5 if cfg else 1.0,
            **REFERENCE_OBJECTIVES["progressive_distillation"],
        )
        objective.teacher_network = teacher
        objective.step, objective.total_steps = step, fl.max_steps
        level = floats(dt_base)
        mine = objective.distill_target(
            nchw(x_t),
            floats(t),
            torch.pow(2.0, -level),
            torch.from_numpy(np.asarray(y)).long(),
        )
        phase = objective.phase()
        label = f"progressive target, phase {phase}" + (" with CFG 1.5" if cfg else "")
        result[label] = largest(nchw(v), mine)
    return result


def check_consistency(mods) -> dict[str, float]:
    from shortcut_models.objectives.base import consistency_velocity, interpolate

    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=True, seed=3)
    student = LevelZero(official.ours(IMAGE))
    n = 32
    images, labels = batch(n, 3)
    fl = flags(n)
    key = official.jax.random.PRNGKey(5)
    x_t, v, t, _, y, _ = mods["cd"].get_targets(fl, key, official, official, images, labels)
    cd = build_objective(
        "consistency_distillation",
        num_classes=CLASSES,
        **REFERENCE_OBJECTIVES["consistency_distillation"],
    )
    cd.teacher_network = student  # the official test uses one network for teacher and student
    yt = torch.from_numpy(np.asarray(y)).long()
    mine = cd.consistency_target(student, nchw(x_t), floats(t), yt)
    result = {"consistency distillation target": largest(nchw(v), mine)}

    official.step = 25  # stage 2 of 7: dt = 1/4
    x_t, v, t, dt_base, y, _ = mods["ct"].get_targets(fl, key, official, images, labels)
    t = floats(t)
    x1 = nchw(images)
    x0 = recover_noise(nchw(x_t), t, x1)
    stage = int(np.asarray(dt_base))
    t2 = t + 2.0**-stage
    x_t2 = interpolate(x0, x1, t2)
    with torch.no_grad():
        v2 = student(x_t2, t2, torch.full_like(t, 1 / M), torch.from_numpy(np.asarray(y)).long())
    mine = consistency_velocity(nchw(x_t), t, x_t2, t2, v2)
    result[f"consistency training target, stage {stage}"] = largest(nchw(v), mine)
    return result


def check_live_reflow(mods) -> dict[str, float]:
    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=False, seed=4)
    net = official.ours(IMAGE)
    n = 64
    images, labels = batch(n, 4)
    fl = flags(n, cfg_scale=4.0)
    key = official.jax.random.PRNGKey(6)
    x_t, v, t, dt_base, y, _ = mods["livereflow"].get_targets(fl, key, official, images, labels)
    nb = n // 8
    x_t, v, t = nchw(x_t)[:nb], nchw(v)[:nb], floats(t)[:nb]
    tb = t[:, None, None, None]
    x0 = (x_t - tb * v) / (1 + 1e-5 * tb)  # x_t = (1 - (1 - eps) t) x0 + t (x0 + v)
    objective = build_objective(
        "live_reflow", num_classes=CLASSES, **REFERENCE_OBJECTIVES["live_reflow"]
    )
    generated = objective.generate_from(net, x0, torch.from_numpy(labels[:nb]).long())
    assert np.all(np.asarray(dt_base)[:nb] == 0)
    return {"live reflow target (8 steps, CFG 4)": largest(v, generated - x0)}


def official_sample(official, noise, steps: int, labels, cfg: float, livereflow: bool):
    """helper_eval.py's evaluation loop: t = i / n, level log2(n) (live reflow: 0 below
    n = M), x += v / n; CFG as v_uncond + cfg (v_cond - v_uncond)."""
    jnp = official.jnp
    x = jnp.asarray(noise)
    null = jnp.full(labels.shape, CLASSES)
    for i in range(steps):
        t = jnp.full((x.shape[0],), i / steps)
        level = jnp.ones_like(t) * np.log2(steps)
        if livereflow and steps < M:
            level = jnp.zeros_like(t)
        if cfg == 1:
            v = official(x, t, level, labels)
        else:
            v_uncond, v_cond = official(x, t, level, null), official(x, t, level, labels)
            v = v_uncond + cfg * (v_cond - v_uncond)
        x = x + v / steps
    return x


def check_sampling(mods) -> dict[str, float]:
    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=False, seed=5)
    net = official.ours(IMAGE)
    rng = np.random.default_rng(5)
    noise = rng.standard_normal((16, IMAGE, IMAGE, CHANNELS)).astype(DTYPE["np"])
    labels = rng.integers(0, CLASSES, 16).astype(np.int32)
    result = {}
    cases = [
        ("shortcut", 1, 1.0),
        ("shortcut", 4, 1.0),
        ("shortcut", 128, 1.0),
        ("shortcut", 4, 1.5),
        ("live_reflow", 4, 1.0),
        ("live_reflow", 128, 1.0),
    ]
    for name, steps, cfg in cases:
        spec = build_objective(name, num_classes=CLASSES).sampling_rule()
        theirs = official_sample(official, noise, steps, labels, cfg, name == "live_reflow")
        mine = sample(net, nchw(noise), steps, spec, torch.from_numpy(labels).long(), cfg, CLASSES)
        extra = f", CFG {cfg}" if cfg != 1 else ""
        result[f"sampling {name}, {steps} step{'s' if steps > 1 else ''}{extra}"] = largest(
            theirs, nhwc(mine)
        )
    return result


class Weights:
    """The official DiT applied with given parameters (for `official_sample`)."""

    def __init__(self, official: Official, params) -> None:
        self.official, self.params, self.jnp = official, params, official.jnp

    def __call__(self, x, t, dt, y):
        return self.official.net.apply({"params": self.params}, x, t, dt, y)


class FixedImages:
    """Stand-in data for a Trainer whose targets are fixed (the pixels are never used)."""

    kind, name, class_names = "image", "fixed", None

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.num_classes = shape, CLASSES

    def batch(self, step: int, batch_size: int, seed: int, rows: slice | None = None):
        return torch.zeros(batch_size, *self.shape), torch.zeros(batch_size, dtype=torch.long)


def check_training(mods, work: Path, steps: int = 3) -> dict[str, tuple[float, float]]:
    """Whole training steps of the reference recipe from the same weights on the same batch:
    the loss (the mean over rows of each row's mean squared error), its gradients, AdamW as
    optax's adamw applies it (lr 1e-4 constant, betas 0.9 / 0.999, eps 1e-8, weight decay 0.1
    on every parameter, no clipping) and the EMA (decay 0.999, from the raw weights), written
    out as the official train.py's `update` does them, against our Trainer.train_step under
    `--recipe reference`. The targets are fixed on both sides (get_targets is checked above)
    and neither network drops labels here (ours drops them in its targets)."""
    import jax
    import optax

    from shortcut_models.compose import compose_config
    from shortcut_models.objectives import TrainingBatch
    from shortcut_models.train import Trainer

    jnp = jax.numpy
    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=False, seed=5)
    n, decay = 8, 0.999
    rng = np.random.default_rng(5)
    x_t = rng.standard_normal((n, IMAGE, IMAGE, CHANNELS)).astype(DTYPE["np"])
    v_t = rng.standard_normal((n, IMAGE, IMAGE, CHANNELS)).astype(DTYPE["np"])
    t = rng.random(n).astype(DTYPE["np"])
    level = rng.integers(0, 8, n)
    y = rng.integers(0, CLASSES + 1, n)

    def loss_fn(params):
        v = official.net.apply({"params": params}, x_t, t, level.astype(DTYPE["np"]), y)
        return jnp.mean(jnp.mean((v - v_t) ** 2, axis=(1, 2, 3)))

    tx = optax.chain(optax.adamw(learning_rate=lambda s: 1e-4, b1=0.9, b2=0.999, weight_decay=0.1))
    params = ema = official.params
    opt_state = tx.init(params)
    theirs = []
    for _ in range(steps):
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        ema = jax.tree_util.tree_map(lambda p, e: p * (1 - decay) + e * decay, params, ema)
        theirs.append((float(loss), params, ema))

    options = {**SMALL, **REFERENCE_DIT}
    composed = compose_config(
        None,
        recipe_name="reference",
        flags={
            "objective": {"name": "shortcut"},
            "backbone": {"name": "dit", "options": options},
            "training": {"steps": steps, "batch_size": n},
            "run": {"device": "cpu", "precision": "fp32", "progress": False,
                    "tensorboard": False, "log_every": 10**6, "save_every": 10**6},
        },
    )  # fmt: skip
    data = FixedImages((CHANNELS, IMAGE, IMAGE))
    trainer = Trainer(composed.config, composed.run_options(work / "train"), data)
    start = official.ours(IMAGE).state_dict()
    for net in (trainer.model, trainer.ema):
        net.to(DTYPE["torch"]).load_state_dict(start)
    batch = TrainingBatch(
        x_t=nchw(x_t),
        t=floats(t),
        d=torch.pow(2.0, -torch.from_numpy(level)).to(DTYPE["torch"]),
        y=torch.from_numpy(y),
        target=nchw(v_t),
        groups={"all": slice(0, n)},
    )
    trainer.objective.targets = lambda *args, **kwargs: batch  # the fixed targets

    def state(tree) -> dict[str, torch.Tensor]:
        flat = jax.tree_util.tree_map(np.asarray, tree)
        return dit_state_from_flax(flat, CLASSES)

    out = {}
    for k, (loss, their_params, their_ema) in enumerate(theirs, 1):
        mine = trainer.train_step(data.batch(k, n, 0))
        out[f"training step {k}: loss"] = largest([loss], [float(mine["loss"])])
        for name, net, tree in (("weights", trainer.model, their_params),
                                ("EMA", trainer.ema, their_ema)):  # fmt: skip
            expected, got = state(tree), net.state_dict()
            worst = max(
                (largest(expected[key].numpy(), got[key].detach().numpy()) for key in expected),
                key=lambda pair: pair[0],
            )
            out[f"training step {k}: {name} after AdamW"] = worst
    trainer.close()
    return out


def check_import(mods, work: Path) -> dict[str, tuple[float, float]]:
    """A checkpoint written by the official code (its TrainStateEma, gathered as train.py does,
    saved with its Checkpoint class) -> `shortcut import-official` -> our forward and 1 / 4 /
    128-step samples against the official code's, for the raw and the EMA parameters."""
    import jax
    import optax

    from shortcut_models.factory import load_run
    from shortcut_models.official import import_official

    train_state = importlib.import_module("utils.train_state")
    checkpoint = importlib.import_module("utils.checkpoint")
    official = Official(mods, SMALL, IMAGE, CHANNELS, ignore_dt=False, seed=7)

    def as_stored(tree):  # float32, as the official code trains and saves
        return jax.tree_util.tree_map(
            lambda a: official.jnp.asarray(np.asarray(a, np.float32).astype(DTYPE["np"])), tree
        )

    raw = official.params = as_stored(official.params)
    ema = as_stored(jax.tree_util.tree_map(lambda a: 0.9 * a, raw))  # an EMA unlike the params
    tx = optax.chain(optax.adamw(1e-4))
    state = train_state.TrainStateEma.create(
        official.net, raw, rng=jax.random.PRNGKey(0), tx=tx, opt_state=tx.init(raw)
    ).replace(params_ema=ema, step=1234)
    gathered = jax.experimental.multihost_utils.process_allgather(state)
    target = work / "official_checkpoint"
    saver = checkpoint.Checkpoint(str(target), parallel=False)
    saver.train_state = gathered
    saver.save()
    run = work / "imported"
    import_official(target, run, num_heads=SMALL["num_heads"], input_size=IMAGE)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, IMAGE, IMAGE, CHANNELS)).astype(DTYPE["np"])
    t, level = rng.random(8).astype(DTYPE["np"]), rng.integers(0, 8, 8)
    y = rng.integers(0, CLASSES + 1, 8)
    noise = rng.standard_normal((16, IMAGE, IMAGE, CHANNELS)).astype(DTYPE["np"])
    labels = rng.integers(0, CLASSES, 16).astype(np.int32)
    spec = build_objective("shortcut", num_classes=CLASSES).sampling_rule()
    result = {}
    for which, params in (("model", raw), ("ema", ema)):
        loaded = load_run(run, weights=which)
        assert loaded.checkpoint.step == 1234 and loaded.spec.num_classes == CLASSES
        net = loaded.model.to(DTYPE["torch"])
        theirs = Weights(official, params)
        name = "raw params" if which == "model" else "params_ema"
        with torch.no_grad():
            mine = net(
                nchw(x), floats(t), floats(2.0 ** -level.astype(np.float64)), torch.from_numpy(y)
            )
        result[f"imported checkpoint ({name}): forward"] = largest(
            theirs(official.jnp.asarray(x), t, level.astype(DTYPE["np"]), y), nhwc(mine)
        )
        for steps in (1, 4, 128):
            expected = official_sample(theirs, noise, steps, labels, 1.0, False)
            got = sample(
                net, nchw(noise), steps, spec, torch.from_numpy(labels).long(), 1.0, CLASSES
            )
            result[f"imported checkpoint ({name}): {steps}-step samples"] = largest(
                expected, nhwc(got)
            )
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--official", type=Path, required=True, help="checkout of the official code")
    p.add_argument("--md", type=Path, help="write the table here")
    p.add_argument("--json", type=Path, help='write {"<check>": max abs difference} here')
    p.add_argument("--skip-large", action="store_true", help="leave out DiT-B/2 (minutes)")
    p.add_argument(
        "--official-commit", default="unknown", help="the checkout's commit, for the record"
    )
    p.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        default="float32",
        help="float64: every check to 1e-10 on any CPU; float32: relative tolerances",
    )
    args = p.parse_args()
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    if args.dtype == "float64":
        jax.config.update("jax_enable_x64", True)
        DTYPE.update(np=np.float64, torch=torch.float64)
        torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    mods = official_modules(args.official)
    results: dict[str, float] = {}
    scales: dict[str, float] = {}
    kinds: dict[str, str] = {}

    def add(kind: str, values: dict[str, tuple[float, float]]) -> None:
        for name, (difference, scale) in values.items():
            results[name], scales[name], kinds[name] = difference, scale, kind
            print(f"{name}: {difference:.3g} (values up to {scale:.3g})", flush=True)

    add(
        "forward",
        {
            "forward, small DiT (64 wide, depth 2, 8x8x4, patch 2)": check_forward(
                mods, SMALL, IMAGE, CHANNELS, 8
            )
        },
    )
    control = "forward, small DiT with our default options (a control: must differ)"
    add("control", {control: check_forward(mods, SMALL, IMAGE, CHANNELS, 8, {})})
    if not args.skip_large:
        large = dict(patch_size=2, hidden_size=768, depth=12, num_heads=12, mlp_ratio=4)
        add("forward", {"forward, DiT-B/2 at 32x32x4": check_forward(mods, large, 32, 4, 2)})
    add("target", check_shortcut(mods, bootstrap_cfg=False))
    add("target", check_shortcut(mods, bootstrap_cfg=True))
    add("target", check_progressive(mods))
    add("target", check_consistency(mods))
    add("target", check_live_reflow(mods))
    add("sampling", check_sampling(mods))
    with tempfile.TemporaryDirectory() as work:
        add("training", check_training(mods, Path(work)))
    with tempfile.TemporaryDirectory() as work:
        imported = check_import(mods, Path(work))
    add("forward", {k: v for k, v in imported.items() if k.endswith("forward")})
    add("sampling", {k: v for k, v in imported.items() if not k.endswith("forward")})

    rows = []
    for name, value in results.items():
        kind = kinds[name]
        limit = tolerance(args.dtype, kind, scales[name]) if kind != "control" else None
        verdict = ("yes" if value <= limit else "NO") if limit else "differs, as it should"
        if not limit and value <= tolerance(args.dtype, "forward", scales[name]):
            verdict = "NO: the control does not differ"
        rows.append(
            [name, f"{value:.2e}", f"{scales[name]:.3g}", f"{limit:.2g}" if limit else "-", verdict]
        )
    headers = ["check", "max abs difference", "max abs value", "tolerance", "within"]
    table = markdown_table(headers, rows)
    print(table)
    versions = (
        f"jax {jax.__version__}, flax {importlib.import_module('flax').__version__}, "
        f"numpy {np.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()} CPU, {args.dtype}"
    )
    if args.md:
        header = (
            "# Parity with the official code (kvfrans/shortcut-models)\n\n"
            f"Official commit {args.official_commit}; {versions}; {date.today()}. Written by\n"
            f"`benchmarks/parity.py --official PATH --dtype {args.dtype}` (see its docstring for "
            "what each check compares; tolerance: "
            + ("absolute" if args.dtype == "float64" else "relative to max(1, max |value|)")
            + ").\n\n"
        )
        args.md.write_text(header + table + "\n")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
