"""One way to publish, whether the registry is a URL or a directory.

``edgeloop train --registry`` takes either; it calls :func:`open_publisher` and then
``check()`` *before* training, so an unreachable registry, a wrong token or a missing
signing key fails the job early and nothing half-made is published.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

from services.common.mqtt import MqttSettings
from services.trainer.registry.announce import Announcer
from services.trainer.registry.client import RegistryClient
from services.trainer.registry.config import DEFAULT_PORT
from services.trainer.registry.errors import RegistryAuthError, SigningUnavailable
from services.trainer.registry.metrics import AnnounceResult
from services.trainer.registry.models import PublishedModel
from services.trainer.registry.store import RegistryStore

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def check(self) -> None:
        """Raise RegistryUnreachable / RegistryAuthError / SigningUnavailable now."""

    def publish(self, bundle_path: Path, *, approve: bool = True) -> PublishedModel: ...

    def close(self) -> None: ...


class HttpPublisher:
    """Publishes to a running registry; it signs and announces."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def check(self) -> None:
        health = self.client.healthz()
        if not health.get("writes"):
            raise RegistryAuthError(f"registry {self.client.base_url} has writes disabled "
                                    "(no token configured on the server)")
        if not health.get("signing_key_id"):
            raise SigningUnavailable(f"registry {self.client.base_url} has no signing key")
        self.client.check_token()

    def publish(self, bundle_path: Path, *, approve: bool = True) -> PublishedModel:
        return self.client.publish(bundle_path, approve=approve)

    def close(self) -> None:
        self.client.close()


class LocalPublisher:
    """Publishes into a store directory, signing here; announces if MQTT is given."""

    def __init__(self, store: RegistryStore, announcer: Announcer | None) -> None:
        self.store = store
        self.announcer = announcer
        self.last_announcement: AnnounceResult | None = None

    def check(self) -> None:
        if self.store.key_id is None:
            raise SigningUnavailable(
                "publishing to a directory needs a signing key (EDGELOOP_SIGNING_KEY); "
                "create one with `edgeloop registry keygen`"
            )

    def publish(self, bundle_path: Path, *, approve: bool = True) -> PublishedModel:
        published = self.store.publish(bundle_path, approve=approve)
        if approve and self.announcer is not None:
            if not self.announcer.wait_connected(10):
                log.warning("broker not reachable: %s v%d is published but not announced; "
                            "run `edgeloop registry announce`", published.name,
                            published.version)
            self.last_announcement = self.announcer.announce(published.name)
        return published

    def close(self) -> None:
        if self.announcer is not None:
            self.announcer.stop()


def open_publisher(
    target: str,
    *,
    token: str | None = None,
    signing_key: Path | None = None,
    mqtt: MqttSettings | None = None,
    public_url: str | None = None,
) -> Publisher:
    """``target`` is ``http(s)://...`` (a running registry) or a store directory.

    For a directory, ``signing_key`` signs (a missing file raises SigningUnavailable
    here), and with ``mqtt`` the new version is announced with URLs under ``public_url``.
    """
    if target.startswith(("http://", "https://")):
        return HttpPublisher(RegistryClient(target, token))
    store = RegistryStore(Path(target), signing_key)
    announcer = None
    if mqtt is not None:
        announcer = Announcer(
            store, (public_url or f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/"), mqtt,
            client_id=f"edgeloop-train-publisher-{os.getpid()}", reannounce_on_connect=False,
        )
        announcer.start()
    return LocalPublisher(store, announcer)
