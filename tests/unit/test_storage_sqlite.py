"""The embedded sqlite: backend and open_storage's URL handling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from services.contract.models import Reading
from services.ingest.storage import ReadingFrame, WriteResult, open_storage

T0 = 1_700_000_000_000_000_000


def r(device: str, seq: int, **values: float) -> Reading:
    return Reading(device=device, site="lab", ts=T0 + seq * 10**9, seq=seq,
                   values=values or {"temp": float(seq)})


def test_each_device_seq_is_stored_once_and_duplicates_are_counted(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path}/a.db") as s:
        assert s.write([r("d1", i) for i in range(10)]) == WriteResult(10, 0)
        # A redelivery, a resend overlapping new data, and a duplicate inside one batch.
        assert s.write([r("d1", i) for i in range(5, 12)]) == WriteResult(2, 5)
        assert s.write([r("d2", 0), r("d2", 0)]) == WriteResult(1, 1)
        assert s.count() == 13
        assert s.count("d1") == 12
        assert s.count("nope") == 0


def test_query_filters_sorts_and_fills_missing_fields_with_nan(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path}/a.db") as s:
        s.write([r("b", 2, temp=2.0), r("a", 1, temp=1.0, hum=40.0), r("b", 1, hum=41.0),
                 r("a", 0, temp=0.5)])
        f = s.query()
        assert list(f.device) == ["a", "a", "b", "b"]
        assert list(f.seq) == [0, 1, 1, 2]
        assert f.fields == ["hum", "temp"]
        assert f.values["temp"][1] == 1.0 and math.isnan(f.values["temp"][2])
        assert f.ts.dtype == np.int64 and f.values["hum"].dtype == np.float64
        only = s.query(start_ns=T0 + 10**9, end_ns=T0 + 2 * 10**9, devices=["b"],
                       fields=["hum"])
        assert list(only.seq) == [1] and list(only.values) == ["hum"]
        assert only.values["hum"][0] == 41.0
        assert len(s.query(devices=[])) == 0
        assert len(f.for_device("b")) == 2


def test_seq_ranges_and_data_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/a.db"
    with open_storage(url) as s:
        s.write([r("d", i) for i in [0, 1, 2, 5, 6, 9]])
    with open_storage(url) as s:
        assert s.seq_ranges() == {"d": [(0, 2), (5, 6), (9, 9)]}
        assert s.write([r("d", 2), r("d", 3)]) == WriteResult(1, 1)


def test_flags_are_kept(tmp_path: Path) -> None:
    with open_storage(f"sqlite:///{tmp_path}/a.db") as s:
        s.write([Reading(device="d", site="s", ts=T0, seq=0, values={"t": 1.0},
                         flags=("anomaly",))])
        assert len(s.query()) == 1


def test_empty_frame() -> None:
    f = ReadingFrame.empty(["temp"])
    assert len(f) == 0 and f.fields == ["temp"]


@pytest.mark.parametrize("url", [
    "sqlite://", "postgres://x/y", "influxdb1://h:1", "influxdb://h:1?org=o",
    "influxdb1:///db",
])
def test_bad_urls_say_what_is_wrong(url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"sqlite|scheme|dbname|org|host"):
        open_storage(url, state_dir=tmp_path)


def test_unknown_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="secrets"):
        open_storage(f"sqlite:///{tmp_path}/a.db", api_key="x")
