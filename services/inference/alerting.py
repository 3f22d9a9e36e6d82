"""Debounce and hysteresis for alerts: a spike is not a fire, and a fire ends.

Each (device, kind, field) has a small state machine. ``raise_after`` consecutive bad
observations raise an alert; once raised, ``clear_after`` consecutive observations that
are clearly good (below ``clear_ratio`` of the threshold, the hysteresis band) clear it.
Observations between the two bands keep the current state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from services.contract.models import AlertKind, AlertState


class Verdict(enum.Enum):
    BAD = "bad"
    GOOD = "good"  # clearly back to normal
    UNSURE = "unsure"  # inside the hysteresis band


@dataclass(slots=True)
class _Track:
    raised: bool = False
    bad: int = 0
    good: int = 0
    raised_ts: int = 0


@dataclass
class Debouncer:
    raise_after: int = 3
    clear_after: int = 3
    _tracks: dict[tuple[str, str, AlertKind, str], _Track] = field(default_factory=dict)
    #: When the alert that was last cleared had been raised: its id stays the same.
    _cleared: dict[tuple[str, str, AlertKind, str], int] = field(default_factory=dict)

    def observe(
        self, site: str, device: str, kind: AlertKind, field_name: str, verdict: Verdict,
        ts: int, *, raise_after: int | None = None,
    ) -> AlertState | None:
        """Feed one observation; return RAISED or CLEARED on a transition, else None."""
        key = (site, device, kind, field_name)
        t = self._tracks.get(key)
        if t is None:
            if verdict is not Verdict.BAD:
                return None
            t = self._tracks[key] = _Track()
        need = raise_after if raise_after is not None else self.raise_after
        if verdict is Verdict.BAD:
            t.bad += 1
            t.good = 0
            if not t.raised and t.bad >= need:
                t.raised = True
                t.raised_ts = ts
                return AlertState.RAISED
        elif verdict is Verdict.GOOD:
            t.good += 1
            t.bad = 0
            if t.raised and t.good >= self.clear_after:
                t.raised = False
                del self._tracks[key]
                self._cleared[key] = t.raised_ts
                return AlertState.CLEARED
            if not t.raised:
                del self._tracks[key]
        else:
            t.bad = 0 if not t.raised else t.bad
            t.good = 0
        return None

    def is_raised(self, site: str, device: str, kind: AlertKind, field_name: str) -> bool:
        t = self._tracks.get((site, device, kind, field_name))
        return bool(t and t.raised)

    def raised_since(self, site: str, device: str, kind: AlertKind, field_name: str) -> int:
        key = (site, device, kind, field_name)
        t = self._tracks.get(key)
        return t.raised_ts if t and t.raised else self._cleared.get(key, 0)

    def active(self) -> dict[AlertKind, int]:
        out: dict[AlertKind, int] = {}
        for (_, _, kind, _), t in self._tracks.items():
            if t.raised:
                out[kind] = out.get(kind, 0) + 1
        return out


def deviation_verdict(
    value: float, expected: float, *, relative: float, sigma: float | None, k_sigma: float,
    clear_ratio: float, bias: float = 0.0, sigma_floor: float = 0.0,
) -> tuple[Verdict, float]:
    """Compare a reading with its forecast; return the verdict and a score (multiples of
    the threshold, >1 is bad).

    Two rules, either may fire: the relative one (|error| > relative x |expected|, the
    Arm workshop's), and the statistical one: the error, less the model's recent mean
    error (its bias), beyond k standard deviations of the recent error. ``sigma_floor``
    (e.g. the sensor's resolution) keeps a noiseless signal from making every wobble
    look like k sigma.
    """
    err = value - expected
    score = abs(err) / (relative * max(abs(expected), 1e-9))
    if k_sigma > 0 and sigma is not None:
        spread = max(sigma, sigma_floor, 1e-12)
        score = max(score, abs(err - bias) / (k_sigma * spread))
    if score > 1.0:
        return Verdict.BAD, score
    if score < clear_ratio:
        return Verdict.GOOD, score
    return Verdict.UNSURE, score
