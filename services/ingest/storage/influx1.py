"""``influxdb1://host:port/db``: the InfluxDB 1.x ``/write`` and InfluxQL ``/query`` API.

Many Raspberry Pi installs still run 1.x (1.8); CI tests against Debian's 1.6.7.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import requests

from services.ingest.storage.frame import ReadingFrame
from services.ingest.storage.influx_base import LedgeredInfluxStorage
from services.ingest.storage.influxql import InfluxQL, ident
from services.ingest.storage.ledger import SeqLedger


class Influx1Storage(LedgeredInfluxStorage):
    scheme = "influxdb1"

    def __init__(
        self,
        base_url: str,
        database: str,
        ledger: SeqLedger | Callable[[], SeqLedger],
        *,
        username: str | None = None,
        password: str | None = None,
        retention_policy: str | None = None,
        create: bool = True,
        timeout_s: float = 30.0,
    ) -> None:
        super().__init__(ledger)
        self.database = database
        self.retention_policy = retention_policy
        self._http = requests.Session()
        if username:
            self._http.auth = (username, password or "")
        self._ql = InfluxQL(self._http, base_url, database, timeout_s=timeout_s)
        if create:
            self._ql.request("POST", "/query", params={"q": f"CREATE DATABASE {ident(database)}"})

    def _send(self, body: str) -> None:
        params = {"db": self.database, "precision": "ns"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        self._ql.request("POST", "/write", params=params, data=body.encode())

    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        devices: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> ReadingFrame:
        return self._ql.query(start_ns, end_ns, devices, fields)

    def count(self, device: str | None = None) -> int:
        return self._ql.count(device)

    def close(self) -> None:
        self._http.close()
        super().close()
