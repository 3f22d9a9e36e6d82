"""Gap detection: seqs a device sent that the broker lost, asked for again.

A hole between a device's stored seq ranges that outlives ``grace_s`` (out-of-order
delivery and redelivery close most holes within moments) is requested with a RESEND
command; the request is repeated every ``retry_s`` until the hole closes or
``max_attempts`` is reached, when it is given up and counted as lost.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.ingest.storage.base import SeqRangeMap
from services.ingest.storage.seqranges import RangeSet


@dataclass(slots=True)
class _Hole:
    first_seen: float
    attempts: int = 0
    last_request: float = 0.0


@dataclass(frozen=True, slots=True)
class ResendRequest:
    site: str
    device: str
    from_seq: int
    to_seq: int
    attempt: int


@dataclass(frozen=True, slots=True)
class GapCheck:
    requests: list[ResendRequest]
    missing: int
    lost: int


class _Device:
    __slots__ = ("holes", "seqs", "site")

    def __init__(self) -> None:
        self.seqs = RangeSet()
        self.site: str | None = None
        self.holes: dict[tuple[int, int], _Hole] = {}


class GapTracker:
    def __init__(
        self,
        *,
        grace_s: float,
        retry_s: float,
        max_attempts: int,
        max_span: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.grace_s = grace_s
        self.retry_s = retry_s
        self.max_attempts = max_attempts
        self.max_span = max_span
        self._clock = clock
        self._devices: dict[str, _Device] = {}

    def seed(self, ranges: SeqRangeMap) -> None:
        """What storage already holds (from before a restart)."""
        for device, rs in ranges.items():
            d = self._devices.setdefault(device, _Device())
            for lo, hi in rs:
                d.seqs.add_range(lo, hi)

    def observe(self, site: str, device: str, seqs: Iterable[int]) -> None:
        """Seqs now stored (new or duplicate) for a device seen on ``site``."""
        d = self._devices.setdefault(device, _Device())
        d.site = site
        d.seqs.add_many(seqs)

    def check(self) -> GapCheck:
        now = self._clock()
        requests: list[ResendRequest] = []
        missing = lost = 0
        for device, d in self._devices.items():
            holes: dict[tuple[int, int], _Hole] = {}
            for lo, hi in d.seqs.holes():
                holes[(lo, hi)] = self._carry(d.holes, lo, hi, now)
            d.holes = holes
            for (lo, hi), hole in list(holes.items()):
                if now - hole.first_seen < self.grace_s or d.site is None:
                    missing += hi - lo + 1
                    continue
                if hole.attempts and now - hole.last_request < self.retry_s:
                    missing += hi - lo + 1
                    continue
                if hole.attempts >= self.max_attempts:
                    # The collector no longer has them (outbox bound): stop asking.
                    d.seqs.add_range(lo, hi)
                    del holes[(lo, hi)]
                    lost += hi - lo + 1
                    continue
                missing += hi - lo + 1
                hole.attempts += 1
                hole.last_request = now
                for start in range(lo, hi + 1, self.max_span):
                    requests.append(ResendRequest(
                        d.site, device, start, min(hi, start + self.max_span - 1),
                        hole.attempts,
                    ))
        return GapCheck(requests, missing, lost)

    @staticmethod
    def _carry(old: dict[tuple[int, int], _Hole], lo: int, hi: int, now: float) -> _Hole:
        """A hole keeps its history when it only shrinks (part of it was resent)."""
        exact = old.get((lo, hi))
        if exact is not None:
            return exact
        for (olo, ohi), hole in old.items():
            if olo <= hi and lo <= ohi:
                return _Hole(hole.first_seen, hole.attempts, hole.last_request)
        return _Hole(now)
