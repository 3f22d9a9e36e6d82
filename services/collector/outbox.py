"""Store-and-forward: an SQLite outbox that every reading passes through.

A reading gets its per-device ``seq`` and is committed here before it is published; it
stays *pending* until the broker acknowledges it (PUBACK), then stays a while longer as
*acked* so ingest can ask for it again (RESEND, when the broker lost it after
acknowledging). The next ``seq`` is stored in the same transaction as the rows, so the
numbering continues after a restart or a ``kill -9`` without reuse.

Durability: WAL mode with ``synchronous=FULL``. WAL alone makes a commit survive the
process dying (``kill -9``); surviving a power cut needs the WAL fsync on every commit,
which NORMAL skips. Losing the last commits on power loss would not just lose readings:
their seqs would be handed out again to new readings after the reboot, and ingest, which
keeps the first (device, seq) it sees, would then drop those new readings as duplicates.
The cost of FULL is one fsync per commit, and the collector commits a whole batch of
readings (plus the acks that came in meanwhile) at once, so it is paid per batch.

Only one thread uses an Outbox (the collector's publisher thread).
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from services.contract.limits import MAX_SEQ

SCHEMA = """
CREATE TABLE IF NOT EXISTS readings (
    seq   INTEGER PRIMARY KEY,
    ts    INTEGER NOT NULL,
    body  TEXT NOT NULL,              -- the Sample as JSON, ready to publish
    acked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS readings_pending ON readings(seq) WHERE acked = 0;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class OutboxError(RuntimeError):
    """The outbox file belongs to another device, or cannot be used."""


@dataclass(frozen=True, slots=True)
class Row:
    """A reading from a source, before the outbox numbers it."""

    ts: int
    values: dict[str, float]
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Stored:
    seq: int
    ts: int
    #: ``{"ts":..,"seq":..,"values":{..}}``: a contract Sample, serialized once.
    body: str


@dataclass(frozen=True, slots=True)
class CycleResult:
    appended: int
    first_seq: int | None
    dropped: int
    acked: int


def sample_json(seq: int, row: Row) -> str:
    """The Sample as compact JSON, formatted by hand: this runs for every reading.

    Safe without an encoder because names and flags are contract ids ([A-Za-z0-9_.-],
    nothing to escape) and values are finite floats, whose repr is valid JSON.
    """
    values = ",".join([f'"{k}":{float(v)!r}' for k, v in row.values.items()])
    if row.flags:
        flags = ",".join([f'"{f}"' for f in row.flags])
        return f'{{"ts":{row.ts},"seq":{seq},"values":{{{values}}},"flags":[{flags}]}}'
    return f'{{"ts":{row.ts},"seq":{seq},"values":{{{values}}}}}'


class Outbox:
    def __init__(
        self,
        path: Path,
        *,
        device: str,
        site: str,
        max_pending: int = 1_000_000,
        retain_acked: int = 100_000,
    ) -> None:
        self.path = path
        self.max_pending = max_pending
        self.retain_acked = retain_acked
        path.parent.mkdir(parents=True, exist_ok=True)
        # Two collectors on one outbox would hand out the same seqs: refuse the second.
        self._lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise OutboxError(f"outbox {path} is in use by another process") from None
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # why: see the module docstring
            self._db.executescript(SCHEMA)
            self._check_identity(device, site)
            self.next_seq = int(self._meta("next_seq", "0"))
            self.dropped_total = int(self._meta("dropped_total", "0"))
            self.pending_count = self._scalar("SELECT COUNT(*) FROM readings WHERE acked = 0")
            self.acked_count = self._scalar("SELECT COUNT(*) FROM readings WHERE acked = 1")
        except BaseException:
            self._db.close()
            os.close(self._lock_fd)
            raise

    # ------------------------------------------------------------------ setup
    def _scalar(self, sql: str, *args: object) -> int:
        row = self._db.execute(sql, args).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _meta(self, key: str, default: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else default

    def _check_identity(self, device: str, site: str) -> None:
        owner = f"{site}/{device}"
        found = self._meta("owner", "")
        if not found:
            self._db.execute("INSERT INTO meta VALUES ('owner', ?)", (owner,))
        elif found != owner:
            raise OutboxError(
                f"outbox {self.path} belongs to {found}, not {owner}: seqs would clash"
            )

    # ------------------------------------------------------------------ writes
    def cycle(
        self,
        rows: Sequence[Row] = (),
        acked: Iterable[tuple[int, int]] = (),
        position: tuple[str, int] | None = None,
    ) -> CycleResult:
        """Append ``rows``, mark the ``(first, last)`` seq ranges acked and remember how
        far a replay got (``position``): one commit."""
        first = self.next_seq if rows else None
        dropped = acked_n = 0
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if rows:
                seq = self.next_seq
                if seq + len(rows) > MAX_SEQ:
                    raise OutboxError("sequence numbers exhausted")
                db.executemany(
                    "INSERT INTO readings (seq, ts, body) VALUES (?, ?, ?)",
                    [(seq + i, r.ts, sample_json(seq + i, r)) for i, r in enumerate(rows)],
                )
                new_next = seq + len(rows)
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (str(new_next),)
                )
            if position is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                    ("pos:" + position[0], str(position[1])),
                )
            for lo, hi in acked:
                acked_n += db.execute(
                    "UPDATE readings SET acked = 1 WHERE seq BETWEEN ? AND ? AND acked = 0",
                    (lo, hi),
                ).rowcount
            pending = self.pending_count + len(rows) - acked_n
            if pending > self.max_pending:
                dropped = db.execute(
                    "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings "
                    "WHERE acked = 0 ORDER BY seq LIMIT ?)",
                    (pending - self.max_pending,),
                ).rowcount
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('dropped_total', ?)",
                    (str(self.dropped_total + dropped),),
                )
            acked_total = self.acked_count + acked_n
            pruned = 0
            # Prune in chunks rather than on every ack: a DELETE per commit would cost more.
            if acked_total > self.retain_acked + max(1000, self.retain_acked // 10):
                pruned = db.execute(
                    "DELETE FROM readings WHERE seq IN (SELECT seq FROM readings "
                    "WHERE acked = 1 ORDER BY seq LIMIT ?)",
                    (acked_total - self.retain_acked,),
                ).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if rows:
            self.next_seq += len(rows)
        self.pending_count = pending - dropped
        self.acked_count = acked_total - pruned
        self.dropped_total += dropped
        return CycleResult(len(rows), first, dropped, acked_n)

    def append(self, rows: Sequence[Row]) -> CycleResult:
        return self.cycle(rows=rows)

    def ack(self, ranges: Iterable[tuple[int, int]]) -> CycleResult:
        return self.cycle(acked=ranges)

    # ------------------------------------------------------------------ reads
    def pending(self, after_seq: int = -1, limit: int = 1000) -> list[Stored]:
        """Unacknowledged readings with seq > ``after_seq``, oldest first."""
        cur = self._db.execute(
            "SELECT seq, ts, body FROM readings WHERE acked = 0 AND seq > ? "
            "ORDER BY seq LIMIT ?",
            (after_seq, limit),
        )
        return [Stored(int(s), int(t), str(b)) for s, t, b in cur]

    def range(self, from_seq: int, to_seq: int, limit: int = 100_000) -> list[Stored]:
        """Readings still held (acked or not) with from_seq <= seq <= to_seq."""
        cur = self._db.execute(
            "SELECT seq, ts, body FROM readings WHERE seq BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (from_seq, to_seq, limit),
        )
        return [Stored(int(s), int(t), str(b)) for s, t, b in cur]

    def positions(self) -> dict[str, int]:
        """Where each replayed recording stopped, by recording key."""
        cur = self._db.execute("SELECT key, value FROM meta WHERE key LIKE 'pos:%'")
        return {str(k)[4:]: int(v) for k, v in cur}

    def first_pending_seq(self) -> int | None:
        row = self._db.execute("SELECT MIN(seq) FROM readings WHERE acked = 0").fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def close(self) -> None:
        try:
            # Fold the WAL back so the file is self-contained when copied off the device.
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        finally:
            self._db.close()
            os.close(self._lock_fd)  # releases the lock
