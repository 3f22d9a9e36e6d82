"""A real Prometheus (Debian's) for tests: rendered config, free loopback port, TSDB in
the test's temp dir, stopped by PID.

Prometheus starts in under a second but its first scrape lands a few seconds later
(~5 s with the default start-up jitter), so :meth:`Prometheus.wait_for_scrape` waits
until every target reports ``up == 1`` before a test queries anything.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.servers import LOOPBACK, ServerProcess, free_port, which_or_skip

CONFIG = """\
global:
  scrape_interval: {interval}
  scrape_timeout: {timeout}
  evaluation_interval: {interval}
scrape_configs:
  - job_name: {job}
    metrics_path: {path}
    static_configs:
      - targets: [{targets}]
"""


class Prometheus(ServerProcess):
    def __init__(
        self,
        workdir: Path,
        targets: Sequence[str],
        *,
        job: str = "edgeloop",
        scrape_interval_s: float = 1.0,
        metrics_path: str = "/metrics",
        extra_scrape_configs: str = "",
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.job = job
        self.targets = list(targets)
        self.config_path = workdir / "prometheus.yml"
        interval = f"{int(scrape_interval_s * 1000)}ms"
        self.config_path.write_text(
            CONFIG.format(
                interval=interval, timeout=interval, job=job, path=metrics_path,
                targets=", ".join(f"'{t}'" for t in targets),
            )
            + extra_scrape_configs
        )
        binary = which_or_skip("prometheus")
        super().__init__(
            "prometheus",
            [
                binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address={LOOPBACK}:{port}",
                "--log.level=warn",
            ],
            workdir,
            port,
        )

    def start(self, timeout_s: float = 15.0) -> None:
        super().start(timeout_s)
        # The port opens before the TSDB is ready; until then every API call is a 503.
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:  # noqa: S310 - loopback only
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus not ready after {timeout_s} s: {self.tail()}")

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query; returns the ``result`` list (raises on an API error)."""
        qs = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{qs}", timeout=10) as resp:  # noqa: S310 - loopback only
            body = json.loads(resp.read())
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Poll until ``promql`` returns at least one series; raise TimeoutError otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            result = self.query(promql)
            if result:
                return result
            time.sleep(0.25)
        raise TimeoutError(f"no data for {promql!r} after {timeout_s} s: {self.tail(10)}")

    def wait_for_scrape(self, timeout_s: float = 30.0) -> None:
        """Until every target has been scraped successfully once."""
        want = len(self.targets)
        self.wait_for(f'count(up{{job="{self.job}"}} == 1) >= {want}', timeout_s)
