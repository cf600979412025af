"""Side by side with the official JAX code (kvfrans/shortcut-models) on this machine: the whole
training step (targets, bootstrap passes, loss, gradients, AdamW, EMA) of shortcut and of plain
flow matching, and sampling, in both codes, on the same shapes, in one process.

Both codes run as they train: the official `update` of its train.py (random permutation of the
batch, `get_targets` of targets_shortcut.py or baselines/targets_naive.py, mean squared error,
optax AdamW, the norms it logs, the EMA update), jitted; ours `Trainer.train_step` under the
`reference` recipe (its batch split, EMA bootstrap targets, label dropout), fp32. Sampling: the
official evaluation loop (helper_eval.py: a jitted network call per step, CFG as two calls) and
our `sample` (CFG on a doubled batch), at CFG 1.5 on the EMA weights, from the same-shaped noise.
A 128-step sample is 128 identical network calls in both codes: it is timed over
`--sample-steps` steps and scaled to 128 (said in the output), which keeps a DiT-B/2 row within
minutes on 2 cores. Compile time (XLA's first call) is reported apart from the step time.

Environment: the one `benchmarks/parity.py` documents (JAX 0.4.20, flax 0.7.4, optax 0.1.7 and
this package in one venv) and a checkout of the official code:

    jaxenv/bin/python benchmarks/official_speed.py --official official --presets DiT-S/2 \\
        --batches 32 --json benchmarks/results/official_speed.json
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shortcut_models.compose import compose_config
from shortcut_models.report import markdown_table, write_json
from shortcut_models.sampling import sample
from shortcut_models.train import Trainer

sys.path.insert(0, str(Path(__file__).parent))
from throughput import RandomImages, cpu_kind, cpu_name  # noqa: E402

PRESETS = {  # hidden, depth, heads, patch (DiT-S/B/L/XL)
    "DiT-S/2": (384, 12, 6, 2),
    "DiT-B/2": (768, 12, 12, 2),
    "DiT-S/4": (384, 12, 6, 4),
    "DiT-B/4": (768, 12, 12, 4),
}
OBJECTIVES = {"shortcut": "shortcut", "flow_matching": "naive"}  # ours: official train_type
M = 128
CFG = 1.5


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--official", type=Path, required=True, help="checkout of the official code")
    p.add_argument("--official-commit", default="6010043")
    p.add_argument("--presets", nargs="+", default=["DiT-S/2"], choices=list(PRESETS))
    p.add_argument("--batches", nargs="+", type=int, default=[32])
    p.add_argument("--input-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=4)
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=2, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median kept)")
    p.add_argument("--sample-steps", type=int, default=2, help="steps timed for 128")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path)
    return p.parse_args()


class OfficialCode:
    """The official DiT, train state and update step of one train_type, on random data."""

    def __init__(self, path: Path, preset: str, batch: int, args, train_type: str) -> None:
        import jax
        import jax.numpy as jnp
        import optax

        sys.path.insert(0, str(path.resolve()))
        model = importlib.import_module("model")
        train_state = importlib.import_module("utils.train_state")
        targets = importlib.import_module(
            "targets_shortcut" if train_type == "shortcut" else "baselines.targets_naive"
        )
        self.jax, self.jnp, self.num_classes = jax, jnp, args.classes
        hidden, depth, heads, patch = PRESETS[preset]
        flags = types.SimpleNamespace(
            batch_size=batch, dataset_name="imagenet256", max_steps=10**6,
            model={"class_dropout_prob": 0.1, "num_classes": args.classes,
                   "denoise_timesteps": M, "cfg_scale": CFG, "bootstrap_every": 8,
                   "bootstrap_ema": 1, "bootstrap_cfg": 0, "bootstrap_dt_bias": 0,
                   "target_update_rate": 0.999},
        )  # fmt: skip
        net = model.DiT(
            patch_size=patch, hidden_size=hidden, depth=depth, num_heads=heads, mlp_ratio=4,
            out_channels=args.channels, class_dropout_prob=0.1, num_classes=args.classes,
            ignore_dt=train_type != "shortcut", dropout=0.0,
            dtype=jnp.float32,  # its default is bf16 compute; the comparison is fp32
        )  # fmt: skip
        shape = (batch, args.input_size, args.input_size, args.channels)
        tx = optax.adamw(learning_rate=1e-4, b1=0.9, b2=0.999, weight_decay=0.1)
        key = jax.random.PRNGKey(0)
        params = net.init(
            {"params": key, "label_dropout": key, "dropout": key},
            jnp.zeros((1, *shape[1:])), jnp.zeros((1,)), jnp.zeros((1,)),
            jnp.zeros((1,), dtype=jnp.int32),
        )["params"]  # fmt: skip
        self.state = train_state.TrainStateEma.create(net, params, rng=key, tx=tx)
        self.images = jax.random.normal(jax.random.PRNGKey(1), shape)
        self.labels = jax.random.randint(jax.random.PRNGKey(2), (batch,), 0, args.classes)

        def update(state, images, labels):  # the official train.py's update, this train_type
            new_rng, targets_key, dropout_key, perm_key = jax.random.split(state.rng, 4)
            perm = jax.random.permutation(perm_key, images.shape[0])
            images, labels = images[perm], labels[perm]
            x_t, v_t, t, dt_base, labels, info = targets.get_targets(
                flags, targets_key, state, images, labels, -1, -1
            )

            def loss_fn(params):
                v = state.call_model(
                    x_t, t, dt_base, labels, train=True, rngs={"dropout": dropout_key},
                    params=params,
                )  # fmt: skip
                return jnp.mean(jnp.mean((v - v_t) ** 2, axis=(1, 2, 3)))

            grads = jax.grad(loss_fn)(state.params)
            updates, opt_state = state.tx.update(grads, state.opt_state, state.params)
            params = optax.apply_updates(state.params, updates)
            norms = [optax.global_norm(tree) for tree in (grads, updates, params)]
            state = state.replace(
                rng=new_rng, step=state.step + 1, params=params, opt_state=opt_state
            )
            return state.update_ema(0.999), norms

        self.update = jax.jit(update)
        self.call = jax.jit(lambda state, x, t, dt, y: state.call_model_ema(x, t, dt, y))

    def compile_s(self) -> float:
        tick = time.perf_counter()
        self.state, norms = self.update(self.state, self.images, self.labels)
        self.jax.block_until_ready(norms)
        return time.perf_counter() - tick

    def train(self, steps: int) -> float:
        tick = time.perf_counter()
        for _ in range(steps):
            self.state, norms = self.update(self.state, self.images, self.labels)
        self.jax.block_until_ready((self.state.params, norms))
        return (time.perf_counter() - tick) / steps

    def sample(self, steps: int, timed: int) -> float:
        """Seconds for `timed` of the `steps` Euler steps of helper_eval.py's loop (CFG)."""
        jnp = self.jnp
        x = self.images
        null = jnp.full(self.labels.shape, self.num_classes, dtype=self.labels.dtype)
        level = jnp.full((x.shape[0],), np.log2(steps), dtype=jnp.float32)
        for labels in (null, self.labels):  # compiled before the clock starts
            self.jax.block_until_ready(self.call(self.state, x, level * 0, level, labels))
        tick = time.perf_counter()
        for i in range(timed):
            t = jnp.full((x.shape[0],), i / steps, dtype=jnp.float32)
            v_uncond = self.call(self.state, x, t, level, null)
            v_cond = self.call(self.state, x, t, level, self.labels)
            x = x + (v_uncond + CFG * (v_cond - v_uncond)) / steps
        self.jax.block_until_ready(x)
        return time.perf_counter() - tick


