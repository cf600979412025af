"""Train the digit classifiers behind FD-digits and write them into the package.

The package ships the result (metrics/weights/digits-<data>-<version>.safetensors, with its
SHA-256 in metrics/digits.py), so users never run this; it documents how the shipped
files were made. Bit-identical output is not promised across machines (CPU kernels differ), which
is why the weights are shipped rather than trained on first use.

    python benchmarks/train_digit_classifiers.py              # mnist and fashion-mnist
"""

from __future__ import annotations

import argparse
import json

from safetensors.torch import save_file

from shortcut_models.data.mnist import digit_data
from shortcut_models.metrics.digits import sha256_of, train_classifier, weights_path

STEPS, SEED = 1000, 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", nargs="+", default=["mnist", "fashion-mnist"])
    args = p.parse_args()
    for name in args.data:
        model, accuracy = train_classifier(
            digit_data(name, "train"), digit_data(name, "test"), steps=STEPS, seed=SEED
        )
        path = weights_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {
            "accuracy": json.dumps(accuracy),
            "data": name,
            "seed": str(SEED),
            "steps": str(STEPS),
        }
        save_file(model.state_dict(), str(path), metadata=metadata)
        print(f"{name}: test accuracy {accuracy:.4f}; {path} sha256 {sha256_of(path)}")


if __name__ == "__main__":
    main()
