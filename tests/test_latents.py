"""Latent mode with a tiny randomly initialised AutoencoderKL (no weights can be downloaded)."""

import json
import shutil

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_main, tiny_config, tiny_trainer
from PIL import Image

from shortcut_models.data import build_data
from shortcut_models.data.folder import folder_data
from shortcut_models.data.images import to_unit_range
from shortcut_models.encode import encode_dataset
from shortcut_models.errors import UsageError
from shortcut_models.vae import load_vae

diffusers = pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    path = tmp_path_factory.mktemp("vae") / "tiny-vae"
    vae.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs") / "images"
    rng = np.random.default_rng(0)
    for label in ("a", "b"):
        for i in range(5):
            (root / label).mkdir(parents=True, exist_ok=True)
            array = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
            Image.fromarray(array).save(root / label / f"{i}.png")
    return root


def encode(folder, vae_dir, out, **kw):
    options = {"path": str(folder), "resolution": 8}
    return encode_dataset("folder", options, vae_dir, out, batch_size=3, progress=False, **kw)


def test_shards_hold_each_image_and_its_mirror(image_folder, vae_dir, tmp_path):
    meta = encode(image_folder, vae_dir, tmp_path / "lat", shard_size=4)
    assert meta["count"] == 10 and meta["shape"] == [4, 4, 4] and len(meta["shards"]) == 3
    assert meta["class_names"] == ["a", "b"] and meta["scaling_factor"] == pytest.approx(0.18215)
    codec = load_vae(vae_dir)
    x = to_unit_range(folder_data(image_folder, resolution=8).images)
    expected = codec.encode(x)
    data = build_data("latents", {"path": str(tmp_path / "lat"), "flip": True})
    index = torch.arange(10)
    plain = data.fetch(index, torch.zeros(10, dtype=torch.bool))
    mirrored = data.fetch(index, torch.ones(10, dtype=torch.bool))
    torch.testing.assert_close(plain, expected, atol=2e-3, rtol=1e-2)  # stored as float16
    torch.testing.assert_close(mirrored, codec.encode(x.flip(-1)), atol=2e-3, rtol=1e-2)
    assert not torch.allclose(plain, mirrored)
    assert data.labels.tolist() == [0] * 5 + [1] * 5 and data.num_classes == 2
    z, y = data.batch(0, 4, seed=0)
    assert z.shape == (4, 4, 4, 4) and y.shape == (4,)


def test_round_trip_shapes_and_determinism(vae_dir):
    codec = load_vae(vae_dir)
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    z = codec.encode(x)
    assert z.shape == (2, 4, 4, 4)
    images = codec.decode(z)
    assert images.shape == x.shape and images.min() >= -1 and images.max() <= 1
    torch.testing.assert_close(images, codec.decode(z))
    grey = codec.encode(x[:, :1])  # grey images go in as RGB
    torch.testing.assert_close(grey, codec.encode(x[:, :1].expand(-1, 3, -1, -1)))


def test_interrupted_encoding_resumes_and_other_data_refuses(image_folder, vae_dir, tmp_path):
    out = tmp_path / "lat"
    encode(image_folder, vae_dir, out, shard_size=4)
    first = (out / "latents_00000.npy").stat().st_mtime_ns
    reference = np.load(out / "latents_00002.npy")
    (out / "meta.json").unlink()
    (out / "latents_00002.npy").unlink()
    with pytest.raises(UsageError, match="encoding unfinished"):
        build_data("latents", {"path": str(out)})
    encode(image_folder, vae_dir, out, shard_size=4)
    assert (out / "latents_00000.npy").stat().st_mtime_ns == first
    np.testing.assert_array_equal(np.load(out / "latents_00002.npy"), reference)
    with pytest.raises(UsageError, match="encoding of something else"):
        encode(image_folder, vae_dir, out, shard_size=5)


