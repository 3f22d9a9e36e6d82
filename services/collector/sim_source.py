"""The simulator as a source: paced by the wall clock, answers a few commands itself."""

from __future__ import annotations

import logging
import time

from services.collector.config import CollectorConfig
from services.collector.metrics import CommandResult
from services.collector.outbox import Row
from services.collector.parsers import LineKind
from services.collector.simulator import Simulator
from services.collector.source import Source, SourceContext, SourceState
from services.contract.models import Command, CommandName

log = logging.getLogger(__name__)
#: Readings handed over at once when the simulator has fallen behind its schedule.
_MAX_CHUNK = 256


class SimulatorSource(Source):
    def __init__(self, config: CollectorConfig, *, start_ns: int | None = None) -> None:
        self.limit = config.limit
        self.finite = config.limit is not None
        self.sim = Simulator(
            config.profile,
            seed=config.seed,
            interval_s=config.interval_s,
            start_ns=time.time_ns() if start_ns is None else start_ns,
            injections=config.injections,
        )
        self._ctx: SourceContext | None = None
        self._anchor: tuple[float, float] | None = None  # (monotonic, simulated seconds)

    def run(self, ctx: SourceContext) -> None:
        self._ctx = ctx
        ctx.metrics.source_up.set(1)
        ctx.on_state(SourceState.UP, f"simulating {self.sim.profile.value}")
        self._anchor = (time.monotonic(), self.sim.elapsed_s)
        while not ctx.stop.is_set():
            if self.limit is not None and self.sim.index >= self.limit:
                break
            mono0, sim0 = self._anchor
            due = mono0 + (self.sim.elapsed_s - sim0)
            delay = due - time.monotonic()
            if delay > 0:
                ctx.stop.wait(min(delay, 0.5))
                continue
            rows: list[Row] = []
            while len(rows) < _MAX_CHUNK and mono0 + self.sim.elapsed_s - sim0 <= time.monotonic():
                if self.limit is not None and self.sim.index >= self.limit:
                    break
                rows.append(self.sim.next())
            ctx.metrics.lines.labels(LineKind.READING.value).inc(len(rows))
            if not ctx.emit(rows):
                break

    def handle_command(self, command: Command) -> tuple[CommandResult, str]:
        ctx = self._ctx
        name = command.command
        if ctx is None:
            return CommandResult.REJECTED, "simulator not running"
        rate_ms = round(self.sim.interval_s * 1000)
        if name is CommandName.PING:
            ctx.on_reply({"reply": "PONG", "command_id": command.id})
        elif name is CommandName.INFO:
            ctx.on_reply({
                "reply": "INFO", "fw": "simulator", "model": "none", "rate_ms": str(rate_ms),
                "mode": "all", "command_id": command.id,
            })
        elif name is CommandName.RATE:
            ms = command.args.get("ms", command.args.get("rate_ms"))
            if isinstance(ms, bool) or not isinstance(ms, int | float) or not 1 <= ms <= 3.6e6:
                return CommandResult.REJECTED, "rate needs args.ms, 1..3600000"
            self.sim.set_interval(ms / 1000.0)
            # Re-anchor so the new rate applies from now, not retroactively.
            self._anchor = (time.monotonic(), self.sim.elapsed_s)
            ctx.on_reply({"reply": "OK", "detail": f"RATE {int(ms)}", "command_id": command.id})
        else:
            return CommandResult.REJECTED, f"the simulator does not do {name.value}"
        return CommandResult.HANDLED, name.value
