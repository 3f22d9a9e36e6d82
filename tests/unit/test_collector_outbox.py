"""The SQLite outbox: order, acks, size bound, RESEND tail, persistence through kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.collector.outbox import Outbox, OutboxError, Row
from services.contract.models import Sample

REPO = Path(__file__).resolve().parents[2]


def _rows(n: int, start: int = 0) -> list[Row]:
    return [Row(ts=1_000 + i, values={"temp": float(i)}) for i in range(start, start + n)]


def _open(path: Path, **kw: int) -> Outbox:
    return Outbox(path, device="d1", site="s1", **kw)


def test_seqs_are_assigned_in_order_and_bodies_are_contract_samples(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.append(_rows(3))
    ob.append([Row(ts=5, values={"t": 1.5}, flags=("anomaly",))])
    pending = ob.pending()
    assert [p.seq for p in pending] == [0, 1, 2, 3]
    sample = Sample.model_validate(json.loads(pending[3].body))
    assert (sample.seq, sample.ts, sample.values, sample.flags) == (3, 5, {"t": 1.5}, ("anomaly",))
    assert [p.seq for p in ob.pending(after_seq=1, limit=1)] == [2]
    ob.close()


def test_ack_moves_readings_out_of_pending_and_seqs_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = _open(path)
    ob.append(_rows(10))
    result = ob.ack([(0, 3), (5, 5)])
    assert result.acked == 5
    assert ob.pending_count == 5
    assert [p.seq for p in ob.pending()] == [4, 6, 7, 8, 9]
    assert ob.ack([(0, 3)]).acked == 0  # acking twice is harmless
    ob.close()
    again = _open(path)
    assert again.next_seq == 10 and again.pending_count == 5
    assert again.append(_rows(1)).first_seq == 10
    again.close()


def test_bound_drops_the_oldest_unacked_and_counts(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    ob = _open(path, max_pending=10)
    ob.append(_rows(8))
    ob.ack([(0, 1)])  # 2 acked, 6 pending
    result = ob.append(_rows(7, start=8))  # 13 pending > 10
    assert result.dropped == 3
    assert ob.pending_count == 10
    # The oldest *pending* ones went (2, 3, 4); acked 0 and 1 are not counted as drops.
    assert [p.seq for p in ob.pending()] == list(range(5, 15))
    assert ob.dropped_total == 3
    ob.close()
    again = _open(path, max_pending=10)
    assert again.dropped_total == 3
    again.close()


def test_acked_tail_is_kept_for_resend_and_pruned(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db", retain_acked=100)
    ob.append(_rows(2000))
    ob.ack([(0, 1999)])
    held = ob.range(0, 1999)
    # Pruning runs in chunks, so between 100 and 100 + 1000 acked readings remain,
    # always the newest ones, contiguous.
    assert 100 <= len(held) <= 1100
    assert held[-1].seq == 1999
    assert [h.seq for h in held] == list(range(2000 - len(held), 2000))
    assert [r.seq for r in ob.range(1995, 5000)] == [1995, 1996, 1997, 1998, 1999]
    assert ob.range(0, 10) == []


def test_range_returns_pending_and_acked(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.append(_rows(6))
    ob.ack([(0, 2)])
    assert [r.seq for r in ob.range(1, 4)] == [1, 2, 3, 4]


def test_outbox_of_another_device_is_refused(tmp_path: Path) -> None:
    _open(tmp_path / "o.db").close()  # closed: the lock is free, the owner is recorded
    with pytest.raises(OutboxError, match="s1/d1"):
        Outbox(tmp_path / "o.db", device="d2", site="s1")


def test_a_second_process_cannot_open_the_same_outbox(tmp_path: Path) -> None:
    first = _open(tmp_path / "o.db")
    with pytest.raises(OutboxError, match="in use"):
        _open(tmp_path / "o.db")
    first.close()
    _open(tmp_path / "o.db").close()


def test_replay_position_is_committed_with_rows(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.cycle(_rows(5), position=("csv:x", 5))
    ob.close()
    again = _open(tmp_path / "o.db")
    assert again.positions() == {"csv:x": 5}
    again.close()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    ob = _open(tmp_path / "o.db")
    ob.close()
    db = sqlite3.connect(tmp_path / "o.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from services.collector.outbox import Outbox, Row
    ob = Outbox(Path(sys.argv[1]), device="d1", site="s1")
    i = 0
    while True:
        r = ob.append([Row(ts=i, values={"v": float(i)}) for _ in range(3)])
        if i % 5 == 0:
            ob.ack([(r.first_seq, r.first_seq)])
        print(r.first_seq + 2, flush=True)
        i += 1
    """
)


def test_survives_kill_9_of_the_writing_process(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    last = -1
    for _ in range(300):
        line = proc.stdout.readline()
        assert line, "writer died"
        last = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    ob = _open(path)
    # Every seq the writer saw committed is still there, and numbering continues after it
    # (it may have committed one more batch before the signal landed).
    assert ob.next_seq in (last + 1, last + 4)
    held = [r.seq for r in ob.range(0, last)]
    assert held == list(range(last + 1))
    assert ob.pending_count + ob.acked_count == ob.next_seq
    assert ob.append(_rows(1)).first_seq == ob.next_seq - 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    db.close()
    ob.close()
