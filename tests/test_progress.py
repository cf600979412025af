"""Progress where no terminal shows a bar: log lines at intervals, with count, rate, time left."""

from __future__ import annotations

import io

from shortcut_models import progress


def test_without_a_terminal_progress_is_logged_at_intervals(monkeypatch, capsys):
    clock = iter(float(t) for t in range(0, 1000, 10))  # 10 s pass between two calls
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    bar = progress.progress_bar(100, "measuring", unit="img", interval=25.0)
    assert isinstance(bar, progress.LogProgress)  # capsys's stderr is not a terminal
    for _ in range(10):
        bar.update(10)
    bar.set_postfix(steps=4)
    bar.close()
    bar.close()  # once only
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    # started at t=0; updates at t=10..100: a line at 30, 60, 90 (every 25 s at most), then done
    assert lines[:3] == [
        "measuring: 30 / 100 img (30%), 1 img/s, about 70 s left",
        "measuring: 60 / 100 img (60%), 1 img/s, about 40 s left",
        "measuring: 90 / 100 img (90%), 1 img/s, about 10 s left",
    ]
    assert lines[3:] == ["measuring: 100 / 100 img (100%), 0.909 img/s, done in 2 min, steps 4"]


def test_an_iterable_is_counted_and_a_terminal_gets_a_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    assert list(progress.progress_bar(3, "work", iterable=range(3))) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("work: 1 / 3 it (33%)") and "done in" in lines[-1]
    terminal = io.StringIO()
    terminal.isatty = lambda: True
    monkeypatch.setattr(progress.sys, "stderr", terminal)
    bar = progress.progress_bar(3, "work")
    assert not isinstance(bar, progress.LogProgress)  # tqdm's bar
    bar.close()
    assert progress.progress_bar(3, "quiet", enabled=False).disable  # no output at all


def test_a_wall_clock_run_logs_its_planned_length_where_no_terminal_shows_a_bar(
    tmp_path, monkeypatch, capsys
):
    """The trainer sets the bar's total once a --minutes budget is planned (it called tqdm's
    refresh, which the log lines lacked: the demo died there with its output in a file)."""
    from helpers import tiny_config, tiny_trainer

    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    config = tiny_config(steps=5, minutes=0.002)  # 0.12 s: planned from the first steps
    trainer = tiny_trainer(tmp_path / "run", config, progress=True)
    trainer.run()
    lines = [line for line in capsys.readouterr().err.splitlines() if " step (" in line]
    assert lines
    assert f"{trainer.step:,} / {trainer.step:,} step (100%)" in lines[-1]
    assert "done in" in lines[-1]
