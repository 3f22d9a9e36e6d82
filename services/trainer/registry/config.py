"""``edgeloop registry`` configuration: one typed object from a file, env and flags.

Env names follow the shared scheme: ``EDGELOOP_ROOT``, ``EDGELOOP_SIGNING_KEY``,
``EDGELOOP_PUBLIC_URL``, ``EDGELOOP_HTTP__PORT``, ``EDGELOOP_MQTT__HOST``... The write
token is a secret: ``EDGELOOP_TOKEN``, ``EDGELOOP_TOKEN_FILE`` or
``/run/secrets/edgeloop_token``, never a flag.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from services.common.config import Settings
from services.common.mqtt import MqttSettings
from services.modelkit.bundle import MAX_BUNDLE_BYTES

DEFAULT_PORT = 8700


def _check_url(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


class HttpSettings(Settings):
    #: 127.0.0.1 by default; set 0.0.0.0 in a container (the port is then published).
    host: str = "127.0.0.1"
    port: int = Field(default=DEFAULT_PORT, ge=0, le=65535)
    threads: int = Field(default=4, ge=1, le=64)
    #: Largest upload accepted (bytes); bigger requests get 413 before they are read.
    max_upload_bytes: int = Field(default=MAX_BUNDLE_BYTES, ge=1024, le=MAX_BUNDLE_BYTES)


class RegistrySettings(Settings):
    #: The store's directory tree.
    root: Path = Path("registry")
    #: Ed25519 private key (PEM) that signs published bundles; without one, publish fails.
    signing_key: Path | None = None
    #: Bearer token for write endpoints; without one, the HTTP API is read-only.
    token: SecretStr | None = None
    #: Base URL the edge reaches the registry at; used in announcements. Defaults to
    #: http://<http.host>:<http.port> (a wildcard host becomes 127.0.0.1, with a warning).
    public_url: str | None = None
    #: A registry URL: publish/list/promote/rollback/retire go over HTTP instead of
    #: touching ``root`` directly.
    url: str | None = None
    http: HttpSettings = Field(default_factory=HttpSettings)
    #: Broker for retained announcements; None = HTTP only.
    mqtt: MqttSettings | None = None
    mqtt_client_id: str = Field(default="edgeloop-registry", min_length=1, max_length=64)
    #: How long to wait for the broker's PUBACK of an announcement.
    announce_timeout_s: float = Field(default=5.0, gt=0, le=120)
    log_level: str = "INFO"

    _urls = field_validator("public_url", "url")(_check_url)

    def base_url(self, port: int | None = None) -> str:
        """The URL announcements point at."""
        if self.public_url:
            return self.public_url
        host = self.http.host
        if host in {"0.0.0.0", "::", ""}:
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port if port is not None else self.http.port}"
