"""Loading training data: a CSV with a header, Edge Impulse acquisition JSON, or storage.

Time series come back as :class:`Series` (one :class:`Segment` per device and per stretch
without a time gap, so no window is ever built across a gap); labelled accelerometer
recordings as :class:`Recording`. Every problem is a :class:`DataError` naming the file,
the column or the field.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from services.trainer.errors import DataError

log = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float64]
TIME_COLUMNS = ("time", "timestamp", "ts")


@dataclass(frozen=True)
class Segment:
    """Samples of one device with no time gap: ``ts`` in seconds, one array per field."""

    device: str
    ts: FloatArray
    values: dict[str, FloatArray]

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass(frozen=True)
class Series:
    segments: list[Segment]
    fields: list[str]
    source: str
    interval_s: float
    gaps: int

    @property
    def samples(self) -> int:
        return sum(len(s) for s in self.segments)

    def start_end(self) -> tuple[float, float]:
        return (min(float(s.ts[0]) for s in self.segments),
                max(float(s.ts[-1]) for s in self.segments))


@dataclass(frozen=True)
class Recording:
    name: str
    label: str
    values: FloatArray  # (time, axes)
    interval_ms: float


@dataclass(frozen=True)
class Recordings:
    recordings: list[Recording]
    axes: list[str]
    interval_ms: float
    source: str


# --------------------------------------------------------------------------- sources

def parse_source(source: str) -> tuple[str, str]:
    """``csv:PATH`` → ("csv", PATH); ``ei:DIR`` → ("ei", DIR); a URL → ("storage", URL)."""
    for kind in ("csv", "ei"):
        if source.startswith(kind + ":"):
            rest = source[len(kind) + 1:]
            if not rest:
                raise DataError(f"source {source!r} names no path")
            return kind, rest
    if "://" in source:
        return "storage", source
    raise DataError(
        f"source {source!r} is not csv:PATH, ei:DIR or a storage URL (sqlite:///..., "
        "influxdb://..., influxdb1://...)"
    )


# --------------------------------------------------------------------------- CSV

def _to_seconds(ts: FloatArray) -> FloatArray:
    """CSV times may be epoch seconds, milliseconds or nanoseconds: judge by magnitude."""
    big = float(np.nanmax(np.abs(ts))) if ts.size else 0.0
    if big > 1e17:
        return ts / 1e9
    if big > 1e11:
        return ts / 1e3
    return ts


def load_csv(
    path: Path, fields: Sequence[str], *, time_column: str | None = None,
    gap_factor: float = 10.0,
) -> Series:
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    with path.open(newline="") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise DataError(f"{path} is empty") from None
        rows = list(reader)
    tcol = time_column or next((c for c in TIME_COLUMNS if c in header), None)
    if tcol is None or tcol not in header:
        raise DataError(f"{path}: no time column (looked for {time_column or TIME_COLUMNS}); "
                        f"columns are {header}")
    missing = [c for c in fields if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; columns are {header}")
    wanted = [tcol, *fields]
    idx = [header.index(c) for c in wanted]
    data = np.empty((len(rows), len(wanted)), dtype=np.float64)
    for r, row in enumerate(rows):
        if len(row) != len(header):
            raise DataError(f"{path}:{r + 2}: {len(row)} values for {len(header)} columns")
        for j, i in enumerate(idx):
            text = row[i].strip()
            try:
                data[r, j] = float(text) if text else math.nan
            except ValueError:
                raise DataError(
                    f"{path}:{r + 2}: column {wanted[j]!r} has a non-number {text!r}"
                ) from None
    for j, name in enumerate(wanted):
        bad = ~np.isfinite(data[:, j])
        if bad.any():
            first = int(np.argmax(bad)) + 2
            raise DataError(f"{path}: column {name!r} has {int(bad.sum())} NaN/empty/inf "
                            f"value(s), first at line {first}")
    ts = _to_seconds(data[:, 0])
    values = {name: data[:, j + 1] for j, name in enumerate(fields)}
    return split_gaps(path.stem, ts, values, source=f"csv:{path}", gap_factor=gap_factor)


def split_gaps(
    device: str, ts: FloatArray, values: dict[str, FloatArray], *, source: str,
    gap_factor: float,
) -> Series:
    """Cut one device's samples into segments wherever time jumps (or goes back)."""
    if ts.size == 0:
        raise DataError(f"{source}: no samples")
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    values = {k: v[order] for k, v in values.items()}
    return _series([(device, ts, values)], list(values), source, gap_factor)


