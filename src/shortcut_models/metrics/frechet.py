"""Fréchet distance between Gaussians fitted to features, and the statistics files FID tools share.

FD = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)), in float64. The trace term is computed
as sum(sqrt(eig(A S2 A))) with A = S1^(1/2) from a symmetric eigendecomposition: A S2 A is
symmetric positive semi-definite and has the eigenvalues of S1 S2, so no complex parts, no
iteration, and no failure on singular covariances (fewer samples than dimensions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shortcut_models.errors import UsageError


@dataclass
class FeatureStats:
    """Mean and covariance of a feature set (the `mu` / `sigma` of .npz statistics files)."""

    mu: np.ndarray
    sigma: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> FeatureStats:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[0] < 2:
            raise UsageError(f"need at least 2 feature vectors, got shape {features.shape}")
        return cls(features.mean(axis=0), np.cov(features, rowvar=False))

    def save(self, path: str | Path, **extra: np.ndarray) -> Path:
        from shortcut_models.report import write_output

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, mu=self.mu, sigma=self.sigma, **extra)

        return write_output(Path(path), write)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        """Statistics from an .npz with `mu` and `sigma` (ours, or pytorch-fid / ADM / clean-fid
        style files)."""
        try:
            with np.load(path) as data:
                mu, sigma = data["mu"], data["sigma"]
        except KeyError:
            raise UsageError(f"{path} has no 'mu' and 'sigma' arrays") from None
        except Exception as exc:  # numpy raises OSError, ValueError, BadZipFile, EOFError ...
            raise UsageError(f"cannot read statistics file {path} ({exc})") from None
        if not (np.issubdtype(mu.dtype, np.number) and np.issubdtype(sigma.dtype, np.number)):
            raise UsageError(f"{path}: mu and sigma must be numbers, got {mu.dtype}, {sigma.dtype}")
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]) or mu.shape[0] == 0:
            raise UsageError(f"{path}: mu {mu.shape} and sigma {sigma.shape} do not fit")
        if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise UsageError(f"{path}: mu or sigma holds NaN or inf")
        return cls(mu.astype(np.float64), sigma.astype(np.float64))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    if a.mu.shape != b.mu.shape:
        raise UsageError(f"feature sizes differ: {a.mu.shape[0]} vs {b.mu.shape[0]}")
    root = _sqrt_psd(a.sigma)
    middle = root @ b.sigma @ root
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = a.mu - b.mu
    value = diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * trace_sqrt
    return float(max(value, 0.0))
