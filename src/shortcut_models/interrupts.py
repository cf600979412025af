"""SIGINT and SIGTERM handlers installed for the length of a block, in the one place that
knows signals arrive only in the main thread (training's stop-and-save, export's drop-the-file)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Any

Handler = Callable[[int, Any], None]


class SignalHandlers:
    """`with SignalHandlers(handler):` routes SIGINT and SIGTERM to `handler`, restoring the
    previous handlers after; outside the main thread it installs nothing."""

    def __init__(
        self, handler: Handler, signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
    ):
        self.handler, self.signums = handler, signums
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalHandlers:
        if threading.current_thread() is threading.main_thread():
            for sig in self.signums:
                self.previous[sig] = signal.signal(sig, self.handler)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
