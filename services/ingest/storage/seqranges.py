"""Per-device sets of sequence numbers kept as sorted inclusive ranges.

Seqs arrive almost in order, so a device's millions of readings are a handful of ranges:
membership is a bisect, memory stays small, and the holes between ranges are exactly the
gaps ingest asks the collector to resend.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator


class RangeSet:
    """A set of ints stored as disjoint, non-adjacent, sorted inclusive ranges."""

    __slots__ = ("_his", "_los")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        self._los: list[int] = []
        self._his: list[int] = []
        for lo, hi in ranges:
            self.add_range(lo, hi)

    def __contains__(self, value: int) -> bool:
        i = bisect_right(self._los, value) - 1
        return i >= 0 and self._his[i] >= value

    def __len__(self) -> int:
        return sum(h - lo + 1 for lo, h in zip(self._los, self._his, strict=True))

    def __bool__(self) -> bool:
        return bool(self._los)

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._los, self._his, strict=True))

    def add_range(self, lo: int, hi: int) -> None:
        if hi < lo:
            raise ValueError(f"empty range {lo}..{hi}")
        # Ranges that overlap or touch [lo, hi] are merged into it.
        i = bisect_left(self._his, lo - 1)
        j = bisect_right(self._los, hi + 1)
        if i < j:
            lo = min(lo, self._los[i])
            hi = max(hi, self._his[j - 1])
        self._los[i:j] = [lo]
        self._his[i:j] = [hi]

    def add(self, value: int) -> None:
        self.add_range(value, value)

    def add_many(self, values: Iterable[int]) -> None:
        """Add values, merging runs of consecutive ones first (cheap for in-order seqs)."""
        for lo, hi in runs(sorted(set(values))):
            self.add_range(lo, hi)

    def holes(self) -> list[tuple[int, int]]:
        """Missing ranges between the lowest and highest member."""
        return [
            (self._his[k] + 1, self._los[k + 1] - 1) for k in range(len(self._los) - 1)
        ]

    @property
    def first(self) -> int | None:
        return self._los[0] if self._los else None

    @property
    def last(self) -> int | None:
        return self._his[-1] if self._his else None


def runs(sorted_values: Iterable[int]) -> Iterator[tuple[int, int]]:
    """Collapse sorted distinct ints into inclusive (lo, hi) runs."""
    it = iter(sorted_values)
    try:
        lo = hi = next(it)
    except StopIteration:
        return
    for v in it:
        if v == hi + 1:
            hi = v
        else:
            yield lo, hi
            lo = hi = v
    yield lo, hi
