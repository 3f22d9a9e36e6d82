"""The registry service: store + announcer + HTTP API, served by waitress.

Waitress is a production WSGI server (thread pool, request buffering, body size limits);
Flask's development server is never used.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry
from waitress import wasyncore
from waitress.server import create_server

from services.trainer.registry.announce import Announcer
from services.trainer.registry.app import create_app
from services.trainer.registry.config import RegistrySettings
from services.trainer.registry.metrics import RegistryMetrics
from services.trainer.registry.store import RegistryStore

log = logging.getLogger(__name__)


class RegistryServer:
    """``start()`` binds and serves on a thread; ``stop()`` drains and closes.

    Raises :class:`SigningUnavailable` at construction if a signing key is configured but
    missing or unreadable, so a misconfigured registry fails before it listens.
    """

    def __init__(self, settings: RegistrySettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.store = RegistryStore(settings.root, settings.signing_key)
        self.metrics = RegistryMetrics(registry, self.store)
        self.announcer = Announcer(
            self.store, settings.base_url(), settings.mqtt,
            client_id=settings.mqtt_client_id, timeout_s=settings.announce_timeout_s,
            on_result=lambda r: self.metrics.announcements.labels(r.value).inc(),
        )
        token = settings.token.get_secret_value() if settings.token else None
        self.app = create_app(
            self.store, self.announcer, self.metrics, token=token,
            max_upload_bytes=settings.http.max_upload_bytes,
        )
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("registry server not started")
        return int(self._server.effective_port)

    @property
    def base_url(self) -> str:
        return self.announcer.base_url

    def start(self) -> None:
        http = self.settings.http
        if removed := self.store.clean_uploads():
            log.warning("removed %d stale upload file(s) from %s", removed, self.store.upload_dir)
        self._server = create_server(
            self.app, host=http.host, port=http.port, threads=http.threads,
            # waitress buffers the whole body before the app sees it: cap it there too.
            max_request_body_size=http.max_upload_bytes + 64 * 1024,
            ident="edgeloop-registry", clear_untrusted_proxy_headers=True,
        )
        # With port 0 the real port is known only now; announcements must carry it.
        self.announcer.base_url = self.settings.base_url(self.port)
        self._thread = threading.Thread(
            target=self._server.run, name="registry-http", daemon=True
        )
        self._thread.start()
        if self.settings.public_url is None and http.host in {"0.0.0.0", "::"}:
            log.warning("no public_url set: announcements point at %s, which other hosts "
                        "cannot reach; set --public-url", self.announcer.base_url)
        if self.settings.token is None:
            log.warning("no token configured (EDGELOOP_TOKEN): the HTTP API is read-only")
        if self.store.key_id is None:
            log.warning("no signing key configured: uploads are refused")
        log.info("registry serving %s on http://%s:%d (announcing %s, key %s, %d model(s))",
                 self.settings.root, http.host, self.port, self.announcer.base_url,
                 self.store.key_id or "none", len(self.store.list_models()))
        self.announcer.start()

    def stop(self) -> None:
        """Stop accepting, let running requests finish, then close MQTT."""
        server, self._server = self._server, None
        if server is not None:
            server.task_dispatcher.shutdown(cancel_pending=False, timeout=5)
            # Close every socket from the loop's own thread, so the loop sees an empty map
            # and returns instead of racing a close from here.
            server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map))
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                log.warning("HTTP loop did not stop within 10 s")
        self.announcer.stop()
        log.info("registry stopped")
