"""The preparation commands: `shortcut stats` (FID reference statistics), `shortcut encode`
(latent shards) and `shortcut pairs` (reflow couplings)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shortcut_models.cli import args as a
from shortcut_models.cli import flags as f

STATS_SUMMARY = "compute reference statistics (mu, sigma) of an image set for FID"
STATS_DESCRIPTION = (
    "Compute the feature mean and covariance of a data set (its training split), "
    "an image folder or an .npz of uint8 images and save them as an .npz with mu and sigma, "
    "the layout pytorch-fid and ADM use; pass it to evaluate --ref."
)

ENCODE_SUMMARY = "encode an image set into latent shards once, for latent-mode training"
ENCODE_DESCRIPTION = (
    "Encode every image of a data set, and its horizontal mirror, with a local "
    "diffusers AutoencoderKL (posterior mean x scaling factor) into float16 shards in --out. "
    "Interrupted runs resume. Then train with: shortcut train --data latents --data-path OUT."
)

PAIRS_SUMMARY = "reflow stage 1: couple noise with a trained flow's samples"
PAIRS_DESCRIPTION = (
    "Sample a trained flow (the teacher) from seeded noise and store the (noise, "
    "sample, label) triples in --out, chunk by chunk; an interrupted run resumes. Then train "
    "with: shortcut train --objective reflow --pairs OUT."
)

IMPORT_SUMMARY = "turn a checkpoint of the official JAX code into a run folder"
IMPORT_DESCRIPTION = (
    "Read a checkpoint written by the official code (kvfrans/shortcut-models: a pickle of its "
    "train state) without running anything in it (only numpy arrays and flax / optax containers "
    "are read; JAX is not needed) and write a run folder of ours: the DiT under the reference "
    "recipe, both weight sets, the classes and the latent shape, so sample, evaluate, export "
    "and serve take it. Latent models decode with --vae, as any latent run."
)


def register(subparsers: Any) -> None:
    register_import_official(subparsers)
    register_stats(subparsers)
    register_encode(subparsers)
    register_pairs(subparsers)


def register_stats(subparsers: Any) -> None:
    from shortcut_models.evaluation.images import METRICS

    p = a.command(subparsers, "stats", run_stats, STATS_SUMMARY, STATS_DESCRIPTION)
    p.add_argument("--ref", required=True, help="data set name, image folder or .npz of images")
    a.add_paths(p, None, "statistics file to write (.npz)")
    p.add_argument("--metric", choices=METRICS, default="fid", help="feature network (fid)")
    a.add_count(p, "--ref-num", 50000, "images to use at most")
    a.add_count(p, "--resolution", 32, "image folders: side of the center-cropped square")
    p.add_argument("--channels", type=a.int_arg, default=3, help="image folders: 1 or 3 (3)")
    p.add_argument("--inception", type=Path, help="fid: TorchScript Inception weights path")
    p.add_argument(
        "--batch",
        type=a.positive_int,
        help="fid: images per Inception call (default 8 on a CPU, 128 on a GPU)",
    )
    p.add_argument("--seed", type=a.seed_arg, default=0, help="which images are drawn (0)")
    a.add_device(p)
    a.add_progress(p)


def run_stats(args: argparse.Namespace) -> int:
    from shortcut_models.devices import resolve_device
    from shortcut_models.evaluation.scoring import write_reference_stats
    from shortcut_models.report import check_output_file

    check_output_file(args.out)
    written, what = write_reference_stats(
        args.ref,
        args.out,
        metric=args.metric,
        ref_num=args.ref_num,
        shape=(args.channels, args.resolution, args.resolution),
        inception=args.inception,
        device=resolve_device(args.device),
        batch=args.batch,
        seed=args.seed,
        progress=args.progress,
    )
    print(f"wrote {written}: {what}")
    return 0


def register_encode(subparsers: Any) -> None:

    p = a.command(subparsers, "encode", run_encode, ENCODE_SUMMARY, ENCODE_DESCRIPTION)
    p.add_argument(
        "--data",
        required=True,
        type=a.data_set("image"),
        help=f"image data set: {a.data_help('image')}",
    )
    f.add_options(p, f.data_options(), skip=("flip",))
    p.add_argument("--vae", type=Path, help="AutoencoderKL folder (diffusers layout) or file")
    a.add_paths(p, None, "shard folder (created if missing)")
    a.add_count(p, "--batch", 32, "images per VAE call")
    a.add_count(p, "--shard-size", 4096, "images per shard")
    a.add_device(p)
    a.add_progress(p)


def run_encode(args: argparse.Namespace) -> int:
    from shortcut_models.devices import resolve_device
    from shortcut_models.encode import encode_dataset

    meta = encode_dataset(
        args.data,
        f.given(args, f.data_options()),
        vae=args.vae,
        out=args.out,
        batch_size=args.batch,
        shard_size=args.shard_size,
        device=resolve_device(args.device),
        progress=args.progress,
    )
    shape = "x".join(map(str, meta["shape"]))
    print(f"encoded {meta['count']} images (+ mirrors) as {shape} latents in {args.out}")
    return 0


def register_pairs(subparsers: Any) -> None:
    p = a.command(subparsers, "pairs", run_pairs, PAIRS_SUMMARY, PAIRS_DESCRIPTION)
    a.add_paths(p, "the teacher run or checkpoint", "pairs folder (created if missing)")
    a.add_count(p, "--num", 50000, "pairs")
    a.add_count(p, "--steps", 32, "teacher sampling steps")
    a.add_cfg(p, "the teacher's classifier-free guidance at --steps (1: none)")
    a.add_count(p, "--chunk", 1024, "pairs per file")
    p.add_argument("--seed", type=a.seed_arg, default=0, help="noise seed (default 0)")
    a.add_device(p)
    a.add_progress(p)


def run_pairs(args: argparse.Namespace) -> int:
    from shortcut_models.devices import resolve_device
    from shortcut_models.guidance import scale_for
    from shortcut_models.pairs import generate_pairs

    meta = generate_pairs(
        args.ckpt,
        args.out,
        device=resolve_device(args.device),
        cfg=scale_for(a.cfg_schedule(args), args.steps),
        **a.pick(args, "num", "steps", "seed", "chunk", "progress"),
    )
    print(f"{meta['num']} reflow pairs ({meta['steps']}-step teacher samples) in {args.out}")
    return 0


def register_import_official(subparsers: Any) -> None:
    from shortcut_models.official import WEIGHTS

    p = a.command(subparsers, "import-official", run_import, IMPORT_SUMMARY, IMPORT_DESCRIPTION)
    p.add_argument("checkpoint", type=Path, help="the official checkpoint file")
    p.add_argument(
        "--out", type=a.path_arg, required=True, help="run folder to write (must be new)"
    )
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=WEIGHTS[0],
        help="the weights sampling uses: raw params (default, as the official evaluation with "
        "use_ema 0) or params_ema; both are stored",
    )
    p.add_argument(
        "--num-heads",
        type=a.positive_int,
        help="attention heads (default: from the hidden size, DiT-S/B/L/XL)",
    )
    p.add_argument(
        "--input-size",
        type=a.positive_int,
        help="side of the model's inputs (default 32 for 4-channel latents of 256 px images)",
    )
    p.add_argument(
        "--vae", help="latent models: the AutoencoderKL that decodes (stored in the run)"
    )
    a.add_count(p, "--denoise-timesteps", 128, "the finest step level M the model was trained at")


def run_import(args: argparse.Namespace) -> int:
    from shortcut_models.official import import_official

    written = import_official(
        args.checkpoint,
        args.out,
        **a.pick(args, "weights", "num_heads", "input_size", "vae", "denoise_timesteps"),
    )
    print(f"wrote {written}")
    return 0
