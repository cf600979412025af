"""Training and sampling throughput of any backbone: shortcut versus flow matching in one process.

Also times MeanFlow's and improved MeanFlow's steps (their JVP targets) against the same
flow-matching step. Times the real
training step (`Trainer.train_step`: targets, forward, backward, AdamW, EMA) on
random inputs of the chosen shape, rounds of the two objectives interleaved so machine noise hits
both alike; counts the FLOPs of one step with torch's FlopCounterMode (matmuls, convolutions,
attention; forward and backward) and divides the achieved rate by a named peak (MFU); times
sampling at 1, 4 and 128 steps and one bare forward pass of the same batch.

    python benchmarks/throughput.py --preset DiT-T/4 --input-size 28 --channels 1 --batch 64 \\
        --json benchmarks/results/throughput_cpu.json               # 2 CPU cores, small preset
    python benchmarks/throughput.py --recipe cpu-small --backbone unet --input-size 32 \\
        --objectives flow_matching shortcut --profile --json benchmarks/results/throughput_unet.json
                                                                    # the demo's U-Net and recipe

`--recipe` takes a recipe's backbone options, learning rate, precision and memory format (the
demo's `cpu-small`: U-Net 16/32/64 on 2x2 patches, fp32, channels-last); `--profile` adds a table
of where a step's time goes (convolutions, normalisation, attention, the bootstrap forward, AdamW,
EMA, clipping, data, the rest) from torch.profiler's self times, and the CPU's instruction sets
(AMX, AVX512-BF16, AVX-512, AVX2) and any forced capability (`ATEN_CPU_CAPABILITY`,
`ONEDNN_MAX_CPU_ISA`) are recorded with the figures.
    python benchmarks/throughput.py --preset DiT-B/2 --input-size 32 --channels 4 --batch 256 \\
        --classes 1000 --device cuda --compile --json benchmarks/results/throughput_h100.json
"""

from __future__ import annotations

import argparse
import dataclasses
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

from shortcut_models.compose import compose_config
from shortcut_models.report import markdown_table, write_json
from shortcut_models.sampling import sample
from shortcut_models.train import Trainer

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
    p.add_argument(
        "--preset", "--backbone", dest="preset", default="DiT-T/4",
        help="backbone: a DiT preset, unet, mlp, ... (any registered backbone name)",
    )  # fmt: skip
    p.add_argument("--recipe", help="start from this recipe (e.g. cpu-small: the demo's U-Net)")
    p.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    p.add_argument("--memory-format", help="contiguous, channels-last or auto (default: recipe's)")
    p.add_argument("--profile", action="store_true", help="where a step's time goes, by kind")
    p.add_argument("--profile-steps", type=int, default=10)
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--precision", choices=["auto", "fp32", "bf16", "bf16-if-native"],
        help="default: the recipe's, else auto",
    )  # fmt: skip
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
    """The trainer a run of `objective` would build (the recipe's settings where one is given)."""
    flags = {
        "objective": {"name": objective}, "backbone": {"name": args.preset},
        "training": {"steps": 10**9, "batch_size": args.batch},
        "run": {"device": args.device, "progress": False, "tensorboard": False,
                "compile": args.compile},
    }  # fmt: skip
    if not args.recipe:
        flags["optimisation"] = {"lr": 1e-4}
        flags["run"]["precision"] = "auto"
    if args.precision:
        flags["run"]["precision"] = args.precision
    if args.memory_format:
        flags["run"]["memory_format"] = args.memory_format
    composed = compose_config(None, recipe_name=args.recipe, flags=flags)
    return Trainer(composed.config, composed.run_options(out / objective), data)


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
    objectives = [name for name in OBJECTIVES if name in args.objectives]
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {name: make_trainer(name, args, data, Path(tmp)) for name in objectives}
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
        first = next(iter(trainers.values()))
        peak, peak_source = peak_tflops(device, first.autocast_dtype, args.peak_tflops)
        per_objective = {}
        for name, trainer in trainers.items():
            seconds = statistics.median(times[name])
            flops = step_flops(trainer)
            achieved = flops / seconds / 1e12
            per_objective[name] = {
                "step_s": seconds,
                "step_s_rounds": times[name],
                "images_per_s": args.batch / seconds,
                "flops_per_step": flops,
                "tflops": achieved,
                "mfu": achieved / peak if peak else None,
                "peak_memory_gib": peak_memory.get(name),
            }
        profiles = (
            {name: profile_step(t, args.profile_steps) for name, t in trainers.items()}
            if args.profile
            else None
        )
        sampler = trainers.get("shortcut", first)
        rates = sampling(sampler, args.sample_batch or args.batch, args.sample_repeat)
    config = first.config
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "cpu": cpu_kind() if device.type == "cpu" else None,
        "torch": torch.__version__,
        "preset": args.preset,
        "recipe": args.recipe,
        "backbone_options": dataclasses.asdict(config.backbone.options),
        "memory_format": first.options.memory_format,
        "input": [args.channels, args.input_size, args.input_size],
        "classes": args.classes,
        "batch": args.batch,
        "precision": str(first.autocast_dtype or "fp32").replace("torch.", ""),
        "compile": args.compile,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "peak_tflops": peak,
        "peak_source": peak_source,
        **per_objective,
        "sampled_with": sampler.objective.name,
        **rates,
        "one_step_over_forward": rates["sample_images_per_s"]["1"] / rates["forward_images_per_s"],
        "process_peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    if "flow_matching" in per_objective:
        fm = per_objective["flow_matching"]
        for name in per_objective.keys() - {"flow_matching"}:
            result[f"{name}_over_flow_matching_step_time"] = (
                per_objective[name]["step_s"] / fm["step_s"]
            )
        if "shortcut" in per_objective:
            result["shortcut_over_flow_matching_flops"] = (
                per_objective["shortcut"]["flops_per_step"] / fm["flops_per_step"]
            )
    if "shortcut" in per_objective:
        result["train_images_per_s"] = per_objective["shortcut"]["images_per_s"]
        result["mfu"] = per_objective["shortcut"]["mfu"]
    if profiles:
        result["profile_ms_per_step"] = profiles
    print(report(result, objectives))
    if args.json:
        write_json(args.json, result)
        print(f"wrote {args.json}")
    return 0


