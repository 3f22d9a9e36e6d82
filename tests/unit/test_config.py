"""Config: precedence, unknown keys, errors that name the key, secrets never from flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, SecretStr

from services.common.config import ConfigError, Settings, describe, load_config
from services.common.mqtt import MqttSettings


class Demo(Settings):
    name: str = "x"
    rate_hz: float = Field(default=1.0, gt=0)
    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    token: SecretStr | None = None


def test_precedence_file_env_flags(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('name = "file"\nrate_hz = 2.0\n[mqtt]\nport = 1000\n')
    env = {"EDGELOOP_RATE_HZ": "3", "EDGELOOP_MQTT__PORT": "2000"}
    c = load_config(Demo, file=f, env=env, overrides={"mqtt.port": 3000, "name": None})
    assert (c.name, c.rate_hz, c.mqtt.port) == ("file", 3.0, 3000)


def test_unknown_key_in_file_is_named(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[mqtt]\nprot = 1\n")
    with pytest.raises(ConfigError, match=r"mqtt\.prot"):
        load_config(Demo, file=f, env={})


def test_bad_value_names_key_and_source() -> None:
    with pytest.raises(ConfigError, match=r"mqtt\.port: .*EDGELOOP_MQTT__PORT"):
        load_config(Demo, env={"EDGELOOP_MQTT__PORT": "http"})


def test_secrets_from_env_file_and_run_secrets_never_flags(tmp_path: Path) -> None:
    secret_file = tmp_path / "tok"
    secret_file.write_text("s3cret\n")
    c = load_config(Demo, env={"EDGELOOP_TOKEN_FILE": str(secret_file)})
    assert c.token is not None and c.token.get_secret_value() == "s3cret"
    (tmp_path / "edgeloop_mqtt_password").write_text("pw")
    c = load_config(Demo, env={}, secrets_dir=tmp_path)
    assert c.mqtt.password is not None and c.mqtt.password.get_secret_value() == "pw"
    assert "pw" not in describe(c)
    with pytest.raises(ConfigError, match="not accepted as flags"):
        load_config(Demo, env={}, overrides={"token": "x"})
