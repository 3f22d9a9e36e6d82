"""Real servers for tests, started on free loopback ports with generated configs.

In the spirit of Mosquitto's own test suite: every test that needs a broker gets a real
``mosquitto`` process with a config rendered into its temp dir, and it is stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from services.common.net import LOOPBACK, free_port, wait_for_port


def which_or_skip(binary: str) -> str:
    import pytest

    path = shutil.which(binary) or (
        f"/usr/sbin/{binary}" if Path(f"/usr/sbin/{binary}").exists() else None
    )
    if path is None:
        if os.environ.get("CI"):
            raise RuntimeError(f"{binary} is required in CI but not installed")
        pytest.skip(f"{binary} not installed (make test installs it)")
    return path


class ServerProcess:
    """A child process we own: started with a command, stopped (or killed) by PID."""

    def __init__(self, name: str, argv: Sequence[str], workdir: Path, port: int) -> None:
        self.name = name
        self.argv = list(argv)
        self.workdir = workdir
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"{name}.out"

    def start(self, timeout_s: float = 15.0) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, timeout_s=timeout_s)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"{self.name} did not start: {self.tail()}") from None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "<no log>"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: the power-cut case. No flush, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> None:
        self.stop()
        self.start()


MOSQUITTO_BASE = """\
per_listener_settings false
allow_anonymous {anonymous}
set_tcp_nodelay true
# A slow subscriber must not lose messages in tests: size the queue, and count drops.
max_queued_messages {max_queued}
max_inflight_messages 0
persistence true
persistence_location {workdir}/
autosave_interval 1
log_dest file {workdir}/mosquitto.log
log_type error
log_type warning
log_type notice
log_type information
listener {port} 127.0.0.1
"""


class Mosquitto(ServerProcess):
    """A real Mosquitto broker on a free loopback port."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        anonymous: bool = True,
        extra_config: str = "",
        max_queued: int = 1_000_000,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        self.config_path = workdir / "mosquitto.conf"
        # As root, Mosquitto drops to the `mosquitto` user, which cannot write persistence
        # into pytest's private temp dirs: sessions would silently not survive a SIGKILL.
        has_user = any(line.strip().startswith("user ") for line in extra_config.splitlines())
        run_as = "user root\n" if os.geteuid() == 0 and not has_user else ""
        self.config_path.write_text(
            run_as
            + MOSQUITTO_BASE.format(
                anonymous="true" if anonymous else "false", workdir=workdir, port=port,
                max_queued=max_queued,
            )
            + extra_config
        )
        binary = which_or_skip("mosquitto")
        super().__init__("mosquitto", [binary, "-c", str(self.config_path)], workdir, port)

    @property
    def host(self) -> str:
        return LOOPBACK

    def broker_log(self) -> str:
        try:
            return (self.workdir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""


@contextlib.contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    server.start()
    try:
        yield server
    finally:
        server.stop()
