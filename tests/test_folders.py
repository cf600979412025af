"""Image folders: class subfolders, flat folders, odd modes, bad files, CLI errors."""

import numpy as np
import pytest
import torch
from helpers import assert_one_line_error, run_main, tiny_config, tiny_trainer, write_image
from PIL import Image

from shortcut_models.data import build_data
from shortcut_models.data.folder import folder_data, load_image, scan_folder
from shortcut_models.errors import UsageError
from shortcut_models.factory import load_run


@pytest.fixture
def class_folder(tmp_path):
    root = tmp_path / "images"
    for i in range(3):
        write_image(root / "dog" / f"{i}.png", value=200)
        write_image(root / "cat" / f"{i}.jpg", value=50)
    write_image(root / "cat" / "grey.png", mode="L", value=10)
    write_image(root / "dog" / "alpha.png", mode="RGBA", value=255)
    (root / "dog" / "README.txt").write_text("not an image")
    return root


def test_class_subfolders_sorted_by_name(class_folder):
    listing = scan_folder(class_folder)
    assert listing.class_names == ["cat", "dog"]
    assert listing.labels == [0] * 4 + [1] * 4
    assert [p.name for p in listing.ignored] == ["README.txt"]
    data = folder_data(class_folder, resolution=16)
    assert data.images.shape == (8, 3, 16, 16) and data.num_classes == 2
    x, y = data.batch(0, 4, seed=0)
    assert x.shape == (4, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert set(y.tolist()) <= {0, 1}


def test_unconditional_flag_and_flat_folder(class_folder, tmp_path):
    assert folder_data(class_folder, resolution=8, unconditional=True).num_classes == 0
    flat = tmp_path / "flat"
    for i in range(2):
        write_image(flat / f"{i}.png")
    data = folder_data(flat, resolution=8, channels=1)
    assert data.shape == (1, 8, 8) and data.labels is None


def test_center_crop_and_modes(tmp_path):
    # a wide image: left third black, middle white, right third black -> the crop keeps white
    array = np.zeros((30, 90, 3), dtype=np.uint8)
    array[:, 30:60] = 255
    Image.fromarray(array).save(tmp_path / "wide.png")
    image = load_image(tmp_path / "wide.png", 10, 3)
    assert image.shape == (3, 10, 10) and image.min() == 255
    write_image(tmp_path / "alpha.png", mode="RGBA", value=0)  # fully transparent -> white
    assert load_image(tmp_path / "alpha.png", 4, 3).min() == 255
    write_image(tmp_path / "grey.png", mode="L", value=77)
    rgb = load_image(tmp_path / "grey.png", 4, 3)
    assert rgb.shape == (3, 4, 4) and (rgb == 77).all()


def test_corrupt_file_named_or_skipped(class_folder, capsys):
    (class_folder / "cat" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(UsageError, match="broken.png.*--skip-bad"):
        folder_data(class_folder, resolution=8)
    data = folder_data(class_folder, resolution=8, skip_bad=True)
    assert len(data) == 8
    assert "skipped 1 unreadable of 9" in capsys.readouterr().err


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no images in"):
        scan_folder(tmp_path / "empty")
    (tmp_path / "only_text").mkdir()
    (tmp_path / "only_text" / "a.txt").write_text("x")
    with pytest.raises(UsageError, match="no images in"):
        scan_folder(tmp_path / "only_text")
    with pytest.raises(UsageError, match="does not exist"):
        scan_folder(tmp_path / "nowhere")
    mixed = tmp_path / "mixed"
    write_image(mixed / "a.png")
    write_image(mixed / "sub" / "b.png")
    with pytest.raises(UsageError, match="mixes images"):
        scan_folder(mixed)


def test_data_options_are_checked():
    with pytest.raises(UsageError, match="needs --data-path"):
        build_data("folder", {})
    with pytest.raises(UsageError, match="does not take --resolution"):
        build_data("mnist", {"resolution": 8})


def test_train_on_folder_and_sample_without_it(class_folder, tmp_path):
    """The checkpoint keeps what sampling needs, so the folder may be gone by then."""
    config = tiny_config(
        data="folder",
        data_options={"path": str(class_folder), "resolution": 8, "flip": True},
        backbone="DiT-T/4",
        backbone_options={"hidden_size": 32, "depth": 1, "num_heads": 2},
        batch_size=8,
        steps=2,
    )
    tiny_trainer(tmp_path / "run", config).run()
    for path in class_folder.rglob("*"):
        if path.is_file():
            path.unlink()
    run = load_run(tmp_path / "run")
    model, spec = run.model, run.spec
    assert spec.kind == "image" and spec.shape == (3, 8, 8) and spec.class_names == ["cat", "dog"]
    assert model(
        torch.zeros(1, 3, 8, 8), torch.zeros(1), torch.zeros(1), torch.zeros(1).long()
    ).shape == (
        1,
        3,
        8,
        8,
    )


def test_cli_folder_errors(tmp_path, capsys):
    out = str(tmp_path / "r")
    code, _, err = run_main(["train", "--out", out, "--data", "folder"], capsys)
    assert_one_line_error(code, err, "needs --data-path")
    code, _, err = run_main(
        ["train", "--out", out, "--data", "folder", "--data-path", str(tmp_path / "none")], capsys
    )
    assert_one_line_error(code, err, "does not exist")
    code, _, err = run_main(["train", "--out", out, "--data", "mnist", "--resolution", "8"], capsys)
    assert_one_line_error(code, err, "does not take --resolution")
