"""The InfluxDB backends against real servers: Debian's influxd 1.6.7 (``influxdb1:``) and
VictoriaMetrics for the InfluxDB 2.x write API (``influxdb:``; its Flux read path is
tested on recorded responses in tests/unit/test_storage_flux.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import requests

from services.contract.models import Reading
from services.ingest.storage import StorageError, StorageUnavailable, WriteResult, open_storage
from tests.support.servers import free_port
from tests.support.tsdb import InfluxDB1, VictoriaMetrics, influxdb1, victoria  # noqa: F401

pytestmark = pytest.mark.integration

T0 = 1_573_194_378_000_000_000


def r(device: str, seq: int, **values: float) -> Reading:
    return Reading(device=device, site="lab", ts=T0 + seq * 2_500_000_001, seq=seq,
                   values=values or {"temp": 20.0 + seq / 8, "humidity": 50.0},
                   flags=("anomaly",) if seq == 3 else ())


def test_influxdb1_round_trip_dedupe_and_ledger_restart(
    influxdb1: InfluxDB1, tmp_path: Path  # noqa: F811
) -> None:
    url = influxdb1.storage_url("edgeloop")
    with open_storage(url, state_dir=tmp_path) as s:
        assert s.write([r("ws-1", i) for i in range(100)]) == WriteResult(100, 0)
        assert s.write([r("ws-2", 0, aX=0.5), r("ws-2", 1, aX=-0.5)]) == WriteResult(2, 0)
        frame = s.query()
        assert len(frame) == 102 and frame.devices == ["ws-1", "ws-2"]
        ws1 = frame.for_device("ws-1")
        assert list(ws1.seq) == list(range(100))
        # Nanosecond timestamps come back exactly.
        assert list(ws1.ts[:2]) == [T0, T0 + 2_500_000_001]
        assert ws1.values["temp"][8] == 21.0 and math.isnan(ws1.values["aX"][0])
        sel = s.query(start_ns=T0 + 10 * 2_500_000_001, end_ns=T0 + 20 * 2_500_000_001,
                      devices=["ws-1"], fields=["temp"])
        assert list(sel.seq) == list(range(10, 20)) and list(sel.values) == ["temp"]
        assert s.count() == 102 and s.count("ws-2") == 2
    # A restarted ingest still knows what is stored: redeliveries are duplicates.
    with open_storage(url, state_dir=tmp_path) as s:
        assert s.seq_ranges() == {"ws-1": [(0, 99)], "ws-2": [(0, 1)]}
        assert s.write([r("ws-1", i) for i in range(95, 105)]) == WriteResult(5, 5)
        assert s.count("ws-1") == 105


def test_influxdb1_refused_and_unreachable_writes_are_told_apart(
    influxdb1: InfluxDB1, tmp_path: Path  # noqa: F811
) -> None:
    url = influxdb1.storage_url("edgeloop")
    with open_storage(url, state_dir=tmp_path) as s:
        # Someone else wrote "temp" as a string: InfluxDB refuses our float (field type
        # conflict). Retrying cannot help; it must not be reported as "unavailable".
        requests.post(f"{influxdb1.base_url}/write", params={"db": "edgeloop"},
                      data=f'readings,device=x,site=lab temp="hot" {T0}', timeout=10)
        with pytest.raises(StorageError) as refused:
            s.write([r("x", 1)])
        assert not isinstance(refused.value, StorageUnavailable)
        # Not recorded in the ledger: once fixed, the same reading is written, not "dup".
        assert s.seq_ranges().get("x") is None
    dead = f"influxdb1://127.0.0.1:{free_port()}/db?create=0"
    with open_storage(dead, state_dir=tmp_path) as s, pytest.raises(StorageUnavailable):
        s.write([r("x", 1)])


def test_influxdb_write_api_lands_in_victoriametrics(
    victoria: VictoriaMetrics, tmp_path: Path  # noqa: F811
) -> None:
    with open_storage(victoria.storage_url(), state_dir=tmp_path, token="unused") as s:
        assert s.write([r("ws-1", i) for i in range(50)]) == WriteResult(50, 0)
        assert s.write([r("ws-1", i) for i in range(40, 60)]) == WriteResult(10, 10)
    assert victoria.stored_seqs() == {"ws-1": list(range(60))}
    # One series, possibly exported in several blocks in any order: merge by time.
    blocks = victoria.export('{__name__="readings_temp"}')
    assert {json.dumps(b["metric"], sort_keys=True) for b in blocks} == {
        json.dumps({"__name__": "readings_temp", "device": "ws-1", "site": "lab"},
                   sort_keys=True)}
    points = sorted(
        (t, v) for b in blocks
        for t, v in zip(b["timestamps"], b["values"], strict=True)  # type: ignore[call-overload]
    )
    assert [v for _, v in points[:2]] == [20.0, 20.125]
    # Milliseconds: what VictoriaMetrics keeps of our nanosecond timestamps.
    assert points[1][0] == (T0 + 2_500_000_001) // 1_000_000
    dead = f"influxdb://127.0.0.1:{free_port()}?org=o&bucket=b"
    with open_storage(dead, state_dir=tmp_path) as s, pytest.raises(StorageUnavailable):
        s.write([r("ws-1", 1)])
