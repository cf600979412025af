"""benchmarks/guidance_per_method.py: each method's guidance chosen on a validation split."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    path = ROOT / "benchmarks/guidance_per_method.py"
    spec = importlib.util.spec_from_file_location("guidance_per_method", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lowest_validation_score_is_chosen_and_the_smaller_scale_on_a_tie():
    choose = _module().choose
    assert choose({"1": 30.0, "1.5": 20.0, "2": 25.0}) == "1.5"
    assert choose({"3": 20.0, "1.5": 20.0, "4": 21.0}) == "1.5"


@pytest.mark.slow
def test_guidance_is_chosen_on_other_noise_and_images_and_scored_as_the_table(
    tmp_path, monkeypatch, tiny_digits
):
    import shortcut_models.evaluation.scoring as scoring
    from shortcut_models.cli import main as cli
    from shortcut_models.metrics.digits import DigitFeatures

    monkeypatch.setattr(DigitFeatures, "for_dataset", lambda *a, **k: tiny_digits)
    run = tmp_path / "cmp"
    argv = ["compare", "--data", "mnist", "--recipe", "cpu-small", "--steps", "2", "--seed", "3"]
    argv += ["--objectives", "flow_matching", "shortcut", "--num", "10", "--eval-steps", "1", "4"]
    argv += ["--metric", "fd-digits", "--cfg", "2", "4:1.75", "--no-progress", "--out", str(run)]
    assert cli([*argv, "--batch-size", "8", "--json", str(run / "compare.json")]) == 0

    seen = []
    real = scoring.ImageScorer.score

    def spy(self, loaded, plan):
        seen.append((Path(self.ref).name, plan.seed, tuple(plan.steps), plan.scale(plan.steps[0])))
        return real(self, loaded, plan)

    monkeypatch.setattr(scoring.ImageScorer, "score", spy)
    out = tmp_path / "guidance.json"
    flags = ["--scales", "1", "2", "--num", "10", "--val-num", "40", "--json", str(out)]
    monkeypatch.setattr(sys, "argv", ["guidance_per_method.py", str(run), *flags])
    _module().main()
    record = json.loads(out.read_text())
    table = json.loads((run / "compare.json").read_text())
    assert set(record["methods"]) == {"flow_matching", "shortcut"}
    validation = [s for s in seen if s[0].startswith("guidance-validation-mnist-test")]
    test = [s for s in seen if s[0] == "mnist"]
    # validation: other noise (seed + 1000), other images (the test split); every scale
    assert {s[1] for s in validation} == {1003} and {s[3] for s in validation} == {1.0, 2.0}
    assert test and {s[1] for s in test} == {3}  # the table's noise and reference
    for method, entry in record["methods"].items():
        for n, row in entry["budgets"].items():
            best = min(row["validation"], key=lambda s: (row["validation"][s], float(s)))
            assert row["chosen"] == float(best)
            assert row["table"] == table[method][n]
            if float(row["chosen"]) == row["table_scale"]:
                assert row["test"] == pytest.approx(row["table"], abs=1e-3)
    # a second invocation re-scores nothing already recorded
    seen.clear()
    _module().main()
    assert seen == [] and json.loads(out.read_text())["methods"] == record["methods"]
