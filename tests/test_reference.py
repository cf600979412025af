"""`--recipe reference` and the paper presets: every setting they change reaches the run's
config and the objects built from it; the reference's behaviours behind those switches."""

import dataclasses

import numpy as np
import pytest
import torch
from helpers import make_backbone, synthetic_flax_tree, tiny_config, tiny_trainer
from torch import nn

from shortcut_models.backbones.dit import sincos_2d
from shortcut_models.backbones.flax_dit import dit_options_from_flax, dit_state_from_flax
from shortcut_models.cli import build_parser
from shortcut_models.cli.flags import config_flags
from shortcut_models.compose import compose_config
from shortcut_models.errors import UsageError
from shortcut_models.factory import load_run
from shortcut_models.objectives import build_objective
from shortcut_models.recipes import (
    REFERENCE_BACKBONES,
    REFERENCE_DIT,
    REFERENCE_OBJECTIVES,
    REFERENCE_OPTIMISATION,
    recipe,
)
from shortcut_models.sampling import sample


def composed(*argv: str):
    args = build_parser().parse_args(["train", "--out", "unused", *argv])
    return compose_config(None, recipe_name=getattr(args, "recipe", None), flags=config_flags(args))


def train_config(*argv: str):
    return composed(*argv).config


@pytest.mark.parametrize("objective", [*REFERENCE_OBJECTIVES, "flow_matching"])
def test_reference_recipe_sets_every_choice_for_each_objective(objective):
    run = composed("--recipe", "reference", "--objective", objective, "--backbone", "dit")
    config = run.config
    for field, value in REFERENCE_OPTIMISATION.items():
        assert getattr(config.optimisation, field) == value, field
    assert config.training.recipe == "reference" and config.training.eval_weights == "model"
    built = build_objective(objective, **dataclasses.asdict(config.objective.options))
    for option, value in REFERENCE_OBJECTIVES.get(objective, {}).items():
        assert getattr(built, option) == value, option
    for option, value in REFERENCE_BACKBONES["dit"].items():
        assert getattr(config.backbone.options, option) == value, option
    printed = run.description  # the line a run started from it prints
    assert "recipe reference" in printed and "dit.attention_scale=linear" in printed
    assert recipe("reference").tree["run"]["precision"] == "bf16-if-native"
    assert run.run["precision"] == "bf16-if-native"


def test_reference_recipe_backbone_and_flags_beside_it():
    config = train_config("--recipe", "reference", "--backbone", "mlp")
    assert config.backbone.options.time_scale == 1.0
    config = train_config("--recipe", "reference", "--backbone", "dit", "--qkv-init", "fused")
    assert config.backbone.options.qkv_init == "fused"  # a flag beside the recipe wins
    assert config.backbone.options.attention_scale == "linear"
    config = train_config("--recipe", "reference", "--backbone", "DiT-S/2")  # a preset too
    assert config.backbone.options.attention_scale == "linear"
    assert config.backbone.options.hidden_size == 384
    config = train_config("--recipe", "reference", "--no-reference-batch-split")
    assert config.objective.options.reference_batch_split is False


def test_reference_dit_options_change_the_network():
    torch.manual_seed(0)
    sizes = dict(input_size=8, in_channels=2, patch_size=2, hidden_size=32, depth=2, num_heads=4)
    ours = make_backbone("dit", **sizes)
    ref = make_backbone("dit", **sizes, **REFERENCE_BACKBONES["dit"])
    assert ours.blocks[0].attn.scale == pytest.approx(8**-0.5)
    assert ref.blocks[0].attn.scale == pytest.approx(1 / 8)
    assert ours.blocks[0].ada[1].weight.abs().max() == 0  # adaLN-Zero
    assert ref.blocks[0].ada[1].weight.abs().max() > 0  # xavier, as the reference
    assert ref.cond.t_embedder.scale == 1.0 and ours.cond.t_embedder.scale == 1000.0
    torch.testing.assert_close(ref.pos[0], sincos_2d(32, 4, "col-row"))
    row_col, col_row = sincos_2d(32, 4), sincos_2d(32, 4, "col-row")
    torch.testing.assert_close(col_row, torch.cat([row_col[:, 16:], row_col[:, :16]], dim=1))
    # separate xavier draws for q, k and v: each has the bound of a square layer
    bound = (6 / (32 + 32)) ** 0.5
    for part in ref.blocks[0].attn.qkv.weight.chunk(3):
        assert part.abs().max() <= bound and part.abs().max() > 0.9 * bound
    assert ours.blocks[0].attn.qkv.weight.abs().max() <= (6 / (32 + 96)) ** 0.5
    with pytest.raises(Exception, match="attention_scale"):
        make_backbone("dit", **sizes, attention_scale="cube")


