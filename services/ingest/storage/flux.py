"""Flux queries for readings and a parser for InfluxDB's annotated CSV responses.

Times are asked for as RFC3339Nano and parsed by hand: ``datetime`` stops at
microseconds and readings are nanosecond-stamped.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Iterator, Sequence

from services.ingest.storage.base import MEASUREMENT

#: The largest time Flux accepts as a range stop.
MAX_TIME_NS = 2**63 - 2


def string(value: str) -> str:
    """A Flux string literal."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${") + '"'


def _or(column: str, values: Sequence[str]) -> str:
    return " or ".join(f"r[{string(column)}] == {string(v)}" for v in values)


def readings_query(
    bucket: str,
    start_ns: int | None,
    end_ns: int | None,
    devices: Sequence[str] | None,
    fields: Sequence[str] | None,
) -> str:
    lines = [
        f"from(bucket: {string(bucket)})",
        f"  |> range(start: time(v: {int(start_ns or 0)}), "
        f"stop: time(v: {int(end_ns if end_ns is not None else MAX_TIME_NS)}))",
        f'  |> filter(fn: (r) => r["_measurement"] == {string(MEASUREMENT)})',
    ]
    if devices:
        lines.append(f"  |> filter(fn: (r) => {_or('device', devices)})")
    if fields is not None:
        lines.append(f"  |> filter(fn: (r) => {_or('_field', ['seq', *fields])})")
    lines.append('  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")')
    return "\n".join(lines) + "\n"


def count_query(bucket: str, device: str | None) -> str:
    lines = [
        f"from(bucket: {string(bucket)})",
        f"  |> range(start: time(v: 0), stop: time(v: {MAX_TIME_NS}))",
        f'  |> filter(fn: (r) => r["_measurement"] == {string(MEASUREMENT)} '
        'and r["_field"] == "seq")',
    ]
    if device:
        lines.append(f"  |> filter(fn: (r) => r[\"device\"] == {string(device)})")
    lines += ["  |> group()", "  |> count()"]
    return "\n".join(lines) + "\n"


class FluxError(ValueError):
    """The server answered a query with an error table."""


def records(rows: Iterable[list[str]]) -> Iterator[dict[str, str]]:
    """Data rows of an annotated CSV response as dicts keyed by column name.

    Each table block may bring its own annotations and header (a blank line separates
    blocks whose columns differ); the first column is the annotation column.
    """
    header: list[str] | None = None
    expect_header = True
    for row in rows:
        if not row or (len(row) == 1 and not row[0]):
            header, expect_header = None, True
            continue
        if row[0].startswith("#"):
            expect_header = True
            continue
        if expect_header or header is None:
            header, expect_header = row, False
            continue
        record = dict(zip(header, row, strict=False))
        if "error" in record and "_time" not in record and "_value" not in record:
            raise FluxError(record["error"])
        yield record


def parse_time_ns(value: str) -> int:
    """RFC3339(Nano) UTC ``2019-11-08T06:26:18.123456789Z`` to integer nanoseconds."""
    if not value.endswith("Z"):
        raise ValueError(f"expected a UTC time ending in Z, got {value!r}")
    base, _, frac = value[:-1].partition(".")
    secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
    nanos = int((frac + "000000000")[:9]) if frac else 0
    return secs * 1_000_000_000 + nanos
