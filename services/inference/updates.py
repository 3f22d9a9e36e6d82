"""Model updates without downtime: retained announcements → verified, tested, swapped.

For each announcement (``edgeloop/v1/models/<name>/announce``, retained) the updater
thread downloads the bundle from the announcement's ``url`` (or takes it from the local
cache when the sha256 matches), verifies size, sha256, key id and Ed25519 signature,
loads it in a fresh interpreter, runs the card's test vectors, stores it in the cache and
only then swaps it in. Any failure leaves the running model alone, is logged with its
reason and counted in ``edgeloop_model_load_failures_total{reason}``; a failed download
(registry down) is retried with backoff while that announcement is still the latest.

Downloads never run on the MQTT network thread: the paho callback only queues.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import paho.mqtt.client as paho
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.common.logs import RateLimitedLog
from services.common.mqtt import MqttClient
from services.contract.decode import Rejected, decode_as
from services.contract.models import ModelAnnouncement
from services.contract.topics import MODEL_ANNOUNCE_ALL, model_announce
from services.inference.cache import BundleCache
from services.inference.loader import LoadError, LoadFailure, load, verify
from services.inference.metrics import InferenceMetrics
from services.inference.models import LoadedModel, ModelSet
from services.inference.runtimes import RuntimeKind
from services.modelkit.bundle import read_bundle

log = logging.getLogger(__name__)

RETRY_S = (2.0, 5.0, 15.0, 30.0, 60.0, 300.0)


@dataclass(frozen=True, slots=True)
class UpdateOutcome:
    name: str
    version: int
    ok: bool
    reason: LoadFailure | None = None
    detail: str = ""


class ModelUpdater:
    def __init__(
        self,
        models: ModelSet,
        cache: BundleCache,
        metrics: InferenceMetrics,
        *,
        public_key: Ed25519PublicKey | None,
        runtimes: Sequence[RuntimeKind],
        num_threads: int = 1,
        names: Sequence[str] = (),
        registry_url: str | None = None,
        download_timeout_s: float = 30.0,
        cache_poll_s: float = 2.0,
        on_outcome: Callable[[UpdateOutcome], None] | None = None,
    ) -> None:
        self.models = models
        self.cache = cache
        self.metrics = metrics
        self._key = public_key
        self._runtimes = tuple(runtimes)
        self._threads = num_threads
        self._names = frozenset(names)
        self._registry = registry_url
        self._timeout = download_timeout_s
        self._poll = cache_poll_s
        self._on_outcome = on_outcome
        self._queue: queue.Queue[ModelAnnouncement | None] = queue.Queue()
        self._latest: dict[str, ModelAnnouncement] = {}
        self._retry: dict[str, tuple[float, int]] = {}  # name -> (due, attempt)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._rlog = RateLimitedLog(log)
        #: Names whose active model is one of the cache's (rollback follows the cache).
        self._managed: set[str] = set()
        self._client: MqttClient | None = None
        self._session = requests.Session()
        self.outcomes: list[UpdateOutcome] = []

    # ------------------------------------------------------------------ start-up
    def load_cached(self) -> None:
        """Serve the last good version of every cached model (no network needed)."""
        for name in self.cache.names():
            if self._names and name not in self._names:
                continue
            version = self.cache.current(name)
            if version is not None:
                self._load_from_cache(name, version, source="cache")

    def load_local(self, path: Path, trust: bool) -> UpdateOutcome:
        """A ``--bundle`` file: verified with ``<path>.json`` (its announcement) when present,
        loaded unverified only when the operator set ``trust_local_bundles``."""
        data = path.read_bytes()
        meta = path.with_name(path.name + ".json")
        try:
            if meta.exists():
                ann = ModelAnnouncement.model_validate_json(meta.read_bytes())
                key = None if (trust and self._key is None) else self._key
                if key is None and not trust:
                    raise LoadError(LoadFailure.KEY_ID, "no public key configured")
                bundle = verify(data, ann, key)
                version, sha = ann.version, ann.sha256
                if key is not None:
                    self.cache.store(data, ann)
                    self._managed.add(ann.name)
            elif trust:
                bundle = read_bundle(data)
                version = bundle.card.version or 1
                sha = hashlib.sha256(data).hexdigest()
            else:
                raise LoadError(LoadFailure.SIGNATURE,
                                f"{path} has no {meta.name} announcement with its signature; "
                                "set trust_local_bundles to load it unverified")
            model = load(bundle, sha, version, self._runtimes, self._threads)
        except (LoadError, OSError, ValueError) as exc:
            reason = exc.reason if isinstance(exc, LoadError) else LoadFailure.BUNDLE
            return self._failed(path.stem, 0, reason, str(exc))
        return self._swap(model, source=str(path))

    # ------------------------------------------------------------------ running
    def start(self, client: MqttClient | None) -> None:
        self._client = client
        self._thread = threading.Thread(target=self._run, name="model-updater", daemon=True)
        self._thread.start()
        if client is not None:
            if self._names:
                for name in sorted(self._names):
                    client.subscribe(model_announce(name), self._on_announce, qos=1)
            else:
                client.subscribe(MODEL_ANNOUNCE_ALL, self._on_announce, qos=1)

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout_s)
            self._thread = None
        self._session.close()

    def submit(self, ann: ModelAnnouncement) -> None:
        """Queue an announcement (also used by tests and the registry poller)."""
        self._queue.put(ann)

    def _on_announce(self, msg: paho.MQTTMessage) -> None:
        try:
            self._take(msg)
        finally:
            if self._client is not None:
                self._client.ack(msg.mid, int(msg.qos))

    def _take(self, msg: paho.MQTTMessage) -> None:
        if not msg.payload:
            return  # a retained announcement being cleared
        try:
            ann = decode_as(ModelAnnouncement, bytes(msg.payload))
        except Rejected as exc:
            self._rlog.warning("bad-announce", "ignoring announcement on %s: %s", msg.topic, exc)
            self.metrics.model_load_failures.labels("unknown", "announcement").inc()
            return
        if self._names and ann.name not in self._names:
            return
        self._queue.put(ann)

    def _run(self) -> None:
        next_poll = time.monotonic() + self._poll
        while True:
            timeout = max(0.05, min([next_poll, *[d for d, _ in self._retry.values()]])
                          - time.monotonic())
            try:
                ann = self._queue.get(timeout=timeout)
            except queue.Empty:
                ann = None
            else:
                if ann is None:
                    return
            try:
                if ann is not None:
                    self._retry.pop(ann.name, None)
                    self._latest[ann.name] = ann
                    self.apply(ann)
                now = time.monotonic()
                for name, (due, _) in list(self._retry.items()):
                    if due <= now and name in self._latest:
                        self.apply(self._latest[name])
                if now >= next_poll:
                    next_poll = now + self._poll
                    self._check_rollbacks()
            except Exception:  # the updater must outlive any single bad update
                log.exception("model update failed unexpectedly")

    # ------------------------------------------------------------------ one update
    def apply(self, ann: ModelAnnouncement) -> UpdateOutcome:
        name = ann.name
        if ann.retired:
            old = self.models.remove(name)
            if old is not None:
                self.metrics.model_info.remove(old.name, str(old.version), old.runtime.kind.value)
                log.info("model %s retired by the registry; unloaded v%d", name, old.version)
            return self._record(UpdateOutcome(name, ann.version, True, detail="retired"))
        if self.models.has(name):
            active = self.models.get(name)
            if active.version == ann.version and active.sha256 == ann.sha256:
                self._retry.pop(name, None)
                return self._record(UpdateOutcome(name, ann.version, True, detail="current"))
        if ann.version in self.cache.rejected(name):
            log.info("model %s v%d was rolled back here; not loading it again", name,
                     ann.version)
            return self._record(UpdateOutcome(name, ann.version, False, detail="rolled back"))
        try:
            if self._key is None:
                raise LoadError(LoadFailure.KEY_ID,
                                "no public key configured (--public-key); refusing network models")
            data = self._fetch(ann)
            bundle = verify(data, ann, self._key)
            model = load(bundle, ann.sha256, ann.version, self._runtimes, self._threads)
            self.cache.store(data, ann)
            self._managed.add(name)
        except LoadError as exc:
            if exc.reason is LoadFailure.DOWNLOAD:
                self._schedule_retry(name)
            return self._failed(name, ann.version, exc.reason, exc.detail)
        self._retry.pop(name, None)
        return self._swap(model, source=ann.url)

    def _fetch(self, ann: ModelAnnouncement) -> bytes:
        cached = self.cache.get(ann.name, ann.version)
        if cached is not None and cached.announcement.sha256 == ann.sha256:
            return cached.read()
        url = ann.url
        if self._registry and not url.startswith(("http://", "https://")):
            url = urljoin(self._registry.rstrip("/") + "/", url.lstrip("/"))
        try:
            resp = self._session.get(url, timeout=self._timeout)
            resp.raise_for_status()
        except requests.RequestException as exc:
            raise LoadError(LoadFailure.DOWNLOAD, f"{url}: {exc}"[:400]) from None
        return resp.content

    def _schedule_retry(self, name: str) -> None:
        _, attempt = self._retry.get(name, (0.0, 0))
        delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
        self._retry[name] = (time.monotonic() + delay, attempt + 1)

    def _check_rollbacks(self) -> None:
        """Follow ``edgeloop serve rollback``, which moves the cache's ``current`` pointer."""
        for name in sorted(self._managed):
            current = self.cache.current(name)
            if current is None or not self.models.has(name):
                continue
            if self.models.get(name).version != current:
                self._load_from_cache(name, current, source="rollback")

    def _load_from_cache(self, name: str, version: int, source: str) -> None:
        cached = self.cache.get(name, version)
        if cached is None:
            self._failed(name, version, LoadFailure.BUNDLE, f"v{version} is not in the cache")
            return
        try:
            bundle = verify(cached.read(), cached.announcement, self._key)
            model = load(bundle, cached.announcement.sha256, version, self._runtimes,
                         self._threads)
        except (LoadError, OSError) as exc:
            reason = exc.reason if isinstance(exc, LoadError) else LoadFailure.BUNDLE
            self._failed(name, version, reason, str(exc))
            return
        self._managed.add(name)
        self._swap(model, source=source)

    # ------------------------------------------------------------------ bookkeeping
    def _swap(self, model: LoadedModel, source: str) -> UpdateOutcome:
        old = self.models.swap(model)
        if old is not None and (old.version, old.runtime.kind) != (
            model.version, model.runtime.kind
        ):
            self.metrics.model_info.remove(old.name, str(old.version), old.runtime.kind.value)
        self.metrics.model_info.labels(model.name, str(model.version),
                                       model.runtime.kind.value).set(1)
        self.metrics.model_loads.labels(model.name).inc()
        log.info("model %s v%d serving on %s (from %s%s)", model.name, model.version,
                 model.runtime.kind.value, source,
                 f"; replaced v{old.version}" if old is not None else "")
        return self._record(UpdateOutcome(model.name, model.version, True, detail=source))

    def _failed(self, name: str, version: int, reason: LoadFailure, detail: str) -> UpdateOutcome:
        label = name if self.models.has(name) or name in self._latest else "unknown"
        self.metrics.model_load_failures.labels(label, reason.value).inc()
        keep = ""
        if self.models.has(name):
            keep = f"; still serving v{self.models.get(name).version}"
        self._rlog.error(f"load-{name}-{reason.value}", "model %s v%d refused: %s: %s%s",
                         name, version, reason.value, detail, keep)
        return self._record(UpdateOutcome(name, version, False, reason, detail))

    def _record(self, outcome: UpdateOutcome) -> UpdateOutcome:
        with self._lock:
            self.outcomes.append(outcome)
            del self.outcomes[:-100]
        if self._on_outcome is not None:
            self._on_outcome(outcome)
        return outcome
