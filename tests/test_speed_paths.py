"""The GPU speed options, checked on CPU: each keeps the numbers it should."""

import pytest
import torch
from helpers import tiny_config

from shortcut_models.checkpoint import load_checkpoint
from shortcut_models.errors import UsageError
from shortcut_models.train import RunOptions, Trainer

DIT = {"hidden_size": 32, "depth": 2, "num_heads": 2, "patch_size": 4}
# bf16 autocast strays from fp32 by 2-5% of what 2-3 steps move the weights (0.024 for the MLP,
# 0.044 for MeanFlow's DiT); a path that trained differently or not at all strays by ~100%
BF16_GAP = 0.15


def train(out, config=None, **options) -> Trainer:
    run = RunOptions(out_dir=out, device="cpu", progress=False, tensorboard=False, **options)
    trainer = Trainer(config or tiny_config(steps=3), run)
    trainer.start = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.run()
    return trainer


def movement_gap(reference: Trainer, other: Trainer) -> float:
    """|other's weights - reference's| / |reference's movement from the shared start|, over
    every weight: how far the other path strays, relative to how far training moved them (a
    fixed tolerance says nothing when a few steps move a weight by 3e-3)."""
    moved = gap = 0.0
    end = weights(reference.out_dir)
    for key, value in weights(other.out_dir).items():
        assert torch.equal(reference.start[key], other.start[key]), key  # the same start
        moved += (end[key] - reference.start[key]).double().pow(2).sum().item()
        gap += (value - end[key]).double().pow(2).sum().item()
    assert moved > 0
    return (gap / moved) ** 0.5


def weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir).tensors("model")


def assert_close_weights(a, b, atol):
    wa, wb = weights(a), weights(b)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=atol, rtol=0, msg=key)


@pytest.mark.slow
def test_compiled_network_trains_like_the_eager_one(tmp_path):
    train(tmp_path / "eager")
    compiled = train(tmp_path / "compiled", compile=True)
    assert compiled.net is not compiled.model  # the step really ran through torch.compile
    assert_close_weights(tmp_path / "eager", tmp_path / "compiled", atol=1e-5)


def test_bf16_autocast_runs_and_stays_near_fp32(tmp_path):
    fp32 = train(tmp_path / "fp32", precision="fp32")
    bf16 = train(tmp_path / "bf16", precision="bf16")
    assert bf16.autocast_dtype is torch.bfloat16 and fp32.autocast_dtype is None
    assert movement_gap(fp32, bf16) < BF16_GAP
    assert weights(tmp_path / "bf16").keys() == weights(tmp_path / "fp32").keys()
    assert all(v.dtype == torch.float32 for v in weights(tmp_path / "bf16").values())


def test_recomputed_activations_give_the_same_step(tmp_path):
    config = tiny_config(data="mnist", backbone="dit", backbone_options=DIT, steps=2, batch_size=16)
    train(tmp_path / "plain", config)
    recomputed = train(tmp_path / "recomputed", config, recompute_activations=True)
    assert recomputed.model.recompute_activations
    assert_close_weights(tmp_path / "plain", tmp_path / "recomputed", atol=1e-6)


def test_data_loading_workers_feed_the_same_batches(tmp_path):
    train(tmp_path / "inline", workers=0)
    train(tmp_path / "workers", workers=2)
    assert_close_weights(tmp_path / "inline", tmp_path / "workers", atol=0)


def test_bad_speed_options_are_clear_errors(tmp_path):
    with pytest.raises(UsageError, match="precision must be"):
        train(tmp_path / "a", precision="fp8")
    with pytest.raises(UsageError, match="recomputing activations needs a DiT"):
        train(tmp_path / "b", recompute_activations=True)
    with pytest.raises(UsageError, match="workers must be >= 0"):
        train(tmp_path / "c", workers=-1)


@pytest.mark.slow
@pytest.mark.parametrize("options", [{"precision": "bf16"}, {"compile": True}])
def test_meanflow_jvp_runs_under_bf16_and_compile(tmp_path, options):
    config = tiny_config(
        data="mnist", objective="meanflow", backbone="dit", backbone_options=DIT, steps=2,
        batch_size=16,
    )  # fmt: skip
    eager = train(tmp_path / "eager", config)
    other = train(tmp_path / "other", config, **options)
    assert other.step == 2
    assert movement_gap(eager, other) < (BF16_GAP if "precision" in options else 1e-4)
    assert eager.model.cond.t_embedder.scale == 1.0  # meanflow's unscaled time embedding


@pytest.mark.slow
def test_meanflow_s_one_pass_holds_under_compile(tmp_path):
    """Through the torch.compile wrapper the JVP pass still gives the prediction: the compiled
    network sees the 4 rows with d != 0 and the 12 others, each once (two passes: 4 then 16)."""
    config = tiny_config(
        data="mnist", objective="meanflow", backbone="dit", backbone_options=DIT, steps=1,
        batch_size=16,
    )  # fmt: skip
    rows = {}
    for one_pass in (True, False):
        config = config.overlay({"objective": {"options": {"one_pass": one_pass}}})
        run = RunOptions(out_dir=tmp_path / str(one_pass), device="cpu", progress=False,
                         tensorboard=False, compile=True)  # fmt: skip
        trainer = Trainer(config, run)
        calls = rows[one_pass] = []
        trainer.model.register_forward_hook(lambda m, args, out, calls=calls: calls.append(
            args[0].shape[0]))  # fmt: skip
        trainer.run()
        assert trainer.net is not trainer.model
    assert rows == {True: [4, 12], False: [4, 16]}
