"""Recorded devices for the demo: real recordings, sped up, with a fire on command.

The workshop board recorded a reading every 3 s. Replayed faster, its timestamps keep
that 3 s spacing (what the models and the data-quality checks expect) and are placed in
the recent past so that the last row lands at the moment the replay would end: no
reading is ever stamped in the future.

``FAULT fire`` arrives on the device's ``cmd`` topic like it would for real firmware,
and from the next row on the temperature follows a fire's curve: a fast rise, a plateau,
and a slow decay back to the recording, so the alert is raised and later cleared.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from services.collector.metrics import CommandResult
from services.collector.outbox import Row
from services.collector.replay import Recording
from services.collector.source import Source, SourceContext, SourceState
from services.contract.models import Command, CommandName

log = logging.getLogger(__name__)


@dataclass
class FireState:
    #: Row index where the fire started (None until FAULT fire).
    start_row: int | None = None
    #: Recorded time of that row, for the alert's delay.
    start_ts: int | None = None


#: Rows of rise, plateau and decay of the injected fire (3 s each on the workshop board).
FIRE_RISE, FIRE_HOLD, FIRE_DECAY = 12, 20, 60


def fire_excess(row: int, c_per_row: float) -> float:
    """Degrees the fire adds ``row`` readings after it started."""
    peak = FIRE_RISE * c_per_row
    if row < FIRE_RISE:
        return (row + 1) * c_per_row
    if row < FIRE_RISE + FIRE_HOLD:
        return peak
    left = FIRE_RISE + FIRE_HOLD + FIRE_DECAY - row
    return max(0.0, peak * left / FIRE_DECAY)


class RecordedDevice(Source):
    """Plays ``rows[start:end]`` of a recording ``speed`` times faster than recorded."""

    finite = True

    def __init__(
        self,
        recording: Recording,
        *,
        start: int,
        end: int,
        period_s: float,
        speed: float,
        fire_field: str | None = None,
        fire_c_per_row: float = 0.25,
        loop: bool = False,
    ) -> None:
        if not 0 <= start < end <= len(recording.rows):
            raise ValueError(f"rows {start}..{end} outside the recording's {len(recording.rows)}")
        self.rows = recording.rows[start:end]
        self.period_ns = round(period_s * 1e9)
        self.speed = speed
        self.loop = loop
        self.fire_field = fire_field
        self.fire_c_per_row = fire_c_per_row
        self.fire = FireState()
        self.played = 0
        #: (ts, values) of every row emitted, for the report's plots.
        self.emitted: list[tuple[int, dict[str, float]]] = []
        self._lock = threading.Lock()
        self._anchor = (time.monotonic(), 0)
        self.finite = not loop
        span_ns = len(self.rows) * self.period_ns
        # Sped up, recorded time runs ahead of the wall clock: start in the past so the
        # last row is stamped no later than the wall-clock end of the replay.
        self._base_ns = time.time_ns() - (0 if speed <= 1 or loop else span_ns)

    def set_speed(self, speed: float) -> None:
        """Change the replay speed from the next row on (fast-forward, then play live)."""
        with self._lock:
            now = time.monotonic()
            # Re-anchor so the next row is due now at the new pace.
            self._anchor = (now, self.played)
            self.speed = speed

    def handle_command(self, command: Command) -> tuple[CommandResult, str]:
        if command.command is CommandName.FAULT and command.args.get("kind") == "fire":
            if self.fire_field is None:
                return CommandResult.REJECTED, "this device has no temperature to burn"
            with self._lock:
                if self.fire.start_row is None:
                    self.fire.start_row = self.played
            log.info("fire injected at row %d", self.played)
            return CommandResult.HANDLED, "fire"
        return CommandResult.REJECTED, f"{command.command.value} is not supported by a recording"

    def run(self, ctx: SourceContext) -> None:
        ctx.metrics.source_up.set(1)
        ctx.on_state(SourceState.UP, "replaying a recording")
        with self._lock:
            self._anchor = (time.monotonic(), 0)
        i = 0
        n = len(self.rows)
        while not ctx.stop.is_set():
            if i >= n and not self.loop:
                return
            with self._lock:
                (t_anchor, row_anchor), speed = self._anchor, self.speed

            def due_at(row: int, t0: float = t_anchor, r0: int = row_anchor,
                       pace: float = speed) -> float:
                return t0 + (row - r0) * self.period_ns / 1e9 / pace

            due = due_at(i)
            delay = due - time.monotonic()
            if delay > 0:
                ctx.stop.wait(min(delay, 0.2))
                continue
            batch: list[Row] = []
            now = time.monotonic()
            while len(batch) < 256 and (self.loop or i < n):
                if batch and due_at(i) > now:
                    break
                values = dict(self.rows[i % n][0])
                ts = self._base_ns + i * self.period_ns
                with self._lock:
                    fire_row = self.fire.start_row
                    if fire_row is not None and self.fire_field in values and i >= fire_row:
                        if self.fire.start_ts is None:
                            self.fire.start_ts = ts
                        values[self.fire_field] += fire_excess(i - fire_row, self.fire_c_per_row)
                    self.played = i + 1
                self.emitted.append((ts, values))
                batch.append(Row(ts, values, ()))
                i += 1
            ctx.metrics.lines.labels("reading").inc(len(batch))
            if not ctx.emit(batch):
                return
