"""The real-vs-real floor of FD-digits as the comparison tables score samples: --num real test
images against the 10,000 training images `shortcut compare` uses as its reference, for each
digit set. A model scoring near it is as close to the set as a draw of real test images.

    python benchmarks/fd_digits_floor.py --num 500 --json benchmarks/results/fd_digits_floor.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shortcut_models.data.mnist import digit_data
from shortcut_models.evaluation.images import load_reference, score_images
from shortcut_models.metrics.digits import DigitFeatures
from shortcut_models.report import machine_record, markdown_table, write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--num", type=int, default=500, help="test images scored (the tables' 500)")
    p.add_argument("--seed", type=int, default=0, help="which test images are drawn")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results, rows = {}, []
    for name in ("mnist", "fashion-mnist"):
        extractor = DigitFeatures.for_dataset(name)
        reference = load_reference(name, extractor, (1, 32, 32), 10000, 0)  # compare's reference
        scores = score_images(digit_data(name, "test").sample(args.num, args.seed), extractor,
                              reference)  # fmt: skip
        results[name] = scores
        rows.append([name, args.num, scores["fd_digits"], scores["precision"], scores["recall"]])
    print(markdown_table(["data", "test images", "FD-digits v1", "precision", "recall"], rows))
    if args.json:
        write_json(args.json, {"num": args.num, "seed": args.seed, **results,
                               "machine": machine_record()})  # fmt: skip


if __name__ == "__main__":
    main()
