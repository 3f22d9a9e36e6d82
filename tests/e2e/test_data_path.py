"""End to end: workshop CSV → collector → real Mosquitto → ingest → each storage backend.

Mid-stream the broker is SIGKILLed and restarted under a running ingest; later ingest is
SIGKILLed (the broker redelivers what it had not acknowledged: duplicates dropped) and,
while it is down, the broker is SIGKILLed again (it loses what it had not saved yet:
ingest sees the gap and asks the collector to RESEND); both are restarted.
In the end every (device, seq) 0..N-1 is stored exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from services.ingest.storage import open_storage
from tests.support.servers import Mosquitto, free_port
from tests.support.tsdb import InfluxDB1, VictoriaMetrics

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
CSV = REPO / "data" / "aiot-workshop" / "aiot_workshop_data.csv"
N = 5000
DEVICE, SITE = "workshop-1", "lab"


def scrape(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if not s.labels:
                out[s.name] = s.value
    return out


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        try:
            return scrape(self.metrics_port)
        except requests.RequestException:
            return {}


def spawn(name: str, module: str, args: list[str], workdir: Path, metrics_port: int) -> Proc:
    log = workdir / f"{name}.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGELOOP_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args, "--metrics-port", str(metrics_port)],
        cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=log.open("ab"),
        start_new_session=True,
    )
    return Proc(name, proc, log, metrics_port)


def terminate(p: Proc) -> int:
    if p.proc.poll() is None:
        p.proc.send_signal(signal.SIGTERM)
        try:
            p.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.proc.kill()
            p.proc.wait()
    return int(p.proc.returncode)


@dataclass
class Backend:
    url: str
    #: device -> every seq stored, read from the server itself (not from ingest's ledger).
    stored: Callable[[], dict[str, list[int]]]


@contextmanager
def backend(kind: str, tmp_path: Path) -> Iterator[Backend]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/readings.db"

        def stored_sqlite() -> dict[str, list[int]]:
            with open_storage(url) as s:
                f = s.query()
            return {d: [int(x) for x in f.seq[f.device == d]] for d in f.devices}

        yield Backend(url, stored_sqlite)
    elif kind == "influxdb1":
        server = InfluxDB1(tmp_path / "influxdb1")
        server.start()
        probe_state = tmp_path / "probe-state"  # the probe's own (unused) ledger

        def stored_influx1() -> dict[str, list[int]]:
            with open_storage(server.storage_url(), state_dir=probe_state) as s:
                f = s.query()
            return {d: [int(x) for x in f.seq[f.device == d]] for d in f.devices}

        try:
            yield Backend(server.storage_url(), stored_influx1)
        finally:
            server.stop()
    else:
        # The InfluxDB 2.x write API, served by VictoriaMetrics (no 2.x server runs here).
        vm = VictoriaMetrics(tmp_path / "victoria")
        vm.start()
        try:
            yield Backend(vm.storage_url(), vm.stored_seqs)
        finally:
            vm.stop()


def complete(stored: dict[str, list[int]]) -> bool:
    return sorted(set(stored.get(DEVICE, []))) == list(range(N))


@pytest.mark.parametrize("kind", ["sqlite", "influxdb1", "influxdb"])
def test_every_reading_is_stored_exactly_once_through_broker_and_ingest_kills(
    kind: str, tmp_path: Path
) -> None:
    # The fixture keeps Mosquitto root when started as root, so its persistence file is
    # written and sessions survive the SIGKILLs below.
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    procs: list[Proc] = []
    try:
        with backend(kind, tmp_path) as store:
            ingest_args = [
                "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                "--client-id", "ingest-e2e", "--storage", store.url,
                "--state-dir", str(tmp_path / "state"), "--gap-grace", "2",
                "--resend-interval", "4", "--batch-wait", "0.1",
            ]
            ingest = spawn("ingest-1", "services.ingest", ingest_args, tmp_path, free_port())
            procs.append(ingest)
            # Until its SUBSCRIBE is granted, readings would go nowhere.
            wait_for("ingest to subscribe", lambda: "ingest: subscribed" in ingest.text(), 30)
            collector = spawn("collector", "services.collector", [
                "--source", "replay", "--csv", str(CSV), "--limit", str(N),
                "--speed", "1500", "--timestamps", "recorded",
                "--device", DEVICE, "--site", SITE,
                "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                "--outbox", str(tmp_path / "outbox.db"), "--batch-max", "50",
            ], tmp_path, free_port())
            procs.append(collector)

            written = lambda p: p.metrics().get("edgeloop_ingest_readings_written_total", 0)  # noqa: E731
            wait_for("1000 readings stored", lambda: written(ingest) >= 1000, 60)
            # 1. The broker dies under a running ingest: both reconnect.
            broker.kill()
            time.sleep(0.5)
            broker.start()
            wait_for("2500 readings stored", lambda: written(ingest) >= 2500, 90)
            # 2. Ingest dies (SIGKILL): the broker keeps its session and redelivers what
            # was not acknowledged ...
            before_kill = ingest.metrics()
            ingest.proc.kill()
            ingest.proc.wait()
            # ... and queues what arrives meanwhile, until it is SIGKILLed too: readings
            # it took from the collector since its last autosave are lost; ingest finds
            # the gap and asks the collector to RESEND them.
            time.sleep(1.5)
            broker.kill()
            time.sleep(0.5)
            broker.start()
            ingest2 = spawn("ingest-2", "services.ingest", ingest_args, tmp_path, free_port())
            procs.append(ingest2)

            wait_for("every seq stored", lambda: complete(store.stored()), 150)
            col = collector.metrics()
            after = ingest2.metrics()
            assert terminate(collector) == 0, collector.text()[-3000:]
            assert terminate(ingest2) == 0, ingest2.text()[-3000:]

            stored = store.stored()
            seqs = stored[DEVICE]
            assert set(stored) == {DEVICE}
            # Exactly once: every seq 0..N-1, none twice.
            assert sorted(seqs) == list(range(N))
            if kind != "influxdb":
                with open_storage(store.url, state_dir=tmp_path / "check") as s:
                    frame = s.query(fields=["temp", "humidity", "pressure"])
                    assert s.count() == N
                # The values and times are the recording's: first row 1573194378,25.5,...
                assert frame.ts[0] == 1573194378 * 10**9
                assert frame.values["temp"][0] == 25.5
                assert frame.values["pressure"][0] == pytest.approx(1006.571777)

            def total(name: str) -> int:
                return int(before_kill.get(name, 0) + after.get(name, 0))

            published = int(col.get("edgeloop_collector_readings_published_total", 0))
            print(
                f"\n[{kind}] published={published}"
                f" stored={len(seqs)} distinct={len(set(seqs))}"
                f" written(scraped)={total('edgeloop_ingest_readings_written_total')}"
                f" duplicates_dropped={total('edgeloop_ingest_duplicates_total')}"
                f" resend_requests={total('edgeloop_ingest_resend_requests_total')}"
                f" resent_readings={int(col.get('edgeloop_collector_resent_readings_total', 0))}"
                f" broker_kills=2 ingest_kills=1"
            )
    finally:
        for p in procs:
            if p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait()
        broker.stop()