class OurCode:
    """Our trainer of one objective under the reference recipe, fp32, on random data."""

    def __init__(self, preset: str, batch: int, args, objective: str, out: Path) -> None:
        flags = {
            "objective": {"name": objective}, "backbone": {"name": preset},
            "training": {"steps": 10**9, "batch_size": batch},
            "run": {"device": "cpu", "precision": "fp32", "progress": False,
                    "tensorboard": False},
        }  # fmt: skip
        composed = compose_config(None, recipe_name="reference", flags=flags)
        data = RandomImages((args.channels, args.input_size, args.input_size), args.classes)
        self.trainer = Trainer(composed.config, composed.run_options(out / objective), data)
        self.noise = torch.randn(batch, *data.shape)
        self.labels = torch.arange(batch) % args.classes

    def compile_s(self) -> float:
        tick = time.perf_counter()
        self.trainer.train_step()
        return time.perf_counter() - tick

    def train(self, steps: int) -> float:
        tick = time.perf_counter()
        for _ in range(steps):
            self.trainer.train_step()
        return (time.perf_counter() - tick) / steps

    def sample(self, steps: int, timed: int) -> float:
        """Seconds for `timed` steps: our sampler run for `timed` steps of size 1 / `steps`."""
        objective, net = self.trainer.objective, self.trainer.ema
        rule = objective.sampling_rule()
        null = objective.null_class
        with torch.no_grad():
            sample(net, self.noise, 1, rule, self.labels, CFG, null)  # warm-up
            tick = time.perf_counter()
            if timed == steps:
                sample(net, self.noise, steps, rule, self.labels, CFG, null)
            else:  # the same calls as `timed` of the `steps` steps (each step costs the same)
                for _ in range(timed):
                    sample(net, self.noise, 1, rule, self.labels, CFG, null)
        return time.perf_counter() - tick


