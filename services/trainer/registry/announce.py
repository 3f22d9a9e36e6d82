"""Retained MQTT announcements of each model's current approved version.

The retained message on ``edgeloop/v1/models/<name>/announce`` is the edge's source of
truth, so it must always end up matching the store:

* every announcement is computed from the store and sent under the model's write lock,
  so two writers (the server and a CLI) cannot leave an older state retained last;
* after every (re)connect the announcer re-announces all models, so whatever happened
  while the broker was away converges once it is back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from services.common.mqtt import MqttClient, MqttSettings
from services.contract.models import ModelAnnouncement
from services.contract.topics import model_announce
from services.trainer.registry.errors import ModelNotFound
from services.trainer.registry.metrics import AnnounceResult
from services.trainer.registry.store import RegistryStore

log = logging.getLogger(__name__)


def bundle_url(base_url: str, name: str, version: int) -> str:
    return f"{base_url}/v1/models/{name}/versions/{version}/bundle"


def card_url(base_url: str, name: str, version: int) -> str:
    return f"{base_url}/v1/models/{name}/versions/{version}/card"


def build_announcement(
    store: RegistryStore, name: str, base_url: str
) -> ModelAnnouncement | None:
    """The announcement for ``name``'s current version; ``retired=true`` for the last one
    when none is left; None when it never had an approved version."""
    channel = store.channel(name)
    version, retired = channel.current, False
    if version is None:
        if channel.last_current is None:
            return None
        version, retired = channel.last_current, True
    meta = store.meta(name, version)
    return ModelAnnouncement(
        name=name, version=version, task=meta.card.task, sha256=meta.sha256,
        url=bundle_url(base_url, name, version), signature=meta.signature,
        key_id=meta.key_id, size_bytes=meta.size_bytes, created=meta.created,
        input=meta.card.input, labels=meta.card.labels,
        card_url=card_url(base_url, name, version), retired=retired,
    )


class Announcer:
    """Publishes retained announcements; with no MQTT settings it only says so, once."""

    def __init__(
        self,
        store: RegistryStore,
        base_url: str,
        mqtt: MqttSettings | None,
        *,
        client_id: str = "edgeloop-registry",
        timeout_s: float = 5.0,
        reannounce_on_connect: bool = True,
        on_result: Callable[[AnnounceResult], None] | None = None,
    ) -> None:
        self.store = store
        self.base_url = base_url
        self._timeout = timeout_s
        self._client: MqttClient | None = None
        self._reannounce = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self._on_result = on_result
        if mqtt is None:
            log.warning("MQTT is not configured: models are served over HTTP only and no "
                        "announcements are published")
            return
        self._client = MqttClient(
            mqtt, client_id, persistent=False,
            on_connection_change=self._on_connection if reannounce_on_connect else None,
        )

    @property
    def enabled(self) -> bool:
        return self._client is not None

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    def start(self) -> None:
        if self._client is None:
            return
        self._worker = threading.Thread(
            target=self._reannounce_loop, name="registry-announce", daemon=True
        )
        self._worker.start()
        self._client.start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._client is not None and self._client.wait_connected(timeout_s)

    def stop(self) -> None:
        self._stopping.set()
        self._reannounce.set()
        if self._worker is not None:
            self._worker.join(timeout=self._timeout + 1)
        if self._client is not None:
            self._client.stop()

    # ------------------------------------------------------------------ announcing
    def announce(self, name: str) -> AnnounceResult:
        """Publish ``name``'s announcement from the store's state right now."""
        if self._client is None:
            return self._count(AnnounceResult.DISABLED)
        with self.store.locked(name):
            try:
                ann = build_announcement(self.store, name, self.base_url)
            except ModelNotFound:
                return self._count(AnnounceResult.NOTHING)
            if ann is None:
                return self._count(AnnounceResult.NOTHING)
            if not self._client.connected:
                log.warning("announce %s v%d: broker not connected; it is sent on reconnect",
                            name, ann.version)
                return self._count(AnnounceResult.PENDING)
            info = self._client.publish(model_announce(name), ann.to_json(), qos=1, retain=True)
            try:
                info.wait_for_publish(self._timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("announce %s v%d: not sent (%s); it is sent on reconnect",
                            name, ann.version, exc)
                return self._count(AnnounceResult.PENDING)
            if not info.is_published():
                log.warning("announce %s v%d: no PUBACK in %.1f s", name, ann.version,
                            self._timeout)
                return self._count(AnnounceResult.PENDING)
        log.info("announced %s v%d%s (sha256 %s…)", name, ann.version,
                 " retired" if ann.retired else "", ann.sha256[:12])
        return self._count(AnnounceResult.SENT)

    def announce_all(self) -> dict[str, AnnounceResult]:
        return {m.name: self.announce(m.name) for m in self.store.list_models()}

    def _count(self, result: AnnounceResult) -> AnnounceResult:
        if self._on_result is not None:
            self._on_result(result)
        return result

    def _on_connection(self, connected: bool) -> None:
        # Runs on paho's network thread, which must stay free to receive PUBACKs.
        if connected:
            self._reannounce.set()

    def _reannounce_loop(self) -> None:
        while True:
            self._reannounce.wait()
            if self._stopping.is_set():
                return
            self._reannounce.clear()
            try:
                results = self.announce_all()
            except Exception:
                log.exception("re-announcing after connect failed")
                continue
            if results:
                log.info("re-announced %d model(s) after connect", len(results))