@pytest.mark.parametrize(
    "name, backbone, batch, steps, guided",
    [
        ("celeba-hq-256", "DiT-B/2", 64, 410_000, False),
        ("imagenet-256-dit-b", "DiT-B/2", 256, 810_000, True),
        ("imagenet-256-dit-xl", "DiT-XL/2", 256, 810_000, True),
    ],
)
def test_paper_presets(name, backbone, batch, steps, guided):
    config = train_config("--recipe", name)
    assert (config.backbone.name, config.training.batch_size, config.training.steps) == (
        backbone,
        batch,
        steps,
    )
    assert config.data.name == "latents" and config.objective.name == "shortcut"
    assert (
        config.optimisation.lr == 1e-4
        and config.optimisation.ema_decay == 0.999
        and config.training.eval_weights == "model"
    )
    options = config.objective.options
    assert options.bootstrap_cfg is guided and options.reference_batch_split is True
    assert options.class_dropout_prob == (0.1 if guided else 1.0)
    if guided:
        assert options.bootstrap_cfg_scale == 1.5
    assert config.backbone.options.attention_scale == "linear"
    assert composed("--recipe", name).run["precision"] == "bf16"


def test_eval_weights_choose_what_sample_and_evaluate_load(tmp_path):
    run = tmp_path / "run"
    trainer = tiny_trainer(run, tiny_config(eval_weights="model", steps=3))
    trainer.run()
    default = load_run(run).model
    raw = load_run(run, "model").model
    ema = load_run(run, "ema").model
    for a, b in zip(default.parameters(), raw.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, c) for a, c in zip(raw.parameters(), ema.parameters()))


def test_levels_rotate_at_small_batches_and_the_reference_warns(capsys):
    class Zero(nn.Module):
        def forward(self, x, t, d, y=None):
            return torch.zeros_like(x)

    objective = build_objective("shortcut")  # M = 128: 7 levels
    seen = set()
    for step in range(4):  # batch 16 at bootstrap_every 8: 2 bootstrap rows a step
        objective.set_step(step, 100)
        batch = objective.targets(Zero(), Zero(), torch.randn(16, 2), None, torch.Generator())
        seen |= set(torch.round(-torch.log2(batch.d[:2])).long().tolist())
    assert seen == set(range(7))
    assert "warning" not in capsys.readouterr().err
    reference = build_objective("shortcut", rotate_levels=False)
    for step in range(4):
        reference.set_step(step, 100)
        batch = reference.targets(Zero(), Zero(), torch.randn(16, 2), None, torch.Generator())
        assert torch.all(batch.d[:2] == 1)  # the reference: every bootstrap row at level 0
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and "levels 1 to 6 are never trained" in err


class Affine(nn.Module):
    """v = a x + c (+ 1 for the null class): hand-checkable teacher outputs, records d."""

    def __init__(self, a=0.0, c=9.0, null=10):
        super().__init__()
        self.a, self.c, self.null, self.told = a, c, null, []

    def forward(self, x, t, d, y=None):
        self.told.append(d.clone())
        extra = 0 if y is None else (y == self.null).float()[:, None]
        return self.a * x + self.c + extra


def test_progressive_distillation_reference_variant():
    ours = build_objective("progressive_distillation", num_classes=10, denoise_timesteps=8)
    ref = build_objective(
        "progressive_distillation",
        num_classes=10,
        denoise_timesteps=8,
        first_phase_cfg_scale=2.0,
        **REFERENCE_OBJECTIVES["progressive_distillation"],
    )
    x1, y = torch.randn(32, 2), torch.randint(0, 10, (32,))
    for objective in (ours, ref):
        objective.teacher_network = Affine()
        objective.step, objective.total_steps = 0, 30  # phase 0 of 3
    mine = ours.targets(None, None, x1, y, torch.Generator().manual_seed(0))
    assert torch.all(mine.target == 4.0)  # 9 clipped
    assert (mine.y == 10).any()  # labels dropped for CFG
    theirs = ref.targets(None, None, x1, y, torch.Generator().manual_seed(0))
    # guided: uncond + 2 (cond - uncond) = 10 + 2 (9 - 10) = 8, not clipped, labels kept
    torch.testing.assert_close(theirs.target, torch.full_like(theirs.target, 8.0))
    assert torch.equal(theirs.y, y) and torch.all(theirs.d == 1 / 8)
    assert all(torch.all(d == 1 / 8) for d in ref.teacher_network.told)  # told 1/M only
    ref.step = 20  # a later phase: no guidance
    later = ref.targets(None, None, x1, y, torch.Generator().manual_seed(0))
    torch.testing.assert_close(later.target, torch.full_like(later.target, 9.0))
    assert ref.sampling_rule().fixed_d == 1 / 8 and ours.sampling_rule().fixed_d is None


