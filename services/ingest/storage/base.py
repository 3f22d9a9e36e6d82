"""The one small interface every storage backend implements."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar

from services.contract.models import Reading
from services.ingest.storage.frame import ReadingFrame

#: Every backend stores readings under this measurement (InfluxDB) or table (SQLite).
MEASUREMENT = "readings"
#: Stored next to the values; a value with one of these names would collide with them.
RESERVED_FIELDS = frozenset({"seq", "flags", "site", "device", "time", "ts"})


class StorageError(RuntimeError):
    """The backend refused the data itself (retrying the same batch will not help)."""


class StorageUnavailable(StorageError):
    """The backend could not be reached or failed transiently: retry later, do not ack."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    written: int
    duplicates: int


SeqRangeMap = dict[str, list[tuple[int, int]]]


class Storage(abc.ABC):
    """Readings in, ReadingFrames out. Each (device, seq) is stored at most once."""

    scheme: ClassVar[str]

    @abc.abstractmethod
    def write(self, readings: Sequence[Reading]) -> WriteResult:
        """Store readings; those whose (device, seq) is already stored count as duplicates."""

    @abc.abstractmethod
    def query(
        self,
        start_ns: int | None = None,
        end_ns: int | None = None,
        devices: Sequence[str] | None = None,
        fields: Sequence[str] | None = None,
    ) -> ReadingFrame:
        """Readings with start_ns <= ts < end_ns, sorted by (device, ts)."""

    @abc.abstractmethod
    def count(self, device: str | None = None) -> int:
        """How many readings are stored (for one device, or all)."""

    @abc.abstractmethod
    def seq_ranges(self) -> SeqRangeMap:
        """Stored seqs per device as sorted, disjoint, inclusive (lo, hi) ranges.

        Ingest seeds its gap detector from this at start, so a gap seen before a restart
        is still asked for after it.
        """

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Storage:
        return self

    def __exit__(
        self,
        _t: type[BaseException] | None,
        _e: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()
