"""``python -m services.inference`` as a process: serves a signed --bundle, and SIGTERM
answers every request it accepted before it exits 0."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.integration.test_inference_mqtt import V5Client
from tests.support import tiny_models as tm
from tests.support.servers import Mosquitto, free_port, wait_for_port

pytestmark = pytest.mark.integration


def _serve(mosquitto: Mosquitto, tmp_path: Path, keys_pub: Path, bundle: Path,
           http: int) -> subprocess.Popen[bytes]:
    log = (tmp_path / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.inference", "--mqtt-port", str(mosquitto.port),
         "--http-port", str(http), "--client-id", "serve-cli", "--public-key", str(keys_pub),
         "--model-dir", str(tmp_path / "models"), "--bundle", str(bundle)],
        cwd=tm.REPO, stdout=log, stderr=subprocess.STDOUT)
    wait_for_port(http, timeout_s=60)
    deadline = time.monotonic() + 20
    while requests.get(f"http://127.0.0.1:{http}/readyz", timeout=5).status_code != 200:
        assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
        time.sleep(0.1)
    return proc


def test_sigterm_loses_no_request_and_a_restart_answers_the_rest(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    """SIGTERM mid-load: the process answers what it took, exits 0; requests the broker
    still held wait in the persistent session and the next start answers them."""
    tiny = tm.build()
    keys = tm.keypair(tmp_path / "keys")
    b = tm.signed_bundle(tiny, tm.FORECAST, 4, keys, tmp_path / "bundles")
    tm.write_announcement(b)
    http = free_port()
    proc = _serve(mosquitto, tmp_path, keys.public_path, b.path, http)
    client = V5Client(mosquitto)
    try:
        good = b.card.test_vectors[0].input
        n = 300
        for i in range(n):
            client.request(tm.FORECAST, {"inputs": [good] * 64, "batch": True},
                           corr=str(i).encode())
            if i == 150:
                os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0
        text = (tmp_path / "serve.log").read_text()
        assert "SIGTERM received" in text and "inference service stopped" in text
        proc = _serve(mosquitto, tmp_path, keys.public_path, b.path, http)
        outcomes: dict[str, int] = {}
        seen: set[bytes | None] = set()
        deadline = time.monotonic() + 60
        while len(seen) < n and time.monotonic() < deadline:
            try:
                corr, reply = client.get(timeout=2)
            except queue.Empty:
                continue
            seen.add(corr)
            key = str(reply.get("code", "ok"))
            outcomes[key] = outcomes.get(key, 0) + 1
        assert seen == {str(i).encode() for i in range(n)}, (outcomes, len(seen))
        # What the first process did not answer stayed at the broker, unacknowledged,
        # and the second answered it: every request succeeded, none was refused.
        assert outcomes == {"ok": sum(outcomes.values())}, outcomes
    finally:
        client.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