# Where a step's time goes: named parts of the step (their ops included), then ops by kind.
PARTS = ("data", "bootstrap forward", "AdamW", "EMA", "gradient clipping")
OP_KINDS = (
    ("convolutions", ("convolution", "conv2d", "conv_")),
    ("normalisation", ("group_norm", "layer_norm", "native_norm")),
    ("attention", ("attention", "sdpa")),
    ("matmuls", ("addmm", "aten::mm", "bmm", "linear")),
)


def profile_step(trainer: Trainer, steps: int) -> dict[str, float]:
    """Milliseconds per training step by part and kind of work, from torch.profiler's self CPU
    times (host time: on a GPU this is launch overhead, not kernel time)."""
    from torch.profiler import profile, record_function

    from shortcut_models import ema as ema_module
    from shortcut_models.train import trainer as trainer_module

    def scoped(name, fn):
        def call(*a, **k):
            with record_function(name):
                return fn(*a, **k)

        return call

    clip_grad_norm_ = torch.nn.utils.clip_grad_norm_
    patches = [
        (trainer.data, "batch", scoped("data", trainer.data.batch)),
        (trainer.optimizer, "step", scoped("AdamW", trainer.optimizer.step)),
        (trainer_module, "update_ema", scoped("EMA", ema_module.update_ema)),
        (torch.nn.utils, "clip_grad_norm_", scoped("gradient clipping", clip_grad_norm_)),
    ]  # fmt: skip
    if hasattr(trainer.objective, "bootstrap_target"):
        fn = trainer.objective.bootstrap_target
        patches.append((trainer.objective, "bootstrap_target", scoped("bootstrap forward", fn)))
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, fn in patches:
        setattr(owner, name, fn)
    try:
        time_steps(trainer, 2)
        with profile() as prof:
            time_steps(trainer, steps)
    finally:
        for owner, name, fn in saved:
            if owner is trainer.objective or owner is trainer.data or owner is trainer.optimizer:
                delattr(owner, name)  # back to the class's method
            else:
                setattr(owner, name, fn)
    totals: dict[str, float] = {}
    for event in prof.events():
        if event.name in PARTS:
            continue  # a scope: its self time is the wrapper's, counted as "other"
        kind, parent = None, event.cpu_parent
        while parent is not None and kind is None:
            kind = parent.name if parent.name in PARTS else None
            parent = parent.cpu_parent
        if kind is None:
            name = event.name.lower()
            kind = next((k for k, keys in OP_KINDS if any(x in name for x in keys)), "other")
        totals[kind] = totals.get(kind, 0.0) + event.self_cpu_time_total / 1e3 / steps
    order = [k for k, _ in OP_KINDS] + list(PARTS) + ["other"]
    return {k: totals[k] for k in order if k in totals}


