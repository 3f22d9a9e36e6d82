"""Plain-words progress for the demo: one line per stage, one live status line.

Logs go to a file in the work dir; the terminal shows what a person needs to follow
the loop, not a wall of logs.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO


class StageFailed(RuntimeError):
    """A demo stage failed; the message says which and why."""


class Console:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self._lock = threading.Lock()
        self._live = ""
        self._last_plain = 0.0
        self.stages: list[tuple[str, float]] = []

    def _clear_live(self) -> None:
        if self.tty and self._live:
            self.stream.write("\r" + " " * min(len(self._live), self._width()) + "\r")
            self._live = ""

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 20)).columns - 1

    def line(self, text: str) -> None:
        with self._lock:
            self._clear_live()
            self.stream.write(text + "\n")
            self.stream.flush()

    def live(self, text: str) -> None:
        """A status line: redrawn in place on a terminal, printed every 5 s otherwise."""
        with self._lock:
            if self.tty:
                text = text[: self._width()]
                self.stream.write("\r" + text.ljust(len(self._live)))
                self._live = text
                self.stream.flush()
            elif time.monotonic() - self._last_plain >= 5:
                self._last_plain = time.monotonic()
                self.stream.write("  " + text + "\n")
                self.stream.flush()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        self.line(f"▸ {name}")
        try:
            yield
        except StageFailed:
            raise
        except Exception as exc:
            self.line(f"✗ {name}: {exc}")
            raise StageFailed(f"{name}: {exc}") from exc
        took = time.monotonic() - started
        self.stages.append((name, took))
        self.line(f"✓ {name} ({took:.1f} s)")

    def wait_until(self, what: str, predicate: Callable[[], bool], timeout_s: float,
                   status: Callable[[], str], poll_s: float = 0.25) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise StageFailed(f"timed out after {timeout_s:.0f} s waiting for {what}")
            self.live(status())
            time.sleep(poll_s)
        with self._lock:
            self._clear_live()
