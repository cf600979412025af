"""Progress of long work: a tqdm bar on a terminal, a log line at intervals anywhere else.

A bar redrawn into a file (a job's log, `cmd > out.txt 2>&1`) is either one line that says
nothing until the end or thousands of carriage returns; where stderr is not a terminal the same
calls instead log "what: count / total unit (share), rate, about T left" every `interval` seconds
(and once at the end), through the package's logger so `--quiet` silences it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

from shortcut_models import logs

log = logs.get(__name__)

INTERVAL_S = 30.0  # seconds between two log lines when no terminal shows a bar


def progress_bar(
    total: int | None,
    desc: str,
    *,
    iterable: Iterable[Any] | None = None,
    unit: str = "it",
    enabled: bool = True,
    initial: int = 0,
    interval: float | None = None,
) -> Any:
    """A tqdm bar where stderr is a terminal, else a `LogProgress`; either takes `update(n)`,
    `set_postfix(**values)` and `close()`, works as a context manager, and given `iterable`
    yields its items, counting each. `enabled=False` (not rank 0, `--no-progress`) gives a bar
    that shows nothing."""
    if not enabled or _is_terminal():
        return tqdm(
            iterable, total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
            dynamic_ncols=True,
        )  # fmt: skip
    every = INTERVAL_S if interval is None else interval
    return LogProgress(total, desc, unit, initial, every, iterable)


def _is_terminal() -> bool:
    stream = sys.stderr
    return bool(getattr(stream, "isatty", None) and stream.isatty())


class LogProgress:
    """Counts work and logs its state every `interval` seconds and when closed."""

    def __init__(
        self,
        total: int | None,
        desc: str,
        unit: str,
        initial: int,
        interval: float,
        iterable: Iterable[Any] | None = None,
    ) -> None:
        self.total, self.desc, self.unit, self.interval = total, desc, unit, interval
        self.iterable = iterable
        self.n = self.start_n = initial
        self.start = self.last = time.monotonic()
        self.postfix: dict[str, Any] = {}
        self.closed = False

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            log.info(self.line(now))

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None, "a bar made without an iterable"
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def refresh(self) -> None:
        """Nothing to redraw (tqdm's call, after `total` changed: the next line shows it)."""

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            log.info(self.line(time.monotonic(), done=True))

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def line(self, now: float, done: bool = False) -> str:
        """The log line: count (of total, share), rate, time left or taken, the postfix."""
        elapsed = max(now - self.start, 1e-9)
        rate = (self.n - self.start_n) / elapsed
        count = f"{self.n:,}" if self.total is None else f"{self.n:,} / {self.total:,}"
        parts = [f"{self.desc}: {count} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        parts.append(f"{rate:.3g} {self.unit}/s")
        if done:
            parts.append(f"done in {_duration(elapsed)}")
        elif self.total and rate > 0:
            parts.append(f"about {_duration((self.total - self.n) / rate)} left")
        parts += [f"{key} {value}" for key, value in self.postfix.items()]
        return ", ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
