"""Seq range sets, the InfluxDB backends' ledger, and line protocol encoding."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.contract.models import Reading
from services.ingest.storage.ledger import SeqLedger
from services.ingest.storage.lineproto import chunks, encode
from services.ingest.storage.seqranges import RangeSet, runs


def test_rangeset_merges_touching_and_overlapping_ranges() -> None:
    s = RangeSet()
    s.add_many([5, 1, 2, 3, 9])
    assert s.ranges() == [(1, 3), (5, 5), (9, 9)]
    assert s.holes() == [(4, 4), (6, 8)]
    s.add(4)
    s.add_range(6, 8)
    assert s.ranges() == [(1, 9)] and s.holes() == []
    assert 1 in s and 9 in s and 0 not in s and 10 not in s
    assert len(s) == 9 and (s.first, s.last) == (1, 9)
    s.add_range(20, 30)
    s.add_range(0, 25)
    assert s.ranges() == [(0, 30)]
    with pytest.raises(ValueError):
        s.add_range(3, 2)


def test_runs() -> None:
    assert list(runs([])) == []
    assert list(runs([1, 2, 3, 7, 8, 10])) == [(1, 3), (7, 8), (10, 10)]


def rd(seq: int, device: str = "d") -> Reading:
    return Reading(device=device, site="s", ts=seq, seq=seq, values={"v": 1.0})


def test_ledger_splits_fresh_from_duplicates_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = SeqLedger(path)
    fresh, dups = ledger.split([rd(0), rd(1), rd(1), rd(2)])
    assert [r.seq for r in fresh] == [0, 1, 2] and dups == 1
    # Not committed (the backend write failed): still fresh next time.
    fresh, dups = ledger.split([rd(0)])
    assert len(fresh) == 1 and dups == 0
    ledger.commit([rd(0), rd(1), rd(2), rd(7, "e")])
    ledger.close()
    again = SeqLedger(path)
    assert again.ranges() == {"d": [(0, 2)], "e": [(7, 7)]}
    fresh, dups = again.split([rd(2), rd(3)])
    assert [r.seq for r in fresh] == [3] and dups == 1
    assert again.count() == 4 and again.count("d") == 3
    again.close()


def test_line_protocol_types_tags_and_escaping() -> None:
    reading = Reading(device="dev-1", site="lab.2", ts=1573194378000000001, seq=42,
                      values={"temp": 25.5, "a b,c=d": 1e-05, "n": 3.0}, flags=("anomaly",))
    (line,) = encode([reading])
    assert line == ('readings,device=dev-1,site=lab.2 seq=42i,flags="anomaly",temp=25.5,'
                    r"a\ b\,c\=d=1e-05,n=3.0 1573194378000000001")
    plain = encode([Reading(device="d", site="s", ts=5, seq=0, values={"t": -1.25})])
    assert plain == ["readings,device=d,site=s seq=0i,t=-1.25 5"]
    assert list(chunks(["a", "b", "c"], 2)) == ["a\nb", "c"]
