"""Realistic synthetic devices, deterministic for a seed.

``climate`` behaves like the Arm workshop board indoors: a daily temperature cycle
(coolest before dawn, warmest mid-afternoon), slow weather fronts that move pressure by
a few hPa over hours and push humidity the other way, a small twice-daily pressure tide,
sensor noise, and relative humidity that falls as the air warms.

``accel`` behaves like the phone in the Edge Impulse free-fall recordings: m/s^2 every
16 ms, gravity on -Z with a slowly drifting tilt, bursts of handling, and from time to
time a free fall (all axes near 0 g for a fraction of a second) ending in an impact.

Injected anomalies (simulated seconds after the start):

* ``fire``: temperature ramps up by about 0.25 degC/s to +60 degC over four minutes
  while humidity collapses, holds, then cools down;
* ``stuck``: every value freezes at the last reading for five minutes, then recovers.

The simulator knows nothing about wall-clock time: sample ``i`` is at
``start_ns + i * interval``, so a seed and a start time give the same stream every time.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Final

from services.collector.config import Injection, InjectionKind, Profile
from services.collector.outbox import Row

DAY_S: Final = 86_400.0
G: Final = 9.81
FIRE_RAMP_S: Final = 240.0
FIRE_RISE_C: Final = 60.0
FIRE_HOLD_S: Final = 120.0
FIRE_COOL_TAU_S: Final = 180.0
STUCK_S: Final = 300.0


@dataclass(slots=True)
class _Episode:
    kind: InjectionKind
    start_s: float
    frozen: dict[str, float] | None = None


@dataclass(slots=True)
class _ClimateState:
    weather: float = 0.0  # hPa offset of the current weather system
    temp_noise: float = 0.0
    hum_noise: float = 0.0


@dataclass(slots=True)
class _AccelState:
    tilt_x: float = 0.0
    tilt_y: float = 0.0
    next_fall_s: float = 0.0
    fall_until_s: float = -1.0
    impact_samples: int = 0
    shake_until_s: float = -1.0
    shake_hz: float = 2.0
    shake_amp: float = 0.0
    falls: list[tuple[float, float]] = field(default_factory=list)


def fire_offset_c(since_s: float) -> float:
    """Degrees the fire adds ``since_s`` seconds after it starts (0 before)."""
    if since_s <= 0:
        return 0.0
    if since_s <= FIRE_RAMP_S:
        return FIRE_RISE_C * since_s / FIRE_RAMP_S
    if since_s <= FIRE_RAMP_S + FIRE_HOLD_S:
        return FIRE_RISE_C
    return FIRE_RISE_C * math.exp(-(since_s - FIRE_RAMP_S - FIRE_HOLD_S) / FIRE_COOL_TAU_S)


class Simulator:
    def __init__(
        self,
        profile: Profile,
        *,
        seed: int,
        interval_s: float,
        start_ns: int,
        injections: tuple[Injection, ...] = (),
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.profile = profile
        self.interval_s = interval_s
        self.start_ns = start_ns
        self.index = 0
        self._rng = random.Random(seed)
        self._episodes = sorted(
            (_Episode(i.kind, i.at_s) for i in injections), key=lambda e: e.start_s
        )
        self._climate = _ClimateState(weather=self._rng.gauss(0.0, 4.0))
        self._accel = _AccelState(next_fall_s=self._rng.uniform(3.0, 12.0))
        self._elapsed_s = 0.0
        self._last: dict[str, float] | None = None

    @property
    def elapsed_s(self) -> float:
        return self._elapsed_s

    @property
    def free_falls(self) -> list[tuple[float, float]]:
        """(start, end) simulated seconds of every free fall generated so far."""
        return list(self._accel.falls)

    def set_interval(self, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.interval_s = interval_s

    def next(self) -> Row:
        t = self._elapsed_s
        ts = self.start_ns + round(t * 1e9)
        if self.profile is Profile.CLIMATE:
            values = self._climate_values(ts, t)
        else:
            values = self._accel_values(t)
        values = self._apply_stuck(t, values)
        self._last = values
        self.index += 1
        self._elapsed_s = t + self.interval_s
        return Row(ts=ts, values=values)

    # ------------------------------------------------------------------ anomalies
    def _apply_stuck(self, t: float, values: dict[str, float]) -> dict[str, float]:
        for ep in self._episodes:
            if ep.kind is InjectionKind.STUCK and ep.start_s <= t < ep.start_s + STUCK_S:
                if ep.frozen is None:
                    ep.frozen = dict(self._last or values)
                return dict(ep.frozen)
        return values

    def _fire_c(self, t: float) -> float:
        return sum(
            fire_offset_c(t - ep.start_s)
            for ep in self._episodes
            if ep.kind is InjectionKind.FIRE
        )

    # ------------------------------------------------------------------ climate
    def _climate_values(self, ts_ns: int, t: float) -> dict[str, float]:
        rng, st, dt = self._rng, self._climate, self.interval_s
        hour = (ts_ns / 1e9 % DAY_S) / 3600.0
        # Weather: an Ornstein-Uhlenbeck process, fronts lasting about a day, sd ~6 hPa.
        tau = DAY_S
        decay = math.exp(-dt / tau)
        st.weather = st.weather * decay + rng.gauss(0.0, 6.0 * math.sqrt(1 - decay * decay))
        # Sensor-side slow noise (AR(1) with a time constant of ~2 minutes).
        a = math.exp(-dt / 120.0)
        st.temp_noise = st.temp_noise * a + rng.gauss(0.0, 0.15 * math.sqrt(1 - a * a))
        st.hum_noise = st.hum_noise * a + rng.gauss(0.0, 0.8 * math.sqrt(1 - a * a))
        # Warmest at 15:00, coolest at 03:00; fine weather (high pressure) is a bit warmer.
        daily = 3.5 * math.sin(2 * math.pi * (hour - 9.0) / 24.0)
        temp = 22.0 + daily + 0.15 * st.weather + st.temp_noise + rng.gauss(0.0, 0.03)
        fire = self._fire_c(t)
        temp += fire
        pressure = (
            1013.0
            + st.weather
            + 0.5 * math.cos(4 * math.pi * (hour - 10.0) / 24.0)  # semidiurnal tide
            + rng.gauss(0.0, 0.05)
        )
        # Relative humidity drops ~2.5 %RH per degC of warming and rises in low pressure.
        humidity = (
            48.0
            - 2.5 * (temp - fire - 22.0)
            - 0.6 * st.weather
            + st.hum_noise
            + rng.gauss(0.0, 0.1)
        )
        humidity *= math.exp(-fire / 25.0)  # hot air holds more water: RH collapses
        humidity = min(100.0, max(1.0, humidity))
        return {
            "temp": round(temp, 4),
            "humidity": round(humidity, 4),
            "pressure": round(pressure, 4),
        }

    # ------------------------------------------------------------------ accelerometer
    def _accel_values(self, t: float) -> dict[str, float]:
        rng, st = self._rng, self._accel
        if st.fall_until_s < 0 <= t - st.next_fall_s:
            duration = rng.uniform(0.25, 0.6)
            st.fall_until_s = t + duration
            st.falls.append((t, t + duration))
        if st.fall_until_s >= 0:
            if t < st.fall_until_s:
                # Free fall: the accelerometer reads (almost) nothing on every axis.
                return {
                    "accX": round(rng.gauss(0.0, 0.25), 4),
                    "accY": round(rng.gauss(0.0, 0.25), 4),
                    "accZ": round(rng.gauss(0.0, 0.25), 4),
                }
            st.fall_until_s = -1.0
            st.impact_samples = rng.randint(2, 4)
            st.next_fall_s = t + rng.uniform(15.0, 40.0)
        if st.impact_samples > 0:
            st.impact_samples -= 1
            spike = rng.uniform(18.0, 40.0)
            return {
                "accX": round(rng.gauss(0.0, spike / 3), 4),
                "accY": round(rng.gauss(0.0, spike / 3), 4),
                "accZ": round(-spike, 4),
            }
        # Handling: now and then a few seconds of 1-4 Hz shaking.
        if t >= st.shake_until_s and rng.random() < self.interval_s / 8.0:
            st.shake_until_s = t + rng.uniform(1.0, 4.0)
            st.shake_hz = rng.uniform(1.0, 4.0)
            st.shake_amp = rng.uniform(1.0, 4.0)
        shake = (
            st.shake_amp * math.sin(2 * math.pi * st.shake_hz * t) if t < st.shake_until_s else 0
        )
        st.tilt_x = 0.995 * st.tilt_x + rng.gauss(0.0, 0.01)
        st.tilt_y = 0.995 * st.tilt_y + rng.gauss(0.0, 0.01)
        gx = G * math.sin(st.tilt_x)
        gy = G * math.sin(st.tilt_y)
        gz = -math.sqrt(max(0.0, G * G - gx * gx - gy * gy))
        return {
            "accX": round(gx + 0.6 * shake + rng.gauss(0.0, 0.05), 4),
            "accY": round(gy + 0.3 * shake + rng.gauss(0.0, 0.05), 4),
            "accZ": round(gz + shake + rng.gauss(0.0, 0.05), 4),
        }