def cpu_kind() -> dict[str, Any]:
    """The CPU's vector instruction sets that matter to torch and oneDNN, and any forced one."""
    import os

    flags = set()
    info = Path("/proc/cpuinfo")
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    have = {
        "amx": "amx_tile" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512": "avx512f" in flags,
        "avx2": "avx2" in flags,
    }
    forced = {
        k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ
    }
    native = next((k for k in ("amx", "avx512_bf16", "avx512", "avx2") if have[k]), "other")
    return {**have, "forced": forced, "kind": "avx2 (emulated)" if forced else native}


def cpu_name() -> str:
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            return f"CPU {line.split(':', 1)[1].strip()}"
    return f"CPU {platform.processor() or platform.machine()}"


def report(r: dict[str, Any], objectives: list[str]) -> str:
    def fmt(value: Any, spec: str) -> str:
        return "-" if value is None else format(value, spec)

    rows = [
        [name, fmt(o["step_s"] * 1e3, ".1f"), fmt(o["images_per_s"], ".0f"),
         fmt(o["flops_per_step"] / 1e12, ".4f"), fmt(o["tflops"], ".3f"), fmt(o["mfu"], ".3f"),
         fmt(o["peak_memory_gib"], ".2f")]
        for name, o in ((name, r[name]) for name in objectives)
    ]  # fmt: skip
    cpu = r.get("cpu") or {}
    head = (
        f"{r['preset']} on {r['input']} x batch {r['batch']}"
        f"{' (recipe ' + r['recipe'] + ')' if r['recipe'] else ''}, {r['precision']}, "
        f"{r['memory_format']}, compile={r['compile']}, {r['device']}"
        f"{' [' + cpu['kind'] + ']' if cpu else ''} (peak {fmt(r['peak_tflops'], '.3f')} "
        f"TFLOP/s: {r['peak_source']})"
    )
    train = markdown_table(
        ["objective", "step ms", "images/s", "TFLOP/step", "TFLOP/s", "MFU", "peak GiB"], rows
    )
    sample_rows = [[n, fmt(v, ".0f")] for n, v in r["sample_images_per_s"].items()]
    sample_rows.append(["bare forward", fmt(r["forward_images_per_s"], ".0f")])
    ratios = [
        f"{name} / flow matching step time: {r[f'{name}_over_flow_matching_step_time']:.3f}"
        for name in objectives
        if f"{name}_over_flow_matching_step_time" in r
    ]
    if "shortcut_over_flow_matching_flops" in r:
        ratios.append(
            f"shortcut / flow matching FLOPs: {r['shortcut_over_flow_matching_flops']:.3f}"
        )
    ratios.append(f"1-step sampling / bare forward: {r['one_step_over_forward']:.3f}")
    parts = [head, train, markdown_table(["sampling steps", "images/s"], sample_rows)]
    parts.append("; ".join(ratios))
    if "profile_ms_per_step" in r:
        profiles = r["profile_ms_per_step"]
        kinds = list(dict.fromkeys(k for p in profiles.values() for k in p))
        prof_rows = [
            [kind, *(fmt(profiles[name].get(kind), ".1f") for name in profiles)] for kind in kinds
        ]
        prof_rows.append(
            ["total (profiled)", *(fmt(sum(p.values()), ".1f") for p in profiles.values())]
        )
        parts.append(
            "where a step's time goes (ms per step, torch.profiler self CPU time):\n\n"
            + markdown_table(["part", *profiles], prof_rows)
        )
    return "\n\n".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