def table_row(row: dict[str, Any]) -> list[Any]:
    """preset, batch, then per objective 'official / ours' seconds and their ratio, then the
    sampling ratios."""

    def ratio(times: dict[str, float]) -> str:
        return f"{times['official'] / times['ours']:.2f}"

    cells: list[Any] = [row["preset"], row["batch"]]
    for name in OBJECTIVES:
        step = row[name]["step_s"]
        cells += [f"{step['official']:.2f} / {step['ours']:.2f}", ratio(step)]
    return [*cells, ratio(row["sample_1_s"]), ratio(row["sample_128_s"])]


def main() -> int:
    args = parse_args()
    torch.set_num_threads(args.threads)
    import jax

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for batch in args.batches:
                row: dict[str, Any] = {"preset": preset, "batch": batch}
                for ours_name, theirs_name in OBJECTIVES.items():
                    codes = {
                        "official": OfficialCode(args.official, preset, batch, args, theirs_name),
                        "ours": OurCode(preset, batch, args, ours_name, Path(tmp) / preset),
                    }
                    first = {name: code.compile_s() for name, code in codes.items()}
                    times: dict[str, list[float]] = {name: [] for name in codes}
                    for _ in range(args.rounds):
                        for name, code in codes.items():
                            times[name].append(code.train(args.steps))
                    step = {name: statistics.median(t) for name, t in times.items()}
                    row[ours_name] = {"step_s": step, "first_step_s": first, "rounds_s": times}
                    if ours_name == "shortcut":
                        timed = min(args.sample_steps, M)
                        row["sample_1_s"] = {n: c.sample(1, 1) for n, c in codes.items()}
                        per = {n: c.sample(M, timed) / timed for n, c in codes.items()}
                        row["sample_128_s"] = {n: v * M for n, v in per.items()}
                        row["sample_128_timed_steps"] = timed
                results.append(row)
                rows.append(table_row(row))
    result = {
        "device": cpu_name(),
        "cpu": cpu_kind(),
        "threads": args.threads,
        "torch": torch.__version__,
        "jax": jax.__version__,
        "official_commit": args.official_commit,
        "input": [args.input_size, args.input_size, args.channels],
        "classes": args.classes,
        "cfg": CFG,
        "rows": results,
    }
    print(
        f"official {args.official_commit} under JAX {jax.__version__} against ours (torch "
        f"{torch.__version__}), fp32, {args.threads} threads, {result['device']} "
        f"[{result['cpu']['kind']}]; seconds per training step official / ours, and official / "
        f"ours time ratios (128-step sampling timed over {args.sample_steps} steps, x 128/"
        f"{args.sample_steps})"
    )
    print(markdown_table(
        ["preset", "batch", "shortcut step s", "x", "flow-matching step s", "x",
         "1-step sampling x", "128-step sampling x"], rows,
    ))  # fmt: skip
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
