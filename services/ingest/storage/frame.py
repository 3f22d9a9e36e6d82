"""ReadingFrame: what the storage read API returns, as numpy arrays (no pandas).

The trainer builds windows from these arrays directly; a reading that lacks a field has
NaN there, so several sensor kinds can share one frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Row = tuple[str, int, int, Mapping[str, float]]


@dataclass(frozen=True)
class ReadingFrame:
    """Readings as columns, sorted by (device, ts)."""

    device: npt.NDArray[np.object_]
    ts: npt.NDArray[np.int64]
    seq: npt.NDArray[np.int64]
    values: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def fields(self) -> list[str]:
        return sorted(self.values)

    @property
    def devices(self) -> list[str]:
        return sorted({str(d) for d in self.device})

    def for_device(self, device: str) -> ReadingFrame:
        """The rows of one device (still sorted by ts)."""
        mask = self.device == device
        return ReadingFrame(
            device=self.device[mask],
            ts=self.ts[mask],
            seq=self.seq[mask],
            values={k: v[mask] for k, v in self.values.items()},
        )

    @classmethod
    def empty(cls, fields: Iterable[str] = ()) -> ReadingFrame:
        return cls(
            device=np.empty(0, dtype=object),
            ts=np.empty(0, dtype=np.int64),
            seq=np.empty(0, dtype=np.int64),
            values={f: np.empty(0, dtype=np.float64) for f in fields},
        )

    @classmethod
    def from_rows(cls, rows: Iterable[Row], fields: Sequence[str] | None = None) -> ReadingFrame:
        """Build a frame from (device, ts, seq, values) rows; ``fields`` None = all seen."""
        rows = list(rows)
        if fields is None:
            names: set[str] = set()
            for r in rows:
                names.update(r[3])
            wanted = sorted(names)
        else:
            wanted = list(dict.fromkeys(fields))
        if not rows:
            return cls.empty(wanted)
        rows.sort(key=lambda r: (r[0], r[1], r[2]))
        n = len(rows)
        device = np.empty(n, dtype=object)
        device[:] = [r[0] for r in rows]
        ts = np.fromiter((r[1] for r in rows), dtype=np.int64, count=n)
        seq = np.fromiter((r[2] for r in rows), dtype=np.int64, count=n)
        nan = float("nan")
        values = {
            f: np.fromiter((r[3].get(f, nan) for r in rows), dtype=np.float64, count=n)
            for f in wanted
        }
        return cls(device=device, ts=ts, seq=seq, values=values)
