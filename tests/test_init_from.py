"""`--init-from RUN`: a shortcut / iSM / MeanFlow run starting from a trained run's EMA weights."""

import json

import numpy as np
import pytest
import torch
from helpers import (
    assert_one_line_error,
    flow_matching_run,
    run_main,
    tiny_config,
    tiny_trainer,
)

from shortcut_models.checkpoint import load_checkpoint, save_checkpoint
from shortcut_models.errors import UsageError
from shortcut_models.factory import load_run


@pytest.fixture(scope="module")
def flow_run(tmp_path_factory):
    return flow_matching_run(tmp_path_factory, steps=20)


def test_the_start_equals_the_source_and_the_config_records_it(flow_run, tmp_path):
    trainer = tiny_trainer(tmp_path / "sc", tiny_config(init_from=str(flow_run), steps=3))
    source = load_checkpoint(flow_run).tensors("ema")
    for key, value in trainer.model.state_dict().items():
        assert torch.equal(value, source[key]), key
    for key, value in trainer.ema.state_dict().items():
        assert torch.equal(value, source[key]), key
    assert trainer.optimizer.state == {}  # the optimiser starts fresh
    trainer.run()
    stored = json.loads((tmp_path / "sc" / "config.json").read_text())
    assert stored["training"]["init_from"] == str(flow_run)
    # a resume continues its own checkpoint; the source is not read again
    resumed = tiny_trainer(
        tmp_path / "sc", tiny_config(init_from=str(flow_run), steps=5), resume=True
    )
    assert resumed.step == 3
    resumed.close()


def test_missing_step_and_guidance_embeddings_start_at_zero(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 256)
    np.savez(tmp_path / "two.npz", x=(rng.standard_normal((256, 2)) + 2 * y[:, None]), y=y)
    data = {"data": "array", "data_options": {"path": str(tmp_path / "two.npz")}}
    flow = tmp_path / "flow"
    tiny_trainer(flow, tiny_config(objective="flow_matching", steps=10, **data)).run()
    # a source without a step embedding (as from code that has none)
    checkpoint = load_checkpoint(flow)
    ema = {k: v for k, v in checkpoint.tensors("ema").items() if ".d_embedder." not in k}
    model = {k: v.clone() for k, v in ema.items()}
    old = tmp_path / "old"
    old.mkdir()
    parts = {"model": model, "ema": ema}
    save_checkpoint(old, config=checkpoint.config, step=checkpoint.step, parts=parts)
    config = tiny_config(objective="ism", init_from=str(old), steps=4, batch_size=32, **data)
    trainer = tiny_trainer(tmp_path / "ism", config)
    state = trainer.model.state_dict()
    for name in ("d_embedder", "w_embedder"):  # the step size, and iSM's guidance scale
        assert torch.count_nonzero(state[f"cond.{name}.mlp.2.weight"]) == 0
        assert torch.count_nonzero(state[f"cond.{name}.mlp.2.bias"]) == 0
        assert torch.count_nonzero(state[f"cond.{name}.mlp.0.weight"]) > 0  # can still learn
    # so the start predicts, at every step size and scale, what the source does without its
    # step term
    source = load_run(flow).model
    with torch.no_grad():
        source.cond.d_embedder.mlp[2].weight.zero_()
        source.cond.d_embedder.mlp[2].bias.zero_()
        x, t, labels = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 0, 1, 2])
        for d, w in ((1 / 128, 1.0), (0.5, 2.0), (1.0, 4.0)):
            dd, ww = torch.full((5,), d), torch.full((5,), w)
            mine = trainer.model(x, t, dd, labels, w=ww)
            assert torch.allclose(mine, source(x, t, dd, labels), atol=1e-6)
    trainer.run()
    assert torch.count_nonzero(trainer.model.state_dict()["cond.d_embedder.mlp.2.weight"]) > 0


@pytest.mark.parametrize(
    "overrides, expect",
    [
        ({"data": "moons"}, "its data is 'checkerboard', this run's 'moons'"),
        ({"backbone_options": {"hidden_size": 16, "depth": 1}}, "backbone option hidden_size"),
        ({"objective": "flow_matching"}, "--init-from applies to shortcut, ism, meanflow"),
        ({"objective": "meanflow"}, "backbone option time_scale is 1000.0, this run's 1.0"),
    ],
)
def test_a_mismatch_names_the_first_differing_setting(flow_run, tmp_path, overrides, expect):
    config = tiny_config(init_from=str(flow_run), **overrides)
    with pytest.raises(UsageError, match=expect.replace("(", r"\(").replace(")", r"\)")):
        tiny_trainer(tmp_path / "x", config)


def test_meanflow_starts_from_a_flow_run_with_its_time_scale(flow_run, tmp_path):
    config = tiny_config(objective="meanflow", init_from=str(flow_run), steps=2)
    config = config.overlay({"backbone": {"options": {"time_scale": 1000.0}}})
    tiny_trainer(tmp_path / "mf", config).run()


def test_cli_flag_and_errors(flow_run, tmp_path, capsys):
    argv = ["train", "--data", "checkerboard", "--hidden-size", "32", "--depth", "1"]
    argv += ["--steps", "2", "--batch-size", "64", "--no-progress", "--no-tensorboard"]
    code, _, err = run_main(
        [*argv, "--out", str(tmp_path / "a"), "--init-from", str(flow_run)], capsys
    )
    assert code == 0, err
    assert f"started from {flow_run}" in err
    code, _, err = run_main(
        [*argv, "--out", str(tmp_path / "b"), "--init-from", str(tmp_path / "nothing")], capsys
    )
    assert_one_line_error(code, err, "no checkpoint at")
