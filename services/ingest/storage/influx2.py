"""``influxdb://host:port?org=O&bucket=B``: the InfluxDB 2.x/3.x HTTP API via influxdb-client.

Writes go through the client's synchronous WriteApi as line protocol. Reads are Flux
queries whose annotated CSV is parsed here (see :mod:`flux`), keeping nanosecond times;
InfluxDB 3.x answers no Flux, so ``?query=influxql`` reads through its v1-compatible
``/query`` API instead (database = bucket, same token).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence

import requests
from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.dialect import Dialect
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException

from services.ingest.storage import flux
from services.ingest.storage.base import RESERVED_FIELDS, StorageError, StorageUnavailable
from services.ingest.storage.frame import ReadingFrame, Row
from services.ingest.storage.influx_base import LedgeredInfluxStorage
from services.ingest.storage.influxql import InfluxQL
from services.ingest.storage.ledger import SeqLedger

_DIALECT = Dialect(  # type: ignore[no-untyped-call]
    header=True, delimiter=",", annotations=["datatype", "group", "default"],
    comment_prefix="#", date_time_format="RFC3339Nano",
)
#: Columns of a pivoted Flux table that are not reading values.
_META = frozenset({"", "result", "table", "_start", "_stop", "_time", "_measurement"})


def _classify(exc: Exception, what: str) -> StorageError:
    status = getattr(exc, "status", None)
    if isinstance(exc, ApiException) and status is not None and 400 <= status < 500 \
            and status != 429:
        body = str(getattr(exc, "body", "") or "")[:300]
        return StorageError(f"influxdb {what}: HTTP {status} {body}")
    return StorageUnavailable(f"influxdb {what}: {exc}")


class QueryLanguage(enum.StrEnum):
    FLUX = "flux"  # InfluxDB 2.x
    INFLUXQL = "influxql"  # InfluxDB 3.x (and 2.x with DBRP mappings)


class Influx2Storage(LedgeredInfluxStorage):
    scheme = "influxdb"

    def __init__(
        self,
        url: str,
        org: str,
        bucket: str,
        ledger: SeqLedger | Callable[[], SeqLedger],
        *,
        token: str | None = None,
        timeout_s: float = 30.0,
        query_language: QueryLanguage = QueryLanguage.FLUX,
    ) -> None:
        super().__init__(ledger)
        self.url, self.org, self.bucket = url, org, bucket
        self._client = InfluxDBClient(
            url=url, token=token or "", org=org, timeout=int(timeout_s * 1000)
        )
        self._write = self._client.write_api(write_options=SYNCHRONOUS)
        self._query = self._client.query_api()
        self._http: requests.Session | None = None
        self._ql: InfluxQL | None = None
        if query_language is QueryLanguage.INFLUXQL:
            self._http = requests.Session()
            if token:
                self._http.headers["Authorization"] = f"Token {token}"
            self._ql = InfluxQL(self._http, url, bucket, timeout_s=timeout_s)

    def _send(self, body: str) -> None:
        try:
            self._write.write(
                bucket=self.bucket, org=self.org, record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except Exception as exc:  # urllib3/ApiException/OSError: classified, never lost
            raise _classify(exc, "write") from exc

    def _csv(self, query: str) -> list[list[str]]:
        try:
            return list(self._query.query_csv(query, org=self.org, dialect=_DIALECT))
        except Exception as exc:
            raise _classify(exc, "query") from exc

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        devices: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> ReadingFrame:
        if self._ql is not None:
            return self._ql.query(start_ns, end_ns, devices, fields)
        if devices is not None and not devices:
            return ReadingFrame.empty(fields or ())
        q = flux.readings_query(self.bucket, start_ns, end_ns, devices, fields)
        rows: list[Row] = []
        try:
            for rec in flux.records(self._csv(q)):
                seq = rec.get("seq", "")
                if not seq:
                    continue
                values: dict[str, float] = {}
                for name, cell in rec.items():
                    if cell == "" or name in _META or name in RESERVED_FIELDS:
                        continue
                    if fields is not None and name not in fields:
                        continue
                    values[name] = float(cell)
                rows.append(
                    (rec.get("device", ""), flux.parse_time_ns(rec["_time"]), int(seq), values)
                )
        except flux.FluxError as exc:
            raise StorageError(f"influxdb query: {exc}") from exc
        return ReadingFrame.from_rows(rows, fields)

    def count(self, device: str | None = None) -> int:
        if self._ql is not None:
            return self._ql.count(device)
        total = 0
        try:
            for rec in flux.records(self._csv(flux.count_query(self.bucket, device))):
                value = rec.get("_value", "")
                if value and not math.isnan(float(value)):
                    total += int(value)
        except flux.FluxError as exc:
            raise StorageError(f"influxdb count: {exc}") from exc
        return total

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]
        if self._http is not None:
            self._http.close()
        super().close()
