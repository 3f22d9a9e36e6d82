"""Reads over the InfluxDB ``/query`` (InfluxQL) HTTP API.

InfluxDB 1.x serves it natively; InfluxDB 3.x serves it as its v1 compatibility API
(with ``Authorization: Token ...``) and answers no Flux, so both backends can read here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import requests

from services.ingest.storage.base import (
    MEASUREMENT,
    RESERVED_FIELDS,
    StorageError,
    StorageUnavailable,
)
from services.ingest.storage.frame import ReadingFrame, Row


def ident(name: str) -> str:
    """An InfluxQL double-quoted identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """An InfluxQL single-quoted string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class InfluxQL:
    def __init__(
        self, http: requests.Session, base_url: str, database: str, *, timeout_s: float = 30.0
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.database = database
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """An HTTP call whose failures are classified: retry later, or refused for good."""
        try:
            resp = self.http.request(
                method, f"{self.base_url}{path}", timeout=self.timeout_s, **kwargs
            )
        except requests.RequestException as exc:
            raise StorageUnavailable(f"influxdb {path}: {exc}") from exc
        if resp.status_code >= 500 or resp.status_code == 429:
            raise StorageUnavailable(f"influxdb {path}: HTTP {resp.status_code} {resp.text[:200]}")
        if resp.status_code >= 400:
            raise StorageError(f"influxdb {path}: HTTP {resp.status_code} {resp.text[:300]}")
        return resp

    def select(self, q: str) -> Iterator[dict[str, Any]]:
        """Every series of a (chunked) InfluxQL SELECT."""
        resp = self.request(
            "GET", "/query",
            params={"db": self.database, "q": q, "epoch": "ns", "chunked": "true",
                    "chunk_size": "20000"},
            stream=True,
        )
        with resp:
            for line in resp.iter_lines():
                if not line:
                    continue
                doc = json.loads(line)
                if "error" in doc:
                    raise StorageError(f"influxdb query: {doc['error']}")
                for result in doc.get("results", []):
                    if "error" in result:
                        raise StorageError(f"influxdb query: {result['error']}")
                    yield from result.get("series", [])

    @staticmethod
    def where(start_ns: int | None, end_ns: int | None, devices: Sequence[str] | None) -> str:
        parts: list[str] = []
        if start_ns is not None:
            parts.append(f"time >= {int(start_ns)}")
        if end_ns is not None:
            parts.append(f"time < {int(end_ns)}")
        if devices:
            parts.append("(" + " OR ".join(f"{ident('device')} = {literal(d)}" for d in devices)
                         + ")")
        return (" WHERE " + " AND ".join(parts)) if parts else ""

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        devices: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> ReadingFrame:
        if devices is not None and not devices:
            return ReadingFrame.empty(fields or ())
        select = "*" if fields is None else ", ".join(
            ident(f) for f in dict.fromkeys(["seq", *fields])
        )
        q = (f"SELECT {select} FROM {ident(MEASUREMENT)}"  # noqa: S608 - quoted identifiers
             f"{self.where(start_ns, end_ns, devices)} GROUP BY {ident('device')}")
        rows: list[Row] = []
        for series in self.select(q):
            device = series.get("tags", {}).get("device", "")
            columns: list[str] = series["columns"]
            i_time, i_seq = columns.index("time"), columns.index("seq")
            value_cols = [
                (i, c) for i, c in enumerate(columns)
                if c not in RESERVED_FIELDS and (fields is None or c in fields)
            ]
            for v in series["values"]:
                if v[i_seq] is None:
                    continue
                values = {c: float(v[i]) for i, c in value_cols if v[i] is not None}
                rows.append((device, int(v[i_time]), int(v[i_seq]), values))
        return ReadingFrame.from_rows(rows, fields)

    def count(self, device: str | None = None) -> int:
        q = (f"SELECT COUNT({ident('seq')}) FROM {ident(MEASUREMENT)}"  # noqa: S608
             f"{self.where(None, None, [device] if device else None)}")
        total = 0
        for series in self.select(q):
            for v in series["values"]:
                n = v[1]
                if n is not None and not (isinstance(n, float) and math.isnan(n)):
                    total += int(n)
        return total
