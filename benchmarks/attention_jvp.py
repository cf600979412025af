"""Forward-mode derivative (JVP) of one attention call: the math kernel's automatic rule against
the hand-written rule of `backbones.attention` (fused forward, exact tangent in query blocks).
Time (median of 5) and peak memory, each case in a fresh process so peaks do not mix.

    python benchmarks/attention_jvp.py              # CPU: writes results/attention_jvp_cpu.md
    python benchmarks/attention_jvp.py --device cuda --tokens 1024 4096 16384 \
        --out attention_jvp_gpu.md
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def case(rule: str, tokens: int, device: str) -> dict[str, float]:
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from shortcut_models.backbones.attention import attention, jvp_attention

    torch.manual_seed(0)
    q, k, v, dq, dk, dv = (torch.randn(4, 6, tokens, 64, device=device) for _ in range(6))
    scale = 64**-0.5

    def run() -> None:
        if rule == "math":
            with sdpa_kernel(SDPBackend.MATH):
                fn = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, scale=scale)  # noqa: E731
                torch.func.jvp(fn, (q, k, v), (dq, dk, dv))
        else:
            with jvp_attention():
                torch.func.jvp(lambda a, b, c: attention(a, b, c, scale), (q, k, v), (dq, dk, dv))
        if device == "cuda":
            torch.cuda.synchronize()

    run()
    times = []
    for _ in range(5):
        tick = time.perf_counter()
        run()
        times.append(time.perf_counter() - tick)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"ms": 1000 * statistics.median(times), "peak_mib": peak}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, nargs="+", default=[256, 1024, 2048])
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="attention_jvp_cpu.md")
    p.add_argument("--case", nargs=2, help=argparse.SUPPRESS)  # internal: RULE TOKENS
    args = p.parse_args()
    if args.case:
        print(json.dumps(case(args.case[0], int(args.case[1]), args.device)))
        return
    rows = []
    for tokens in args.tokens:
        result = {}
        for rule in ("math", "hand-written"):
            done = subprocess.run(
                [sys.executable, __file__, "--device", args.device, "--case", rule, str(tokens)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result[rule] = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append((tokens, result))
    lines = ["| tokens | math ms | hand-written ms | math peak MiB | hand-written peak MiB |",
             "|---|---|---|---|---|"]  # fmt: skip
    for tokens, r in rows:
        lines.append(
            f"| {tokens} | {r['math']['ms']:.1f} | {r['hand-written']['ms']:.1f} | "
            f"{r['math']['peak_mib']:.0f} | {r['hand-written']['peak_mib']:.0f} |"
        )
    what = "process peak RSS" if args.device == "cpu" else "torch.cuda.max_memory_allocated"
    text = (
        f"# JVP of one attention call (batch 4, 6 heads, head size 64), {args.device}\n\n"
        f"`python benchmarks/attention_jvp.py --device {args.device}`; median of 5 calls; peak: "
        f"{what}. Machine: {platform.machine()}, nothing else running.\n\n"
    )
    (RESULTS / args.out).write_text(text + "\n".join(lines) + "\n")
    print(text + "\n".join(lines))


if __name__ == "__main__":
    main()
