"""Logging: one line per event, with levels, and rate limiting for repeated errors.

A serial port that spews garbage or a client that floods bad requests must not fill a
Pi's SD card: :class:`RateLimitedLog` lets the first few of each kind through per
interval and then writes one line saying how many were suppressed.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


class _UTCFormatter(logging.Formatter):
    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        ct = time.gmtime(record.created)
        return time.strftime("%Y-%m-%dT%H:%M:%S", ct) + f".{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        # One event, one line: fold tracebacks and multi-line messages.
        return super().format(record).replace("\n", " | ")


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the event, not at set-up
    (a test harness or a daemoniser may swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    handler: logging.Handler = (
        logging.StreamHandler(stream) if stream is not None else _CurrentStderr(sys.stderr)
    )
    handler.setFormatter(_UTCFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter that is not an event for the person on call.
    for noisy in ("werkzeug", "waitress.queue", "amqtt", "transitions", "absl", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class RateLimitedLog:
    """Let ``burst`` messages per key through every ``interval_s``; count the rest."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 5,
        interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = burst
        self._interval = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int, int]] = {}  # key -> (start, sent, dropped)

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log unless ``key`` is over its budget. Returns whether it was written."""
        now = self._clock()
        with self._lock:
            start, sent, dropped = self._windows.get(key, (now, 0, 0))
            if now - start >= self._interval:
                if dropped:
                    self._logger.log(
                        level, "%s: %d similar messages suppressed in the last %.0f s",
                        key, dropped, now - start,
                    )
                start, sent, dropped = now, 0, 0
            if sent < self._burst:
                self._windows[key] = (start, sent + 1, dropped)
                emit = True
            else:
                self._windows[key] = (start, sent, dropped + 1)
                emit = False
        if emit:
            self._logger.log(level, msg, *args)
        return emit

    def warning(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, key, msg, *args)

    def error(self, key: str, msg: str, *args: object) -> bool:
        return self.log(logging.ERROR, key, msg, *args)