def _series(
    parts: list[tuple[str, FloatArray, dict[str, FloatArray]]], fields: list[str],
    source: str, gap_factor: float,
) -> Series:
    diffs = np.concatenate([np.diff(ts) for _, ts, _ in parts if ts.size > 1] or [np.ones(1)])
    positive = diffs[diffs > 0]
    interval = float(np.median(positive)) if positive.size else 1.0
    segments: list[Segment] = []
    gaps = 0
    for device, ts, values in parts:
        cut = np.flatnonzero((np.diff(ts) > gap_factor * interval) | (np.diff(ts) <= 0)) + 1
        gaps += int(cut.size)
        bounds = [0, *cut.tolist(), int(ts.size)]
        for a, b in itertools.pairwise(bounds):
            if b > a:
                segments.append(Segment(device, ts[a:b], {k: v[a:b] for k, v in values.items()}))
    if gaps:
        log.info("%s: %d time gap(s) longer than %.0f s; %d segment(s), no window crosses one",
                 source, gaps, gap_factor * interval, len(segments))
    return Series(segments, fields, source, interval, gaps)


# --------------------------------------------------------------------------- Edge Impulse

def load_edge_impulse(directory: Path) -> Recordings:
    """Every ``*.json`` acquisition file under ``directory``; label = filename prefix."""
    if not directory.is_dir():
        raise DataError(f"Edge Impulse directory {directory} does not exist")
    files = sorted(directory.rglob("*.json"))
    if not files:
        raise DataError(f"{directory}: no *.json acquisition files")
    recordings: list[Recording] = []
    axes: list[str] | None = None
    interval: float | None = None
    for path in files:
        try:
            payload = json.loads(path.read_text())["payload"]
            names = [s["name"] for s in payload["sensors"]]
            step = float(payload["interval_ms"])
            values = np.asarray(payload["values"], dtype=np.float64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not an Edge Impulse acquisition file ({exc})") from None
        if values.ndim != 2 or values.shape[1] != len(names) or values.shape[0] == 0:
            raise DataError(f"{path}: values of shape {values.shape} for sensors {names}")
        if not np.isfinite(values).all():
            raise DataError(f"{path}: {int((~np.isfinite(values)).sum())} NaN/inf value(s)")
        if axes is None:
            axes, interval = names, step
        elif names != axes or not math.isclose(step, interval or 0.0):
            raise DataError(f"{path}: sensors {names} every {step} ms differ from "
                            f"{axes} every {interval} ms in the other files")
        label = path.name.split(".", 1)[0]
        recordings.append(Recording(str(path.relative_to(directory)), label, values, step))
    if axes is None or interval is None:  # unreachable: files is not empty
        raise DataError(f"{directory}: no recordings")
    return Recordings(recordings, axes, interval, f"ei:{directory}")


# --------------------------------------------------------------------------- storage

def parse_time(value: str | None) -> int | None:
    """ISO 8601 (``2026-01-01T00:00:00Z``) or integer nanoseconds → ns since the epoch."""
    if value is None or value == "":
        return None
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise DataError(f"time {value!r} is neither ISO 8601 nor integer nanoseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1e9)


def load_storage(
    url: str, fields: Sequence[str], *, start: str | None, end: str | None,
    devices: Sequence[str] | None, gap_factor: float, secrets: dict[str, Any] | None = None,
) -> Series:
    try:
        from services.ingest.storage import open_storage
    except ImportError as exc:
        raise DataError(f"storage sources need services.ingest.storage ({exc})") from None
    start_ns, end_ns = parse_time(start), parse_time(end)
    if start_ns is not None and end_ns is not None and end_ns <= start_ns:
        raise DataError(f"empty range: end {end} is not after start {start}")
    try:
        storage = open_storage(url, **(secrets or {}))
    except Exception as exc:  # any backend's connection/URL error is an input problem
        raise DataError(f"cannot open storage {url}: {exc}") from None
    try:
        frame = storage.query(start_ns=start_ns, end_ns=end_ns, devices=devices,
                              fields=list(fields))
    finally:
        storage.close()
    if len(frame) == 0:
        raise DataError(f"{url}: no readings in the range {start}..{end} for devices "
                        f"{list(devices) if devices else 'all'}")
    missing = [f for f in fields if f not in frame.values]
    if missing:
        raise DataError(f"{url}: field(s) {missing} not found; stored fields are "
                        f"{sorted(frame.values)}")
    parts: list[tuple[str, FloatArray, dict[str, FloatArray]]] = []
    dropped = 0
    device_arr = np.asarray(frame.device).astype(str)
    for device in sorted(set(device_arr.tolist())):
        sel = device_arr == device
        ts = np.asarray(frame.ts[sel], dtype=np.float64) / 1e9
        vals = {f: np.asarray(frame.values[f][sel], dtype=np.float64) for f in fields}
        ok = np.logical_and.reduce([np.isfinite(v) for v in vals.values()])
        dropped += int((~ok).sum())
        if ok.any():
            order = np.argsort(ts[ok], kind="stable")
            parts.append((device, ts[ok][order], {f: v[ok][order] for f, v in vals.items()}))
    if dropped:
        log.warning("%s: %d reading(s) lack one of %s and were left out", url, dropped,
                    list(fields))
    if not parts:
        raise DataError(f"{url}: no reading carries all of {list(fields)}")
    return _series(parts, list(fields), url, gap_factor)
