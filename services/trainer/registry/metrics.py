"""Registry metrics, on a CollectorRegistry passed in.

Labels are bounded: ``endpoint`` is the Flask route (not the URL), ``status`` the HTTP
status code, ``result`` one of a small enum.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.trainer.registry.models import ModelState
from services.trainer.registry.store import RegistryStore

log = logging.getLogger(__name__)


class PublishResult(enum.StrEnum):
    PUBLISHED = "published"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


class AnnounceResult(enum.StrEnum):
    #: The broker acknowledged the retained message.
    SENT = "sent"
    #: Not connected, or no PUBACK in time: the next (re)connect announces every model.
    PENDING = "pending"
    #: MQTT is not configured.
    DISABLED = "disabled"
    #: The model has never had an approved version: nothing to announce.
    NOTHING = "nothing"


class _StoreCollector(Collector):
    """Gauges read from the store at scrape time, so they are right after any writer."""

    def __init__(self, store: RegistryStore) -> None:
        self._store = store

    def collect(self) -> Iterable[Metric]:
        models = GaugeMetricFamily(
            "edgeloop_registry_models", "Models with at least one stored version"
        )
        versions = GaugeMetricFamily(
            "edgeloop_registry_versions", "Stored model versions by state", labels=["state"]
        )
        counts = dict.fromkeys(ModelState, 0)
        try:
            summaries = self._store.list_models()
            for s in summaries:
                for meta in self._store.versions(s.name):
                    counts[meta.state] += 1
        except Exception:
            # A scrape must not fail on a store being written to; the next one will count.
            log.debug("store scan failed during scrape", exc_info=True)
            return
        models.add_metric([], len(summaries))
        for state, n in counts.items():
            versions.add_metric([state.value], n)
        yield models
        yield versions

    def describe(self) -> Iterable[Metric]:
        return []


class RegistryMetrics:
    def __init__(self, registry: CollectorRegistry, store: RegistryStore) -> None:
        self.registry = registry
        self.requests = Counter(
            "edgeloop_registry_http_requests_total", "HTTP requests by route and status",
            ["endpoint", "method", "status"], registry=registry,
        )
        self.request_seconds = Histogram(
            "edgeloop_registry_http_request_duration_seconds", "HTTP request duration",
            ["endpoint"], registry=registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0),
        )
        self.publishes = Counter(
            "edgeloop_registry_publishes_total", "Bundles published, by result",
            ["result"], registry=registry,
        )
        self.published_bytes = Counter(
            "edgeloop_registry_published_bytes_total", "Bytes of newly stored bundles",
            registry=registry,
        )
        self.operations = Counter(
            "edgeloop_registry_operations_total",
            "promote/rollback/retire operations, by outcome",
            ["operation", "result"], registry=registry,
        )
        self.announcements = Counter(
            "edgeloop_registry_announcements_total", "Retained model announcements, by result",
            ["result"], registry=registry,
        )
        self.auth_failures = Counter(
            "edgeloop_registry_auth_failures_total", "Write requests refused for their token",
            registry=registry,
        )
        registry.register(_StoreCollector(store))
