"""Real time-series servers for tests: InfluxDB 1.x and VictoriaMetrics on free loopback ports.

Both are Debian packages. Configs are rendered into the test's temp dir and every
listener is bound to 127.0.0.1; the processes are stopped by PID.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.servers import LOOPBACK, ServerProcess, free_port, which_or_skip

INFLUXDB1_CONFIG = """\
reporting-disabled = true
# The RPC (backup/restore) service binds all interfaces unless told otherwise.
bind-address = "{host}:{rpc_port}"

[meta]
  dir = "{workdir}/meta"
  logging-enabled = false

[data]
  dir = "{workdir}/data"
  wal-dir = "{workdir}/wal"
  query-log-enabled = false
  trace-logging-enabled = false

[http]
  enabled = true
  bind-address = "{host}:{http_port}"
  auth-enabled = false
  log-enabled = false
  max-body-size = 0

# 1.6's Flux (ifql) listener binds all interfaces when enabled.
[ifql]
  enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false

[monitor]
  store-enabled = false
"""


def _wait_http(url: str, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).status_code < 500:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout_s} s")


class InfluxDB1(ServerProcess):
    """Debian's ``influxd`` (1.6.7): the v1 ``/write`` and InfluxQL ``/query`` API."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port, rpc_port = free_port(), free_port()
        self.config_path = workdir / "influxdb.conf"
        self.config_path.write_text(INFLUXDB1_CONFIG.format(
            host=LOOPBACK, rpc_port=rpc_port, http_port=port, workdir=workdir,
        ))
        binary = which_or_skip("influxd")
        super().__init__("influxd", [binary, "-config", str(self.config_path)], workdir, port)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def storage_url(self, database: str = "edgeloop") -> str:
        return f"influxdb1://{LOOPBACK}:{self.port}/{database}"

    def start(self, timeout_s: float = 30.0) -> None:
        super().start(timeout_s)
        _wait_http(f"{self.base_url}/ping")


class VictoriaMetrics(ServerProcess):
    """Debian's ``victoria-metrics``: it takes InfluxDB 2.x API writes (``/api/v2/write``).

    ``-dedup.minScrapeInterval=1ms`` keeps one sample per series and millisecond, the way
    InfluxDB overwrites a point with the same series and timestamp; without it a reading
    written twice (a crash between write and ack) would be stored twice here.
    """

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        binary = which_or_skip("victoria-metrics")
        super().__init__("victoria-metrics", [
            binary,
            f"-httpListenAddr={LOOPBACK}:{port}",
            f"-storageDataPath={workdir}/data",
            "-retentionPeriod=100y",
            "-dedup.minScrapeInterval=1ms",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ], workdir, port)

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def storage_url(self, org: str = "edgeloop", bucket: str = "edgeloop") -> str:
        return f"influxdb://{LOOPBACK}:{self.port}?org={org}&bucket={bucket}"

    def start(self, timeout_s: float = 30.0) -> None:
        super().start(timeout_s)
        _wait_http(f"{self.base_url}/health")

    def export(self, match: str) -> list[dict[str, object]]:
        """Every sample of the series ``match`` selects, flushed first (JSON lines)."""
        requests.get(f"{self.base_url}/internal/force_flush", timeout=30).raise_for_status()
        resp = requests.post(
            f"{self.base_url}/api/v1/export",
            data={"match[]": match, "start": "0", "reduce_mem_usage": "1"},
            timeout=60,
        )
        resp.raise_for_status()
        import json

        return [json.loads(line) for line in resp.text.splitlines() if line.strip()]

    def stored_seqs(self, measurement: str = "readings") -> dict[str, list[int]]:
        """device -> every stored seq value, sorted (InfluxDB fields become ``<m>_<field>``)."""
        out: dict[str, list[int]] = {}
        for series in self.export(f'{{__name__="{measurement}_seq"}}'):
            metric = series["metric"]
            assert isinstance(metric, dict)
            values = series["values"]
            assert isinstance(values, list)
            out.setdefault(str(metric["device"]), []).extend(int(v) for v in values)
        # With reduce_mem_usage a series may come back in several blocks, in any order.
        return {device: sorted(seqs) for device, seqs in out.items()}


@pytest.fixture
def influxdb1(tmp_path: Path) -> Iterator[InfluxDB1]:
    server = InfluxDB1(tmp_path / "influxdb1")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    server = VictoriaMetrics(tmp_path / "victoria")
    server.start()
    try:
        yield server
    finally:
        server.stop()
