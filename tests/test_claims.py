"""The comparison's verdicts: t-intervals over seeds, paired tests, and the generated claim table
of docs/comparison.md kept equal to the results files."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import pytest

from shortcut_models.claims import beats, by_seed, decide, intervals, t_interval, within

ROOT = Path(__file__).resolve().parent.parent


def test_t_interval_matches_the_t_table():
    found = t_interval([1.0, 2.0, 3.0])  # sd 1, n 3: t(0.975, 2) = 4.3027
    assert found.mean == 2.0 and found.n == 3
    assert found.high - 2.0 == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)
    assert found.low == pytest.approx(4.0 - found.high)
    one = t_interval([5.0])
    assert (one.low, one.high, one.n) == (5.0, 5.0, 1)


def test_beats_needs_the_whole_paired_interval_on_one_side():
    mine = {"0": 10.0, "1": 11.0, "2": 12.0}
    assert beats(mine, {"0": 20.0, "1": 21.5, "2": 21.0}) == "beats"
    assert beats({"0": 20.0, "1": 21.5, "2": 21.0}, mine) == "loses"
    # lower on average, but one seed the other way: inside the spread
    assert beats(mine, {"0": 30.0, "1": 9.0, "2": 14.0}) == "tie"
    # seeds are paired: a shared offset per seed does not widen the interval
    assert beats(mine, {"0": 12.0, "1": 13.1, "2": 13.9}) == "beats"
    assert beats({"0": 1.0}, {"0": 100.0}) == "one seed"
    assert beats({"0": 1.0, "5": 2.0}, {"0": 100.0, "1": 3.0}) == "one seed"  # one shared


def test_within_a_margin_of_the_rival():
    rival = {"0": 100.0, "1": 101.0, "2": 99.0}
    assert within({"0": 103.0, "1": 104.0, "2": 102.5}, rival) == "holds"  # 3% worse
    assert within({"0": 120.0, "1": 121.0, "2": 119.5}, rival) == "fails"  # 20% worse
    assert within({"0": 90.0, "1": 115.0, "2": 103.0}, rival) == "undecided"


def test_decide_reads_seeds_per_method_and_budget():
    runs = {
        "0": {"shortcut": {"1": 50.0, "4": 20.0}, "flow_matching": {"1": 300.0, "4": 30.0}},
        "1": {"shortcut": {"1": 55.0, "4": 21.0}, "flow_matching": {"1": 310.0, "4": 31.0}},
        "2": {"shortcut": {"1": 52.0}, "flow_matching": {"1": 290.0}},
    }
    scores = by_seed(runs)
    assert scores["shortcut"]["4"] == {"0": 20.0, "1": 21.0}
    decided = decide(scores)
    row = decided["one_step_one_phase"]["against"]["flow_matching"]
    assert row["verdict"] == "beats" and row["seeds"] == ["0", "1", "2"]
    assert "flow_matching" not in decided["four_steps_baselines"]["against"]  # not a rival there
    assert intervals(scores)["shortcut"]["4"]["n"] == 2


def _claim_table_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """benchmarks/claim_table.py pointed at copies of the page and the results."""
    spec = importlib.util.spec_from_file_location("claim_table", ROOT / "benchmarks/claim_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "results").mkdir()
    for name in module.SETS.values():
        shutil.copy(ROOT / "benchmarks/results" / name, tmp_path / "results" / name)
    shutil.copy(module.PAGE, tmp_path / "comparison.md")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "PAGE", tmp_path / "comparison.md")
    monkeypatch.setattr(sys, "argv", ["claim_table.py", "--check"])
    return module


def test_docs_claim_table_is_generated_from_the_results(tmp_path, monkeypatch):
    module = _claim_table_module(tmp_path, monkeypatch)
    assert module.main() == 0  # the committed page and JSON agree
    page = module.PAGE.read_text()
    assert "**beats**: 31.6 vs 61.3" in page  # MNIST, 4 steps, progressive distillation
    module.PAGE.write_text(page.replace("**beats**: 31.6 vs 61.3", "**tie**: 31.6 vs 61.3"))
    assert module.main() == 1  # a hand-edited verdict is caught
    path = module.RESULTS / module.SETS["MNIST"]
    results = json.loads(path.read_text())
    results["claims"]["four_steps_baselines"]["against"]["reflow"]["verdict"] = "beats"
    path.write_text(json.dumps(results))
    with pytest.raises(SystemExit, match="not those of its scores"):
        module.main()  # a verdict the scores do not give is caught too


def test_budget_plot_draws_each_method_against_its_budget(tmp_path, monkeypatch, capsys):
    """benchmarks/budget_plot.py: per method and step count, the mean over seeds and its
    interval at each budget, in budget order; a method missing at a budget has fewer points."""
    spec = importlib.util.spec_from_file_location("budget_plot", ROOT / "benchmarks/budget_plot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    one = ROOT / "benchmarks/results/compare_mnist_unet.json"
    recorded = json.loads(one.read_text())
    longer = {
        "mean": {"shortcut": {"1": 40.0, "128": 20.0}, "meanflow": {"1": 30.0}},
        "intervals": {"shortcut": {"1": {"mean": 40.0, "low": 35.0, "high": 45.0, "n": 2}}},
    }
    four = tmp_path / "four.json"
    four.write_text(json.dumps(longer))
    out = tmp_path / "budget.png"
    argv = ["budget_plot.py", "--budget", "4", str(four), "--budget", "1", str(one)]
    monkeypatch.setattr(
        sys, "argv", [*argv, "--methods", "shortcut", "meanflow", "--out", str(out)]
    )
    module.main()
    assert out.stat().st_size > 0
    found = json.loads(out.with_suffix(".json").read_text())["points"]
    assert set(found) == {"shortcut", "meanflow"}
    shortcut = found["shortcut"]["1"]
    assert [r["budget"] for r in shortcut] == [1.0, 4.0]
    assert shortcut[0]["mean"] == recorded["mean"]["shortcut"]["1"]
    assert shortcut[0]["low"] == recorded["intervals"]["shortcut"]["1"]["low"]
    assert (shortcut[1]["low"], shortcut[1]["high"]) == (35.0, 45.0)
    assert [r["budget"] for r in found["meanflow"]["128"]] == [1.0]  # no 4x point at 128
    assert found["meanflow"]["1"][1] == {
        "budget": 4.0,
        "mean": 30.0,
        "n": 1,
        "low": 30.0,
        "high": 30.0,
    }
    assert "| shortcut" in capsys.readouterr().out