def test_missing_vae_is_a_clear_error(image_folder, tmp_path, capsys):
    args = ["encode", "--data", "folder", "--data-path", str(image_folder), "--out"]
    code, _, err = run_main([*args, str(tmp_path / "lat")], capsys)
    assert_one_line_error(code, err, "latent mode needs a VAE: pass --vae PATH")
    code, _, err = run_main([*args, str(tmp_path / "lat"), "--vae", str(tmp_path)], capsys)
    assert_one_line_error(code, err, "cannot load an AutoencoderKL")
    code, _, err = run_main(
        ["train", "--out", str(tmp_path / "r"), "--data", "latents", "--data-path", str(tmp_path)],
        capsys,
    )
    assert_one_line_error(code, err, "no latent shards")


def test_train_on_latents_and_sample_decoded_images(image_folder, vae_dir, tmp_path, capsys):
    encode(image_folder, vae_dir, tmp_path / "lat")
    config = tiny_config(
        data="latents",
        data_options={"path": str(tmp_path / "lat"), "flip": True},
        backbone="DiT-T/2",
        backbone_options={"hidden_size": 32, "depth": 1, "num_heads": 2},
        batch_size=8,
        steps=2,
    )
    tiny_trainer(tmp_path / "run", config).run()
    sample = ["sample", "--ckpt", str(tmp_path / "run"), "--steps", "1", "2", "--num", "3"]
    code, out, err = run_main([*sample, "--out", str(tmp_path / "s"), "--npz"], capsys)
    assert code == 0, err
    with np.load(tmp_path / "s" / "samples_steps_001.npz") as npz:
        assert npz["arr_0"].shape == (3, 8, 8, 3) and npz["arr_0"].dtype == np.uint8
    # the VAE moved away: a clear message, then --vae points to it
    moved = tmp_path / "moved-vae"
    shutil.copytree(vae_dir, moved)
    meta = json.loads((tmp_path / "lat" / "meta.json").read_text())
    assert meta["vae"] == str(vae_dir.resolve())
    shutil.rmtree(tmp_path / "lat")
    renamed = vae_dir.with_name("tiny-vae-away")
    vae_dir.rename(renamed)
    try:
        code, _, err = run_main([*sample, "--out", str(tmp_path / "s2")], capsys)
        assert_one_line_error(code, err, "pass --vae PATH")
        code, _, err = run_main(
            [*sample, "--out", str(tmp_path / "s3"), "--vae", str(moved)], capsys
        )
        assert code == 0, err
        assert (tmp_path / "s3" / "grid_steps_002.png").is_file()
    finally:
        renamed.rename(vae_dir)


def test_encode_cli_on_a_folder(image_folder, vae_dir, tmp_path, capsys):
    argv = ["encode", "--data", "folder", "--data-path", str(image_folder), "--resolution", "8"]
    argv += ["--vae", str(vae_dir), "--out", str(tmp_path / "lat"), "--no-progress"]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    assert "encoded 10 images (+ mirrors) as 4x4x4 latents" in out


def test_export_with_the_vae_decoder_inside(image_folder, vae_dir, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="the export extra: pip install -e '.[export]'")
    encode(image_folder, vae_dir, tmp_path / "lat")
    config = tiny_config(
        data="latents",
        data_options={"path": str(tmp_path / "lat")},
        backbone="DiT-T/2",
        backbone_options={"hidden_size": 32, "depth": 1, "num_heads": 2},
        batch_size=8,
        steps=2,
    )
    tiny_trainer(tmp_path / "run", config).run()
    out = tmp_path / "gen.onnx"
    argv = ["export", "--ckpt", str(tmp_path / "run"), "--out", str(out), "--decode"]
    code, printed, err = run_main(argv, capsys)
    assert code == 0, err
    assert "matches the PyTorch sampler" in printed
    from shortcut_models.export import run_exported

    inputs = {"noise": torch.randn(2, 4, 4, 4), "labels": torch.zeros(2, dtype=torch.long)}
    images = run_exported(out, "onnx", inputs)
    assert images.shape == (2, 3, 8, 8) and 0 <= float(images.min()) <= float(images.max()) <= 1
