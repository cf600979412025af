"""Record the official JAX DiT's output on a tiny parameter tree, for tests/test_official.py to
check `shortcut import-official` against something the conversion under test did not compute.

The parameters are `tests/helpers.py:synthetic_flax_tree()` (seeded numpy draws in the official
layer names), cast to float32 as the official code trains and saves; the inputs are seeded here
and stored with the output. Needs the environment of benchmarks/parity.py (JAX 0.4.20, flax
0.7.4) and a checkout of the official repository:

    /tmp/jaxenv/bin/python benchmarks/record_official_forward.py --official /tmp/official \\
        --official-commit 6010043 --out tests/data/official_forward_tiny.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
# the tiny model of synthetic_flax_tree(): hidden 16, 2 blocks, 2x2 patches, 3 channels, 10
# classes; 4 heads (the file holds no head count)
SIZE = dict(patch_size=2, hidden_size=16, depth=2, num_heads=4, mlp_ratio=4)
IMAGE, CHANNELS, CLASSES = 8, 3, 10


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--official", type=Path, required=True, help="a checkout of the official code")
    p.add_argument("--official-commit", required=True, help="its commit, recorded")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    sys.path.insert(0, str(ROOT / "tests"))
    sys.path.insert(0, str(args.official.resolve()))
    import jax
    import jax.numpy as jnp
    import model  # the official model.py
    from helpers import synthetic_flax_tree

    net = model.DiT(
        **SIZE,
        out_channels=CHANNELS,
        class_dropout_prob=0.1,
        num_classes=CLASSES,
        ignore_dt=False,
        dtype=jnp.float32,
    )
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, IMAGE, IMAGE, CHANNELS)).astype(np.float32)
    t = np.array([0.3, 0.8], dtype=np.float32)
    level = np.array([2, 0], dtype=np.float32)  # the official dt input: log2 of the sections
    y = np.array([3, CLASSES], dtype=np.int32)  # a class and the null class
    outputs = {}
    for seed in (0, 1):  # the raw weights and the EMA of tests/test_official.py
        tree = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, dtype=jnp.float32), synthetic_flax_tree(seed=seed)
        )
        out = net.apply({"params": tree}, jnp.asarray(x), t, level, y)
        outputs[str(seed)] = np.asarray(out, dtype=np.float64).tolist()
    record = {
        "what": "the official DiT (model.py) on synthetic_flax_tree(seed=S) in float32",
        "official_commit": args.official_commit,
        "jax": jax.__version__,
        "machine": platform.machine(),
        "size": SIZE,
        "x_nhwc": x.tolist(),
        "t": t.tolist(),
        "level": level.tolist(),
        "y": y.tolist(),
        "output_nhwc_by_seed": outputs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record) + "\n")
    print(f"wrote {args.out}: output max |value| {np.abs(np.asarray(out)).max():.3f}")  # seed 1


if __name__ == "__main__":
    main()