def test_consistency_reference_variants_keep_labels_and_sample_plainly():
    for name in ("consistency_distillation", "consistency_training"):
        objective = build_objective(name, num_classes=10, **REFERENCE_OBJECTIVES[name])
        if name == "consistency_distillation":
            objective.teacher_network = Affine()
        y = torch.randint(0, 10, (64,))
        batch = objective.targets(None, Affine(), torch.randn(64, 2), y, torch.Generator())
        assert torch.equal(batch.y, y)
    ct = build_objective("consistency_training", renoise_sampling=False)
    noise = torch.randn(4, 2)
    torch.testing.assert_close(sample(Affine(c=1.0), noise, 4, ct.sampling_rule()), noise + 1.0)
    assert build_objective("consistency_training").sampling_rule().renoise


def test_live_reflow_reference_split_reuses_the_first_images():
    x1 = torch.arange(16.0)[:, None].repeat(1, 2)
    for split, expected in ((False, range(4, 16)), (True, range(0, 12))):
        objective = build_objective("live_reflow", bootstrap_every=4, reference_batch_split=split)
        batch = objective.targets(Affine(c=0.0), None, x1, None, torch.Generator())
        flow = batch.groups["flow"]
        # the flow rows' data: x_t + (1 - t) * target recovers x1 up to EPS
        t = batch.t[flow][:, None]
        recovered = batch.x_t[flow] + (1 - t) * batch.target[flow]
        want = torch.tensor(list(expected), dtype=torch.float32)
        torch.testing.assert_close(recovered[:, 0], want, atol=1e-3, rtol=0)


def test_flax_parameter_mapping():
    tree = synthetic_flax_tree()
    options = dit_options_from_flax(tree, num_heads=4)
    assert options == dict(
        patch_size=2,
        in_channels=3,
        hidden_size=16,
        depth=2,
        num_heads=4,
        mlp_ratio=4.0,
        num_classes=10,
    )
    net = make_backbone("dit", input_size=8, **options, **REFERENCE_DIT)
    net.load_state_dict(dit_state_from_flax(tree, 10))  # strict: every name and shape
    block = tree["DiTBlock_1"]
    qkv = net.blocks[1].attn.qkv.weight.detach().numpy()
    # flax creates k, q, v (Dense_1..3); torch's fused layer is q, k, v; kernels transpose
    for part, name in zip(np.split(qkv, 3), ("Dense_2", "Dense_1", "Dense_3"), strict=True):
        np.testing.assert_allclose(part, block[name]["kernel"].T, rtol=0, atol=1e-6)
    np.testing.assert_allclose(
        net.blocks[1].mlp[2].weight.detach().numpy(),
        block["MlpBlock_0"]["Dense_1"]["kernel"].T,
        rtol=0,
        atol=1e-6,
    )
    # the patch embedding: a flax NHWC convolution computed by hand equals ours on NCHW input
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    conv = tree["PatchEmbed_0"]["Conv_0"]
    patches = x[0].numpy().reshape(3, 4, 2, 4, 2).transpose(1, 3, 2, 4, 0)  # gh, gw, kh, kw, c
    expected = np.einsum("abhwc,hwco->abo", patches, conv["kernel"]) + conv["bias"]
    ours = net.patch.double()(x)[0].permute(1, 2, 0).detach().numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


def test_flax_mapping_of_an_unconditional_model_folds_the_null_label():
    tree = synthetic_flax_tree(classes=1, seed=1)  # the official unconditional: 2 rows, all null
    assert dit_options_from_flax(tree, 4)["num_classes"] == 0
    sizes = dict(input_size=8, in_channels=3, patch_size=2, hidden_size=16, depth=2, num_heads=4)
    conditional = make_backbone("dit", **sizes, num_classes=1, **REFERENCE_DIT)
    conditional.load_state_dict(dit_state_from_flax(tree, 1))
    unconditional = make_backbone("dit", **sizes, **REFERENCE_DIT)
    unconditional.load_state_dict(dit_state_from_flax(tree, 0))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    t, d = torch.rand(2, dtype=torch.float64), torch.full((2,), 0.25, dtype=torch.float64)
    with torch.no_grad():  # float64: the random weights make outputs large
        null = torch.ones(2, dtype=torch.long)
        expected = conditional.double()(x, t, d, null)
        out = unconditional.double()(x, t, d)  # weights were stored in float32: rounding
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-5)
    with pytest.raises(UsageError, match="not 5 classes"):
        dit_state_from_flax(tree, 5)
    with pytest.raises(UsageError, match="not an official DiT"):
        dit_options_from_flax({"PatchEmbed_0": {}}, 4)
