"""Replay of recordings: a CSV with a header, or Edge Impulse acquisition JSON files.

CSV: one column may be the time (``time``, ``timestamp`` or ``ts``; Unix seconds,
milliseconds, microseconds or nanoseconds, told apart by magnitude), every other column
is a value. Without a time column rows are ``--interval`` apart.

Edge Impulse (``.json`` file or a directory of them, searched recursively): each file's
``payload.values`` rows named by ``payload.sensors`` (accX/accY/accZ), ``interval_ms``
apart, starting at the file's ``protected.iat``; files are played in time order.

Pace: the recorded spacing divided by ``--speed`` (0 = as fast as possible).
Timestamps: ``recorded`` keeps the recording's times; ``now`` stamps each row when it is
replayed, so the data looks live. The position reached is committed with the rows, so a
replay restarted after a crash resumes where it stopped instead of starting over.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from services.collector.config import CollectorConfig, TimestampMode
from services.collector.outbox import Row
from services.collector.parsers import LineKind, LineParser, ParseError
from services.collector.source import Source, SourceContext, SourceState
from services.contract.topics import is_valid_id

log = logging.getLogger(__name__)
TIME_COLUMNS: Final = ("time", "timestamp", "ts")
_MAX_CHUNK: Final = 256


class RecordingError(ValueError):
    """A recording that cannot be replayed at all (missing, empty, wrong shape)."""


@dataclass(frozen=True, slots=True)
class Recording:
    #: Recorded time of each row (ns), or None when the recording has no clock.
    times_ns: list[int] | None
    rows: list[tuple[dict[str, float], tuple[str, ...]]]
    #: Lines that could not be used, by reason.
    errors: dict[ParseError, int]
    key: str


def _to_ns(value: float) -> int:
    magnitude = abs(value)
    if magnitude < 1e11:
        return round(value * 1e9)  # seconds
    if magnitude < 1e14:
        return round(value * 1e6)  # milliseconds
    if magnitude < 1e17:
        return round(value * 1e3)  # microseconds
    return round(value)


def load_csv(path: Path) -> Recording:
    errors: dict[ParseError, int] = {}
    times: list[int] = []
    rows: list[tuple[dict[str, float], tuple[str, ...]]] = []
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise RecordingError(f"{path}: {exc.strerror}") from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if not header:
            raise RecordingError(f"{path}: empty file")
        names = [h.strip() for h in header]
        time_idx = next((i for i, n in enumerate(names) if n.lower() in TIME_COLUMNS), None)
        value_names = [n for i, n in enumerate(names) if i != time_idx]
        if not value_names or not all(is_valid_id(n) for n in value_names):
            raise RecordingError(f"{path}: header {header} has invalid value names")
        # The serial CSV parser checks the values of recordings the same way.
        parser = LineParser(header=tuple(value_names))
        for cells in reader:
            if not cells or all(not c.strip() for c in cells):
                continue
            if len(cells) != len(names):
                errors[ParseError.PARTIAL] = errors.get(ParseError.PARTIAL, 0) + 1
                continue
            t_ns = None
            if time_idx is not None:
                try:
                    t = float(cells[time_idx])
                except ValueError:
                    t = math.nan
                if not math.isfinite(t):
                    errors[ParseError.MALFORMED] = errors.get(ParseError.MALFORMED, 0) + 1
                    continue
                t_ns = _to_ns(t)
            line = ",".join(c for i, c in enumerate(cells) if i != time_idx)
            parsed = parser.parse(line)
            if parsed.kind is not LineKind.READING or parsed.values is None:
                reason = parsed.error or ParseError.MALFORMED
                errors[reason] = errors.get(reason, 0) + 1
                continue
            rows.append((parsed.values, parsed.flags))
            if t_ns is not None:
                times.append(t_ns)
    if not rows:
        raise RecordingError(f"{path}: no usable rows")
    return Recording(times if time_idx is not None else None, rows, errors, f"csv:{path}")


def _ei_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.json") if p.is_file())
        if not files:
            raise RecordingError(f"{path}: no .json files")
        return files
    return [path]


def load_edge_impulse(path: Path) -> Recording:
    parts: list[tuple[int, str, list[str], list[list[Any]], float]] = []
    for file in _ei_files(path):
        try:
            doc = json.loads(file.read_text())
            payload = doc["payload"]
            names = [str(s["name"]) for s in payload["sensors"]]
            interval_ms = float(payload["interval_ms"])
            values = payload["values"]
            start_s = float(doc.get("protected", {}).get("iat") or file.stat().st_mtime)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RecordingError(f"{file}: not an Edge Impulse acquisition file: {exc}") from None
        if interval_ms <= 0 or not isinstance(values, list):
            raise RecordingError(f"{file}: bad interval_ms or values")
        parts.append((round(start_s * 1e9), file.name, names, values, interval_ms))
    parts.sort(key=lambda p: (p[0], p[1]))
    errors: dict[ParseError, int] = {}
    times: list[int] = []
    rows: list[tuple[dict[str, float], tuple[str, ...]]] = []
    clock = 0
    for start_ns, _name, names, values, interval_ms in parts:
        if not names or not all(is_valid_id(n) for n in names):
            raise RecordingError(f"{path}: invalid sensor names {names}")
        parser = LineParser(header=tuple(names))
        step = round(interval_ms * 1e6)
        # Recordings can overlap in time: keep the stream monotonic.
        clock = max(clock, start_ns)
        for value in values:
            parsed = None
            if isinstance(value, list) and len(value) == len(names):
                parsed = parser.parse(",".join(str(v) for v in value))
            if parsed is None or parsed.kind is not LineKind.READING or parsed.values is None:
                reason = (parsed.error if parsed else None) or ParseError.MALFORMED
                errors[reason] = errors.get(reason, 0) + 1
                continue
            rows.append((parsed.values, parsed.flags))
            times.append(clock)
            clock += step
    if not rows:
        raise RecordingError(f"{path}: no usable rows")
    return Recording(times, rows, errors, f"ei:{path}")


def load_recording(path: Path) -> Recording:
    if path.is_dir() or path.suffix.lower() == ".json":
        return load_edge_impulse(path)
    return load_csv(path)


class ReplaySource(Source):
    finite = True

    def __init__(self, config: CollectorConfig) -> None:
        if config.csv is None:
            raise ValueError("replay needs csv")
        self.path = config.csv
        self.speed = config.speed
        self.limit = config.limit
        self.mode = config.timestamps
        self.interval_ns = round(config.interval_s * 1e9)
        self.error: str | None = None

    def run(self, ctx: SourceContext) -> None:
        try:
            rec = load_recording(self.path)
        except RecordingError as exc:
            self.error = str(exc)
            log.error("replay: %s", exc)
            ctx.on_state(SourceState.DOWN, str(exc)[:500])
            return
        for reason, n in rec.errors.items():
            ctx.metrics.lines.labels(LineKind.ERROR.value).inc(n)
            ctx.metrics.parse_errors.labels(reason.value).inc(n)
        end = len(rec.rows) if self.limit is None else min(self.limit, len(rec.rows))
        start = ctx.resume(rec.key) or 0
        if start >= end:
            log.info("replay: %s was replayed to the end before; starting again", self.path)
            start = 0
        elif start:
            log.info("replay: resuming %s at row %d of %d", self.path, start, end)
        log.info(
            "replay: %s rows %d..%d at %s, timestamps %s", self.path, start, end,
            "full speed" if self.speed == 0 else f"{self.speed:g}x", self.mode.value,
        )
        ctx.metrics.source_up.set(1)
        ctx.on_state(SourceState.UP, f"replaying {self.path.name}")
        self._play(rec, start, end, ctx)

    def _recorded_ns(self, rec: Recording, i: int, t0_wall_ns: int) -> int:
        if rec.times_ns is not None:
            return rec.times_ns[i]
        return t0_wall_ns + i * self.interval_ns

    def _play(self, rec: Recording, start: int, end: int, ctx: SourceContext) -> None:
        mono0 = time.monotonic()
        t0_wall = time.time_ns()
        base = self._recorded_ns(rec, start, t0_wall)
        last_ts = 0
        i = start
        while i < end and not ctx.stop.is_set():
            if self.speed > 0:
                offset_s = (self._recorded_ns(rec, i, t0_wall) - base) / 1e9 / self.speed
                delay = mono0 + offset_s - time.monotonic()
                if delay > 0:
                    ctx.stop.wait(min(delay, 0.5))
                    continue
            rows: list[Row] = []
            now_mono = time.monotonic()
            while i < end and len(rows) < _MAX_CHUNK:
                if self.speed > 0 and rows:
                    offset_s = (self._recorded_ns(rec, i, t0_wall) - base) / 1e9 / self.speed
                    if mono0 + offset_s > now_mono:
                        break
                values, flags = rec.rows[i]
                if self.mode is TimestampMode.NOW:
                    ts = max(time.time_ns(), last_ts + 1)
                else:
                    ts = self._recorded_ns(rec, i, t0_wall)
                last_ts = ts
                rows.append(Row(ts, values, flags))
                i += 1
            ctx.metrics.lines.labels(LineKind.READING.value).inc(len(rows))
            if not ctx.emit(rows, (rec.key, i)):
                return
