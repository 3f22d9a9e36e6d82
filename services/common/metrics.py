"""Prometheus helpers.

Every service builds its metrics on a ``CollectorRegistry`` it is given, so tests use a
fresh registry per service instance and two services can live in one test process.
Names: ``edgeloop_`` prefix, base units (seconds, bytes), ``_total`` on counters.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

PREFIX = "edgeloop_"


def new_registry(process_metrics: bool = True) -> CollectorRegistry:
    """A fresh registry, with the process/platform/GC collectors a dashboard expects."""
    registry = CollectorRegistry(auto_describe=True)
    if process_metrics:
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
    return registry


class MetricsServer:
    """``/metrics`` on its own port, for services that have no HTTP API of their own."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> int:
        server, thread = start_http_server(self._port, addr=self._host, registry=self._registry)
        self._server, self._thread = server, thread
        return int(server.server_port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("metrics server not started")
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
