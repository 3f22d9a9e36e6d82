"""A production-configured Mosquitto for tests: no anonymous clients, passwords, ACL, TLS.

Everything is made through the real ``edgeloop broker`` command (render, passwd with a
secrets directory, certs) into the test's temp dir, on free loopback ports, so a test
that passes here exercises the same files an operator deploys.
"""

from __future__ import annotations

import getpass
import ssl
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from services.broker.cli import main as broker_cli
from services.common.mqtt import MqttSettings, Protocol, TlsSettings
from tests.support.servers import LOOPBACK, ServerProcess, free_port, wait_for_port, which_or_skip

SERVICE_ACCOUNTS = {"ingest": "ingest", "inference": "inference", "registry": "registry"}


class SecureBroker(ServerProcess):
    """Mosquitto with the rendered edgeloop config; accounts get random passwords."""

    def __init__(
        self,
        workdir: Path,
        *,
        devices: Sequence[str] = ("dev-a", "dev-b"),
        clients: Sequence[str] = ("alice", "bob"),
        observers: Sequence[str] = ("ops",),
        cert_names: Sequence[str] = (),
        cert_clients: Sequence[str] = (),
        autosave_interval_s: int = 1,
    ) -> None:
        binary = which_or_skip("mosquitto")
        which_or_skip("mosquitto_passwd")
        which_or_skip("openssl")
        workdir.mkdir(parents=True, exist_ok=True)
        self.tls_port = free_port()
        port = free_port()
        while port == self.tls_port:
            port = free_port()
        self.certs_dir = workdir / "certs"
        self.secrets_dir = workdir / "secrets"
        self.passwd_file = workdir / "passwd"
        self.devices = list(devices)
        self.clients = list(clients)
        self.observers = list(observers)
        _run(["certs", "--out", str(self.certs_dir),
              *_repeat("--name", cert_names), *_repeat("--client", cert_clients)])
        roles = [*_repeat("--ingest-user", ["ingest"]),
                 *_repeat("--inference-user", ["inference"]),
                 *_repeat("--registry-user", ["registry"]),
                 *_repeat("--client-user", clients), *_repeat("--observer-user", observers)]
        _run([
            "render", "--out", str(workdir),
            "--host", LOOPBACK, "--port", str(port),
            "--tls-host", LOOPBACK, "--tls-port", str(self.tls_port),
            "--cafile", str(self.certs_dir / "ca.crt"),
            "--certfile", str(self.certs_dir / "server.crt"),
            "--keyfile", str(self.certs_dir / "server.key"),
            "--password-file", str(self.passwd_file),
            "--acl-file", str(workdir / "acl"),
            "--data-dir", str(workdir / "data"),
            "--log-dest", f"file {workdir / 'mosquitto.log'}",
            "--autosave-interval", str(autosave_interval_s),
            # Stay as whoever runs the tests (root in CI): the temp dir is private to it.
            "--run-as", getpass.getuser(),
            *roles,
        ])
        (workdir / "data").mkdir(exist_ok=True)
        users = [*SERVICE_ACCOUNTS, *clients, *observers]
        _run(["passwd", "--file", str(self.passwd_file), "--secrets-dir", str(self.secrets_dir),
              "--generate", *_repeat("--user", users), *_repeat("--device", devices)])
        self.config_path = workdir / "mosquitto.conf"
        super().__init__("mosquitto", [binary, "-c", str(self.config_path)], workdir, port)

    def start(self, timeout_s: float = 15.0) -> None:
        super().start(timeout_s)
        wait_for_port(self.tls_port, timeout_s=timeout_s)

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def ca_file(self) -> Path:
        return self.certs_dir / "ca.crt"

    def password(self, username: str) -> str:
        return (self.secrets_dir / username).read_text().strip()

    def settings(
        self,
        username: str | None,
        *,
        password: str | None = None,
        tls: bool = False,
        host: str = LOOPBACK,
        protocol: Protocol = Protocol.V5,
    ) -> MqttSettings:
        """Client settings for an account (its real password unless one is given)."""
        secret = None
        if username is not None:
            secret = SecretStr(password if password is not None else self.password(username))
        return MqttSettings(
            host=host,
            port=self.tls_port if tls else self.port,
            username=username,
            password=secret,
            protocol=protocol,
            tls=TlsSettings(ca_file=self.ca_file) if tls else TlsSettings(),
        )

    def client_tls_context(self, ca_file: Path | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(ca_file or self.ca_file))
        ctx.check_hostname = True
        return ctx

    def broker_log(self) -> str:
        try:
            return (self.workdir / "mosquitto.log").read_text(errors="replace")
        except OSError:
            return ""


def _repeat(flag: str, values: Sequence[str]) -> list[str]:
    return [item for value in values for item in (flag, value)]


def _run(argv: list[str]) -> None:
    code = broker_cli(argv)
    if code != 0:
        raise RuntimeError(f"edgeloop broker {' '.join(argv[:1])} failed with exit code {code}")
