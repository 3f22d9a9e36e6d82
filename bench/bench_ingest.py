"""Ingest throughput: publisher → Mosquitto → ingest → each backend, against the floor.

For each backend (sqlite file, InfluxDB 1.6 ``influxdb1:``, VictoriaMetrics behind the
InfluxDB 2.x write API ``influxdb:``) the same run measures:

* ``floor_readings_per_s``: the raw write rate of that server for the same readings as
  pre-encoded line protocol POSTed in 10,000-line bodies (for sqlite: executemany into
  a fresh file), i.e. what no ingest can beat;
* ``readings_per_s``: readings stored per second of wall time from the first publish to
  the moment ingest reports them all written, with ingest as its own process reading
  ReadingBatch messages (500 samples each) from a real Mosquitto at QoS 1, manual ack;
* ``readings_per_cpu_s``: the same readings over the CPU seconds the ingest process used
  (one Python process: one core at most), so the number does not depend on what else
  ran on the machine.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from services.common.mqtt import MqttClient, MqttSettings
from services.contract import topics
from services.contract.decode import decode_telemetry
from services.contract.limits import MAX_FUTURE_SKEW_NS
from services.contract.models import Reading, ReadingBatch, Sample
from services.ingest.decode import decode
from services.ingest.storage import lineproto
from tests.support.servers import Mosquitto, free_port, wait_for_port
from tests.support.tsdb import InfluxDB1, VictoriaMetrics

REPO = Path(__file__).resolve().parents[1]
CSV = REPO / "data" / "aiot-workshop" / "aiot_workshop_data.csv"
SAMPLES_PER_MESSAGE = 500
DEVICES = 4


def _readings(n: int, base_ns: int) -> list[Reading]:
    per = n // DEVICES
    return [
        Reading(device=f"bench-{d}", site="bench", ts=base_ns + i * 1_000_000, seq=i,
                values={"temp": 20.0 + (i % 97) / 8, "humidity": 40.0 + (i % 13),
                        "pressure": 1000.0 + (i % 31) / 4})
        for d in range(DEVICES) for i in range(per)
    ]


def _payloads(readings: list[Reading]) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    by_device: dict[str, list[Reading]] = {}
    for r in readings:
        by_device.setdefault(r.device, []).append(r)
    for device, rs in by_device.items():
        for i in range(0, len(rs), SAMPLES_PER_MESSAGE):
            chunk = rs[i : i + SAMPLES_PER_MESSAGE]
            batch = ReadingBatch(device=device, site="bench", samples=[
                Sample(ts=r.ts, seq=r.seq, values=r.values) for r in chunk])
            out.append((topics.telemetry("bench", device), batch.to_json()))
    # Interleave devices like a fleet would.
    per = len(out) // DEVICES
    return [out[d * per + k] for k in range(per) for d in range(DEVICES)]


def _scrape(port: int) -> dict[str, float]:
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples
            if not s.labels}


def _floor_http(url: str, params: dict[str, str], lines: list[str]) -> float:
    http = requests.Session()
    t0 = time.perf_counter()
    for body in lineproto.chunks(lines, 10_000):
        http.post(url, params=params, data=body.encode(), timeout=60).raise_for_status()
    return len(lines) / (time.perf_counter() - t0)


def _floor_sqlite(path: Path, readings: list[Reading]) -> float:
    import json

    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE r (device TEXT, seq INTEGER, site TEXT, ts INTEGER, vals TEXT,"
               " flags TEXT, UNIQUE (device, seq))")
    rows = [(r.device, r.seq, r.site, r.ts, json.dumps(r.values), "") for r in readings]
    t0 = time.perf_counter()
    for i in range(0, len(rows), 10_000):
        db.execute("BEGIN")
        db.executemany("INSERT OR IGNORE INTO r VALUES (?, ?, ?, ?, ?, ?)", rows[i : i + 10_000])
        db.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - t0)
    db.close()
    return rate


def _publish_payloads(broker: Mosquitto, payloads: list[tuple[str, bytes]], tag: str) -> None:
    """Pre-encoded ReadingBatch messages, QoS 1, as fast as the broker takes them."""
    pub = MqttClient(MqttSettings(host=broker.host, port=broker.port, max_inflight=1000),
                     f"bench-pub-{tag}", persistent=False)
    pub.start()
    try:
        if not pub.wait_connected(10):
            raise RuntimeError("publisher could not connect")
        infos = [pub.publish(topic, payload, qos=1) for topic, payload in payloads]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        pub.stop()


def _replay_collector(broker: Mosquitto, work: Path, limit: int) -> subprocess.Popen[bytes]:
    """The real collector replaying the workshop CSV as fast as it can."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGELOOP_LOG_LEVEL": "WARNING"}
    return subprocess.Popen(
        [sys.executable, "-m", "services.collector", "--source", "replay", "--csv", str(CSV),
         "--limit", str(limit), "--speed", "0", "--device", "bench-collector",
         "--site", "bench", "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
         "--outbox", str(work / "outbox.db"), "--batch-max", str(SAMPLES_PER_MESSAGE),
         "--metrics-port", "0", "--exit-when-done"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=(work / "collector.log").open("wb"),
    )


def _pipeline(broker: Mosquitto, url: str, work: Path, n: int,
              publish: Callable[[], subprocess.Popen[bytes] | None]) -> dict[str, Any]:
    """Start ingest, run ``publish``, and time until ingest has written ``n`` readings.

    ``wall_s`` runs from the first publish (or, for a collector process, from the first
    message ingest receives, so the collector's interpreter start-up is not counted).
    """
    port = free_port()
    log = work / "ingest.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "EDGELOOP_LOG_LEVEL": "INFO"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.ingest", "--mqtt-host", broker.host,
         "--mqtt-port", str(broker.port), "--client-id", f"bench-{port}", "--storage", url,
         # A group per run: an earlier run's persistent session would still take its
         # share of a common group's messages (queued for it while it is away).
         "--group", f"bench-{port}",
         "--state-dir", str(work / "state"), "--metrics-port", str(port),
         "--batch-max", "20000", "--batch-wait", "0.2"],
        cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )
    try:
        wait_for_port(port, timeout_s=30)
        deadline = time.monotonic() + 30
        while b"ingest: subscribed" not in log.read_bytes():  # else messages go nowhere
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"ingest did not subscribe: {log.read_text()[-1000:]}")
            time.sleep(0.05)
        cpu0 = _cpu_s(proc.pid)
        t0 = time.perf_counter()
        source = publish()
        published_s = time.perf_counter() - t0
        first: float | None = None if source is not None else t0
        deadline = time.monotonic() + 300
        m: dict[str, float] = {}
        while time.monotonic() < deadline:
            m = _scrape(port)
            if first is None and m.get("edgeloop_ingest_messages_total", 0) > 0:
                first = time.perf_counter()
            if m.get("edgeloop_ingest_readings_written_total", 0) >= n:
                break
            time.sleep(0.05)
        else:
            stored = m.get("edgeloop_ingest_readings_written_total")
            raise RuntimeError(f"ingest stored only {stored} of {n}: {log.read_text()[-1000:]}")
        wall = time.perf_counter() - (first or t0)
        if source is not None and source.wait(timeout=60) != 0:
            raise RuntimeError("collector failed: " + (work / "collector.log")
                               .read_text()[-1000:])
        cpu = _cpu_s(proc.pid) - cpu0
        return {
            "readings": n,
            "messages": int(m.get("edgeloop_ingest_messages_total", 0)),
            "publish_s": round(published_s, 3) if source is None else None,
            "wall_s": round(wall, 3),
            "readings_per_s": round(n / wall),
            "ingest_cpu_s": round(cpu, 2),
            "readings_per_cpu_s": round(n / cpu) if cpu > 0 else None,
            "batches": int(m.get("edgeloop_ingest_batch_readings_count", 0)),
            "duplicates": int(m.get("edgeloop_ingest_duplicates_total", 0)),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _both(broker: Mosquitto, url: str, work: Path, payloads: list[tuple[str, bytes]], n: int,
          rows: int, floor: float) -> dict[str, Any]:
    """Publisher-driven (ingest's own rate) and collector-driven (the whole path) runs."""
    (work / "pub").mkdir(parents=True)
    (work / "col").mkdir(parents=True)
    def publisher() -> None:
        _publish_payloads(broker, payloads, work.name)

    res = _pipeline(broker, url, work / "pub", n, publisher)
    col_url = (url.replace("ingest.db", "collector.db") if url.startswith("sqlite")
               else url.replace("bench", "benchcol"))
    col = _pipeline(broker, col_url, work / "col", rows,
                    lambda: _replay_collector(broker, work / "col", rows))
    return {
        "floor_readings_per_s": round(floor), **res,
        "from_collector": {k: col[k] for k in ("readings", "messages", "wall_s",
                                               "readings_per_s", "readings_per_cpu_s")},
    }


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (scraping costs CPU itself)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ingest_decode(topic: str, payload: bytes, now_ns: int) -> list[Reading]:
    return decode(topic, payload, now_ns=now_ns, known_devices=None,
                  max_future_skew_ns=MAX_FUTURE_SKEW_NS)


def _decode_rate(payloads: list[tuple[str, bytes]],
                 fn: Callable[..., list[Reading]]) -> float:
    now = time.time_ns()
    t0 = time.perf_counter()
    n = sum(len(fn(t, p, now_ns=now)) for t, p in payloads)
    return n / (time.perf_counter() - t0)


def run(quick: bool = False) -> dict[str, Any]:
    n = 20_000 if quick else 200_000
    rows = 5_000 if quick else 17_213  # the whole workshop recording
    base_ns = time.time_ns() - n * 1_000_000 - 3_600 * 10**9
    readings = _readings(n, base_ns)
    payloads = _payloads(readings)
    lines = lineproto.encode(readings)
    results: dict[str, Any] = {
        "readings": n, "samples_per_message": SAMPLES_PER_MESSAGE, "devices": DEVICES,
        "contract_decode_readings_per_s": round(_decode_rate(payloads, decode_telemetry)),
        "ingest_decode_readings_per_s": round(_decode_rate(payloads, _ingest_decode)),
        "encode_line_protocol_per_s": round(n / _timed(lambda: lineproto.encode(readings))),
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        root = Path(tmp)
        extra = "user root\n" if os.geteuid() == 0 else ""
        broker = Mosquitto(root / "mosquitto", extra_config=extra)
        broker.start()
        try:
            work = root / "sqlite"
            work.mkdir()
            floor = _floor_sqlite(work / "floor.db", readings)
            results["backends"]["sqlite"] = _both(
                broker, f"sqlite:///{work}/ingest.db", work, payloads, n, rows, floor)

            influx = InfluxDB1(root / "influxdb1")
            influx.start()
            try:
                requests.post(f"{influx.base_url}/query", params={"q": "CREATE DATABASE floor"},
                              timeout=10).raise_for_status()
                floor = _floor_http(f"{influx.base_url}/write",
                                    {"db": "floor", "precision": "ns"}, lines)
                work = root / "influx1"
                work.mkdir()
                results["backends"]["influxdb1 (InfluxDB 1.6.7)"] = _both(
                    broker, influx.storage_url("bench"), work, payloads, n, rows, floor)
            finally:
                influx.stop()

            vm = VictoriaMetrics(root / "victoria")
            vm.start()
            try:
                floor = _floor_http(f"{vm.base_url}/api/v2/write",
                                    {"org": "floor", "bucket": "floor", "precision": "ns"},
                                    lines)
                work = root / "vm"
                work.mkdir()
                results["backends"]["influxdb (2.x write API on VictoriaMetrics)"] = _both(
                    broker, vm.storage_url("bench", "bench"), work, payloads, n, rows, floor)
            finally:
                vm.stop()
        finally:
            broker.stop()
    return results


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
