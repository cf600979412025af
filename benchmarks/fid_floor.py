"""The real-vs-real floor of FID on a named image set: two disjoint halves of it, scored the way
`shortcut compare --ref HALF_B.npz --num N` scores a model's samples.

The set is shuffled with --seed and split in half: half B becomes the reference (written to
--ref-out as an .npz of images, for `compare --ref`), and the first --num images of half A are
scored against it with the project's FID (TF Inception pool3) and precision / recall. A model
whose samples score near this floor is as close to the set as a second draw of real images.

    python benchmarks/fid_floor.py --data openmoji --num 1000 --ref-out runs/openmoji-half-b.npz \\
        --json benchmarks/results/fid_floor_openmoji.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from shortcut_models.data import build_data
from shortcut_models.evaluation.images import load_reference, score_images
from shortcut_models.files import save_arrays
from shortcut_models.metrics.inception import InceptionFeatures
from shortcut_models.report import machine_record, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default="openmoji", help="a named image set")
    p.add_argument("--num", type=int, default=1000, help="images of half A scored")
    p.add_argument("--seed", type=int, default=0, help="the shuffle that splits the set")
    p.add_argument("--ref-out", type=Path, required=True, help="half B, as an .npz of images")
    p.add_argument("--inception", help="TorchScript Inception weights (default: the cached ones)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    data = build_data(args.data)
    shuffled = data.sample(len(data), args.seed)  # uint8 NCHW, every image once
    half_a, half_b = shuffled[: len(data) // 2], shuffled[len(data) // 2 :]
    if args.num > len(half_a):
        raise SystemExit(f"--num {args.num} is more than half A's {len(half_a)} images")
    args.ref_out.parent.mkdir(parents=True, exist_ok=True)
    save_arrays({"arr_0": half_b.permute(0, 2, 3, 1).numpy()}, args.ref_out)
    tick = time.perf_counter()
    extractor = InceptionFeatures(args.inception)
    reference = load_reference(str(args.ref_out), extractor, tuple(half_b.shape[1:]), len(half_b))
    scores = score_images(half_a[: args.num], extractor, reference)
    record = {
        "data": args.data,
        "split_seed": args.seed,
        "half_a": len(half_a),
        "half_b (reference)": len(half_b),
        "num scored": args.num,
        **scores,
        "seconds": time.perf_counter() - tick,
        "machine": machine_record(),
    }
    print(
        f"{args.data}: FID of {args.num} real images (half A) against {len(half_b)} others "
        f"(half B): {scores['fid']:.2f}; precision {scores['precision']:.3f}, recall "
        f"{scores['recall']:.3f}; reference written to {args.ref_out}"
    )
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
