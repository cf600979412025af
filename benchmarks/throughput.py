"""Training and sampling throughput of a DiT preset: shortcut versus flow matching in one process.

Also times MeanFlow's and improved MeanFlow's steps (their JVP targets) against the same
flow-matching step. Times the real
training step (`Trainer.train_step`: targets, forward, backward, AdamW, EMA) on
random inputs of the chosen shape, rounds of the two objectives interleaved so machine noise hits
both alike; counts the FLOPs of one step with torch's FlopCounterMode (matmuls, convolutions,
attention; forward and backward) and divides the achieved rate by a named peak (MFU); times
sampling at 1, 4 and 128 steps and one bare forward pass of the same batch.

    python benchmarks/throughput.py --preset DiT-T/4 --input-size 28 --channels 1 --batch 64 \\
        --json benchmarks/results/throughput_cpu.json               # 2 CPU cores, small preset
    python benchmarks/throughput.py --preset DiT-B/2 --input-size 32 --channels 4 --batch 256 \\
        --classes 1000 --device cuda --compile --json benchmarks/results/throughput_h100.json
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from shortcut_models.config import TrainConfig
from shortcut_models.report import markdown_table, write_json
from shortcut_models.sampling import sample
from shortcut_models.train import RunOptions, Trainer

# Dense bf16 tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name fragment.
GPU_PEAKS = {"H200": 989.4, "H100 SXM": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0}
SAMPLE_STEPS = (1, 4, 128)
# meanflow and imf: the cost of their JVP targets (imf's guidance targets too, with --classes)
OBJECTIVES = ("flow_matching", "shortcut", "meanflow", "imf")


class RandomImages:
    """Stand-in data of any shape (throughput does not depend on the pixel values)."""

    kind = "image"

    def __init__(self, shape: tuple[int, ...], num_classes: int) -> None:
        self.name, self.shape, self.num_classes = "random", shape, num_classes
        self.class_names = None

    def batch(self, step: int, batch_size: int, seed: int, rows: slice | None = None):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(batch_size, *self.shape, generator=g)
        y = torch.randint(0, max(1, self.num_classes), (batch_size,), generator=g)
        x, y = (x, y) if rows is None else (x[rows], y[rows])
        return x, (y if self.num_classes else None)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="DiT-T/4", help="backbone (a DiT preset)")
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--compile", action="store_true")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per objective")
    p.add_argument("--steps", type=int, default=5, help="timed steps per objective per round")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median is kept)")
    p.add_argument("--sample-repeat", type=int, default=10, help="timings per sampling budget")
    p.add_argument("--sample-batch", type=int, help="images per sampling call (default --batch)")
    p.add_argument("--peak-tflops", type=float, help="the peak MFU divides by (default: looked up)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--json", type=Path)
    return p.parse_args()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(device: torch.device, dtype: torch.dtype | None, given: float | None):
    """(peak, its source): the user's, a data-sheet GPU figure, or a measured CPU matmul."""
    if given:
        return given, "given with --peak-tflops"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, peak in GPU_PEAKS.items():
            if fragment in name:
                return peak, f"{name}: dense bf16 data-sheet peak"
        return None, f"{name}: unknown peak, pass --peak-tflops"
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(5):
        tick = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tick)
    return 2 * n**3 / best / 1e12, f"measured fp32 {n}x{n} matmul on this CPU"


def make_trainer(objective: str, args: argparse.Namespace, data: RandomImages, out: Path):
    config = TrainConfig.from_tree({
        "data": {"name": "random"}, "objective": {"name": objective},
        "backbone": {"name": args.preset}, "training": {"steps": 10**9, "batch_size": args.batch},
        "optimisation": {"lr": 1e-4},
    })  # fmt: skip
    run = RunOptions(
        out_dir=out / objective, device=args.device, progress=False, tensorboard=False,
        precision=args.precision, compile=args.compile,
    )  # fmt: skip
    return Trainer(config, run, data)


def time_steps(trainer: Trainer, count: int) -> float:
    """Seconds per training step over `count` steps."""
    sync(trainer.device)
    tick = time.perf_counter()
    for _ in range(count):
        trainer.train_step()
    sync(trainer.device)
    return (time.perf_counter() - tick) / count


def step_flops(trainer: Trainer) -> int:
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step()
    return counter.get_total_flops()


def best_time(fn, device: torch.device) -> float:
    sync(device)
    tick = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - tick


def sampling(trainer: Trainer, batch: int, repeat: int) -> dict[str, Any]:
    """Images/s at each step budget and of one bare forward pass, on the trainer's EMA network.

    The bare forward pass and the 1-step sampler alternate, `repeat` times each, and the best
    time of each is kept, so their ratio is not at the mercy of one noisy call.
    """
    device, model = trainer.device, trainer.target_net
    spec = trainer.objective.sampling_rule()
    noise = torch.randn(batch, *trainer.data.shape, device=device)
    classes = trainer.data.num_classes
    y = torch.arange(batch, device=device) % classes if classes else None
    t = torch.zeros(batch, device=device)
    dtype = trainer.autocast_dtype
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    calls = {
        "forward": lambda: model(noise, t, t + 1, y),
        **{n: (lambda n=n: sample(model, noise, n, spec, y)) for n in SAMPLE_STEPS},
    }
    best = dict.fromkeys(calls, float("inf"))
    with torch.no_grad(), autocast:
        for fn in calls.values():
            fn()  # warm-up (and compilation)
        for round_ in range(repeat):
            for name, fn in calls.items():
                if name == 128 and round_ >= 2:
                    continue  # long; two timings suffice
                best[name] = min(best[name], best_time(fn, device))
    rates = {str(n): batch / best[n] for n in SAMPLE_STEPS}
    return {"sample_images_per_s": rates, "forward_images_per_s": batch / best["forward"]}


