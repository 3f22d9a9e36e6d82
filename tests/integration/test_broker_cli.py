"""``edgeloop broker`` render/passwd/certs with the real mosquitto_passwd and openssl."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.broker import passwd
from services.broker.cli import PASSWORD_ENV, main
from services.broker.render import render_config
from services.broker.settings import BrokerSettings
from tests.support.servers import which_or_skip

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _tools() -> None:
    which_or_skip("mosquitto_passwd")
    which_or_skip("openssl")


def test_render_defaults_are_the_image_paths(tmp_path: Path) -> None:
    assert main(["render", "--out", str(tmp_path)]) == 0
    conf = (tmp_path / "mosquitto.conf").read_text()
    for line in ["allow_anonymous false", "set_tcp_nodelay true", "persistence true",
                 "password_file /mosquitto/secrets/passwd", "acl_file /mosquitto/secrets/acl",
                 "persistence_location /mosquitto/data/", "listener 1883 0.0.0.0",
                 "listener 8883 0.0.0.0", "max_queued_messages 100000"]:
        assert line in conf.splitlines(), line
    acl = (tmp_path / "acl").read_text()
    assert "pattern write edgeloop/v1/+/%u/telemetry" in acl
    assert "user ingest" in acl and "user alice" not in acl


def test_render_disables_a_listener_and_refuses_both_off(tmp_path: Path) -> None:
    assert main(["render", "--out", str(tmp_path), "--tls-port", "0"]) == 0
    conf = (tmp_path / "mosquitto.conf").read_text()
    assert "cafile" not in conf and "listener 1883 0.0.0.0" in conf
    assert main(["render", "--out", str(tmp_path), "--tls-port", "0", "--port", "0"]) == 2


def test_render_refuses_one_account_in_two_roles(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["render", "--out", str(tmp_path / "o"), "--client-user", "ingest"])
    assert code == 2
    assert "ingest" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_config_values_cannot_inject_lines(tmp_path: Path) -> None:
    cfg = tmp_path / "broker.json"
    cfg.write_text('{"acl_file": "/x\\nallow_anonymous true"}')
    assert main(["render", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 2
    with pytest.raises(ValueError, match="single line"):
        BrokerSettings(log_dest="file /tmp/x\nallow_anonymous true")


def test_render_from_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "broker.toml"
    cfg.write_text('port = 11883\n[accounts]\nclient = ["grafana-alerts"]\n')
    assert main(["render", "--out", str(tmp_path / "o"), "--config", str(cfg)]) == 0
    assert "listener 11883 0.0.0.0" in (tmp_path / "o" / "mosquitto.conf").read_text()
    assert "user grafana-alerts" in (tmp_path / "o" / "acl").read_text()
    text = render_config(BrokerSettings(max_queued_messages=5))
    assert "max_queued_messages 5" in text.splitlines()


def test_passwd_keeps_passwords_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_run = subprocess.run

    def spy(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        seen.append(list(argv))
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    file = tmp_path / "passwd"
    monkeypatch.setenv(PASSWORD_ENV, "env-Secret-1")
    assert main(["passwd", "--file", str(file), "--user", "ingest"]) == 0
    monkeypatch.delenv(PASSWORD_ENV)
    monkeypatch.setattr("sys.stdin", io.StringIO("stdin-Secret-2\n"))
    assert main(["passwd", "--file", str(file), "--device", "pi-kitchen", "--password-stdin"]) == 0
    secrets_dir = tmp_path / "secrets"
    assert main(["passwd", "--file", str(file), "--secrets-dir", str(secrets_dir),
                 "--generate", "--user", "inference", "--device", "pi-garage"]) == 0
    generated = (secrets_dir / "pi-garage").read_text().strip()
    assert len(generated) >= 32
    assert (secrets_dir / "pi-garage").stat().st_mode & 0o077 == 0
    assert passwd.usernames(file) == ["ingest", "pi-kitchen", "inference", "pi-garage"]
    assert seen, "mosquitto_passwd was not run"
    for argv in seen:
        for secret in ("env-Secret-1", "stdin-Secret-2", generated):
            assert secret not in " ".join(argv)
    # Re-running is idempotent: same accounts, passwords replaced from the same files.
    assert main(["passwd", "--file", str(file), "--secrets-dir", str(secrets_dir)]) == 0
    assert sorted(passwd.usernames(file)) == ["inference", "ingest", "pi-garage", "pi-kitchen"]
    assert main(["passwd", "--file", str(file), "--delete", "pi-kitchen"]) == 0
    assert "pi-kitchen" not in passwd.usernames(file)


def test_passwd_refuses_reserved_and_invalid_device_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "pw")
    file = tmp_path / "passwd"
    assert main(["passwd", "--file", str(file), "--device", "ingest"]) == 2
    assert "impersonated" in capsys.readouterr().err
    assert main(["passwd", "--file", str(file), "--device", "a/b"]) == 2
    assert main(["passwd", "--file", str(file), "--device", "+"]) == 2
    assert not file.exists()


def test_passwd_without_a_password_names_where_to_put_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv(PASSWORD_ENV + "_FILE", raising=False)
    assert main(["passwd", "--file", str(tmp_path / "p"), "--user", "registry"]) == 1
    assert PASSWORD_ENV in capsys.readouterr().err
    assert main(["passwd", "--file", str(tmp_path / "p"),
                 "--secrets-dir", str(tmp_path / "none"), "--user", "registry"]) == 1
    assert "--generate" in capsys.readouterr().err


def _verify(ca: Path, cert: Path) -> str:
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)],
                          capture_output=True, text=True, check=False).stdout


def test_certs_reuse_the_ca_and_carry_every_name(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--client", "pi-kitchen"]) == 0
    ca_before = (out / "ca.crt").read_bytes()
    assert main(["certs", "--out", str(out), "--name", "mqtt.example.org",
                 "--name", "10.0.0.5"]) == 0
    assert (out / "ca.crt").read_bytes() == ca_before
    for cert in ("server.crt", "client-pi-kitchen.crt"):
        assert "OK" in _verify(out / "ca.crt", out / cert)
    text = subprocess.run(["openssl", "x509", "-in", str(out / "server.crt"), "-noout",
                           "-ext", "subjectAltName,extendedKeyUsage"],
                          capture_output=True, text=True, check=True).stdout
    for name in ("DNS:localhost", "IP Address:127.0.0.1", "DNS:mqtt.example.org",
                 "IP Address:10.0.0.5", "TLS Web Server Authentication"):
        assert name in text
    assert (out / "server.key").stat().st_mode & 0o077 == 0
    assert main(["certs", "--out", str(out), "--name", "bad name"]) == 1
