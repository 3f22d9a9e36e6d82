"""The edge stack in real containers, built here with no registry in reach.

The test run starts its own Docker engine (Debian's dockerd, ``--bridge=none
--iptables=false``, data root in a temp dir), imports a debootstrapped base image
(cached tarball, ``scripts/build_base_image.sh``), builds the broker, collector, ingest,
registry and inference images from the host-built wheelhouse (``pip --no-index``,
``network_mode="none"``), and runs them with host networking on free loopback ports,
with read-only root filesystems, no capabilities and their secrets mounted as files:

* a board on a pty pair (socat) writes workshop lines into the collector container
  through a mapped serial device (one device-cgroup rule, group dialout, no privileges);
* readings travel through the production-configured broker (passwords, ACL) into
  ingest's SQLite store: counted inside the ingest container;
* a model published to the registry container is announced, fetched, verified and
  loaded by the inference container, which answers HTTP and MQTT v5 requests;
* every container reports healthy by its own HEALTHCHECK.

The trainer image (TensorFlow, ~1.5 GB of wheels) is not built here to keep CI time in
check; ``make images`` builds it. The engine is stopped by PID at the end.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as paho
import pytest
import requests
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from services.broker.cli import main as broker_cli
from services.contract import topics
from services.modelkit.bundle import write_bundle
from services.modelkit.signing import generate_keypair
from services.trainer.registry.client import RegistryClient
from tests.support import tiny_models as tm
from tests.support.docker_engine import (
    BASE_IMAGE,
    REPO,
    DockerEngine,
    build_context,
    wait_healthy,
)
from tests.support.servers import LOOPBACK, free_port, wait_for_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.docker]

CACHE = Path(os.environ.get("EDGELOOP_CACHE", str(Path.home() / ".cache" / "edgeloop")))
BROKER_UID, APP_UID, DIALOUT_GID = 1883, 10001, 20
SITE, DEVICE = "lab", "pi-1"
MODEL = tm.FORECAST


def _need(binary: str) -> None:
    if shutil.which(binary) or Path(f"/usr/sbin/{binary}").exists():
        return
    if os.environ.get("CI"):
        raise RuntimeError(f"{binary} is required in CI (scripts/bootstrap.sh installs it)")
    pytest.skip(f"{binary} not installed")


def _run_script(argv: list[str], timeout_s: float) -> str:
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout_s,
                          check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""


# ---------------------------------------------------------------------------- engine, images
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    if os.geteuid() != 0:
        pytest.skip("starting dockerd needs root")
    for binary in ("dockerd", "containerd", "runc", "socat", "mosquitto_passwd", "openssl"):
        _need(binary)
    eng = DockerEngine(tmp_path_factory.mktemp("docker"))
    eng.start()
    print(f"\ndockerd pid {eng.pid}, socket {eng.socket}")
    try:
        yield eng
    finally:
        pid = eng.pid
        eng.stop()
        print(f"dockerd pid {pid} stopped")


@dataclass
class Images:
    ids: dict[str, str]
    seconds: dict[str, float]
    sizes_mb: dict[str, float]


IMAGES: dict[str, tuple[str, str | None]] = {
    # name: (Dockerfile, target)
    "broker": ("services/broker/Dockerfile", None),
    "collector": ("services/collector/Dockerfile", None),
    "ingest": ("services/ingest/Dockerfile", None),
    "registry": ("services/trainer/Dockerfile", "registry"),
    "inference": ("services/inference/Dockerfile", None),
}


@pytest.fixture(scope="module")
def images(engine: DockerEngine) -> Images:
    started = time.monotonic()
    tarball = Path(_run_script(["scripts/build_base_image.sh"], timeout_s=900))
    base_s = time.monotonic() - started
    engine.import_base(tarball)
    started = time.monotonic()
    _run_script(["scripts/wheelhouse.sh", "edge"], timeout_s=900)
    wheel_s = time.monotonic() - started
    context = build_context([
        (REPO / "services", "services"),
        (REPO / "deploy" / "docker", "deploy/docker"),
        (REPO / "wheelhouse" / "edge", "wheelhouse/edge"),
    ])
    args = {"BASE": BASE_IMAGE, "PYTHON_BASE": BASE_IMAGE}
    out = Images({}, {}, {})
    for name, (dockerfile, target) in IMAGES.items():
        image, secs = engine.build(context, dockerfile, f"edgeloop/{name}:test",
                                   buildargs=args, target=target)
        out.ids[name] = image.id
        out.seconds[name] = secs
        out.sizes_mb[name] = image.attrs["Size"] / 1e6
    print(f"\nbase tarball {base_s:.0f} s (cached after the first run), wheelhouse {wheel_s:.0f} s,"
          f" context {len(context) / 1e6:.0f} MB")
    for name in IMAGES:
        print(f"image {name:<10} {out.sizes_mb[name]:6.0f} MB  built in {out.seconds[name]:5.1f} s")
    return out


# ---------------------------------------------------------------------------- the stack
def _secret(directory: Path, name: str, content: str | bytes, uid: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    os.chown(path, uid, uid)
    os.chmod(path, 0o400)
    return path


class Board:
    """A board on a pty pair: the collector container gets one end as /dev/ttyACM0."""

    def __init__(self, workdir: Path) -> None:
        self.link_dev, self.link_board = workdir / "ttyACM0", workdir / "board"
        self.proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={self.link_dev}",
             f"pty,raw,echo=0,link={self.link_board}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 10
        while not (self.link_dev.exists() and self.link_board.exists()):
            if time.monotonic() > deadline:
                raise RuntimeError("socat did not create the pty pair")
            time.sleep(0.02)
        # A pty slave opens only through its own devpts instance (a node made with
        # --device gives EIO), so the test bind-mounts the pty itself and allows exactly
        # that character device in the container's device cgroup: the same grant
        # `--device /dev/ttyACM0` gives a real USB serial device.
        self.device = os.path.realpath(self.link_dev)
        rdev = os.stat(self.device).st_rdev
        self.cgroup_rule = f"c {os.major(rdev)}:{os.minor(rdev)} rwm"
        # What a USB serial device looks like on a Pi: root:dialout 0660.
        os.chown(self.device, 0, DIALOUT_GID)
        os.chmod(self.device, 0o660)
        self.fd = os.open(self.link_board, os.O_RDWR | os.O_NOCTTY)
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _feed(self) -> None:
        # The Arm AIoT workshop board's format, 50 lines/s, temperature near 22 C.
        while not self._stop.is_set():
            i = self.sent
            line = (f"temp:{22.0 + 0.5 * ((i % 40) / 40):.4f},humidity:{45 + i % 7:.4f},"
                    f"pressure:{993.0 + (i % 11) / 10:.4f}\n")
            try:
                os.write(self.fd, line.encode())
            except OSError:
                return
            self.sent += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        os.close(self.fd)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)


@dataclass
class Stack:
    engine: DockerEngine
    workdir: Path
    images: Images
    mqtt_port: int = field(default_factory=free_port)
    mqtt_tls_port: int = field(default_factory=free_port)
    registry_port: int = field(default_factory=free_port)
    inference_port: int = field(default_factory=free_port)
    ingest_metrics: int = field(default_factory=free_port)
    collector_metrics: int = field(default_factory=free_port)
    passwords: dict[str, str] = field(default_factory=dict)
    containers: dict[str, Any] = field(default_factory=dict)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def run(self, name: str, *, env: dict[str, str], volumes: dict[str, dict[str, str]],
            command: list[str] | None = None, **kwargs: Any) -> Any:
        image = self.engine.client.images.get(self.images.ids[name])
        check = image.attrs["Config"]["Healthcheck"]
        container = self.engine.client.containers.run(
            image.id, command=command, name=f"edgeloop-{name}-{uuid.uuid4().hex[:6]}",
            detach=True, network_mode="host", environment=env, volumes=volumes,
            read_only=True, tmpfs={"/tmp": "rw,size=64m"}, cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            # The image's own check, polled every second so the test need not wait 15 s.
            healthcheck={"test": check["Test"], "interval": 1_000_000_000,
                         "timeout": 5_000_000_000, "retries": 60, "start_period": 0},
            **kwargs,
        )
        self.containers[name] = container
        return container

    def logs(self) -> str:
        out = []
        for name, c in self.containers.items():
            with_logs = c.logs(tail=25).decode(errors="replace")
            out.append(f"--- {name}\n{with_logs}")
        return "\n".join(out)

    def mqtt_env(
        self, username: str, secrets: Path, uid: int
    ) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
        pw = _secret(secrets, f"{username}.mqtt", self.passwords[username], uid)
        env = {"EDGELOOP_MQTT__HOST": LOOPBACK, "EDGELOOP_MQTT__PORT": str(self.mqtt_port),
               "EDGELOOP_MQTT__USERNAME": username}
        return env, {str(pw): {"bind": "/run/secrets/edgeloop_mqtt_password", "mode": "ro"}}


def _start_broker(stack: Stack) -> None:
    conf, secrets, certs = (stack.workdir / d for d in ("broker-config", "broker-secrets",
                                                        "broker-certs"))
    names = ["ingest", "inference", "registry", "alice", DEVICE]
    assert broker_cli(["certs", "--out", str(certs)]) == 0
    assert broker_cli([
        "render", "--out", str(conf), "--host", LOOPBACK, "--port", str(stack.mqtt_port),
        "--tls-host", LOOPBACK, "--tls-port", str(stack.mqtt_tls_port),
        "--client-user", "alice",
    ]) == 0
    assert broker_cli(["passwd", "--file", str(secrets / "passwd"), "--secrets-dir",
                       str(stack.workdir / "mqtt-passwords"), "--generate",
                       "--user", "ingest", "--user", "inference", "--user", "registry",
                       "--user", "alice", "--device", DEVICE]) == 0
    shutil.copy(conf / "acl", secrets / "acl")
    for name in names:
        stack.passwords[name] = (stack.workdir / "mqtt-passwords" / name).read_text().strip()
    for directory in (conf, secrets, certs):
        for path in [directory, *directory.iterdir()]:
            os.chown(path, BROKER_UID, BROKER_UID)
    stack.run("broker", env={}, volumes={
        str(conf): {"bind": "/mosquitto/config", "mode": "ro"},
        str(secrets): {"bind": "/mosquitto/secrets", "mode": "ro"},
        str(certs): {"bind": "/mosquitto/certs", "mode": "ro"},
    })
    wait_for_port(stack.mqtt_port, timeout_s=30)


def _start_registry(stack: Stack) -> Path:
    secrets = stack.workdir / "registry-secrets"
    keys = generate_keypair(stack.workdir / "keys")
    key = _secret(secrets, "signing.key", keys.private_path.read_bytes(), APP_UID)
    token = _secret(secrets, "token", stack.token, APP_UID)
    env, vols = stack.mqtt_env("registry", secrets, APP_UID)
    stack.run("registry", env={
        **env,
        "EDGELOOP_HTTP__HOST": LOOPBACK, "EDGELOOP_HTTP__PORT": str(stack.registry_port),
        "EDGELOOP_PUBLIC_URL": f"http://{LOOPBACK}:{stack.registry_port}",
        "EDGELOOP_SIGNING_KEY": "/run/secrets/signing.key",
    }, volumes={
        **vols,
        str(key): {"bind": "/run/secrets/signing.key", "mode": "ro"},
        str(token): {"bind": "/run/secrets/edgeloop_token", "mode": "ro"},
    })
    return keys.public_path


def _start_edge(stack: Stack, public_key: Path, board: Board) -> None:
    secrets = stack.workdir / "edge-secrets"
    env, vols = stack.mqtt_env("ingest", secrets / "ingest", APP_UID)
    stack.run("ingest", env={**env, "EDGELOOP_METRICS_HOST": LOOPBACK,
                             "EDGELOOP_METRICS_PORT": str(stack.ingest_metrics)}, volumes=vols)
    pub = _secret(secrets / "inference", "edgeloop.pub", public_key.read_bytes(), APP_UID)
    env, vols = stack.mqtt_env("inference", secrets / "inference", APP_UID)
    stack.run("inference", env={
        **env, "EDGELOOP_HTTP_HOST": LOOPBACK, "EDGELOOP_HTTP_PORT": str(stack.inference_port),
        "EDGELOOP_REGISTRY": f"http://{LOOPBACK}:{stack.registry_port}",
        "EDGELOOP_PUBLIC_KEY": "/run/secrets/edgeloop.pub",
    }, volumes={**vols, str(pub): {"bind": "/run/secrets/edgeloop.pub", "mode": "ro"}})
    env, vols = stack.mqtt_env(DEVICE, secrets / "collector", APP_UID)
    stack.run("collector", env={
        **env, "EDGELOOP_SOURCE": "serial", "EDGELOOP_SERIAL_PORT": "/dev/ttyACM0",
        "EDGELOOP_DEVICE": DEVICE, "EDGELOOP_SITE": SITE,
        "EDGELOOP_METRICS_HOST": LOOPBACK, "EDGELOOP_METRICS_PORT": str(stack.collector_metrics),
    }, volumes={**vols, board.device: {"bind": "/dev/ttyACM0", "mode": "rw"}},
        device_cgroup_rules=[board.cgroup_rule], group_add=[str(DIALOUT_GID)])


@pytest.fixture(scope="module")
def stack(engine: DockerEngine, images: Images,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("stack")
    workdir.chmod(0o755)
    s = Stack(engine, workdir, images)
    board = Board(workdir)
    try:
        _start_broker(s)
        public_key = _start_registry(s)
        _start_edge(s, public_key, board)
        board.start()
        yield s
    except Exception:
        print(s.logs())
        raise
    finally:
        board.stop()
        for c in s.containers.values():
            try:
                c.stop(timeout=10)
            except Exception:  # noqa: S110 - best effort; the engine removes it anyway
                pass


def _publish_model(stack: Stack) -> tm.TinyModels:
    tiny = tm.build()
    card = tiny.card(MODEL)
    bundle = write_bundle(stack.workdir / "bundle.tar", card, tiny.files(MODEL))
    client = RegistryClient(f"http://{LOOPBACK}:{stack.registry_port}", stack.token)
    deadline = time.monotonic() + 60
    while True:
        try:
            published = client.publish(bundle)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    print(f"published {published.name} v{published.version} ({published.size_bytes} bytes)")
    return tiny


def _mqtt_request(stack: Stack, payload: dict[str, Any]) -> dict[str, Any]:
    """A client (role client: may request, reads only its own replies) over MQTT v5."""
    reply_topic = topics.infer_reply(MODEL, "alice")
    got: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed = threading.Event()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"alice-{uuid.uuid4().hex[:6]}",
                    protocol=MQTTProtocolVersion.MQTTv5)
    c.username_pw_set("alice", stack.passwords["alice"])
    c.on_message = lambda _c, _u, m: got.put(m)
    c.on_subscribe = lambda *_a: subscribed.set()
    c.on_connect = lambda cl, *_a: cl.subscribe(reply_topic, qos=1)
    c.connect(LOOPBACK, stack.mqtt_port)
    c.loop_start()
    try:
        assert subscribed.wait(15)
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.ResponseTopic = reply_topic
        props.CorrelationData = b"container-test"
        c.publish(topics.infer_request(MODEL), json.dumps(payload), qos=1,
                  properties=props).wait_for_publish(10)
        msg = got.get(timeout=20)
        corr = getattr(msg.properties, "CorrelationData", None)
        assert corr == b"container-test"
        body: dict[str, Any] = json.loads(msg.payload)
        return body
    finally:
        c.disconnect()
        c.loop_stop()


def _ingest_count(stack: Stack) -> dict[str, int]:
    code, out = stack.containers["ingest"].exec_run(["edgeloop", "ingest", "--count"])
    assert code == 0, out.decode(errors="replace")
    counts = {}
    for line in out.decode().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_readings_reach_storage_and_requests_get_predictions(stack: Stack) -> None:
    started = time.monotonic()
    tiny = _publish_model(stack)
    card = tiny.card(MODEL)
    vector = card.test_vectors[0]
    base = f"http://{LOOPBACK}:{stack.inference_port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            r = requests.post(f"{base}/v1/models/{MODEL}:predict",
                              json={"instances": [vector.input]}, timeout=5)
            if r.status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"inference never served {MODEL}\n{stack.logs()}")
        time.sleep(0.5)
    body = r.json()
    prediction = np.ravel(np.asarray(body["predictions"][0], dtype=float)).tolist()
    print(f"HTTP prediction {prediction} (card test vector {vector.output}), "
          f"model v{body.get('version')}")
    assert prediction == pytest.approx(vector.output, rel=1e-3, abs=1e-3)
    reply = _mqtt_request(stack, {"inputs": vector.input})
    print(f"MQTT v5 reply: {reply}")
    assert "error" not in reply and reply.get("model") == MODEL

    deadline = time.monotonic() + 120
    counts: dict[str, int] = {}
    while time.monotonic() < deadline:
        counts = _ingest_count(stack)
        if counts.get(DEVICE, 0) >= 200:
            break
        time.sleep(1)
    print(f"stored per device (inside the ingest container): {counts}")
    assert counts.get(DEVICE, 0) >= 200, stack.logs()

    health = {name: wait_healthy(c, 90) for name, c in stack.containers.items()}
    print(f"health: {health}; stack checks took {time.monotonic() - started:.0f} s")
    assert set(health.values()) == {"healthy"}, stack.logs()


def test_containers_run_as_their_fixed_non_root_users(stack: Stack) -> None:
    uids = {}
    for name, c in stack.containers.items():
        code, out = c.exec_run(["id", "-u"])
        assert code == 0
        uids[name] = int(out.decode().strip())
        assert c.attrs["HostConfig"]["ReadonlyRootfs"] is True
    assert uids == {"broker": BROKER_UID, "registry": APP_UID, "ingest": APP_UID,
                    "inference": APP_UID, "collector": APP_UID}


def test_inference_image_has_litert_and_no_tensorflow(stack: Stack) -> None:
    c = stack.containers["inference"]
    code, _ = c.exec_run(["python3", "-c", "import ai_edge_litert.interpreter"])
    assert code == 0
    code, out = c.exec_run(["python3", "-c", "import tensorflow"])
    assert code != 0 and b"No module named 'tensorflow'" in out


def test_broker_container_names_a_missing_secret(engine: DockerEngine, images: Images) -> None:
    # No secrets mounted: the entrypoint refuses to start Mosquitto and says what is missing.
    container = engine.client.containers.run(images.ids["broker"], network_mode="none",
                                             detach=True, read_only=True)
    try:
        result = container.wait(timeout=60)
        logs = container.logs().decode(errors="replace")
    finally:
        container.remove(force=True)
    assert result["StatusCode"] == 78
    assert "password_file /mosquitto/secrets/passwd is missing" in logs
