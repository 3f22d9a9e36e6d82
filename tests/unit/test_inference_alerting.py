"""Debounce and hysteresis: a spike is not a fire, a fire is raised once and clears."""

from __future__ import annotations

from services.contract.models import AlertKind, AlertState
from services.inference.alerting import Debouncer, Verdict, deviation_verdict

K = AlertKind.FORECAST_DEVIATION


def feed(d: Debouncer, verdicts: str) -> list[tuple[int, AlertState]]:
    code = {"B": Verdict.BAD, "G": Verdict.GOOD, "U": Verdict.UNSURE}
    out = []
    for i, c in enumerate(verdicts):
        state = d.observe("s", "dev", K, "temp", code[c], ts=i)
        if state is not None:
            out.append((i, state))
    return out


def test_single_spike_is_not_a_fire() -> None:
    assert feed(Debouncer(3, 3), "GGBGGBBGGG") == []


def test_fire_raises_once_and_clears_after_good_readings() -> None:
    d = Debouncer(3, 3)
    events = feed(d, "GGBBBBBBGGGGG")
    assert events == [(4, AlertState.RAISED), (10, AlertState.CLEARED)]
    assert not d.is_raised("s", "dev", K, "temp")


def test_hysteresis_band_neither_raises_nor_clears() -> None:
    d = Debouncer(3, 2)
    # Raised, then readings hover in the band: stays raised; good ones clear it.
    assert feed(d, "BBBUUUUUU") == [(2, AlertState.RAISED)]
    assert d.is_raised("s", "dev", K, "temp")
    assert d.observe("s", "dev", K, "temp", Verdict.GOOD, 10) is None
    assert d.observe("s", "dev", K, "temp", Verdict.UNSURE, 11) is None  # resets the count
    assert d.observe("s", "dev", K, "temp", Verdict.GOOD, 12) is None
    assert d.observe("s", "dev", K, "temp", Verdict.GOOD, 13) is AlertState.CLEARED
    assert d.raised_since("s", "dev", K, "temp") == 2  # the cleared alert keeps its id


def test_interrupted_bad_run_does_not_raise() -> None:
    assert feed(Debouncer(3, 3), "BBUBBGBB") == []


def test_deviation_relative_and_k_sigma() -> None:
    v, score = deviation_verdict(21.0, 20.0, relative=0.1, sigma=None, k_sigma=0, clear_ratio=0.7)
    assert v is Verdict.GOOD and abs(score - 0.5) < 1e-9
    v, _ = deviation_verdict(21.6, 20.0, relative=0.1, sigma=None, k_sigma=0, clear_ratio=0.7)
    assert v is Verdict.UNSURE
    v, _ = deviation_verdict(22.5, 20.0, relative=0.1, sigma=None, k_sigma=0, clear_ratio=0.7)
    assert v is Verdict.BAD
    # A quiet signal: 3 sigma of the recent error is tighter than 10 % and fires first.
    v, score = deviation_verdict(20.5, 20.0, relative=0.1, sigma=0.1, k_sigma=3,
                                 clear_ratio=0.7)
    assert v is Verdict.BAD and score > 1
    # The model's steady bias is not an anomaly: only the error beyond it counts.
    v, _ = deviation_verdict(20.5, 20.0, relative=0.1, sigma=0.1, k_sigma=3,
                             clear_ratio=0.7, bias=0.45)
    assert v is Verdict.GOOD
    # A noiseless signal (sigma ~ 0) does not turn every wobble into an alert.
    v, _ = deviation_verdict(20.01, 20.0, relative=0.1, sigma=1e-6, k_sigma=3,
                             clear_ratio=0.7, sigma_floor=0.01)
    assert v is Verdict.GOOD
