"""The demo's broker: a real Mosquitto when it is installed, else amqtt in-process.

amqtt needs no install beyond pip and no root, which is what a first run on a laptop
wants; it speaks MQTT 3.1.1 only, so every edgeloop client must also work over 3.1.1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from services.common.mqtt import Protocol
from services.common.net import free_port, wait_for_port

log = logging.getLogger(__name__)

MOSQUITTO_CONF = """\
allow_anonymous true
set_tcp_nodelay true
max_queued_messages 100000
persistence true
persistence_location {workdir}/
autosave_interval 5
log_dest file {workdir}/mosquitto.log
listener {port} 127.0.0.1
"""


def find_mosquitto() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


@dataclass
class DemoBroker:
    kind: str  # "mosquitto" or "amqtt"
    port: int
    protocol: Protocol
    _proc: subprocess.Popen[bytes] | None = None
    _thread: threading.Thread | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)


def start_broker(workdir: Path, prefer_embedded: bool = False) -> DemoBroker:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    binary = None if prefer_embedded else find_mosquitto()
    if binary is not None:
        conf = workdir / "mosquitto.conf"
        # As root Mosquitto would drop to the `mosquitto` user and lose write access to
        # its persistence dir; keep the invoking user.
        run_as = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(run_as + MOSQUITTO_CONF.format(workdir=workdir, port=port))
        out = (workdir / "mosquitto.out").open("ab")
        proc = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        wait_for_port(port)
        return DemoBroker("mosquitto", port, Protocol.V5, _proc=proc)
    return _start_amqtt(port)


def _start_amqtt(port: int) -> DemoBroker:
    from amqtt.broker import Broker

    ready = threading.Event()
    errors: list[BaseException] = []
    broker = DemoBroker("amqtt", port, Protocol.V311)

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        broker._loop = loop
        stop = asyncio.Event()
        broker._stop = stop
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }

        async def main() -> None:
            b = Broker(config)
            try:
                await b.start()
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            await stop.wait()
            await b.shutdown()

        loop.run_until_complete(main())
        loop.close()

    broker._thread = threading.Thread(target=run, name="amqtt", daemon=True)
    broker._thread.start()
    ready.wait(15)
    if errors:
        raise RuntimeError(f"embedded broker failed to start: {errors[0]!r}")
    wait_for_port(port)
    for noisy in ("amqtt", "amqtt.broker", "amqtt.mqtt.protocol"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    return broker
