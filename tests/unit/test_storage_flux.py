"""The ``influxdb:`` read path against recorded InfluxDB 2.x HTTP responses.

No InfluxDB 2.x/3.x server can run on these machines (Debian ships 1.6; PyPI and npm
only clients), and VictoriaMetrics takes the 2.x writes but does not answer Flux. So a
small local HTTP server replays response bodies in the annotated-CSV format InfluxDB
2.x returns for ``/api/v2/query`` (the documented dialect, with RFC3339Nano times),
and records what the client sent so the Flux we build is checked too.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from services.ingest.storage import StorageError, StorageUnavailable, open_storage
from services.ingest.storage.flux import parse_time_ns, readings_query

# Two devices; the second table block has other columns, so the server starts a new
# annotated block after a blank line, as InfluxDB does when the schema changes.
PIVOT_CSV = (
    "#datatype,string,long,dateTime:RFC3339Nano,dateTime:RFC3339Nano,dateTime:RFC3339Nano,"
    "string,string,string,string,double,double,long,double\r\n"
    "#group,false,false,true,true,false,true,true,true,false,false,false,false,false\r\n"
    "#default,_result,,,,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_measurement,device,site,flags,humidity,pressure,seq,temp"
    "\r\n"
    ",,0,1970-01-01T00:00:00Z,2262-04-11T23:47:16.854775806Z,2019-11-08T06:26:18Z,readings,"
    "ws-1,lab,,50.299999,1006.571777,0,25.5\r\n"
    ",,0,1970-01-01T00:00:00Z,2262-04-11T23:47:16.854775806Z,2019-11-08T06:26:20.000000001Z,"
    "readings,ws-1,lab,anomaly,50.400002,1006.56665,1,25.5\r\n"
    "\r\n"
    "#datatype,string,long,dateTime:RFC3339Nano,dateTime:RFC3339Nano,dateTime:RFC3339Nano,"
    "string,string,string,double,long\r\n"
    "#group,false,false,true,true,false,true,true,true,false,false\r\n"
    "#default,_result,,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_measurement,device,site,aX,seq\r\n"
    ",,1,1970-01-01T00:00:00Z,2262-04-11T23:47:16.854775806Z,2019-11-08T06:26:19.5Z,readings,"
    "imu-7,lab,-0.25,12\r\n"
    "\r\n"
)
COUNT_CSV = (
    "#datatype,string,long,long\r\n#group,false,false,false\r\n#default,_result,,\r\n"
    ",result,table,_value\r\n,,0,3\r\n\r\n"
)
ERROR_CSV = (
    "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n"
    ",\"runtime error: bucket not found\",\r\n\r\n"
)


class Recorded:
    def __init__(self) -> None:
        self.status = 200
        self.body = PIVOT_CSV
        self.requests: list[tuple[str, dict[str, str], dict[str, object]]] = []


@pytest.fixture
def influx2(tmp_path: Path) -> Iterator[tuple[str, Recorded]]:
    recorded = Recorded()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            recorded.requests.append((self.path, dict(self.headers.items()), body))
            data = recorded.body.encode()
            self.send_response(recorded.status)
            ctype = "text/csv; charset=utf-8" if recorded.status == 200 else "application/json"
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"influxdb://127.0.0.1:{server.server_port}?org=acme&bucket=sensors", recorded
    finally:
        server.shutdown()
        server.server_close()


def test_query_parses_pivoted_tables_with_nanosecond_times(
    influx2: tuple[str, Recorded], tmp_path: Path
) -> None:
    url, recorded = influx2
    with open_storage(url, state_dir=tmp_path, token="s3cret") as s:
        frame = s.query(start_ns=5, end_ns=10**19 - 1, devices=["ws-1", "imu-7"])
    assert list(frame.device) == ["imu-7", "ws-1", "ws-1"]
    assert list(frame.seq) == [12, 0, 1]
    assert list(frame.ts) == [1573194379500000000, 1573194378000000000, 1573194380000000001]
    assert frame.fields == ["aX", "humidity", "pressure", "temp"]
    assert frame.values["temp"][1] == 25.5 and math.isnan(frame.values["temp"][0])
    assert frame.values["aX"][0] == -0.25
    path, headers, body = recorded.requests[-1]
    assert path.startswith("/api/v2/query") and "org=acme" in path
    assert headers["Authorization"] == "Token s3cret"
    flux = str(body["query"])
    assert 'from(bucket: "sensors")' in flux and "time(v: 5)" in flux
    assert 'r["device"] == "ws-1" or r["device"] == "imu-7"' in flux
    assert "pivot(" in flux
    assert body["dialect"]["dateTimeFormat"] == "RFC3339Nano"  # type: ignore[index]


def test_query_with_fields_keeps_only_those(influx2: tuple[str, Recorded], tmp_path: Path) -> None:
    url, recorded = influx2
    with open_storage(url, state_dir=tmp_path) as s:
        frame = s.query(fields=["temp"])
    assert list(frame.values) == ["temp"]
    assert 'r["_field"] == "seq" or r["_field"] == "temp"' in str(recorded.requests[-1][2]["query"])


def test_count_and_error_responses(influx2: tuple[str, Recorded], tmp_path: Path) -> None:
    url, recorded = influx2
    with open_storage(url, state_dir=tmp_path) as s:
        recorded.body = COUNT_CSV
        assert s.count() == 3
        assert 'r["_field"] == "seq"' in str(recorded.requests[-1][2]["query"])
        recorded.body = ERROR_CSV
        with pytest.raises(StorageError, match="bucket not found"):
            s.query()
        recorded.status, recorded.body = 400, '{"code":"invalid","message":"compilation failed"}'
        with pytest.raises(StorageError) as refused:
            s.query()
        assert not isinstance(refused.value, StorageUnavailable)
        recorded.status, recorded.body = 503, '{"code":"unavailable","message":"busy"}'
        with pytest.raises(StorageUnavailable):
            s.count()


def test_flux_helpers() -> None:
    assert parse_time_ns("1970-01-01T00:00:01.5Z") == 1_500_000_000
    assert parse_time_ns("2262-04-11T23:47:16.854775806Z") == 2**63 - 2
    with pytest.raises(ValueError):
        parse_time_ns("2019-11-08T06:26:18+01:00")
    q = readings_query('we"ird', None, None, None, None)
    assert 'from(bucket: "we\\"ird")' in q and "time(v: 0)" in q
