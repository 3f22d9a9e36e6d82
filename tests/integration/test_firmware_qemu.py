"""The firmware's unit tests under QEMU (semihosting: the test's exit status is QEMU's),
and the flash/RAM budgets of every image (arm-none-eabi-size against firmware/budgets.json).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from services.device.emulator import BUILD, FIRMWARE, make, run_semihosted
from tests.support.servers import which_or_skip

pytestmark = [pytest.mark.firmware, pytest.mark.integration]

TARGETS = ("mps2-an385", "mps2-an386", "stm32f4")


@pytest.fixture(scope="module")
def arm_build() -> Path:
    which_or_skip("arm-none-eabi-gcc")
    which_or_skip("qemu-system-arm")
    make(*TARGETS)
    return BUILD


@pytest.mark.parametrize("target", TARGETS)
def test_unit_tests_pass_in_qemu(arm_build: Path, target: str) -> None:
    proc = run_semihosted(target, arm_build / target / "test_firmware.elf")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout + proc.stderr
    for group in ("primitives", "model", "device", "update", "drivers", "flash"):
        assert f"ok   {group}" in out
    assert " 0 failures" in out


def test_a_failing_check_is_qemus_exit_status(arm_build: Path, tmp_path: Path) -> None:
    image = tmp_path / "mps2-an385" / "test_firmware.elf"
    make(str(image), extra={"BUILD": str(tmp_path), "EXTRA_CFLAGS": "-DEDGELOOP_FORCE_FAILURE"})
    proc = run_semihosted("mps2-an385", image)
    assert proc.returncode == 1
    assert "FAIL tests/test_main.c" in proc.stdout + proc.stderr


def test_images_fit_their_budgets(arm_build: Path, tmp_path: Path,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    which_or_skip("arm-none-eabi-size")
    proc = make("size")
    with capsys.disabled():  # flash/RAM per target in the CI log, pass or fail
        print("\n" + proc.stdout[proc.stdout.find("   text"):])
    for target in TARGETS:
        assert target in proc.stdout
    assert "OVER BUDGET" not in proc.stdout
    # The check bites: the same images against a budget they exceed.
    budgets = json.loads((FIRMWARE / "budgets.json").read_text())
    budgets["targets"]["mps2-an385"]["flash_bytes"] = 1024
    tight = tmp_path / "budgets.json"
    tight.write_text(json.dumps(budgets))
    over = subprocess.run(
        [sys.executable, str(FIRMWARE / "tools" / "check_budgets.py"), str(tight),
         str(arm_build / "mps2-an385" / "firmware.elf")],
        capture_output=True, text=True, timeout=60, check=False)
    assert over.returncode == 1 and "OVER BUDGET" in over.stdout


def test_stm32f4_image_talks_over_usart2_on_netduinoplus2(arm_build: Path) -> None:
    """The Nucleo image on QEMU's STM32F405: USART2 is emulated (commands, readings and a
    model update work), I2C is not, so the sensor probe fails and the firmware falls back
    to its simulated sensors."""
    from services.device.devmodels import train
    from services.device.emulator import QemuDevice
    from services.device.protocol import ReplyKind, image_hash
    from services.device.update import update_device_model

    blob = train("fc-b", seed=11, units=(16, 8)).export(arm_build / "stm32-c").blob
    with QemuDevice("stm32f4") as qemu, qemu.link() as link:
        info = link.info()
        assert info.slot == "a" and info.extra["sensors"] == "sim"
        assert link.command("RATE 100", ReplyKind.OK).kind is ReplyKind.OK
        lines: list[str] = []
        while len(lines) < 3:
            line = link.read_line(time.monotonic() + 10)
            assert line is not None
            if line.startswith("temp:"):
                lines.append(line)
        result = update_device_model(link, blob)
        assert link.info().hash == image_hash(blob) == result.hash
