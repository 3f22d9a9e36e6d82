"""What every source (serial, simulator, replay) shares: how readings leave it."""

from __future__ import annotations

import abc
import enum
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass

from services.collector.metrics import CollectorMetrics, CommandResult
from services.collector.outbox import Row
from services.contract.models import Command


@dataclass(frozen=True, slots=True)
class Chunk:
    """Readings handed to the publisher in one go.

    ``position`` (replay only) is how far into the recording the source got once these
    rows are stored; it is committed with them so a restarted replay resumes there.
    """

    rows: list[Row]
    position: tuple[str, int] | None = None


class SourceState(enum.Enum):
    UP = "up"
    DOWN = "down"  # e.g. the serial port vanished; retrying


@dataclass(slots=True)
class SourceContext:
    metrics: CollectorMetrics
    stop: threading.Event
    inbox: queue.Queue[Chunk]
    #: Wakes the publisher after a put.
    wake: threading.Event
    on_state: Callable[[SourceState, str], None]
    #: A reply from the device (``@...``), parsed into key/value info.
    on_reply: Callable[[dict[str, str]], None]
    #: Where a replay stopped last time, from the outbox; None if never.
    resume: Callable[[str], int | None]
    #: Set once the publisher is gone: nothing will take readings any more.
    closed: threading.Event

    def emit(self, rows: list[Row], position: tuple[str, int] | None = None) -> bool:
        """Queue readings for the outbox; blocks while it is full (backpressure).

        Returns False only if the publisher is gone; a stopping collector still drains
        the queue, so readings a source has accepted are never thrown away here.
        """
        chunk = Chunk(rows, position)
        while True:
            try:
                self.inbox.put(chunk, timeout=0.2)
            except queue.Full:
                if self.closed.is_set():
                    return False
                continue
            self.wake.set()
            return True


class Source(abc.ABC):
    #: A finite source (a recording, a --limit) finishes; a device never does.
    finite: bool = False

    @abc.abstractmethod
    def run(self, ctx: SourceContext) -> None:
        """Read until ``ctx.stop`` is set or the source is exhausted. Must not raise
        for events that are normal for the source (a device unplugged)."""

    def handle_command(self, command: Command) -> tuple[CommandResult, str]:
        """A command from the cmd topic; returns what happened and a detail."""
        return CommandResult.REJECTED, f"{command.command.value} is not supported by this source"