def main() -> int:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    data = RandomImages((args.channels, args.input_size, args.input_size), args.classes)
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(name, args, data, Path(tmp)) for name in OBJECTIVES}
        times: dict[str, list[float]] = {name: [] for name in trainers}
        peak_memory: dict[str, float | None] = {}
        for trainer in trainers.values():
            time_steps(trainer, args.warmup)
        for _ in range(args.rounds):
            for name, trainer in trainers.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                times[name].append(time_steps(trainer, args.steps))
                if device.type == "cuda":
                    peak_memory[name] = torch.cuda.max_memory_allocated(device) / 2**30
        shortcut = trainers["shortcut"]
        peak, peak_source = peak_tflops(device, shortcut.autocast_dtype, args.peak_tflops)
        per_objective = {}
        for name, trainer in trainers.items():
            seconds = statistics.median(times[name])
            flops = step_flops(trainer)
            achieved = flops / seconds / 1e12
            per_objective[name] = {
                "step_s": seconds,
                "images_per_s": args.batch / seconds,
                "flops_per_step": flops,
                "tflops": achieved,
                "mfu": achieved / peak if peak else None,
                "peak_memory_gib": peak_memory.get(name),
            }
        rates = sampling(shortcut, args.sample_batch or args.batch, args.sample_repeat)
    fm, sc = per_objective["flow_matching"], per_objective["shortcut"]
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "preset": args.preset,
        "input": [args.channels, args.input_size, args.input_size],
        "classes": args.classes,
        "batch": args.batch,
        "precision": str(shortcut.autocast_dtype or "fp32").replace("torch.", ""),
        "compile": args.compile,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "flow_matching": fm,
        "shortcut": sc,
        "shortcut_over_flow_matching_step_time": sc["step_s"] / fm["step_s"],
        "shortcut_over_flow_matching_flops": sc["flops_per_step"] / fm["flops_per_step"],
        "meanflow": per_objective["meanflow"],
        "meanflow_over_flow_matching_step_time": per_objective["meanflow"]["step_s"] / fm["step_s"],
        "imf": per_objective["imf"],
        "imf_over_flow_matching_step_time": per_objective["imf"]["step_s"] / fm["step_s"],
        "train_images_per_s": sc["images_per_s"],
        "mfu": sc["mfu"],
        **rates,
        "one_step_over_forward": rates["sample_images_per_s"]["1"] / rates["forward_images_per_s"],
        "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    print(report(result))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


def cpu_name() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return f"CPU {line.split(':', 1)[1].strip()}"
    return f"CPU {platform.processor() or platform.machine()}"


def report(r: dict[str, Any]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        [name, fmt(o["step_s"] * 1e3, ".1f"), fmt(o["images_per_s"], ".0f"),
         fmt(o["flops_per_step"] / 1e12, ".3f"), fmt(o["tflops"], ".3f"), fmt(o["mfu"], ".3f"),
         fmt(o["peak_memory_gib"], ".2f")]
        for name, o in ((name, r[name]) for name in OBJECTIVES)
    ]  # fmt: skip
    head = (
        f"{r['preset']} on {r['input']} x batch {r['batch']}, {r['precision']}, "
        f"compile={r['compile']}, {r['device']} (peak {fmt(r['peak_tflops'], '.2f')} TFLOP/s: "
        f"{r['peak_source']})"
    )
    train = markdown_table(
        ["objective", "step ms", "images/s", "TFLOP/step", "TFLOP/s", "MFU", "peak GiB"], rows
    )
    sample_rows = [[n, fmt(v, ".0f")] for n, v in r["sample_images_per_s"].items()]
    sample_rows.append(["bare forward", fmt(r["forward_images_per_s"], ".0f")])
    ratios = (
        f"shortcut / flow matching step time: {r['shortcut_over_flow_matching_step_time']:.3f} "
        f"(FLOPs {r['shortcut_over_flow_matching_flops']:.3f}); meanflow / flow matching step "
        f"time: {r['meanflow_over_flow_matching_step_time']:.3f}; imf / flow matching step time: "
        f"{r['imf_over_flow_matching_step_time']:.3f}; 1-step sampling / bare "
        f"forward: {r['one_step_over_forward']:.3f}"
    )
    return "\n\n".join(
        [head, train, markdown_table(["sampling steps", "images/s"], sample_rows), ratios]
    )


if __name__ == "__main__":
    raise SystemExit(main())
