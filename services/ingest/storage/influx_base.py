"""What the two InfluxDB backends share: line protocol out, a seq ledger for dedupe."""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence

from services.contract.models import Reading
from services.ingest.storage import lineproto
from services.ingest.storage.base import SeqRangeMap, Storage, WriteResult
from services.ingest.storage.ledger import SeqLedger


class LedgeredInfluxStorage(Storage):
    """Writes only readings the ledger has not seen, then records them."""

    #: Lines per HTTP request: large enough to amortize the request, small enough for
    #: the server's default body limits.
    lines_per_request = 10_000

    def __init__(self, ledger: SeqLedger | Callable[[], SeqLedger]) -> None:
        # A factory is opened on first use: a reader (the trainer) never creates one.
        self._ledger: SeqLedger | None = ledger if isinstance(ledger, SeqLedger) else None
        self._ledger_factory = None if isinstance(ledger, SeqLedger) else ledger
        self._ledger_lock = threading.Lock()

    @property
    def ledger(self) -> SeqLedger:
        with self._ledger_lock:
            if self._ledger is None:
                assert self._ledger_factory is not None  # noqa: S101 - set when not opened
                self._ledger = self._ledger_factory()
            return self._ledger

    @abc.abstractmethod
    def _send(self, body: str) -> None:
        """POST one newline-joined line protocol body; raise StorageError/Unavailable."""

    def write(self, readings: Sequence[Reading]) -> WriteResult:
        fresh, duplicates = self.ledger.split(readings)
        if fresh:
            for body in lineproto.chunks(lineproto.encode(fresh), self.lines_per_request):
                self._send(body)
            self.ledger.commit(fresh)
        return WriteResult(written=len(fresh), duplicates=duplicates)

    def seq_ranges(self) -> SeqRangeMap:
        return self.ledger.ranges()

    def close(self) -> None:
        with self._ledger_lock:
            if self._ledger is not None:
                self._ledger.close()
