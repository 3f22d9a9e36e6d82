"""``sqlite:``: the embedded default. One file, WAL, zero set-up.

``PRIMARY KEY (device, seq)`` makes every (device, seq) unique: a redelivered reading is
ignored by ``INSERT OR IGNORE`` and counted as a duplicate, never stored twice.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.contract.models import Reading
from services.ingest.storage.base import (
    SeqRangeMap,
    Storage,
    StorageError,
    WriteResult,
)
from services.ingest.storage.frame import ReadingFrame, Row

# The table is named after base.MEASUREMENT ("readings"), spelled out for plain SQL.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    device TEXT NOT NULL,
    seq INTEGER NOT NULL,
    site TEXT NOT NULL,
    ts INTEGER NOT NULL,
    vals TEXT NOT NULL,
    flags TEXT NOT NULL DEFAULT '',
    UNIQUE (device, seq)
);
CREATE INDEX IF NOT EXISTS readings_device_ts ON readings (device, ts);
CREATE INDEX IF NOT EXISTS readings_ts ON readings (ts);
"""

#: Stored seqs per device as runs: seq - row_number() is constant inside a run.
_RANGES_SQL = """
SELECT device, MIN(seq), MAX(seq) FROM (
    SELECT device, seq, seq - ROW_NUMBER() OVER (PARTITION BY device ORDER BY seq) AS run
    FROM readings
) GROUP BY device, run ORDER BY device, MIN(seq)
"""


class SqliteStorage(Storage):
    scheme = "sqlite"

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous}")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        # One connection shared under a lock: ingest writes from one thread while the
        # trainer or a test may query from another.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a batch is acknowledged to the broker only after it is on disk, so a
        # power cut must not roll the last transaction back.
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def write(self, readings: Sequence[Reading]) -> WriteResult:
        if not readings:
            return WriteResult(0, 0)
        rows = [
            (
                r.device, r.seq, r.site, r.ts,
                json.dumps(r.values, separators=(",", ":")),
                ",".join(r.flags),
            )
            for r in readings
        ]
        with self._lock:
            before = self._db.total_changes
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany(
                    "INSERT OR IGNORE INTO readings "
                    "(device, seq, site, ts, vals, flags) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise StorageError(f"sqlite write failed: {exc}") from exc
            written = self._db.total_changes - before
        return WriteResult(written=written, duplicates=len(rows) - written)

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        devices: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> ReadingFrame:
        where: list[str] = []
        params: list[Any] = []
        if start_ns is not None:
            where.append("ts >= ?")
            params.append(start_ns)
        if end_ns is not None:
            where.append("ts < ?")
            params.append(end_ns)
        if devices is not None:
            if not devices:
                return ReadingFrame.empty(fields or ())
            where.append(f"device IN ({','.join('?' * len(devices))})")
            params.extend(devices)
        sql = "SELECT device, ts, seq, vals FROM readings"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with self._lock:
            cur = self._db.execute(sql, params)
            raw = cur.fetchall()
        loads = json.loads
        rows: list[Row] = [(d, ts, seq, loads(vals)) for d, ts, seq, vals in raw]
        return ReadingFrame.from_rows(rows, fields)

    def count(self, device: str | None = None) -> int:
        with self._lock:
            if device is None:
                row = self._db.execute("SELECT COUNT(*) FROM readings").fetchone()
            else:
                row = self._db.execute(
                    "SELECT COUNT(*) FROM readings WHERE device = ?",
                    (device,),
                ).fetchone()
        return int(row[0])

    def seq_ranges(self) -> SeqRangeMap:
        out: SeqRangeMap = {}
        with self._lock:
            for device, lo, hi in self._db.execute(_RANGES_SQL):
                out.setdefault(device, []).append((int(lo), int(hi)))
        return out

    def close(self) -> None:
        with self._lock:
            self._db.close()
