"""Latency of an exported generator: PyTorch eager, torch.compile and onnxruntime, at batch 1 and
64 and 1 and 4 sampling steps, on the same weights and noise.

    python benchmarks/export_latency.py --ckpt demo/run    # the demo's MNIST model, 2 CPU cores

Writes benchmarks/results/export_cpu.md and .json. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from shortcut_models.export import UnrolledSampler, export_generator
from shortcut_models.factory import load_run
from shortcut_models.report import markdown_table, write_json

RESULTS = Path(__file__).parent / "results"


def median_ms(call, repeat: int) -> float:
    call()  # warm-up (and, for torch.compile, compilation)
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        call()
        times.append(time.perf_counter() - tick)
    return 1000 * statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.ckpt)
    rows, results = [], {}
    folder = Path(tempfile.mkdtemp(prefix="export-"))
    for steps in (1, 4):
        onnx_path = folder / f"gen{steps}.onnx"
        export_generator(args.ckpt, onnx_path, steps=steps, fmt="onnx")
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        eager = UnrolledSampler(run, steps).eval()
        compiled = torch.compile(UnrolledSampler(run, steps).eval())
        for batch in (1, 64):
            noise = torch.randn(batch, *run.spec.shape)
            inputs = {"noise": noise}
            if run.spec.num_classes:
                inputs["labels"] = torch.arange(batch) % run.spec.num_classes
            values = tuple(inputs.values())
            feed = {name: value.numpy() for name, value in inputs.items()}
            with torch.no_grad():
                timings = {
                    "eager": median_ms(lambda g=eager, v=values: g(*v), args.repeat),
                    "torch.compile": median_ms(lambda g=compiled, v=values: g(*v), args.repeat),
                    "onnxruntime": median_ms(lambda s=session, f=feed: s.run(None, f), args.repeat),
                }
            results[f"steps{steps}_batch{batch}"] = timings
            rows.append([steps, batch, *(f"{v:.1f}" for v in timings.values())])
    table = markdown_table(
        ["steps", "batch", "eager ms", "torch.compile ms", "onnxruntime ms"], rows
    )
    machine = f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    text = (
        f"# Exported generator latency on CPU\n\n`python benchmarks/export_latency.py --ckpt "
        f"{args.ckpt}`; {run.checkpoint.config.backbone.name} on {tuple(run.spec.shape)}, "
        "median of "
        f"{args.repeat} calls after a warm-up (the session opened once). Machine: {machine}, "
        "nothing else running.\n\n"
    )
    (RESULTS / "export_cpu.md").write_text(text + table + "\n")
    write_json(RESULTS / "export_cpu.json", {"machine": machine, "ms": results})
    print(text + table)


if __name__ == "__main__":
    main()
