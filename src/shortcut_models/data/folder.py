"""Any folder of images: flat (unconditional) or one subfolder per class (ImageNet layout).

Images are center-cropped to a square and resized (antialiased bilinear, as the reference's
`tf.image.resize(..., antialias=True)` after its crop), converted to RGB or grey (RGBA is composited
on white, palette and 16-bit images are converted), and held as uint8. A file that cannot be decoded
is an error naming it, or, with `skip_bad`, skipped and counted. Files whose extension is not an
image format (README.txt, .DS_Store, ...) are ignored and counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shortcut_models import logs
from shortcut_models.data.images import ImageData
from shortcut_models.errors import UsageError

log = logs.get(__name__)

IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)


@dataclass
class FolderListing:
    """The image files of a folder in a fixed order, with class indices when it has classes."""

    root: Path
    files: list[Path]
    labels: list[int] | None
    class_names: list[str]
    ignored: list[Path] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def fingerprint(self) -> str:
        """A hash of the listing (relative names and sizes): a resumed run can tell that the
        folder changed under it."""
        digest = hashlib.sha256()
        for path in self.files:
            digest.update(f"{path.relative_to(self.root)}\t{path.stat().st_size}\n".encode())
        return digest.hexdigest()[:16]


def _split(paths: list[Path]) -> tuple[list[Path], list[Path]]:
    images = [p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    others = [p for p in paths if p.is_file() and p.suffix.lower() not in IMAGE_EXTENSIONS]
    return images, others


def scan_folder(root: str | Path, unconditional: bool = False) -> FolderListing:
    """List `root`. Subfolders are classes (sorted by name, index 0, 1, ...) unless
    `unconditional`, when all their images form one unlabelled set."""
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"image folder {root} does not exist or is not a folder")
    entries = sorted(root.iterdir())
    subfolders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    top_images, ignored = _split(entries)
    if subfolders and top_images:
        raise UsageError(
            f"{root} mixes images ({top_images[0].name}, ...) with class subfolders "
            f"({subfolders[0].name}, ...); use one layout"
        )
    if not subfolders:
        files, labels, names = top_images, None, []
    else:
        files, labels, names = [], [], []
        for index, folder in enumerate(subfolders):
            images, others = _split(sorted(folder.rglob("*")))
            if not images and not unconditional:
                log.warning(
                    f"warning: class folder {folder} holds no images; class {index} "
                    f"({folder.name}) keeps its index but has no examples"
                )
            files += images
            labels += [index] * len(images)
            ignored += others
            names.append(folder.name)
        if unconditional:
            labels, names = None, []
    if not files:
        raise UsageError(f"no images in {root} (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return FolderListing(root, files, labels, names, ignored)


def load_image(path: Path, resolution: int, channels: int) -> np.ndarray:
    """One image as uint8 (channels, resolution, resolution); raises OSError / ValueError when
    the file cannot be decoded."""
    with Image.open(path) as image:
        image.load()
        transparent = image.mode == "P" and "transparency" in image.info
        if image.mode in ("RGBA", "LA", "PA") or transparent:
            rgba = image.convert("RGBA")
            image = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            image.alpha_composite(rgba)
        elif image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
            array = np.asarray(image, dtype=np.float64)
            peak = 65535.0 if array.max() > 255 else 255.0
            image = Image.fromarray(np.clip(array / peak * 255.0, 0, 255).astype(np.uint8))
        image = image.convert("L" if channels == 1 else "RGB")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != resolution:
            image = image.resize((resolution, resolution), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


@dataclass
class FolderReader:
    """Decodes a listing's files batch by batch, applying the bad-file policy."""

    listing: FolderListing
    resolution: int
    channels: int = 3
    skip_bad: bool = False
    skipped: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.resolution < 1:
            raise UsageError(f"resolution must be positive, got {self.resolution}")
        if self.channels not in (1, 3):
            raise UsageError(f"channels must be 1 (grey) or 3 (RGB), got {self.channels}")

    def read(self, index: int) -> np.ndarray | None:
        path = self.listing.files[index]
        try:
            return load_image(path, self.resolution, self.channels)
        except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error, EOFError ...
            if not self.skip_bad:
                raise UsageError(
                    f"cannot read image {path} ({type(exc).__name__}: {exc}); "
                    "remove it or pass --skip-bad to skip unreadable files"
                ) from None
            self.skipped.append(path)
            log.warning(f"warning: skipping unreadable image {path}")
            return None

    def batches(
        self, batch_size: int, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
        """(uint8 images, labels or None) for files start..stop, `batch_size` files at a time
        (fewer rows where files were skipped)."""
        stop = len(self.listing.files) if stop is None else stop
        for first in range(start, stop, batch_size):
            rows, labels = [], []
            for index in range(first, min(first + batch_size, stop)):
                image = self.read(index)
                if image is not None:
                    rows.append(image)
                    if self.listing.labels is not None:
                        labels.append(self.listing.labels[index])
            if not rows:
                continue
            images = torch.from_numpy(np.stack(rows))
            yield images, (torch.tensor(labels) if self.listing.labels is not None else None)


def folder_data(
    path: str | Path,
    resolution: int,
    channels: int = 3,
    flip: bool = False,
    skip_bad: bool = False,
    unconditional: bool = False,
) -> ImageData:
    """The whole folder decoded into memory (use `shortcut encode` for large latent sets)."""
    listing = scan_folder(path, unconditional)
    reader = FolderReader(listing, resolution, channels, skip_bad)
    parts = list(reader.batches(256))
    if not parts:
        raise UsageError(f"none of the {len(listing.files)} image files in {path} could be read")
    if reader.skipped:
        log.warning(
            f"warning: skipped {len(reader.skipped)} unreadable of {len(listing.files)} images "
            f"in {path}"
        )
    images = torch.cat([p[0] for p in parts])
    labels = None if listing.labels is None else torch.cat([p[1] for p in parts])
    name = f"folder:{path}"
    data = ImageData(
        name, images, labels, listing.num_classes, flip=flip, class_names=listing.class_names
    )
    data.fingerprint = listing.fingerprint()
    return data
