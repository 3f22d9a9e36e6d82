"""A small SQLite sidecar that remembers which (device, seq) an InfluxDB holds.

InfluxDB overwrites a point with the same series and timestamp, so a redelivered reading
never shows up twice there; but it cannot tell us that it was a duplicate. The ledger
does, so ``WriteResult.duplicates`` and the duplicates metric are honest, and it survives
restarts (a restarted ingest sees the broker's redeliveries as duplicates too).

Seqs are kept as ranges (see :mod:`seqranges`), one row per range per device.
A seq is recorded only after the backend has accepted its batch: a crash in between
means the batch is written again on redelivery, which the backend absorbs idempotently.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from services.contract.models import Reading
from services.ingest.storage.seqranges import RangeSet


class SeqLedger:
    def __init__(self, path: Path | str) -> None:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS seq_ranges (device TEXT NOT NULL, lo INTEGER NOT NULL,"
            " hi INTEGER NOT NULL, PRIMARY KEY (device, lo)) WITHOUT ROWID"
        )
        self._seen: dict[str, RangeSet] = {}
        for device, lo, hi in self._db.execute("SELECT device, lo, hi FROM seq_ranges"):
            self._seen.setdefault(device, RangeSet()).add_range(int(lo), int(hi))

    def split(self, readings: Sequence[Reading]) -> tuple[list[Reading], int]:
        """(readings not stored yet, how many are duplicates), also within the batch."""
        fresh: list[Reading] = []
        batch_seen: set[tuple[str, int]] = set()
        duplicates = 0
        with self._lock:
            for r in readings:
                seen = self._seen.get(r.device)
                key = (r.device, r.seq)
                if (seen is not None and r.seq in seen) or key in batch_seen:
                    duplicates += 1
                    continue
                batch_seen.add(key)
                fresh.append(r)
        return fresh, duplicates

    def commit(self, readings: Sequence[Reading]) -> None:
        """Record readings the backend has accepted."""
        by_device: dict[str, list[int]] = {}
        for r in readings:
            by_device.setdefault(r.device, []).append(r.seq)
        if not by_device:
            return
        with self._lock:
            for device, seqs in by_device.items():
                self._seen.setdefault(device, RangeSet()).add_many(seqs)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for device in by_device:
                    self._db.execute("DELETE FROM seq_ranges WHERE device = ?", (device,))
                    self._db.executemany(
                        "INSERT INTO seq_ranges (device, lo, hi) VALUES (?, ?, ?)",
                        [(device, lo, hi) for lo, hi in self._seen[device].ranges()],
                    )
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise

    def ranges(self) -> dict[str, list[tuple[int, int]]]:
        with self._lock:
            return {d: s.ranges() for d, s in self._seen.items() if s}

    def count(self, device: str | None = None) -> int:
        with self._lock:
            if device is not None:
                s = self._seen.get(device)
                return len(s) if s is not None else 0
            return sum(len(s) for s in self._seen.values())

    def close(self) -> None:
        with self._lock:
            self._db.close()
