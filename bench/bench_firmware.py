"""Firmware numbers: instructions per inference (QEMU -icount), image sizes, update time.

Instructions come from QEMU with ``-icount shift=0`` (one guest instruction = 1 ns of
virtual time; SysTick counts virtual time), checked in the same run against a calibration
loop of known length (4 instructions per iteration). They are instructions, not cycles: a
Cortex-M3/M4 takes about 1-1.5 cycles per instruction here plus flash wait states.
The model update time in QEMU is compared with a PING round trip in the same session.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

from services.device.devmodels import train
from services.device.emulator import BUILD, FIRMWARE, QemuDevice, make, run_semihosted
from services.device.update import update_device_model

TARGETS = ("mps2-an385", "mps2-an386")


def _instructions(target: str) -> dict[str, float]:
    proc = run_semihosted(target, BUILD / target / "bench.elf", icount=True)
    if proc.returncode != 0:
        raise RuntimeError(f"bench on {target} failed: {proc.stdout}{proc.stderr}")
    out: dict[str, float] = {}
    for name, insns, calls in re.findall(r"bench (\S+) insns=(\d+) calls=(\d+)",
                                         proc.stdout + proc.stderr):
        out[name] = int(insns) / int(calls)
    # 0 here: QEMU does not emulate the DWT cycle counter, hence -icount.
    dwt = re.search(r"dwt_cyccnt_delta=(\d+)", proc.stdout + proc.stderr)
    out["dwt_cyccnt_delta_over_calibration"] = float(dwt.group(1)) if dwt else -1.0
    return out


def _sizes() -> dict[str, Any]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("check_budgets",
                                                  FIRMWARE / "tools" / "check_budgets.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = {}
    for target in (*TARGETS, "stm32f4"):
        flash, ram = mod.sizes(BUILD / target / "firmware.elf")
        out[target] = {"flash_bytes": flash, "ram_bytes": ram}
    return out


def _update(rounds: int) -> dict[str, float]:
    blob = train("fc-b", seed=11, units=(16, 8)).export(BUILD / "bench-c").blob
    other = train("fc-a", seed=7).export(BUILD / "bench-c-a").blob
    times, pings = [], []
    with QemuDevice("mps2-an385") as qemu, qemu.link() as link:
        for i in range(rounds):
            t0 = time.perf_counter()
            link.ping()
            pings.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            update_device_model(link, blob if i % 2 == 0 else other)
            times.append(time.perf_counter() - t0)
    return {"blob_bytes": len(blob), "update_s_median": sorted(times)[len(times) // 2],
            "ping_rtt_ms_median": 1000 * sorted(pings)[len(pings) // 2],
            "rounds": rounds}


def run(quick: bool) -> dict[str, Any]:
    make("host", *TARGETS, "stm32f4", *(str(Path("build") / t / "bench.elf") for t in TARGETS))
    return {
        "instructions": {t: _instructions(t) for t in TARGETS},
        "sizes": _sizes(),
        "update_qemu": _update(2 if quick else 6),
    }
