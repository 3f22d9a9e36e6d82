"""Simulator: seeded determinism, realistic ranges, daily cycle, injected anomalies."""

from __future__ import annotations

import itertools
import math
import statistics

from services.collector.config import Profile, parse_injection
from services.collector.simulator import FIRE_RISE_C, STUCK_S, Simulator, fire_offset_c

DAY_NS = 86_400 * 10**9
# Midnight UTC, so the simulated hour of day is known.
MIDNIGHT = 1_700_000_000 * 10**9 // DAY_NS * DAY_NS


def _climate(seed: int, n: int, interval: float = 60.0, **kw: object) -> list[dict[str, float]]:
    sim = Simulator(Profile.CLIMATE, seed=seed, interval_s=interval, start_ns=MIDNIGHT, **kw)  # type: ignore[arg-type]
    return [sim.next().values for _ in range(n)]


def test_same_seed_same_stream_other_seed_differs() -> None:
    assert _climate(7, 500) == _climate(7, 500)
    assert _climate(7, 500) != _climate(8, 500)
    a = Simulator(Profile.ACCEL, seed=3, interval_s=0.016, start_ns=0)
    b = Simulator(Profile.ACCEL, seed=3, interval_s=0.016, start_ns=0)
    assert [a.next() for _ in range(3000)] == [b.next() for _ in range(3000)]


def test_timestamps_follow_the_interval() -> None:
    sim = Simulator(Profile.CLIMATE, seed=1, interval_s=2.5, start_ns=MIDNIGHT)
    ts = [sim.next().ts for _ in range(4)]
    assert [t - MIDNIGHT for t in ts] == [0, 2_500_000_000, 5_000_000_000, 7_500_000_000]


def test_climate_is_realistic_over_a_week() -> None:
    rows = _climate(11, 7 * 24 * 60)  # one reading a minute for a week
    temp = [r["temp"] for r in rows]
    hum = [r["humidity"] for r in rows]
    pres = [r["pressure"] for r in rows]
    assert 10 < min(temp) and max(temp) < 35
    assert 1 <= min(hum) and max(hum) <= 100
    assert 980 < min(pres) and max(pres) < 1045
    # Noise: consecutive readings differ, but by little.
    steps = [abs(b - a) for a, b in itertools.pairwise(temp)]
    assert 0 < statistics.mean(steps) < 0.5
    # Daily cycle: afternoons (13-17 h) are warmer than the small hours (1-5 h).
    by_hour = [statistics.mean(temp[h * 60 + d * 1440] for d in range(7)) for h in range(24)]
    assert statistics.mean(by_hour[13:18]) - statistics.mean(by_hour[1:6]) > 3.0
    # Humidity falls as temperature rises; pressure and humidity move apart too.
    assert statistics.correlation(temp, hum) < -0.5
    assert statistics.correlation(pres, hum) < -0.2


def test_fire_ramps_temperature_up_and_humidity_down() -> None:
    at = 600.0
    rows = _climate(5, 1200, interval=1.0, injections=(parse_injection(f"fire@{at:g}"),))
    before = rows[int(at) - 1]
    ramp = [rows[int(at) + k]["temp"] for k in range(0, 240, 30)]
    assert all(b > a for a, b in itertools.pairwise(ramp)), ramp
    peak = rows[int(at) + 300]
    assert peak["temp"] - before["temp"] > FIRE_RISE_C - 5
    assert peak["humidity"] < before["humidity"] / 5
    assert fire_offset_c(-1) == 0 and fire_offset_c(10_000) < 1


def test_stuck_sensor_freezes_every_value_then_recovers() -> None:
    at = 100
    rows = _climate(9, 100 + int(STUCK_S) + 50, interval=1.0,
                    injections=(parse_injection(f"stuck@{at}"),))
    frozen = rows[at]
    assert rows[at - 1] == frozen  # it sticks at the last good reading
    assert all(r == frozen for r in rows[at : at + int(STUCK_S)])
    assert rows[at + int(STUCK_S) + 5] != frozen


def test_accelerometer_idles_on_gravity_and_free_falls() -> None:
    sim = Simulator(Profile.ACCEL, seed=21, interval_s=0.016, start_ns=0)
    rows = [sim.next() for _ in range(int(180 / 0.016))]  # three minutes at 62.5 Hz
    assert rows[1].ts - rows[0].ts == 16_000_000
    mags = [math.sqrt(sum(v * v for v in r.values.values())) for r in rows]
    assert 9.0 < statistics.median(mags) < 10.6  # mostly at rest: 1 g
    falls = sim.free_falls
    assert len(falls) >= 3
    for start, end in falls:
        window = mags[round(start / 0.016) + 1 : round(end / 0.016) - 1]
        assert window and max(window) < 2.0  # near zero g for the whole fall
        assert 0.2 <= end - start <= 0.65
    # An impact follows each fall.
    start, end = falls[0]
    after = mags[round(end / 0.016) : round(end / 0.016) + 5]
    assert max(after) > 15.0
