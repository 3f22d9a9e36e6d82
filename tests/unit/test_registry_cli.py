"""``edgeloop registry`` on a local store: exit codes and messages people act on."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from services.trainer.registry.cli import EXIT_UNREACHABLE, main
from tests.support.servers import free_port
from tests.unit.test_registry_store import make_bundle


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in list(os.environ):
        if var.startswith("EDGELOOP_"):
            monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_only_its_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "keygen", "--out", "keys")
    assert code == 0 and "key id" in out
    mode = stat.S_IMODE((tmp_path / "keys" / "edgeloop.key").stat().st_mode)
    assert mode == 0o600
    assert (tmp_path / "keys" / "edgeloop.pub").read_text().startswith("-----BEGIN PUBLIC KEY")
    code, _, err = run(capsys, "keygen", "--out", "keys")
    assert code == 1 and "refusing to overwrite" in err


def test_store_commands_and_exit_codes(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    bundles = [make_bundle(tmp_path / f"{i}.tar", payload=str(i).encode()) for i in range(3)]
    # No key configured, then a key path that does not exist: configuration errors.
    code, _, err = run(capsys, "publish", str(bundles[0]))
    assert code == 2 and "no signing key configured" in err
    code, _, err = run(capsys, "publish", str(bundles[0]), "--signing-key", "missing.key")
    assert code == 2 and "missing.key is missing" in err and "keygen" in err
    assert not (tmp_path / "registry" / "temp-forecast").exists()

    run(capsys, "keygen", "--out", "keys")
    key = ["--signing-key", "keys/edgeloop.key"]
    code, out, _ = run(capsys, "publish", str(bundles[0]), *key)
    assert code == 0 and "published temp-forecast v1" in out
    assert "announcement: disabled" in out
    code, out, _ = run(capsys, "publish", str(bundles[1]), *key, "--json")
    assert code == 0 and json.loads(out.splitlines()[0])["version"] == 2
    code, out, _ = run(capsys, "publish", str(bundles[2]), *key, "--candidate")
    assert code == 0 and "(candidate" in out

    code, out, _ = run(capsys, "list")
    assert code == 0 and "temp-forecast  current v2  latest v3  3 version(s)" in out
    code, out, _ = run(capsys, "list", "temp-forecast", "--json")
    assert [m["state"] for m in json.loads(out)] == ["approved", "approved", "candidate"]

    assert run(capsys, "promote", "temp-forecast", "3")[0] == 0
    code, out, _ = run(capsys, "rollback", "temp-forecast")
    assert code == 0 and "current: temp-forecast v2" in out
    code, out, _ = run(capsys, "retire", "temp-forecast", "2")
    assert code == 0 and "current: temp-forecast v1" in out
    code, _, err = run(capsys, "promote", "temp-forecast", "2")
    assert code == 1 and "conflict" in err and "retired" in err
    code, _, err = run(capsys, "promote", "nope", "1")
    assert code == 1 and "not_found" in err
    code, out, _ = run(capsys, "verify", "temp-forecast")
    assert code == 0 and out.count(": ok") == 3

    bundle = tmp_path / "registry" / "temp-forecast" / "1" / "bundle.tar"
    bundle.write_bytes(bundle.read_bytes()[:-1] + b"\x01")
    code, out, _ = run(capsys, "verify", "temp-forecast", "1")
    assert code == 1 and "FAILED" in out
    code, _, err = run(capsys, "announce")
    assert code == 2 and "needs MQTT" in err


def test_remote_commands_report_an_unreachable_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("EDGELOOP_TOKEN", "t")
    code, _, err = run(capsys, "publish", str(make_bundle(tmp_path / "b.tar")), "--url", url)
    assert code == EXIT_UNREACHABLE and "unreachable: connection refused" in err
    code, _, err = run(capsys, "list", "--url", url)
    assert code == EXIT_UNREACHABLE


def test_validate_config_masks_the_token(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "token").write_text("from-a-file\n")
    monkeypatch.setenv("EDGELOOP_TOKEN_FILE", str(tmp_path / "token"))
    code, out, _ = run(capsys, "serve", "--validate-config", "--http-port", "9999",
                       "--mqtt-host", "broker.local", "--public-url", "https://reg.example/")
    assert code == 0
    config = json.loads(out)
    assert config["token"] == "**********" and config["http"]["port"] == 9999
    assert config["mqtt"]["host"] == "broker.local"
    assert config["public_url"] == "https://reg.example"
    code, _, err = run(capsys, "serve", "--validate-config", "--public-url", "reg.example")
    assert code == 2 and "public_url" in err
