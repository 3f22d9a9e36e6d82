"""A Docker engine started by the test run, and images built with no registry in reach.

``dockerd`` (Debian ``docker.io``) runs with its own data root, exec root, socket and
pidfile under a temp dir, with ``--bridge=none --iptables=false``: it touches neither the
host's network configuration nor any other engine. Containers use host networking and
bind loopback ports. The engine is stopped by PID and its data root removed.

The base image comes from ``scripts/build_base_image.sh`` (debootstrap, cached) and
``docker import``; images are built from a context tarball assembled here (services/ +
the host-built wheelhouse), so the build sends no more than it needs and reaches no
network (``network_mode="none"``, ``pip --no-index``).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BASE_IMAGE = "edgeloop/base:bookworm"
#: Engine start-up; the first start also creates its data root and starts containerd.
START_TIMEOUT_S = 90.0


class EngineError(RuntimeError):
    """dockerd did not start, or a build/run failed; the message carries the log tail."""


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "<no log>"


class DockerEngine:
    """``dockerd`` on a private socket; ``client`` is a docker SDK client for it."""

    def __init__(self, root: Path) -> None:
        # EDGELOOP_DOCKER_ROOT keeps the data root (and its build cache) between runs, for
        # working on the images; by default it lives in the test's temp dir and is removed.
        kept = os.environ.get("EDGELOOP_DOCKER_ROOT")
        self.keep_data = bool(kept)
        root = Path(kept) if kept else root
        self.root = root
        # Unix socket paths are limited to ~107 bytes and containerd nests its sockets under
        # the exec root: keep that short, under /tmp, and private to this engine.
        self.exec_root = Path(tempfile.mkdtemp(prefix="edl-dk-", dir="/tmp"))
        self.socket = self.exec_root / "docker.sock"
        self.data_root = root / "data"
        self.pidfile = self.exec_root / "docker.pid"
        self.log_path = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: Any = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        binary = shutil.which("dockerd") or "/usr/sbin/dockerd"
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        # An explicit, empty config: never the host's /etc/docker/daemon.json.
        config.write_text(json.dumps({"features": {"buildkit": False}}))
        argv = [
            binary,
            "--config-file", str(config),
            "--data-root", str(self.data_root),
            "--exec-root", str(self.exec_root / "exec"),
            "--pidfile", str(self.pidfile),
            "--host", f"unix://{self.socket}",
            "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
            "--userland-proxy=false",
            "--log-level=warn",
        ]
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        import docker

        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EngineError(f"dockerd exited with {self.proc.returncode}:\n"
                                  f"{_tail(self.log_path)}")
            if self.socket.exists():
                with contextlib.suppress(Exception):
                    client = docker.DockerClient(base_url=f"unix://{self.socket}", timeout=600)
                    client.ping()
                    self._client = client
                    return
            time.sleep(0.25)
        self.stop()
        raise EngineError(f"dockerd not answering after {START_TIMEOUT_S} s:\n"
                          f"{_tail(self.log_path)}")

    @property
    def client(self) -> Any:
        if self._client is None:
            raise EngineError("engine not started")
        return self._client

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise EngineError("engine not started")
        return self.proc.pid

    def stop(self, timeout_s: float = 60.0) -> None:
        """Remove our containers, then SIGTERM dockerd by PID (SIGKILL if it hangs)."""
        if self._client is not None:
            with contextlib.suppress(Exception):
                for container in self._client.containers.list(all=True):
                    container.remove(force=True)
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # dockerd unmounts its layers on a clean stop; the rest is plain files.
        if not self.keep_data:
            shutil.rmtree(self.data_root, ignore_errors=True)
        shutil.rmtree(self.exec_root, ignore_errors=True)

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    # ------------------------------------------------------------------ images
    def import_base(self, tarball: Path, tag: str = BASE_IMAGE) -> str:
        """``docker import`` a root filesystem tarball as the base image."""
        repository, _, version = tag.partition(":")
        if self.keep_data and self.client.images.list(name=tag):
            return tag  # a kept data root: re-importing would invalidate the build cache
        self.client.api.import_image_from_file(
            str(tarball), repository=repository, tag=version or "latest",
            changes=[
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "ENV LANG=C.UTF-8",
            ],
        )
        self.client.images.get(tag)
        return tag

    def build(
        self,
        context: bytes,
        dockerfile: str,
        tag: str,
        *,
        buildargs: dict[str, str] | None = None,
        target: str | None = None,
    ) -> tuple[Any, float]:
        """Build from a context tarball, offline. Returns (image, seconds)."""
        started = time.monotonic()
        logs: list[str] = []
        kwargs: dict[str, Any] = {}
        if target:
            kwargs["target"] = target
        try:
            stream = self.client.api.build(
                fileobj=io.BytesIO(context), custom_context=True, dockerfile=dockerfile,
                tag=tag, buildargs=buildargs or {}, network_mode="none", rm=True,
                forcerm=True, decode=True, **kwargs,
            )
            for chunk in stream:
                if "stream" in chunk:
                    logs.append(chunk["stream"])
                if "error" in chunk:
                    raise EngineError(f"building {tag} failed: {chunk['error']}\n"
                                      + "".join(logs[-30:]))
        except EngineError:
            raise
        except Exception as exc:
            raise EngineError(f"building {tag} failed: {exc}\n" + "".join(logs[-30:])) from exc
        return self.client.images.get(tag), time.monotonic() - started


@dataclass(frozen=True)
class ContextFile:
    """A file for the build context: a path on disk and where it goes in the context."""

    source: Path
    arcname: str


def build_context(entries: Iterable[ContextFile | tuple[Path, str]]) -> bytes:
    """A build context tarball holding exactly these files and directories."""
    buf = io.BytesIO()
    skip = {"__pycache__", ".mypy_cache", ".pytest_cache"}

    def _filter(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        parts = set(Path(info.name).parts)
        if parts & skip or info.name.endswith((".pyc", ".db", ".db-wal", ".db-shm")):
            return None
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            source, arcname = (
                (entry.source, entry.arcname) if isinstance(entry, ContextFile) else entry
            )
            tar.add(str(source), arcname=arcname, filter=_filter)
    return buf.getvalue()


def wait_healthy(container: Any, timeout_s: float) -> str:
    """Wait for Docker's own HEALTHCHECK verdict; returns the last status seen."""
    deadline = time.monotonic() + timeout_s
    status = "unknown"
    while time.monotonic() < deadline:
        container.reload()
        state = container.attrs.get("State", {})
        if state.get("Status") in {"exited", "dead"}:
            return f"exited ({state.get('ExitCode')})"
        status = state.get("Health", {}).get("Status", "none")
        if status in {"healthy", "unhealthy"}:
            return str(status)
        time.sleep(0.5)
    return str(status)


@contextlib.contextmanager
def running_engine(root: Path) -> Iterator[DockerEngine]:
    engine = DockerEngine(root)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
